"""Pictures of a run: :func:`plot_loss` draws the training and validation loss.

matplotlib is optional (``pip install "gpt2_simple_plus[plot]"``; Colab has
it); nothing else in the package needs it.
"""

import os

from .errors import MissingDependencyError, ModelNotFoundError
from .events import read_scalars


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            "plot_loss needs matplotlib, which is not installed. Install it with "
            "`pip install matplotlib` (or `pip install \"gpt2_simple_plus[plot]\"`), then call "
            "plot_loss again; or watch the run in TensorBoard: "
            "`tensorboard --logdir checkpoint`.") from None
    return plt


def running_average(values, decay=0.99):
    """gpt-2-simple's ``avg``: a running mean that forgets 1% per step.

        >>> [round(v, 3) for v in running_average([4.0, 2.0, 3.0])]
        [4.0, 2.995, 2.997]
    """
    total = weight = 0.0
    out = []
    for value in values:
        total, weight = total * decay + value, weight * decay + 1.0
        out.append(total / weight)
    return out


def plot_loss(run_name="run1", checkpoint_dir="checkpoint", ax=None):
    """Plot a run's training loss (each step, and its running average as printed) and its
    validation loss, read from the TensorBoard events file ``finetune`` writes into
    ``checkpoint_dir/run_name``; returns the matplotlib ``Axes``.

    ``ax`` draws into an existing ``Axes`` (e.g. one of several side by side).
    Raises :class:`~gpt2_simple_plus.errors.MissingDependencyError` without
    matplotlib and :class:`~gpt2_simple_plus.errors.ModelNotFoundError` for a
    run that has no events file.

        >>> import os, tempfile
        >>> from gpt2_simple_plus.events import EventsWriter
        >>> runs = tempfile.mkdtemp()
        >>> writer = EventsWriter(os.path.join(runs, "run1"))
        >>> for step in range(1, 11):
        ...     writer.scalars(step, {"loss": 5.0 - step / 5})
        >>> writer.scalars(10, {"val_loss": 3.5})
        >>> writer.close()
        >>> import matplotlib
        >>> matplotlib.use("Agg")                        # no window (a notebook shows it inline)
        >>> ax = plot_loss(checkpoint_dir=runs)
        >>> [line.get_label() for line in ax.get_lines()]
        ['loss', 'running average', 'validation loss']
    """
    folder = os.path.join(checkpoint_dir, run_name)
    scalars = read_scalars(folder) if os.path.isdir(folder) else {}
    if not scalars.get("loss"):
        raise ModelNotFoundError(
            f"No training loss logged in {folder!r} (no TensorBoard events file with 'loss'). "
            f"Train the run with gpt2.finetune(..., run_name={run_name!r}) first, or pass the "
            f"checkpoint_dir it was trained in.")
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    steps, losses = zip(*scalars["loss"])
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="loss")
    ax.plot(steps, running_average(losses), color="tab:blue", label="running average")
    if scalars.get("val_loss"):
        val_steps, val_losses = zip(*scalars["val_loss"])
        ax.plot(val_steps, val_losses, "o-", color="tab:orange", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy, nats per token)")
    ax.set_title(f"{run_name}: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax

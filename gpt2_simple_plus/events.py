"""TensorBoard events files: a run's numbers where gpt-2-simple put them, and read back.

gpt-2-simple's ``finetune`` writes the training loss of every step into an
events file in the run folder, ``checkpoint/<run_name>/``, under the tag
``loss`` at the step's number (1, 2, ... and on from the run's counter when it
resumes). :class:`EventsWriter` writes the same, encoded the same way (a
``Summary`` value with ``simple_value``, what ``tf.compat.v1.summary.scalar``
makes), and more: ``learning_rate`` at every step, ``tokens_per_second`` at
every printed line, ``val_loss``/``val_perplexity`` at each validation and the
classifier's ``val_acc``. Each process writes a new file beside the earlier
ones, so a resumed run's curve carries on where it stopped. In a notebook::

    %load_ext tensorboard
    %tensorboard --logdir checkpoint

:func:`read_scalars` reads them back (for :func:`~gpt2_simple_plus.plots.plot_loss`
and the tests) with TensorFlow alone; TensorBoard itself is not needed to write
or read.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> writer = EventsWriter(folder)
    >>> writer.scalars(1, {"loss": 3.5, "learning_rate": 1e-4})
    >>> writer.scalars(2, {"loss": 3.25})
    >>> writer.close()
    >>> read_scalars(folder)["loss"]
    [(1, 3.5), (2, 3.25)]
"""

import glob
import os

import tensorflow as tf
from tensorflow.core.framework.summary_pb2 import Summary

EVENTS_PATTERN = "events.out.tfevents.*"


class EventsWriter:
    """Scalars into a new events file in ``log_dir``, opened on the first write.

    ``scalars(step, {tag: value})`` writes them and flushes the file (TensorFlow's
    writer flushes when its ``as_default()`` block ends), so TensorBoard sees each
    step as soon as it is done and a killed process loses nothing written;
    about a millisecond per call. ``close()`` closes the file (the run calls it
    at the end of training, also after Ctrl-C or an error).
    """

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writer = None

    def scalars(self, step, metrics):
        """Write each ``{tag: value}`` at ``step`` (an int), as gpt-2-simple encodes a scalar."""
        if not metrics:
            return
        if self._writer is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = tf.summary.create_file_writer(self.log_dir)
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))
                                 for tag, value in metrics.items()])
        with self._writer.as_default():
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=int(step))

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def events_files(folder):
    """The events files in ``folder``, oldest first."""
    return sorted(glob.glob(os.path.join(folder, EVENTS_PATTERN)),
                  key=lambda path: (_first_wall_time(path), path))


def _first_wall_time(path):
    name = os.path.basename(path)[len("events.out.tfevents."):]
    try:
        return float(name.split(".")[0])
    except ValueError:
        return 0.0


def _events(path):
    """The events of one file; a file cut short (a killed process) ends where it is cut."""
    try:
        yield from tf.compat.v1.train.summary_iterator(path)
    except tf.errors.DataLossError:
        return


def read_scalars(folder):
    """``{tag: [(step, value), ...]}`` from the events files in ``folder``, by step.

    Reads gpt-2-simple's files and ours (and ``tf.summary.scalar``'s tensors).
    Where two files hold the same step (a run resumed from an earlier
    checkpoint repeats steps), the newer file wins, as in TensorBoard.
    """
    found = {}
    for path in events_files(folder):
        for event in _events(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    continue
                found.setdefault(value.tag, {})[int(event.step)] = float(number)
    return {tag: sorted(steps.items()) for tag, steps in found.items()}

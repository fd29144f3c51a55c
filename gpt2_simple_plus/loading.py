"""A model from a folder: the weights of its checkpoint, whichever kind of save it
is, and the :class:`~gpt2_simple_plus.model.GPT2` built from them.

Most checkpoints hold every weight (:mod:`~gpt2_simple_plus.checkpoints` reads
them). A LoRA run saved with ``lora_save="adapters"`` holds only its adapters
and names its base model: it reads as that base merged with the adapters
(:mod:`~gpt2_simple_plus.lora`). This module sits above both, so the file format
needs to know nothing of LoRA.

    >>> from gpt2_simple_plus._examples import example_model_dir
    >>> folder = example_model_dir()                     # normally models/124M
    >>> model = load_model(folder)
    >>> model.hparams.n_layer
    2
    >>> weights = read_checkpoint(folder)                # read one tensor at a time
    >>> weights["model/wte"].shape == model.wte.shape
    True
"""

from .checkpoints import CheckpointWeights, find_checkpoint, is_adapters
from .eager import ensure_eager
from .hparams import load_hparams
from .lora import merged_checkpoint
from .model import GPT2


def read_checkpoint(folder, checkpoint="latest", hparams=None):
    """Weights of a checkpoint as a lazy ``{name: array}`` mapping, validated against ``hparams``
    (by default the ``hparams.json`` in ``folder``). A LoRA run saved with
    ``lora_save="adapters"`` reads as its base model merged with the adapters."""
    hparams = hparams or load_hparams(folder)
    prefix = find_checkpoint(folder, checkpoint)
    if is_adapters(prefix):
        return merged_checkpoint(prefix, hparams)
    return CheckpointWeights(prefix, hparams)


def load_model(folder, checkpoint="latest", *, compute_dtype="float32"):
    """A :class:`~gpt2_simple_plus.model.GPT2` built from ``folder``'s ``hparams.json`` and checkpoint.

    Works for OpenAI's ``models/124M`` and for gpt-2-simple's ``checkpoint/run1``.
    """
    ensure_eager()
    hparams = load_hparams(folder)
    return GPT2(hparams, read_checkpoint(folder, checkpoint, hparams), compute_dtype=compute_dtype)

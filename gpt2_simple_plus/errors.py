"""One exception class per kind of failure, all under :class:`Gpt2Error`.

Catch ``Gpt2Error`` to handle anything this package raises on purpose::

    >>> import gpt2_simple_plus as gpt2
    >>> try:
    ...     gpt2.get_encoder("no/such/folder")
    ... except gpt2.Gpt2Error as err:
    ...     print(type(err).__name__)
    ModelNotFoundError

Every message says what was wrong and what to do next. Each class also
derives from the built-in exception a user might already be catching
(``FileNotFoundError``, ``ValueError``, ...), so old ``except`` clauses keep
working.
"""


class Gpt2Error(Exception):
    """Base class of every error raised on purpose by gpt2_simple_plus."""


class ModelNotFoundError(Gpt2Error, FileNotFoundError):
    """A model folder, run folder or one of their files is missing."""


class CheckpointError(Gpt2Error, ValueError):
    """A checkpoint exists but cannot be used: truncated, corrupt or of the wrong shape."""


class HParamsError(Gpt2Error, ValueError):
    """``hparams.json`` is missing a field, or a model size name is unknown."""


class EncoderError(Gpt2Error, ValueError):
    """``encoder.json`` / ``vocab.bpe`` are unreadable, or a token id is out of range."""


class DownloadError(Gpt2Error, OSError):
    """A model file could not be fetched or did not verify."""


class DatasetError(Gpt2Error, ValueError):
    """A training dataset is missing, empty or unreadable."""


class GenerationError(Gpt2Error, ValueError):
    """Arguments to :func:`generate` that cannot work together."""


class TrainingError(Gpt2Error, ValueError):
    """Arguments to :func:`finetune` that cannot work together."""


class OutOfMemoryError(Gpt2Error, MemoryError):
    """A fine-tuning that does not fit, or did not fit, in the device's memory; the
    message names settings that would."""


class ColabError(Gpt2Error, RuntimeError):
    """A Google Drive helper was used outside Colab or before mounting the Drive."""


class WorkerError(TrainingError):
    """A worker of a multi-worker run stopped or stopped answering, so training cannot go on."""


class GraphModeError(Gpt2Error, RuntimeError):
    """TensorFlow runs in graph mode (e.g. after ``import gpt_2_simple``) and cannot be
    switched back to eager execution in this process."""


class MissingDependencyError(Gpt2Error, ImportError):
    """An optional package a function needs is not installed (e.g. matplotlib for plots)."""

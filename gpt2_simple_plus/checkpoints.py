"""Read and write GPT-2 checkpoints in the name-based format of OpenAI and gpt-2-simple.

A checkpoint is a TensorFlow tensor bundle (``<prefix>.index`` +
``<prefix>.data-00000-of-00001``) whose keys are the variable names
(``model/wte``, ``model/h0/attn/c_attn/w`` ...), a ``checkpoint`` state file
naming the latest prefix, and in a run folder a ``counter`` file holding the
step. OpenAI's release uses the prefix ``model.ckpt``; gpt-2-simple's runs use
``model-<step>``. This module reads both through TensorFlow's checkpoint
reader (no graph) and writes bundles that gpt-2-simple's ``load_gpt2`` loads.

    >>> import tempfile
    >>> from gpt2_simple_plus.hparams import hparams_for
    >>> from gpt2_simple_plus.model import GPT2
    >>> run = tempfile.mkdtemp()
    >>> model = GPT2(hparams_for("tiny", n_vocab=100), seed=0)
    >>> save_checkpoint(run, model.numpy_weights(), step=5, hparams=model.hparams)
    'model-5'
    >>> latest_checkpoint(run).endswith("model-5")
    True
    >>> read_counter(run)
    5

Saving is atomic: the bundle is written in a temporary folder, moved into
place, and only then does the ``checkpoint`` state file point at it. An
interrupted save leaves the previous checkpoint in charge.
"""

import glob
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from .eager import ensure_eager
from .errors import CheckpointError, ModelNotFoundError
from .files import write_text_atomic
from .hparams import save_hparams
from .model import variable_shapes

STATE_FILE = "checkpoint"
COUNTER_FILE = "counter"
DATA_SUFFIX = ".data-00000-of-00001"
MODEL_FILES = ("hparams.json", "encoder.json", "vocab.bpe")
# Optimizer slots and training state live in a bundle of their own beside the
# model bundle, so the model files stay exactly what gpt-2-simple writes.
TRAIN_STATE_PREFIX = "train_state"
# A LoRA run's adapters (lora.py) live in lora-<step> beside model-<step>.
LORA_PREFIX = "lora"
# A merged LoRA checkpoint is written a group of tensors at a time, each group about this
# big (TensorFlow's sharded save), so it never holds every merged weight in memory.
SHARD_BYTES = 256 << 20


def _read_state_file(folder):
    """The prefixes named in ``folder/checkpoint``, latest last (``[]`` if none)."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        return [], None
    latest, every = None, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r'\s*(model_checkpoint_path|all_model_checkpoint_paths):\s*"(.*)"', line)
            if m and m.group(1) == "model_checkpoint_path":
                latest = m.group(2)
            elif m:
                every.append(m.group(2))
    return every, latest


def _absolute(folder, prefix):
    return prefix if os.path.isabs(prefix) else os.path.join(folder, prefix)


def _bundle_exists(prefix):
    return os.path.isfile(prefix + ".index")


def data_files(prefix):
    """The data files of the bundle at ``prefix`` (one, or ``.data-0000i-of-0000n`` for a
    sharded save), or ``[]`` when any of them is missing."""
    if os.path.isfile(prefix + DATA_SUFFIX):
        return [prefix + DATA_SUFFIX]
    counts = {m.group(1) for m in (re.search(r"\.data-\d{5}-of-(\d{5})$", f)
                                   for f in glob.glob(glob.escape(prefix) + ".data-*")) if m}
    if len(counts) != 1:
        return []
    n = int(counts.pop())
    files = [f"{prefix}.data-{i:05d}-of-{n:05d}" for i in range(n)]
    return files if all(os.path.isfile(f) for f in files) else []


def is_adapters(prefix):
    """Whether ``prefix`` names a LoRA adapters bundle (``lora-<step>``), not a model."""
    return os.path.basename(prefix or "").startswith(LORA_PREFIX + "-")


def list_checkpoints(folder, *, adapters=False):
    """Prefixes of the complete model checkpoints in ``folder``, oldest first by step
    (with ``adapters=True``, the LoRA adapter bundles ``lora-<step>`` instead)."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        if name.endswith(".index") and not name.startswith(TRAIN_STATE_PREFIX) and \
                is_adapters(name) == adapters:
            prefix = os.path.join(folder, name[: -len(".index")])
            if data_files(prefix):
                found.append(prefix)

    def step(prefix):
        m = re.search(r"-(\d+)$", prefix)
        return int(m.group(1)) if m else -1

    return sorted(found, key=step)


def latest_checkpoint(folder):
    """The prefix of the newest checkpoint in ``folder``, or ``None``.

    Trusts the ``checkpoint`` state file when what it names exists; otherwise
    falls back to the highest ``model-<step>`` bundle on disk.
    """
    _, latest = _read_state_file(folder)
    if latest and _bundle_exists(_absolute(folder, latest)):
        return _absolute(folder, latest)
    found = list_checkpoints(folder) or list_checkpoints(folder, adapters=True)
    return found[-1] if found else None


def step_of(prefix):
    """The step number in ``model-<step>``, or 0 for OpenAI's ``model.ckpt``."""
    m = re.search(r"-(\d+)$", prefix or "")
    return int(m.group(1)) if m else 0


def find_checkpoint(folder, checkpoint="latest"):
    """Resolve ``checkpoint`` (``"latest"``, ``"model-1000"`` or a path) inside ``folder``.

    Raises :class:`ModelNotFoundError` saying what is there instead.
    """
    if checkpoint in (None, "latest"):
        prefix = latest_checkpoint(folder)
        if prefix is None:
            if not os.path.isdir(folder):
                raise ModelNotFoundError(f"The folder {folder!r} does not exist.")
            raise ModelNotFoundError(
                f"No checkpoint in {folder!r} (no *.index file with its .data file). "
                f"Download a model with gpt2.download_gpt2(model_name='124M') or train one "
                f"with gpt2.finetune(...)."
            )
        return prefix
    for suffix in (".index", DATA_SUFFIX):
        if checkpoint.endswith(suffix):
            checkpoint = checkpoint[: -len(suffix)]
    # A name inside the folder first; then a path relative to the working directory.
    prefix = os.path.join(folder, checkpoint)  # keeps an absolute checkpoint as it is
    if not _bundle_exists(prefix) and _bundle_exists(checkpoint):
        prefix = checkpoint
    if not _bundle_exists(prefix):
        there = [os.path.basename(p) for p in list_checkpoints(folder)]
        raise ModelNotFoundError(
            f"No checkpoint {checkpoint!r} in {folder!r}; checkpoints there: "
            f"{', '.join(there) if there else 'none'}."
        )
    return prefix


def _reader(prefix):
    if not data_files(prefix):
        raise CheckpointError(
            f"{prefix}{DATA_SUFFIX} is missing, so the checkpoint {prefix} is incomplete. "
            f"Download the model again or restore an earlier checkpoint."
        )
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as err:
        raise CheckpointError(
            f"Cannot read the checkpoint {prefix}: {_first_line(err)}. The files are truncated "
            f"or corrupt: delete them and download or train again."
        ) from None


def _first_line(err):
    text = str(getattr(err, "message", err)).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _get_tensor(reader, prefix, name):
    try:
        return reader.get_tensor(name)
    # A data file cut short raises IndexError ("Read less bytes than requested").
    except (tf.errors.OpError, ValueError, IndexError) as err:
        raise CheckpointError(
            f"Cannot read {name!r} from {prefix}{DATA_SUFFIX}: {_first_line(err)}. The data "
            f"file is truncated or corrupt: delete the checkpoint and download or train again."
        ) from None


def checkpoint_shapes(prefix):
    """``{name: shape}`` of every tensor in the bundle ``prefix``."""
    return {n: tuple(s) for n, s in _reader(prefix).get_variable_to_shape_map().items()}


class CheckpointWeights:
    """A read-only ``{name: np.ndarray}`` view of a checkpoint that reads one
    tensor at a time, so loading a model never holds two copies of it."""

    def __init__(self, prefix, hparams):
        self.prefix = prefix
        self.reader = _reader(prefix)
        self.expected = variable_shapes(hparams)
        stored = self.reader.get_variable_to_shape_map()
        missing = [n for n in self.expected if n not in stored]
        if missing:
            raise CheckpointError(
                f"The checkpoint {prefix} lacks {len(missing)} variable(s) GPT-2 needs, "
                f"first {missing[0]!r}. It was not written for GPT-2, or is incomplete."
            )
        for name, shape in self.expected.items():
            if tuple(stored[name]) != tuple(shape):
                raise CheckpointError(
                    f"Variable {name!r} in {prefix} has shape {tuple(stored[name])}, but "
                    f"hparams.json asks for {tuple(shape)}. The hparams.json beside it belongs to "
                    f"another model size (e.g. a 355M checkpoint with 124M hyper-parameters): "
                    f"copy the hparams.json of the model this checkpoint came from."
                )

    def __getitem__(self, name):
        return np.asarray(_get_tensor(self.reader, self.prefix, name), np.float32)

    def tensor(self, name):
        """The value of ``name`` as a float32 ``tf.Tensor``, read straight into
        TensorFlow's memory: no NumPy copy to convert (a save of 1558M's merged
        weights would hold its 321 MB embedding twice)."""
        dtype = self.reader.get_variable_to_dtype_map()[name]
        try:
            value, = tf.raw_ops.RestoreV2(prefix=self.prefix, tensor_names=[name],
                                          shape_and_slices=[""], dtypes=[dtype])
        except (tf.errors.OpError, ValueError) as err:
            raise CheckpointError(
                f"Cannot read {name!r} from {self.prefix}{DATA_SUFFIX}: {_first_line(err)}. The "
                f"data file is truncated or corrupt: delete the checkpoint and download or "
                f"train again.") from None
        return tf.cast(value, tf.float32)

    def keys(self):
        return self.expected.keys()

    def items(self):
        return ((n, self[n]) for n in self.expected)


def write_bundle(prefix, arrays, shard_bytes=None):
    """Write ``{name: array}`` as a TensorFlow tensor bundle at ``prefix`` (name-based keys).

    With ``shard_bytes``, ``arrays`` may compute each value when it is read: they are
    taken one at a time and written in groups of about ``shard_bytes`` (TensorFlow's
    sharded save: a bundle per group, merged into ``prefix`` with its data files
    ``.data-0000i-of-0000n``, which TensorFlow, gpt-2-simple and this package read).
    """
    ensure_eager()
    names = list(arrays.keys())
    if shard_bytes is None:
        tensors = [tf.convert_to_tensor(arrays[n]) for n in names]
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=tensors)
        return
    parts, group, size = [], {}, 0
    for i, name in enumerate(names):
        group[name] = tf.convert_to_tensor(arrays[name])  # the array itself is dropped now
        size += group[name].shape.num_elements() * group[name].dtype.size
        if size >= shard_bytes or i == len(names) - 1:
            parts.append(f"{prefix}_temp/part-{len(parts):05d}")
            write_bundle(parts[-1], group)
            group, size = {}, 0
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=prefix,
                                  delete_old_dirs=True)
    shutil.rmtree(prefix + "_temp", ignore_errors=True)


def read_bundle(prefix):
    """Every tensor of the bundle at ``prefix`` as ``{name: np.ndarray}``."""
    reader = _reader(prefix)
    return {n: _get_tensor(reader, prefix, n) for n in reader.get_variable_to_shape_map()}


def _write_state_file(folder, prefixes):
    names = [os.path.basename(p) for p in prefixes]
    lines = [f'model_checkpoint_path: "{names[-1]}"'] + [
        f'all_model_checkpoint_paths: "{n}"' for n in names]
    write_text_atomic(os.path.join(folder, STATE_FILE), "\n".join(lines) + "\n")


def _remove_bundle(prefix):
    # the index first: without it the rest is not a checkpoint any more
    for path in [prefix + ".index"] + glob.glob(glob.escape(prefix) + ".data-*") + \
            [prefix + ".meta"] + glob.glob(glob.escape(prefix) + ".int8*.tflite") + \
            glob.glob(glob.escape(prefix) + ".float32*.tflite"):  # + lite.py's steps
        if os.path.exists(path):
            os.remove(path)


def save_checkpoint(run_dir, weights, step, *, hparams=None, max_checkpoints=1, train_state=None,
                    model_files_from=None, adapters=None, shard_bytes=None):
    """Save ``weights`` (``{name: array}``) as ``run_dir/model-<step>``, gpt-2-simple style.

    Writes the bundle atomically, then the ``checkpoint`` state file and the
    ``counter``; keeps the newest ``max_checkpoints`` (``None`` keeps all).
    ``train_state`` (``{name: array}``, e.g. optimizer slots) goes to
    ``train_state-<step>`` beside it, LoRA's ``adapters`` to ``lora-<step>``;
    ``weights=None`` with ``adapters`` saves the adapters alone, and the state
    file then names ``lora-<step>``. ``shard_bytes`` writes the weights in
    pieces (see :func:`write_bundle`). ``hparams`` is written as
    ``hparams.json``; ``model_files_from`` is a folder whose ``encoder.json``
    and ``vocab.bpe`` are copied in. Returns the prefix's base name.
    """
    os.makedirs(run_dir, exist_ok=True)
    name = f"model-{int(step)}" if weights is not None else f"{LORA_PREFIX}-{int(step)}"
    staging = tempfile.mkdtemp(dir=run_dir, prefix=".saving-")
    try:
        bundles = []
        if weights is not None:
            if shard_bytes:
                write_bundle(os.path.join(staging, name), weights, shard_bytes)
            else:
                write_bundle(os.path.join(staging, name), weights)
            bundles.append(name)
        for prefix, arrays in ((TRAIN_STATE_PREFIX, train_state), (LORA_PREFIX, adapters)):
            if arrays:
                write_bundle(os.path.join(staging, f"{prefix}-{int(step)}"), arrays)
                bundles.append(f"{prefix}-{int(step)}")
        # Data files first, index files last (the model's the very last): an .index marks
        # a bundle as present.
        for bundle in bundles:
            for path in data_files(os.path.join(staging, bundle)):
                os.replace(path, os.path.join(run_dir, os.path.basename(path)))
        for bundle in reversed(bundles):
            os.replace(os.path.join(staging, bundle + ".index"),
                       os.path.join(run_dir, bundle + ".index"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    # The model's description goes in only once its weights are in place.
    if hparams is not None:
        save_hparams(run_dir, hparams)
    if model_files_from:
        copy_model_files(model_files_from, run_dir)
    previous, _ = _read_state_file(run_dir)
    kept = [_absolute(run_dir, p) for p in previous if _bundle_exists(_absolute(run_dir, p))]
    prefix = os.path.join(run_dir, name)
    kept = [p for p in kept if os.path.basename(p) != name] + [prefix]
    dropped = []
    if max_checkpoints is not None and max_checkpoints > 0 and len(kept) > max_checkpoints:
        dropped, kept = kept[:-max_checkpoints], kept[-max_checkpoints:]
    _write_state_file(run_dir, kept)
    write_counter(run_dir, step)
    for old in dropped:
        _remove_bundle(old)
        for prefix in (TRAIN_STATE_PREFIX, LORA_PREFIX):
            _remove_bundle(os.path.join(run_dir, f"{prefix}-{step_of(old)}"))
    return name


def read_adapters(run_dir, step):
    """The ``lora-<step>`` bundle saved beside ``model-<step>``, or ``None``."""
    prefix = os.path.join(run_dir, f"{LORA_PREFIX}-{int(step)}")
    return read_bundle(prefix) if _bundle_exists(prefix) else None


def read_train_state(run_dir, step):
    """The ``train_state-<step>`` bundle saved beside ``model-<step>``, or ``None``."""
    prefix = os.path.join(run_dir, f"{TRAIN_STATE_PREFIX}-{int(step)}")
    return read_bundle(prefix) if _bundle_exists(prefix) else None


def read_counter(run_dir):
    """The step in ``run_dir/counter`` (gpt-2-simple's resume point), or 0."""
    path = os.path.join(run_dir, COUNTER_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0
    except ValueError:
        raise CheckpointError(
            f"{path} should hold a step number. Delete it to restart the count."
        ) from None


def write_counter(run_dir, step):
    write_text_atomic(os.path.join(run_dir, COUNTER_FILE), f"{int(step)}\n")


def copy_model_files(src, dst):
    """Copy ``hparams.json``, ``encoder.json`` and ``vocab.bpe`` from ``src`` to ``dst``."""
    os.makedirs(dst, exist_ok=True)
    for name in MODEL_FILES:
        path = os.path.join(src, name)
        if not os.path.isfile(path):
            raise ModelNotFoundError(
                f"{path} is missing. Download the model first: "
                f"gpt2.download_gpt2(model_name={os.path.basename(os.path.normpath(src))!r})."
            )
        if os.path.abspath(path) != os.path.abspath(os.path.join(dst, name)):
            shutil.copyfile(path, os.path.join(dst, name))


def save_pretrained_layout(model_dir, weights, hparams, *, vocab_from=None):
    """Write ``weights`` in OpenAI's release layout: ``model.ckpt.*``, ``checkpoint``,
    ``hparams.json`` (and ``encoder.json`` / ``vocab.bpe`` from ``vocab_from``).

    Used to build test models and to convert Hugging Face checkpoints. No
    ``model.ckpt.meta`` is written: nothing here or in gpt-2-simple reads it.
    """
    os.makedirs(model_dir, exist_ok=True)
    if vocab_from:
        for name in ("encoder.json", "vocab.bpe"):
            if os.path.abspath(vocab_from) != os.path.abspath(model_dir):
                shutil.copyfile(os.path.join(vocab_from, name), os.path.join(model_dir, name))
    staging = tempfile.mkdtemp(dir=model_dir, prefix=".saving-")
    try:
        write_bundle(os.path.join(staging, "model.ckpt"), weights)
        os.replace(os.path.join(staging, "model.ckpt" + DATA_SUFFIX),
                   os.path.join(model_dir, "model.ckpt" + DATA_SUFFIX))
        os.replace(os.path.join(staging, "model.ckpt.index"),
                   os.path.join(model_dir, "model.ckpt.index"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    save_hparams(model_dir, hparams)
    _write_state_file(model_dir, [os.path.join(model_dir, "model.ckpt")])

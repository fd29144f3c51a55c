"""Fit before you fail: how much memory a fine-tuning needs, and what would fit instead.

:func:`estimate` adds up what a training step holds at its peak: the weights,
their gradients, the optimizer's state, the activations kept for the backward
pass (all of them, or with memory-saving gradients one block's plus each
block's input), the ``[tokens, n_vocab]`` buffers of the language-model head,
and what TensorFlow itself takes. :func:`check_fit` compares it with the
device's memory (a GPU's, else the RAM available) and, when it will not fit,
raises :class:`~gpt2_simple_plus.errors.OutOfMemoryError` with one message
naming settings that would::

    >>> from gpt2_simple_plus.hparams import hparams_for
    >>> big = Settings(hparams_for("1558M"), model_name="1558M")
    >>> print(fit_message(big, available=15 * GB, where="this GPU has"))
    ... # doctest: +NORMALIZE_WHITESPACE
    1558M with Adam needs about 32 GB; this GPU has 15 GB. These settings would fit:
    lora_rank=16 with use_memory_saving_gradients=True and lora_base_dtype='bfloat16'
    about 6.0 GB; optimizer='adafactor' with use_memory_saving_gradients=True
    about 13 GB.

The figures were calibrated against the peak resident memory of real training
steps on a CPU (``tests/test_memory.py`` checks 124M-shaped and smaller models
within 25%, and the bfloat16 LoRA estimates of 355M to 1558M against their measured
peaks; ``benchmarks/memory.py`` measures the big ones). "GB" here is 2**30 bytes, as
``free -g`` and ``nvidia-smi`` count.
"""

import ctypes
import dataclasses
import gc
import os
import shutil
import subprocess

from . import checkpoints
from .errors import OutOfMemoryError
from .model import variable_shapes

GB = 2 ** 30
MB = 2 ** 20

# TensorFlow's runtime beyond the import (kernels, compiled XLA functions, the
# tokenizer, the data): measured ~250-300 MB above a process that imported TensorFlow.
RUNTIME = 250 * MB
# Bytes per [tokens, n_embd] float32 unit kept by one block for its backward pass
# (LayerNorms, q/k/v and their heads, the MLP's 4x-wide input and GELU): 17 units
# measured on 124M at 1024 tokens; plus one float32 copy of the attention weights.
BLOCK_UNITS = 17
ATTENTION_COPIES = 1
# The head: the gradient of the logits ([tokens, n_vocab] float32) is kept from the
# forward pass and the logits themselves are alive beside it for a moment.
HEAD_COPIES = 1
# The tied embedding's gradient arrives twice (head and lookup) and is summed.
EMBEDDING_GRAD_COPIES = 2
# A LoRA run's frozen base, beyond its own bytes: about this many blocks' weights in
# float32 (n_layer is not a factor). Measured (peak RSS, bfloat16 base, memory-saving
# gradients, 1024 tokens) on 355M, 774M and 1558M: 12.6 to 12.8 blocks, 1.5 GB of 1558M's
# 6.6 GB. TensorFlow's CPU allocator (oneDNN's) keeps what it frees for reuse and never
# hands it back, so its pool ends at its busiest moment: loading the base leaves ~0.45 GB
# there (1558M; each float32 tensor read before its cast), and the backward pass holds
# weight-sized buffers beside the recomputed block (the same at 512 tokens as at 1024,
# and with a float32 base).
FROZEN_BASE_BLOCKS = 13
ACCUMULATING_GRAD_COPIES = 3  # gradient-sized buffers alive when accumulate_gradients > 1
# Projections a LoRA adapter goes beside, by default (attention and MLP).
LORA_TARGETS = ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")
ATTN_BLOCK = 256  # the query block of model.causal_attn
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The fine-tuning settings that decide its memory, named as ``finetune``'s arguments."""

    hparams: object
    model_name: str = None
    batch_size: int = 1
    accumulate_gradients: int = 1
    optimizer: str = "adam"
    use_memory_saving_gradients: bool = False
    only_train_transformer_layers: bool = False
    precision: str = "float32"
    lora_rank: int = None
    lora_base_dtype: str = "float32"
    lora_targets: tuple = LORA_TARGETS
    lora_save: str = "merged"
    window: int = None  # tokens per window; the model's n_ctx by default
    dataset_bytes: int = 0  # size of the training text, if known

    @property
    def label(self):
        hp = self.hparams
        return self.model_name or f"A {hp.n_layer}-layer, {hp.n_embd}-wide GPT-2"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes needed, by part (``parts``) and in all (``total``)."""

    parts: dict

    @property
    def total(self):
        return int(sum(self.parts.values()))

    def __str__(self):
        return f"about {gigabytes(self.total)}"


def gigabytes(n):
    """``n`` bytes for a person: two significant figures, in GB (2**30 bytes).

        >>> gigabytes(27.4 * GB), gigabytes(6.96 * GB), gigabytes(0.3 * GB)
        ('27 GB', '7.0 GB', '0.30 GB')
    """
    g = n / GB
    if g >= 10:
        return f"{g:.0f} GB"
    return f"{g:.1f} GB" if g >= 1 else f"{g:.2f} GB"


def estimate(settings):
    """What fine-tuning with ``settings`` holds at its peak, as an :class:`Estimate`.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> est = estimate(Settings(hparams_for("774M"), optimizer="adafactor",
        ...                         use_memory_saving_gradients=True))
        >>> str(est), sorted(est.parts)  # doctest: +NORMALIZE_WHITESPACE
        ('about 6.8 GB', ['activations', 'data', 'gradients', 'head', 'optimizer',
                          'runtime', 'weights'])
    """
    s, hp = settings, settings.hparams
    shapes = variable_shapes(hp)
    sizes = {n: _count(shape) for n, shape in shapes.items()}
    params = sum(sizes.values())
    tokens = s.batch_size * (s.window or hp.n_ctx)
    half = s.precision in ("bfloat16", "float16")

    if s.lora_rank:
        adapted = [n for n in shapes if n.endswith("/w") and any(t in n for t in s.lora_targets)]
        trained_shapes = {}
        for n in adapted:  # A is [nx, r], B is [r, nf]
            trained_shapes[n + "/lora_a"] = (shapes[n][-2], s.lora_rank)
            trained_shapes[n + "/lora_b"] = (s.lora_rank, shapes[n][-1])
        trained = {n: _count(shape) for n, shape in trained_shapes.items()}
        base_bytes = DTYPE_BYTES.get(str(s.lora_base_dtype), 4)
        weights = params * base_bytes + 4 * sum(trained.values())
        embedding_trained = False
    else:
        trained_shapes = {n: shape for n, shape in shapes.items()
                          if not s.only_train_transformer_layers or "/h" in n}
        trained = {n: sizes[n] for n in trained_shapes}
        weights = 4 * params
        base_bytes = 4
        embedding_trained = "model/wte" in trained
    n_trained = sum(trained.values())

    # Accumulating, the loop holds the running sum, the micro-batch's gradients and their
    # sum at once (124M, accumulate_gradients=5: 5.4 GB measured, 4.4 with 1).
    gradients = 4 * n_trained * (ACCUMULATING_GRAD_COPIES if s.accumulate_gradients > 1 else 1)
    if embedding_trained:
        gradients += 4 * (EMBEDDING_GRAD_COPIES - 1) * sizes["model/wte"]
    optimizer = _optimizer_bytes(s.optimizer, trained_shapes)

    # Activations kept for the backward pass, per block.
    e, window = hp.n_embd, s.window or hp.n_ctx
    unit = s.batch_size * window * e * 4
    attention = s.batch_size * hp.n_head * _attention_elements(window) * 4 * ATTENTION_COPIES
    if half:  # matmuls' inputs and outputs halve; LayerNorms and softmax stay float32
        block = 0.62 * BLOCK_UNITS * unit + 1.5 * attention
    else:
        block = BLOCK_UNITS * unit + attention
    layer_params = params - sizes["model/wte"] - sizes["model/wpe"]
    cast_copies = 0  # weights cast for the matmuls, kept for the backward pass
    compute_bytes = 2 if half else 4
    if base_bytes != compute_bytes or half:
        cast_copies = layer_params * compute_bytes
    if s.use_memory_saving_gradients:
        activations = hp.n_layer * unit * (0.5 if half else 1) + block
        cast_copies /= hp.n_layer
    else:
        activations = hp.n_layer * block
    activations += cast_copies
    head = HEAD_COPIES * tokens * hp.n_vocab * 4
    if s.lora_rank and base_bytes != compute_bytes:
        # The tied head casts the embedding to the compute dtype (a bfloat16 base, float32
        # matmuls) and keeps that copy for its backward pass: 307 MB for 1558M.
        head += sizes["model/wte"] * compute_bytes

    parts = {
        "weights": weights, "gradients": gradients, "optimizer": optimizer,
        "activations": activations, "head": head, "runtime": RUNTIME,
        "data": s.dataset_bytes,
    }
    if s.lora_rank:
        parts["frozen_base"] = FROZEN_BASE_BLOCKS * 4 * layer_params / hp.n_layer
    if s.lora_rank and s.lora_save == "merged":
        # After training, the merged save holds the base and one shard of float32 tensors
        # (the step's memory is handed back first): counted where it needs more than the
        # step, as a short window on a big model does.
        saving = weights + RUNTIME + s.dataset_bytes + largest_shard(
            [4 * sizes[n] for n in shapes], checkpoints.SHARD_BYTES)
        parts["save"] = max(0, saving - sum(parts.values()))
    return Estimate(parts)


def largest_shard(sizes, shard_bytes):
    """The most bytes :func:`~gpt2_simple_plus.checkpoints.write_bundle` holds at once
    when it writes tensors of ``sizes`` bytes, in order, in shards of ``shard_bytes``:
    its biggest group (a group ends with the tensor that takes it to ``shard_bytes``).

        >>> largest_shard([5, 3, 4, 9, 1], 8)
        13
    """
    largest = group = 0
    for n in sizes:
        group += n
        if group >= shard_bytes:
            largest, group = max(largest, group), 0
    return max(largest, group)



def estimate_memory(model_name="124M", **settings):
    """How much memory ``finetune(model_name=..., **settings)`` needs, before trying it:
    an :class:`Estimate` whose ``str`` reads "about N GB" and whose ``parts`` say where it
    goes. ``settings`` are ``finetune``'s (``batch_size``, ``optimizer``,
    ``use_memory_saving_gradients``, ``only_train_transformer_layers``, ``precision``,
    ``accumulate_gradients``, ``lora_rank``, ``lora_base_dtype``); ``model_name`` is a
    size (``"124M"`` ... ``"1558M"``) or an :class:`~gpt2_simple_plus.hparams.HParams`.

        >>> import gpt2_simple_plus as gpt2
        >>> print(gpt2.estimate_memory("774M"))
        about 17 GB
        >>> print(gpt2.estimate_memory("774M", optimizer="adafactor",
        ...                            use_memory_saving_gradients=True))
        about 6.8 GB
    """
    from .hparams import HParams, canonical_model_name, hparams_for

    if isinstance(model_name, HParams):
        return estimate(Settings(model_name, **settings))
    name = canonical_model_name(model_name)
    return estimate(Settings(hparams_for(name), model_name=name, **settings))

def _count(shape):
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _attention_elements(window, block=ATTN_BLOCK):
    """Attention weights per head computed by causal_attn: each query block against the
    keys up to its end."""
    return sum(min(block, window - i) * min(i + block, window) for i in range(0, window, block))


def _optimizer_bytes(name, shapes):
    """Adam's two slots; Adafactor's row and column (matrices) or full slot (vectors);
    nothing for SGD."""
    name = str(name).lower()
    sizes = [_count(shape) for shape in shapes.values()]
    if name in ("adam", "adamw"):
        return 8 * sum(sizes)
    if name == "adafactor":
        state = sum(_count(shape[:-1]) + _count(shape[-1:]) if len(shape) >= 2 else _count(shape)
                    for shape in shapes.values())
        return 4 * state
    return 0


def describe(settings):
    """The settings that differ from the defaults, in ``finetune``'s words.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> describe(Settings(hparams_for("355M"), model_name="355M", optimizer="adafactor",
        ...                   use_memory_saving_gradients=True))
        "optimizer='adafactor' with use_memory_saving_gradients=True"
    """
    s = settings
    first = [f"lora_rank={s.lora_rank}"] if s.lora_rank else []
    if str(s.optimizer).lower() != "adam":
        first.append(f"optimizer={str(s.optimizer).lower()!r}")
    rest = []
    if s.use_memory_saving_gradients:
        rest.append("use_memory_saving_gradients=True")
    if s.only_train_transformer_layers and not s.lora_rank:
        rest.append("only_train_transformer_layers=True")
    if s.lora_rank and s.lora_base_dtype != "float32":
        rest.append(f"lora_base_dtype={s.lora_base_dtype!r}")
    if s.precision != "float32":
        rest.append(f"precision={s.precision!r}")
    if s.batch_size != 1:
        rest.append(f"batch_size={s.batch_size}")
    if not first:
        first, rest = rest[:1], rest[1:]
    return " with ".join([first[0], " and ".join(rest)] if rest else first) if first else ""


def alternatives(settings, *, lora=True):
    """Settings that need less memory, least change first (each only if it differs)."""
    s = settings
    replace = dataclasses.replace
    out = [replace(s, use_memory_saving_gradients=True),
           replace(s, optimizer="adafactor"),
           replace(s, optimizer="adafactor", use_memory_saving_gradients=True),
           replace(s, optimizer="adafactor", use_memory_saving_gradients=True,
                   only_train_transformer_layers=True)]
    if lora and not s.lora_rank:
        out.append(replace(s, lora_rank=16, optimizer="adam", use_memory_saving_gradients=True,
                           lora_base_dtype="bfloat16", only_train_transformer_layers=False))
    if s.batch_size > 1:
        out = [replace(c, batch_size=1) for c in out] + out
    seen, unique = {describe(s)}, []
    for c in out:
        if describe(c) not in seen:
            seen.add(describe(c))
            unique.append(c)
    return unique


def fit_message(settings, *, available, where="this machine has", lora=True, needed=None):
    """One message: what ``settings`` need, what the device has, and up to two settings
    that fit (the fewest changes first, then the one leaving the most room)."""
    needed = estimate(settings).total if needed is None else needed
    what = settings.label
    opt = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "adafactor": "Adafactor"}.get(
        str(settings.optimizer).lower(), settings.optimizer)
    head = (f"{what} with {opt} needs about {gigabytes(needed)}; {where} "
            f"{gigabytes(available)}.")
    if settings.lora_rank:
        head = (f"{what} with lora_rank={settings.lora_rank} needs about {gigabytes(needed)}; "
                f"{where} {gigabytes(available)}.")
    fits = [(c, estimate(c).total) for c in alternatives(settings, lora=lora)]
    fits = [(c, n) for c, n in fits if n <= available]
    if not fits:
        return (head + " No setting of this model fits: try a smaller model "
                "(model_name='124M' or '355M'), or a machine with more memory.")
    chosen = fits[:1]
    rest = [f for f in fits[1:] if f[1] < chosen[0][1]]
    if rest:
        chosen.append(min(rest, key=lambda f: f[1]))
    chosen.sort(key=lambda f: f[1])
    said = [f"{describe(c)} about {gigabytes(n)}" if i else f"{describe(c)} needs about "
            f"{gigabytes(n)}" for i, (c, n) in enumerate(chosen)]
    said[0] = said[0].replace(" needs about ", " about ")
    return head + " These settings would fit: " + "; ".join(said) + "."


def release_free_memory():
    """Give the operating system back the memory Python and TensorFlow have freed but the
    C library's allocator still holds (glibc's ``malloc_trim``), after a ``gc.collect()``.

    After a training step the allocator keeps the pages of the step's freed activations
    (allocated by TensorFlow's threads, in their own arenas), and the next large
    allocations, a LoRA run's merged save, would come on top of them. Returns whether
    anything was handed back; ``False`` where the C library has no ``malloc_trim``.

        >>> release_free_memory() in (True, False)
        True
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl)
        return False
    return bool(trim(0))


def available_memory():
    """``(bytes, where)`` for the device training will run on: a GPU's total memory
    (``nvidia-smi``), else the RAM available now (``/proc/meminfo``'s ``MemAvailable``,
    or a container's limit if lower). ``(None, where)`` when it cannot be told.

        >>> n, where = available_memory()
        >>> where in ("this GPU has", "this machine has", "this machine's memory is unknown")
        True
    """
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        total = _gpu_total_bytes()
        return (total, "this GPU has") if total else (None, "this GPU's memory is unknown")
    return host_memory()


def host_memory():
    """``(bytes, where)`` of this machine's RAM available now, whatever device training
    runs on: ``/proc/meminfo``'s ``MemAvailable``, or a container's limit if lower.
    ``(None, where)`` when it cannot be told.

        >>> n, where = host_memory()
        >>> where in ("this machine has", "this machine's memory is unknown")
        True
    """
    avail = _meminfo_available()
    limit = _cgroup_room()
    if avail is None:
        return None, "this machine's memory is unknown"
    return (min(avail, limit) if limit else avail), "this machine has"


def _gpu_total_bytes():
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return min(int(line.strip()) for line in out.splitlines() if line.strip()) * MB
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _meminfo_available(path="/proc/meminfo"):
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_room(folder="/sys/fs/cgroup"):
    """A cgroup v2 memory limit minus what the group uses, if there is a limit."""
    try:
        with open(os.path.join(folder, "memory.max"), encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(folder, "memory.current"), encoding="ascii") as f:
            return int(limit) - int(f.read().strip())
    except (OSError, ValueError):
        return None


def check_fit(settings, *, available=None, where=None, lora=True):
    """The :class:`Estimate` for ``settings``; raises :class:`OutOfMemoryError` (also a
    ``MemoryError``) with :func:`fit_message` when it exceeds the device's memory.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> check_fit(Settings(hparams_for("774M"), model_name="774M"), available=8 * GB)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.OutOfMemoryError: 774M with Adam needs about 17 GB; ...
    """
    est = estimate(settings)
    if available is None:
        available, where = available_memory()
    if available is not None and est.total > available:
        raise OutOfMemoryError(fit_message(settings, available=available,
                                           where=where or "this machine has", lora=lora,
                                           needed=est.total))
    return est


def summary_line(est, available=None):
    """The line ``finetune`` prints before training.

        >>> summary_line(Estimate({"weights": 3 * GB}), 15 * GB)
        'Memory: about 3.0 GB needed, 15 GB available'
    """
    if available is None:
        return f"Memory: about {gigabytes(est.total)} needed"
    return f"Memory: about {gigabytes(est.total)} needed, {gigabytes(available)} available"


def out_of_memory(err, settings, *, available=None, where=None, lora=True):
    """An :class:`OutOfMemoryError` for an out-of-memory ``err`` raised during training
    (``tf.errors.ResourceExhaustedError`` or ``MemoryError``), in the same words as
    :func:`check_fit`; raise it ``from err``.

        >>> import tensorflow as tf
        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> boom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        >>> print(out_of_memory(boom, Settings(hparams_for("355M"), model_name="355M"),
        ...                     available=4 * GB))  # doctest: +ELLIPSIS
        Training ran out of memory (OOM when allocating tensor). 355M with Adam needs about ...
    """
    if available is None:
        available, where = available_memory()
    first = str(getattr(err, "message", "") or err).strip().splitlines()
    cause = first[0][:200] if first else type(err).__name__
    text = f"Training ran out of memory ({cause})."
    if available is not None:
        needed = max(estimate(settings).total, available + 1)
        text += " " + fit_message(settings, available=available, where=where or
                                  "this machine has", lora=lora, needed=needed)
    text += " The run's last checkpoint is untouched."
    return OutOfMemoryError(text)

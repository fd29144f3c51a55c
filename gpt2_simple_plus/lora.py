"""LoRA (Hu et al. 2021): fine-tune GPT-2 by training a small update beside frozen weights.

Each chosen projection ``W`` ``[nx, nf]`` of every block (``attn/c_attn``,
``attn/c_proj``, ``mlp/c_fc``, ``mlp/c_proj`` by default) gets two small
matrices, ``A`` ``[nx, r]`` and ``B`` ``[r, nf]``, and the layer computes

    y = x·W + b + (alpha/r)·(x·A)·B          (model.conv1d's ``lora`` argument)

``A`` starts random (PEFT's default, Kaiming-uniform: ``U(-1/sqrt(nx), 1/sqrt(nx))``)
and ``B`` at zero, so at step 0 the model is exactly the base model. Only ``A``
and ``B`` are trained: the base gets no gradients and no optimizer slots, and
may be held in bfloat16 or float16 to halve its memory. Merging (PEFT's
``merge_and_unload``) folds the update into the weight, ``W + (alpha/r)·A·B``,
which is an ordinary GPT-2 checkpoint that gpt-2-simple loads.

    >>> from gpt2_simple_plus.hparams import hparams_for
    >>> from gpt2_simple_plus.model import GPT2
    >>> hp = hparams_for("tiny", n_vocab=100)
    >>> model = GPT2(hp, seed=0, trainable=False)
    >>> model.lora = Adapters(hp, rank=4, seed=0)
    >>> model.lora.scale                     # alpha defaults to 2 * rank
    2.0
    >>> sorted(model.lora.variables_by_name())[:2]
    ['model/h0/attn/c_attn/lora_A', 'model/h0/attn/c_attn/lora_B']

A run saves ``lora-<step>`` (the adapters, their settings and which base they
were trained on) beside the merged ``model-<step>``; :func:`merged_checkpoint`
reads an adapters-only save (``lora_save="adapters"``) back as a merged model.
"""

import contextlib
import hashlib
import math
import os

import numpy as np
import tensorflow as tf

from . import checkpoints
from .checkpoints import CheckpointWeights, read_bundle
from .errors import CheckpointError, ModelNotFoundError, TrainingError
from .memory import release_free_memory
from .model import GPT2, variable_shapes

# The projections of a block that may get adapters, named as in the checkpoint.
LAYERS = ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")
BASE_DTYPES = {None: "float32", "float32": "float32", "fp32": "float32",
               "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
               "fp16": "float16"}
SAVE_MODES = ("merged", "adapters")


def target_layers(targets):
    """The projections ``targets`` names, in block order. A target is a layer name
    (``"attn/c_proj"``) or one of its parts: ``"attn"`` or ``"mlp"`` (both of that
    sublayer's projections), ``"c_attn"``, ``"c_fc"``, ``"c_proj"`` (both projections
    called so, as PEFT's ``target_modules`` matches them in Hugging Face's GPT-2).

        >>> target_layers("c_proj")
        ('attn/c_proj', 'mlp/c_proj')
        >>> target_layers(["attn", "mlp/c_fc"])
        ('attn/c_attn', 'attn/c_proj', 'mlp/c_fc')
    """
    if isinstance(targets, str):
        targets = [targets]
    try:
        targets = [str(t).strip("/") for t in targets]
    except TypeError:
        raise TrainingError(f"lora_targets must be a list of layer names such as "
                            f"{list(LAYERS)}, got {targets!r}.") from None
    chosen = set()
    for target in targets:
        found = [layer for layer in LAYERS if target in (layer, *layer.split("/"))]
        if not found:
            raise TrainingError(
                f"Unknown LoRA target {target!r}. Choose among {', '.join(LAYERS)}, or "
                f"'attn', 'mlp', 'c_attn', 'c_fc', 'c_proj'.")
        chosen.update(found)
    if not chosen:
        raise TrainingError(f"lora_targets is empty: name at least one of {', '.join(LAYERS)}.")
    return tuple(layer for layer in LAYERS if layer in chosen)


def check_settings(hparams, rank, alpha=None, targets=LAYERS, base_dtype=None, save="merged"):
    """Validate LoRA's arguments; returns ``(rank, alpha, layers, base_dtype)``.
    Raises :class:`TrainingError` saying which value is wrong and what would do.
    ``hparams=None`` checks everything but the rank against the layers' sizes.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> check_settings(hparams_for("tiny", n_vocab=100), 8)
        (8, 16.0, ('attn/c_attn', 'attn/c_proj', 'mlp/c_fc', 'mlp/c_proj'), 'float32')
        >>> try:
        ...     check_settings(hparams_for("tiny", n_vocab=100), 0)
        ... except TrainingError as err:
        ...     print(err)  # doctest: +ELLIPSIS
        lora_rank must be a whole number of at least 1 (16 is a good start), got 0.
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise TrainingError(f"lora_rank must be a whole number of at least 1 (16 is a good "
                            f"start), got {rank!r}.")
    rank = int(rank)
    layers = target_layers(targets)
    shapes = variable_shapes(hparams) if hparams is not None else {}
    for layer in layers if hparams is not None else ():
        nx, nf = shapes[f"model/h0/{layer}/w"][1:]
        if rank > min(nx, nf):
            raise TrainingError(
                f"lora_rank={rank} is larger than {layer}'s smaller side ({min(nx, nf)}: the "
                f"weight is {nx} x {nf}); a low-rank update needs lora_rank <= {min(nx, nf)}.")
    if alpha is None:
        alpha = 2.0 * rank
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise TrainingError(f"lora_alpha must be a number, got {alpha!r}.") from None
    if not math.isfinite(alpha) or alpha <= 0:
        raise TrainingError(f"lora_alpha must be a positive number (the update is scaled by "
                            f"lora_alpha / lora_rank), got {alpha!r}.")
    key = base_dtype.lower() if isinstance(base_dtype, str) else base_dtype
    if key not in BASE_DTYPES:
        raise TrainingError(f"Unknown lora_base_dtype {base_dtype!r}. Choose None (float32), "
                            f"'bfloat16' or 'float16'.")
    if save not in SAVE_MODES:
        raise TrainingError(f"Unknown lora_save {save!r}. Choose 'merged' (a model-<step> "
                            f"that gpt-2-simple loads, plus the adapters) or 'adapters' (the "
                            f"adapters alone: small on disk).")
    return rank, alpha, layers, BASE_DTYPES[key]


class Adapters(tf.Module):
    """The adapters of one model: ``A[layer]`` ``[nx, r]`` and ``B[layer]`` ``[r, nf]``
    float32 variables for every chosen projection of every block, keyed by the
    layer's checkpoint prefix (``"model/h0/attn/c_attn"``), and ``scale = alpha / r``.

    ``alpha=None`` means ``2 * rank``. PEFT's ``LoraConfig`` defaults to
    ``r=8, lora_alpha=8`` (a scale of 1); the paper's own GPT-2 runs used ``r=4``
    with ``alpha=32``. With Adam the size of the update follows ``alpha`` times the
    learning rate, so at gpt-2-simple's default ``learning_rate`` of 1e-4 (half the
    paper's 2e-4) a scale of 2, the common ``alpha = 2r`` recipe (32 at rank 16),
    learns at a useful pace without retuning.
    """

    def __init__(self, hparams, rank, alpha=None, targets=LAYERS, *, seed=None):
        super().__init__(name=None)
        self.rank, self.alpha, self.layers, _ = check_settings(hparams, rank, alpha, targets)
        self.scale = self.alpha / self.rank
        shapes = variable_shapes(hparams)
        rng = np.random.default_rng(seed)
        self.A, self.B = {}, {}
        for i in range(hparams.n_layer):
            for layer in self.layers:
                prefix = f"model/h{i}/{layer}"
                nx, nf = shapes[prefix + "/w"][1:]
                bound = 1.0 / math.sqrt(nx)  # Kaiming-uniform with a = sqrt(5), as PEFT
                a = rng.uniform(-bound, bound, (nx, self.rank)).astype(np.float32)
                self.A[prefix] = tf.Variable(a, name=prefix + "/lora_A")
                self.B[prefix] = tf.Variable(tf.zeros([self.rank, nf]), name=prefix + "/lora_B")

    def variables_by_name(self):
        """``{"model/h0/attn/c_attn/lora_A": variable, ...}``: what the optimizer trains."""
        out = {}
        for prefix in self.A:
            out[prefix + "/lora_A"] = self.A[prefix]
            out[prefix + "/lora_B"] = self.B[prefix]
        return out

    def terms(self):
        """``{"model/h0/attn/c_attn/lora": (A, B, scale)}``: what the model's layers add."""
        return {prefix + "/lora": (self.A[prefix], self.B[prefix], self.scale)
                for prefix in self.A}

    def delta_applies(self, name):
        """Whether the weight ``name`` has an adapter (its merged value differs)."""
        return name.endswith("/w") and name[: -len("/w")] in self.A

    def delta(self, name):
        """The merged update ``scale·A·B`` of the weight ``name`` (``".../w"``) as a
        ``[1, nx, nf]`` float32 array, or ``None`` when it has no adapter."""
        d = self.delta_tensor(name)
        return None if d is None else d.numpy()[None]

    def delta_tensor(self, name):
        """:meth:`delta` as a ``[nx, nf]`` ``tf.Tensor``, or ``None``."""
        if not self.delta_applies(name):
            return None
        prefix = name[: -len("/w")]
        return tf.matmul(self.A[prefix], self.B[prefix]) * self.scale

    def state(self, base=None):
        """``{name: array}`` for the ``lora-<step>`` bundle: every ``A`` and ``B``, the
        settings, and ``base`` (a ``{"lora/base": ..., "lora/base_fingerprint": ...}``
        from :func:`describe_base`) so a resumed run or a loader finds the same base."""
        out = dict(self.variables_by_name())
        out.update({"lora/rank": np.int64(self.rank), "lora/alpha": np.float64(self.alpha),
                    "lora/layers": np.array(",".join(self.layers).encode())})
        out.update(base or {})
        return out

    def load_state(self, state, source):
        """Copy the adapters of a ``lora-<step>`` bundle (``source`` names it in errors)."""
        settings = settings_of(state)
        mine = (self.rank, self.alpha, self.layers)
        if settings != mine:
            raise TrainingError(
                f"{source} holds adapters of rank {settings[0]}, alpha {settings[1]:g} on "
                f"{', '.join(settings[2])}; this run asks for rank {self.rank}, alpha "
                f"{self.alpha:g} on {', '.join(self.layers)}. Pass the same lora_rank, "
                f"lora_alpha and lora_targets to continue it, or restore_from='fresh' to "
                f"start new adapters.")
        for name, var in self.variables_by_name().items():
            if name not in state or tuple(np.shape(state[name])) != tuple(var.shape):
                raise CheckpointError(f"{source} lacks {name} of shape {tuple(var.shape)}: "
                                      f"it is incomplete or belongs to another model size.")
            var.assign(state[name])


def settings_of(state):
    """``(rank, alpha, layers)`` recorded in a ``lora-<step>`` bundle's arrays."""
    layers = np.asarray(state["lora/layers"]).item()
    layers = layers.decode() if isinstance(layers, bytes) else str(layers)
    return (int(state["lora/rank"]), float(state["lora/alpha"]), tuple(layers.split(",")))


def fingerprint(prefix):
    """A short hash of a checkpoint's ``.index`` file, which holds every tensor's
    offset and CRC32C: two bundles with the same fingerprint hold the same data."""
    with open(prefix + ".index", "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def describe_base(base_prefix, run_dir):
    """What a ``lora-<step>`` bundle records about its base: the checkpoint's path
    relative to the run folder (so moving the whole project keeps it valid) and
    its :func:`fingerprint`."""
    path = os.path.relpath(os.path.abspath(base_prefix), os.path.abspath(run_dir))
    return {"lora/base": np.array(path.replace(os.sep, "/").encode()),
            "lora/base_fingerprint": np.array(fingerprint(base_prefix).encode())}


def recorded_base(state, run_dir):
    """``(prefix, fingerprint)`` of the base a ``lora-<step>`` bundle was trained on."""
    def text(key):
        value = np.asarray(state[key]).item()
        return value.decode() if isinstance(value, bytes) else str(value)

    return os.path.normpath(os.path.join(run_dir, text("lora/base"))), \
        text("lora/base_fingerprint")


def check_base(prefix, expected, source):
    """Raise unless the checkpoint ``prefix`` is the base ``source``'s adapters were
    trained on (adapters only make sense on top of the weights they learned beside)."""
    if not os.path.isfile(prefix + ".index"):
        raise ModelNotFoundError(
            f"The adapters in {source} were trained on the base model {prefix}, which is "
            f"missing. Put that model back (download it again with gpt2.download_gpt2), or "
            f"start new adapters with restore_from='fresh'.")
    if fingerprint(prefix) != expected:
        raise CheckpointError(
            f"The adapters in {source} were trained on another base model than {prefix} (its "
            f"files changed since). Restore that model, or start new adapters with "
            f"restore_from='fresh'.")


class MergedWeights:
    """A lazy ``{name: float32 array}`` view of ``base`` (any ``{name: array}``
    mapping, e.g. a :class:`~gpt2_simple_plus.checkpoints.CheckpointWeights`)
    with each adapted weight merged, ``W + scale·A·B``, when it is read: what
    a merged checkpoint holds, computed one tensor at a time. ``tensors=True``
    gives float32 ``tf.Tensor`` values instead, computed in TensorFlow (the same
    float32 sums) and read from a checkpoint without a NumPy copy: what a save
    writes, so it never holds a tensor twice."""

    def __init__(self, base, adapters, *, tensors=False):
        self.base, self.adapters, self.tensors = base, adapters, tensors

    def __getitem__(self, name):
        if not self.tensors:
            value = np.asarray(self.base[name], np.float32)
            delta = self.adapters.delta(name)
            return value if delta is None else value + delta.reshape(value.shape)
        read = getattr(self.base, "tensor", None)
        value = read(name) if read else tf.cast(tf.convert_to_tensor(self.base[name]), tf.float32)
        delta = self.adapters.delta_tensor(name)
        return value if delta is None else value + tf.reshape(delta, value.shape)

    def keys(self):
        return self.base.keys()

    def items(self):
        return ((n, self[n]) for n in self.keys())


def merged_checkpoint(prefix, hparams):
    """The merged weights of an adapters-only save ``lora-<step>``: its recorded base
    (checked by fingerprint) plus the adapters, as a lazy mapping."""
    state = read_bundle(prefix)
    base, expected = recorded_base(state, os.path.dirname(prefix))
    check_base(base, expected, prefix)
    rank, alpha, layers = settings_of(state)
    adapters = Adapters(hparams, rank, alpha, layers)
    adapters.load_state(state, prefix)
    return MergedWeights(CheckpointWeights(base, hparams), adapters)


# ---------------------------------------------------------------------------
# What finetune needs: where the base and the adapters come from, the model, the save.

def starting_point(restore_from, run_dir, base_dir, latest=None):
    """``(base prefix, adapter state or None, checkpoint resumed or None)`` for a LoRA run.

    The base is always an original model, never a merged checkpoint: the merged
    weights are base + update, so training the adapters on top of them would add
    the update twice. ``restore_from="latest"`` continues the run's newest
    ``lora-<step>`` on the base it recorded (``models/<model_name>`` unless the run
    was started from a folder); with no checkpoint in the run yet, or with
    ``"fresh"``, new adapters start on ``models/<model_name>``; a folder starts
    new adapters on the checkpoint in that folder.
    """
    if restore_from == "latest":
        ckpt = latest or checkpoints.latest_checkpoint(run_dir)
        if ckpt is not None:
            state = checkpoints.read_adapters(run_dir, checkpoints.step_of(ckpt))
            if state is None:
                raise TrainingError(
                    f"{ckpt} was trained without LoRA, so there are no adapters to continue. "
                    f"Pass run_name='...' for a new LoRA run, restore_from='fresh' to start "
                    f"adapters on the downloaded model, or restore_from={run_dir!r} with a new "
                    f"run_name to train adapters on top of this fine-tuned model.")
            base, expected = recorded_base(state, run_dir)
            check_base(base, expected, ckpt)
            return base, state, ckpt
    elif restore_from not in (None, "fresh"):
        if not os.path.isdir(restore_from):
            raise ModelNotFoundError(
                f"restore_from={restore_from!r} is neither 'latest', 'fresh' nor a folder "
                f"holding a checkpoint.")
        if os.path.abspath(restore_from) == os.path.abspath(run_dir):
            raise TrainingError(
                f"restore_from={restore_from!r} is this run's own folder: its checkpoints are "
                f"replaced as the run saves, so they cannot be the base of LoRA adapters. Pass "
                f"another run_name.")
        prefix = checkpoints.find_checkpoint(restore_from)
        if checkpoints.is_adapters(prefix):
            raise TrainingError(f"{prefix} holds LoRA adapters alone, not a model to train "
                                f"adapters on; pass the folder of a full model.")
        return prefix, None, None
    if base_dir is None:
        raise TrainingError("LoRA trains adapters beside a pretrained model: pass model_name= "
                            "(e.g. '124M'), not model_name=None.")
    return checkpoints.find_checkpoint(base_dir), None, None


def build_model(hparams, base_prefix, *, rank, alpha, layers, base_dtype="float32",
                compute_dtype="float32", seed=None, state=None, source=None, strategy=None,
                local_base=False):
    """The frozen base read from ``base_prefix`` one variable at a time straight into
    ``base_dtype``, with new adapters, or those of ``state`` (a ``lora-<step>``).

    With a ``tf.distribute`` ``strategy``, the model is made in its scope.
    ``local_base=True`` keeps the frozen base out of it: each process reads its own
    copy of the checkpoint, and only the adapters are mirrored. That is what a
    multi-worker run needs, because TensorFlow starts every variable made in the
    scope from the chief's value, sent over the network, which for a big model's
    base would be gigabytes."""
    def scope(inside):
        return strategy.scope() if strategy is not None and inside else contextlib.nullcontext()

    with scope(not local_base):
        model = GPT2(hparams, CheckpointWeights(base_prefix, hparams),
                     compute_dtype=compute_dtype, matrix_dtype=base_dtype, trainable=False)
    with scope(True):
        model.lora = Adapters(hparams, rank, alpha, layers, seed=seed)
        if state is not None:
            model.lora.load_state(state, source)
    return model


def merged_source(model, base_prefix):
    """The merged weights of ``model`` (a LoRA model) as a lazy mapping. The base comes
    from the model's own variables when they are float32, else from the original
    float32 checkpoint, so a bfloat16 base never rounds the saved weights."""
    if all(v.dtype == tf.float32 for v in model.weights.values()):
        return MergedWeights(model.weights, model.lora, tensors=True)
    return MergedWeights(CheckpointWeights(base_prefix, model.hparams), model.lora, tensors=True)


def save(run_dir, model, step, base_prefix, *, mode="merged", train_state=None,
         max_checkpoints=1):
    """Save a LoRA run's step: the merged ``model-<step>`` (written in pieces, see
    ``checkpoints.SHARD_BYTES``; not with ``mode="adapters"``), the adapters with
    their base in ``lora-<step>``, and ``train_state``. Returns the saved prefix's name."""
    release_free_memory()  # the training step's freed pages, before the save's tensors
    weights = merged_source(model, base_prefix) if mode == "merged" else None
    return checkpoints.save_checkpoint(
        run_dir, weights, step, max_checkpoints=max_checkpoints, train_state=train_state,
        adapters=model.lora.state(describe_base(base_prefix, run_dir)),
        shard_bytes=checkpoints.SHARD_BYTES)


def merge_in_place(model, base_prefix):
    """Fold ``model``'s adapters into its own variables (PEFT's ``merge_and_unload``) and
    drop them: each weight becomes the checkpoint ``base_prefix``'s float32 value plus
    ``scale·A·B``, rounded once to the variable's dtype (a bfloat16 base stays
    bfloat16). One tensor at a time, into the memory the frozen base already holds, so
    after training no second copy of the model is ever built. Returns ``model``.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> from gpt2_simple_plus.model import GPT2
        >>> from gpt2_simple_plus.checkpoints import save_pretrained_layout
        >>> import tempfile
        >>> hp = hparams_for("tiny", n_vocab=100)
        >>> folder = tempfile.mkdtemp()
        >>> model = GPT2(hp, seed=0, trainable=False)
        >>> save_pretrained_layout(folder, model.numpy_weights(), hp)
        >>> model.lora = Adapters(hp, rank=4, seed=0)
        >>> b = model.lora.B["model/h0/mlp/c_fc"]
        >>> _ = b.assign(tf.ones(b.shape))                    # as if trained
        >>> w = model.weights["model/h0/mlp/c_fc/w"]
        >>> before = w.numpy()
        >>> merge_in_place(model, folder + "/model.ckpt").lora is None
        True
        >>> model.weights["model/h0/mlp/c_fc/w"] is w, bool((w.numpy() != before).any())
        (True, True)
    """
    merged = MergedWeights(CheckpointWeights(base_prefix, model.hparams), model.lora)
    for name, var in model.weights.items():
        if model.lora.delta_applies(name):  # the others already hold the base's values
            var.assign(tf.cast(merged[name].reshape(var.shape), var.dtype))
    model.lora = None
    return model

"""Generation on LiteRT: 8-bit weights (``load_gpt2(..., quantize="int8")``) or
float32 ones (``load_gpt2(..., runtime="litert")``).

Decoding one token reads every weight of the model once, so at batch 1 its speed
is set by how many bytes the weights take and how fast they stream, not by
arithmetic. LiteRT's XNNPACK kernels, the runtime Google uses for on-device
language models, stream them on every core and multiply the few rows of a
decoding step well, where XLA's CPU kernels for such thin products do not. With
``quantize="int8"`` each weight matrix is stored as 8-bit integers with one float
scale per output channel (a quarter of float32's bytes); each matmul quantizes
its activations per row as it runs and returns float32. With
``runtime="litert"`` the weights stay float32 and so does every product: the
text is float32's. Either way LayerNorm, softmax, the residual stream and the
key/value cache stay float32.

The step is the same :class:`~gpt2_simple_plus.model.GPT2` code, converted once
per checkpoint by TensorFlow's own LiteRT converter (for int8 with
``Optimize.DEFAULT``: dynamic-range quantization, the layer matrices written in
afterwards as it writes them, see :func:`convert_step`) and kept beside the checkpoint
as ``<checkpoint>.int8-v2.tflite`` or ``<checkpoint>.float32-v2.tflite``, so the
next load skips the conversion. The prompt is read by the float32 model in one
pass (it is arithmetic-bound, and the prompt keeps full precision); each new
token then runs on the converted step. :class:`LiteModel` offers both behind the
methods the decode loop (:mod:`~gpt2_simple_plus.decoding`) calls, so sampling,
stop sequences, streaming, the repetition penalty and sliding windows are the
ones of every other mode.

Writing a token's keys and values into a cache inside a LiteRT model copies the
whole cache, so the converted step reads the cache without writing it
(:func:`~gpt2_simple_plus.model.past_attn`) and hands the new keys and values
back; :class:`LiteModel` stores them straight into the interpreter's input
buffers, which LiteRT keeps between calls.

    >>> from gpt2_simple_plus.hparams import hparams_for
    >>> from gpt2_simple_plus.model import GPT2
    >>> from gpt2_simple_plus.decoding import Decoder
    >>> from gpt2_simple_plus.sampling import SamplingConfig
    >>> model = GPT2(hparams_for("tiny", n_vocab=100), seed=0)
    >>> lite = LiteModel(model, convert_step(model))
    >>> rows = Decoder(lite, jit_compile=False).generate([[1, 2, 3]], 5,
    ...                                                   SamplingConfig(temperature=0.0))
    >>> len(rows[0])
    5
"""

import glob
import os
import threading

import numpy as np
import tensorflow as tf

from .checkpoints import data_files
from .errors import GenerationError, MissingDependencyError, OutOfMemoryError
from .files import write_bytes_atomic
from .memory import GB, gigabytes, host_memory
from .model import Past

QUANTIZE_MODES = ("int8",)
# Where the decoding steps run: TensorFlow (XLA) or LiteRT (this module).
RUNTIMES = ("tensorflow", "litert")
# The converted step, beside its checkpoint; the number changes whenever the step does.
SUFFIXES = {"int8": ".int8-v2.tflite", "float32": ".float32-v2.tflite"}
# Memory a conversion takes above the loaded model: (a multiple of the float32 weights'
# bytes, a fixed part). The float32 converter holds several copies of the weights at once
# (the frozen graph, its MLIR module, the flatbuffer): 6.6 to 7.0 times them. The int8 one
# holds stand-ins for the layer matrices (convert_step) and writes the int8 file once:
# 1.9 times the weights for 124M, 1.3 for 355M, 1.0 for 774M and 0.8 for 1558M, about
# 0.55 GB plus 0.7 times them (benchmarks/README.md).
CONVERSION_MEMORY = {"int8": (1.0, GB), "float32": (7.5, 0)}


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise MissingDependencyError(
            'quantize="int8" and runtime="litert" run on LiteRT, which is not installed: '
            'pip install "gpt2_simple_plus[lite]" (or pip install ai-edge-litert).') from None
    return Interpreter


def convert_step(model, *, quantize=True):
    """The decoding step of ``model`` as a LiteRT flatbuffer (bytes) with int8 weight
    matrices, or float32 ones with ``quantize=False``.

    One function of ``(tokens [batch, 1], pos, pad [batch], the past keys and values
    [batch, heads, length, head] of each layer)`` to ``(the logits [batch, n_vocab],
    the token's keys and values of each layer)``; batch size and cache length are
    left free, so one conversion serves them all.

    For int8 the converter is given the layers' weight matrices as stand-ins
    (:func:`stand_ins`: one value repeated, which its graph holds in a few bytes)
    and :func:`put_matrices` writes the real ones, quantized, into the flatbuffer
    it returns: the converter holds several copies of every constant at once, so
    it then needs a small part of the memory the whole model would take (see
    :data:`CONVERSION_MEMORY`). The file is the same as converting the model itself.
    """
    hp = model.hparams
    past = tf.TensorSpec([None, hp.n_head, None, hp.head_size], tf.float32)
    spec = [tf.TensorSpec([None, 1], tf.int32, name="tokens"),
            tf.TensorSpec([], tf.int32, name="pos"),
            tf.TensorSpec([None], tf.int32, name="pad")] + [past] * (2 * hp.n_layer)

    @tf.function(input_signature=spec, autograph=False)
    def step(tokens, pos, pad, *cache):
        layers = [Past(cache[2 * i], cache[2 * i + 1]) for i in range(hp.n_layer)]
        weights = stand_ins(model) if quantize else None  # made in the graph: one value each
        h, new = model.forward(tokens, cache=layers, pos=pos, pad=pad, weights=weights)
        # The tied head as h · wteᵀ: LiteRT's fully-connected op, whose weights get quantized.
        logits = tf.matmul(h[:, 0], model.weights["model/wte"], transpose_b=True)
        return [logits] + [t for kv in new for t in kv]

    function = step.get_concrete_function()
    # The converter saves what it is given; given the model, it would save and read back
    # every variable, the matrices the stand-ins replace too.
    read = tf.Module()
    read.variables_read = list(function.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], read)
    if not quantize:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return put_matrices(converter.convert(), model)


def _marker(k):
    """The value that stands in for layer matrix ``k`` during an int8 conversion: distinct
    for every matrix, and 127 times the per-channel scale the converter gives it."""
    return 0.01 + 1e-4 * k


def stand_ins(model):
    """``{name: constant}``: each of the layers' weight matrices (``[1, nx, nf]``) as
    one value repeated, :func:`_marker` of its place in ``layer_matrices``. Made in a
    graph, each is a constant that stores its one value and its shape."""
    return {name: tf.constant(_marker(k), tf.float32, v.shape)
            for k, (name, v) in enumerate(model.layer_matrices().items())}


def row_scales(w):
    """The per-output scales :func:`quantize_rows` gives ``w`` ``[outputs, inputs]``: each
    row's largest magnitude over 127, in double precision (as the converter)."""
    scale = np.abs(w).max(axis=1).astype(np.float64) / 127
    scale[scale == 0] = 1  # an all-zero row stores zeros whatever its scale
    return scale


def quantize_rows(w, scale=None):
    """``w`` ``[outputs, inputs]`` as int8 with one float32 scale per output (per
    row, :func:`row_scales`), symmetric, halves rounded away from zero: what the
    converter's dynamic-range quantization stores for a fully-connected op's weights.

        >>> q, scale = quantize_rows(np.array([[1.0, -0.5], [0.0, 0.25]], np.float32))
        >>> q.tolist(), (scale * 127).round(6).tolist()  # -63.5 rounds to -64
        ([[127, -64], [0, 127]], [1.0, 0.25])
    """
    scale = row_scales(w) if scale is None else scale
    x = w.astype(np.float64) / scale[:, None]
    q = np.clip(np.trunc(x + np.copysign(0.5, x)), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def put_matrices(flatbuffer, model):
    """``flatbuffer`` (converted with :func:`stand_ins`) with the model's own layer
    matrices in place of the stand-ins: each found by its scales, checked against
    its shape, given its own buffer (the converter stores the stand-ins, all alike
    once quantized, in a shared one) and quantized with :func:`quantize_rows` as that
    buffer is written, so that one matrix at a time is held in int8 besides the file."""
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers

    matrices = list(model.layer_matrices().values())
    tflite = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    found, shared = set(), set()
    for tensor in tflite.subgraphs[0].tensors:
        quant = tensor.quantization
        if tensor.type != schema.TensorType.INT8 or quant is None or quant.scale is None:
            continue
        k = int(round((float(quant.scale[0]) * 127 - _marker(0)) / (_marker(1) - _marker(0))))
        if not (0 <= k < len(matrices) and k not in found and
                np.allclose(np.asarray(quant.scale) * 127, _marker(k), rtol=1e-4)):
            continue
        if tuple(tensor.shape) != tuple(matrices[k].shape[:0:-1]):  # [1, in, out] -> [out, in]
            continue
        buffer = _Quantized(matrices[k])
        quant.scale = buffer.scale.astype(np.float32)
        shared.add(tensor.buffer)
        tensor.buffer = len(tflite.buffers)
        tflite.buffers.append(buffer)
        found.add(k)
    if len(found) != len(matrices):
        raise RuntimeError(
            f"The LiteRT converter of TensorFlow {tf.__version__} did not keep "
            f"{len(matrices) - len(found)} of the model's {len(matrices)} weight matrices "
            "as separate int8 tensors, so the int8 step cannot be built: please report it.")
    shared -= {t.buffer for g in tflite.subgraphs for t in g.tensors}
    for index in shared:  # the stand-ins' own buffers, read by nothing now
        tflite.buffers[index].data = None
    # Large enough never to grow (growing copies it): the new matrices and the rest.
    builder = flatbuffers.Builder(sum(int(np.prod(m.shape)) for m in matrices) + len(flatbuffer))
    builder.Finish(tflite.Pack(builder), file_identifier=b"TFL3")
    return bytes(memoryview(builder.Bytes)[builder.Head():])


class _Quantized:
    """A flatbuffer buffer of a layer matrix (``[1, in, out]`` variable) stored as the
    fully-connected op's int8 ``[out, in]``: scales now, values when it is written."""

    def __init__(self, variable):
        self.variable = variable
        self.scale = row_scales(variable.numpy()[0].T)

    def Pack(self, builder):  # the name the flatbuffer object API calls
        from ai_edge_litert import schema_py_generated as schema

        values, _ = quantize_rows(self.variable.numpy()[0].T, self.scale)
        buffer = schema.BufferT()
        buffer.data, buffer.offset, buffer.size = values.reshape(-1).view(np.uint8), 0, 0
        return buffer.Pack(builder)


def cached_step(model, prefix, *, quantize=True):
    """:func:`convert_step` of ``model`` as the path of ``<prefix>`` + its suffix in
    :data:`SUFFIXES` when that file is newer than the checkpoint ``prefix``, else
    converted and written there (atomically) first, and the files earlier versions of
    the step left there are deleted (a 1558M one takes 1.65 GB). A folder that cannot be
    written keeps the flatbuffer in memory: bytes are returned instead of a path."""
    kind = "int8" if quantize else "float32"
    path = prefix + SUFFIXES[kind]
    sources = [p for p in [prefix + ".index"] + data_files(prefix) if os.path.exists(p)]
    newest = max((os.path.getmtime(p) for p in sources), default=0)
    if os.path.exists(path) and os.path.getmtime(path) >= newest:
        return path
    check_conversion_memory(model, kind, path)
    print(f"Converting {os.path.basename(prefix)} for LiteRT with {kind} weights "
          f"(once; kept in {path})")
    blob = convert_step(model, quantize=quantize)
    try:
        write_bytes_atomic(path, blob)
    except OSError:
        return blob
    for old in glob.glob(glob.escape(prefix) + f".{kind}-v*.tflite"):
        if old != path:
            try:
                os.remove(old)
            except OSError:  # another process's, or a read-only file: it only takes room
                pass
    return path


def float32_bytes(model):
    """The bytes of ``model``'s weights in float32, as the converter holds them: the unit
    of :data:`CONVERSION_MEMORY` (``benchmarks/profile_lite_step.py`` measures in it)."""
    return sum(int(np.prod(v.shape)) * 4 for v in model.weights.values())


def check_conversion_memory(model, kind, path, *, available=None, where="this machine has"):
    """Raises :class:`~gpt2_simple_plus.errors.OutOfMemoryError` before a conversion
    that would not fit in the memory available now (:data:`CONVERSION_MEMORY`: a
    multiple of the float32 weights' bytes and a fixed part), rather than let the
    system stop the process halfway.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> from gpt2_simple_plus.memory import GB
        >>> from gpt2_simple_plus.model import GPT2
        >>> model = GPT2(hparams_for("tiny", n_vocab=100), seed=0)
        >>> check_conversion_memory(model, "int8", "model.int8-v2.tflite", available=2 * GB)
        >>> check_conversion_memory(model, "int8", "model.int8-v2.tflite", available=10_000)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.OutOfMemoryError: Converting this model for LiteRT with int8 ...
    """
    times, fixed = CONVERSION_MEMORY[kind]
    need = times * float32_bytes(model) + fixed
    if available is None:
        available, where = host_memory()
    if available is None or need <= available:
        return
    setting = "quantize='int8'" if kind == "int8" else "runtime='litert'"
    raise OutOfMemoryError(
        f"Converting this model for LiteRT with {kind} weights needs about "
        f"{gigabytes(need)} of memory for a few minutes; {where} {gigabytes(available)} "
        f"available. Load it with {setting} once on a machine with more memory and copy "
        f"the file it keeps, {os.path.basename(path)}, beside this checkpoint (later "
        f"loads read that file and convert nothing), or load without {setting} to "
        f"generate on TensorFlow.")


class LiteModel:
    """A GPT-2 whose decoding steps run on a converted step (:func:`convert_step`),
    behind the three methods the decode loop calls: ``empty_cache``, ``forward`` and
    ``logits``. ``model`` is the float32 :class:`~gpt2_simple_plus.model.GPT2` the
    step was converted from; it reads the prompts. ``flatbuffer`` is the step's bytes
    or the path of its file, which LiteRT maps instead of reading into memory.

    The key/value cache lives in the interpreter. What the loop carries as the
    cache is a small int32 tensor ``[length]`` filled with the window's number, so
    a step that finds another window's cache in the interpreter (two generations
    interleaved on one model) stops with a :class:`GenerationError` instead of
    reading the wrong past.
    """

    def __init__(self, model, flatbuffer, *, threads=None):
        self.model = model
        self.hparams = model.hparams
        threads = threads or len(os.sched_getaffinity(0))
        source = {"model_path": flatbuffer} if isinstance(flatbuffer, str) else \
            {"model_content": flatbuffer}
        self._interpreter = _interpreter_class()(**source, num_threads=threads)
        signature = self._interpreter.get_signature_runner()
        inputs = {n: d["index"] for n, d in signature.get_input_details().items()}
        outputs = {n: d["index"] for n, d in signature.get_output_details().items()}
        del signature  # it holds views into the interpreter, which block resizing
        n = 2 * self.hparams.n_layer
        self._tokens, self._pos, self._pad = inputs["tokens"], inputs["pos"], inputs["pad"]
        self._past = [inputs[f"cache_{i}"] for i in range(n)]
        self._logits = outputs["output_0"]
        self._new = [outputs[f"output_{i + 1}"] for i in range(n)]
        self._shape = None  # (batch, length) the interpreter is allocated for
        self._window = 0
        self._prompt = None  # the window's prompt keys and values, until its first step
        self._lock = threading.Lock()
        self.raised = None  # the error a step raised inside the loop

    def empty_cache(self, batch_size, length, dtype=None):
        return tf.zeros([length], tf.int32)

    def logits(self, h):
        return h  # forward already returns the logits

    def tile_cache(self, cache, batch_size):
        return cache  # the first step stores the prompt for as many rows as it has

    def forward(self, tokens, *, cache, pos=0, pad=None, **_):
        """The logits ``[batch, 1, n_vocab]`` after ``tokens`` and the cache tensor: a
        prompt, read by the float32 model, when ``pos`` is 0 (a new window), else one
        token per row on the converted step."""
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        batch = tokens.shape[0] if tokens.shape[0] is not None else -1
        if pad is None:
            pad = tf.zeros([tf.shape(tokens)[0]], tf.int32)
        if isinstance(pos, int) and pos == 0:
            hp = self.hparams
            nothing = tf.zeros([tf.shape(tokens)[0], hp.n_head, 1, hp.head_size])  # all unseen
            h, new = self.model.forward(tokens, cache=[Past(nothing, nothing)] * hp.n_layer,
                                        pos=0, pad=pad)
            logits = self.model.logits(h[:, -1:])
            window = tf.numpy_function(self._store_prompt,
                                       [tf.shape(cache)[0]] + [t for kv in new for t in kv],
                                       tf.int32, stateful=True)
            with tf.control_dependencies([window]):
                return tf.identity(logits), tf.fill(tf.shape(cache), window)
        logits = tf.numpy_function(self._step, [tokens, tf.cast(pos, tf.int32), pad, cache],
                                   tf.float32, stateful=True)
        return tf.reshape(logits, [batch, 1, self.hparams.n_vocab]), cache

    # -- the interpreter (NumPy in, NumPy out) --------------------------------

    def _allocate(self, batch, length):
        if self._shape == (batch, length):
            return
        it = self._interpreter
        it.resize_tensor_input(self._tokens, [batch, 1])
        it.resize_tensor_input(self._pad, [batch])
        for index in self._past:
            it.resize_tensor_input(index, [batch, self.hparams.n_head, length,
                                           self.hparams.head_size])
        it.allocate_tensors()
        for index in self._past:  # unseen positions are multiplied by 0: never leave NaNs
            it.tensor(index)()[...] = 0
        self._shape = (batch, length)

    def _store_prompt(self, length, *kv):
        # kept until the window's first step, whose rows say the batch (a prompt that
        # every row shares arrives as one row: see tile_cache); numpy_function's arrays
        # hold their tensors' buffers, so keeping them copies nothing and is safe
        with self._lock:
            self._prompt = int(length), kv
            self._window += 1
            return np.int32(self._window)

    def _step(self, tokens, pos, pad, cache):
        with self._lock:
            if int(cache[0]) != self._window:
                self.raised = GenerationError(  # raised by the decoder (decoding._python_errors)
                    "Another generation ran on this model in the middle of this one; on "
                    "LiteRT (quantize='int8', runtime='litert') a model generates one batch "
                    "at a time.")
                raise self.raised
            it = self._interpreter
            if self._prompt is not None:
                (length, kv), self._prompt = self._prompt, None
                self._allocate(tokens.shape[0], length)
                n = kv[0].shape[2]
                for index, value in zip(self._past, kv):  # one row broadcasts to all
                    it.tensor(index)()[:, :, :n] = value
            it.set_tensor(self._tokens, tokens)
            it.set_tensor(self._pos, np.asarray(pos, np.int32))
            it.set_tensor(self._pad, pad)
            it.invoke()
            for index, new in zip(self._past, self._new):
                it.tensor(index)()[:, :, pos:pos + 1] = it.tensor(new)()
            return it.get_tensor(self._logits)

"""GPT-2 in TensorFlow 2, written like OpenAI's ``src/model.py``.

Small functions named after the math (``norm``, ``conv1d``, ``attn``, ``mlp``,
``block``) over plain ``tf.Variable`` objects whose names and shapes are those
of OpenAI's checkpoints (``model/h0/attn/c_attn/w`` ...). No Keras, no
``tf.compat.v1``: everything runs eagerly or inside ``tf.function``.

    >>> from gpt2_simple_plus.hparams import hparams_for
    >>> from gpt2_simple_plus.model import GPT2
    >>> model = GPT2(hparams_for("tiny", n_vocab=100), seed=0)
    >>> logits = model([[1, 2, 3]])
    >>> tuple(logits.shape)
    (1, 3, 100)

Incremental decoding uses a key/value cache preallocated for the whole
sequence (a :class:`KVCache` per layer) that each call updates in place at
position ``pos``::

    >>> cache = model.empty_cache(batch_size=1, length=8)
    >>> h, cache = model.forward([[1, 2]], cache=cache, pos=0)
    >>> h, cache = model.forward([[3]], cache=cache, pos=2)
"""

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

try:  # XLA's in-place dynamic-update-slice and its fusion barrier; both also run outside XLA.
    from tensorflow.compiler.tf2xla.python.xla import dynamic_update_slice, optimization_barrier
except ImportError:  # pragma: no cover - depends on the TensorFlow build
    dynamic_update_slice = optimization_barrier = None


def shape_list(x):
    """``x``'s dimensions as OpenAI's ``model.py`` has them: Python ints where the shape
    is known when tracing, scalar tensors where it is not. A known dimension then costs
    the graph nothing; the decode loop's shapes are all known (one function per bucket),
    so its graph is smaller and is traced and compiled sooner.

        >>> shape_list(tf.zeros([2, 3]))
        [2, 3]
    """
    static = x.shape.as_list()
    if None not in static:
        return static
    dynamic = tf.shape(x)
    return [dynamic[i] if d is None else d for i, d in enumerate(static)]


def reshape(x, dims):
    """``tf.reshape(x, dims)`` for ``dims`` from :func:`shape_list`: one dimension unknown
    when tracing goes as -1, so the graph computes no shape for it (a LiteRT step, whose
    batch is set when it runs, then holds no shape arithmetic at all).

        >>> reshape(tf.zeros([2, 6]), [2, 3, 2]).shape
        TensorShape([2, 3, 2])
    """
    known = [d for d in dims if isinstance(d, int)]
    if len(known) == len(dims) - 1 and 0 not in known:  # beside a 0, -1 could be anything
        dims = [d if isinstance(d, int) else -1 for d in dims]
    return tf.reshape(x, dims)


def update_slice(buffer, values, index, *, axis, portable=False):
    """``buffer`` with ``values`` written from ``index`` along ``axis`` (and from 0 along
    the others): XLA's in-place ``XlaDynamicUpdateSlice``, or with ``portable=True``
    core TensorFlow's ``TensorScatterUpdate``, which runtimes without XLA kernels
    (TensorFlow Serving, TFLite) can run.

        >>> buf = tf.zeros([1, 4], tf.int32)
        >>> update_slice(buf, tf.constant([[7, 8]]), 1, axis=1).numpy().tolist()
        [[0, 7, 8, 0]]
        >>> update_slice(buf, tf.constant([[7, 8]]), 1, axis=1, portable=True).numpy().tolist()
        [[0, 7, 8, 0]]
    """
    index = tf.cast(index, tf.int32)
    values = tf.cast(values, buffer.dtype)
    rank = len(buffer.shape)
    if dynamic_update_slice is not None and not portable:
        zero = tf.constant(0, tf.int32)
        return dynamic_update_slice(buffer, values, [index if i == axis else zero
                                                     for i in range(rank)])
    perm = [axis] + [i for i in range(rank) if i != axis]  # the written axis first
    back = sorted(range(rank), key=perm.__getitem__)
    rows = tf.range(shape_list(values)[axis]) + index
    updated = tf.tensor_scatter_nd_update(tf.transpose(buffer, perm), rows[:, None],
                                          tf.transpose(values, perm))
    return tf.transpose(updated, back)


def variable_shapes(hparams):
    """Every variable of a GPT-2 checkpoint, in OpenAI's order: ``{name: shape}``.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> variable_shapes(hparams_for("124M"))["model/h0/attn/c_attn/w"]
        (1, 768, 2304)
    """
    e = hparams.n_embd
    shapes = {"model/wpe": (hparams.n_ctx, e), "model/wte": (hparams.n_vocab, e)}
    for i in range(hparams.n_layer):
        p = f"model/h{i}/"
        shapes.update({
            p + "ln_1/g": (e,), p + "ln_1/b": (e,),
            p + "attn/c_attn/w": (1, e, 3 * e), p + "attn/c_attn/b": (3 * e,),
            p + "attn/c_proj/w": (1, e, e), p + "attn/c_proj/b": (e,),
            p + "ln_2/g": (e,), p + "ln_2/b": (e,),
            p + "mlp/c_fc/w": (1, e, 4 * e), p + "mlp/c_fc/b": (4 * e,),
            p + "mlp/c_proj/w": (1, 4 * e, e), p + "mlp/c_proj/b": (e,),
        })
    shapes.update({"model/ln_f/g": (e,), "model/ln_f/b": (e,)})
    return shapes


def random_weights(hparams, seed=None):
    """GPT-2's initialisation as NumPy arrays: normal(0.02) weights, wpe
    normal(0.01), LayerNorm g=1, all biases 0 (as OpenAI's ``model.py``)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in variable_shapes(hparams).items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "g":
            weights[name] = np.ones(shape, np.float32)
        elif leaf == "b":
            weights[name] = np.zeros(shape, np.float32)
        else:
            std = 0.01 if name == "model/wpe" else 0.02
            weights[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
    return weights


# ---------------------------------------------------------------------------
# The layers, as in the paper.

@tf.custom_gradient
def gelu(x):
    """GPT-2's tanh approximation of GELU:
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    The forward pass is TensorFlow's own op (the same formula). The gradient,
    ``0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)`` with
    ``t`` the tanh above, is one XLA-fused function of ``x`` (:func:`gelu_grad`)
    instead of autodiff's chain of about a dozen element-wise ops over
    ``[tokens, 4 * n_embd]`` tensors kept from the forward pass."""
    return tf.nn.gelu(x, approximate=True), lambda dy: gelu_grad(dy, x)


@tf.function(jit_compile=True, autograph=False)
def gelu_grad(dy, x):
    """``dy * gelu'(x)``, computed in float32 in one fused pass."""
    x32 = tf.cast(x, tf.float32)
    c = math.sqrt(2 / math.pi)
    ax2 = 0.044715 * tf.square(x32)  # so the tanh's argument is c x (1 + ax2)
    t = tf.tanh(c * x32 * (1.0 + ax2))
    slope = 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - tf.square(t)) * c * (1.0 + 3.0 * ax2)
    return tf.cast(tf.cast(dy, tf.float32) * slope, dy.dtype)


def norm(x, g, b, *, epsilon=1e-5):
    """LayerNorm over the last axis, computed in float32 whatever the input dtype."""
    dtype = x.dtype
    x = tf.cast(x, tf.float32)
    u = tf.reduce_mean(x, axis=-1, keepdims=True)
    s = tf.reduce_mean(tf.square(x - u), axis=-1, keepdims=True)
    x = (x - u) * tf.math.rsqrt(s + epsilon)
    return tf.cast(x * g + b, dtype)


class Transposed(NamedTuple):
    """A layer's weight matrix stored as ``[nf, nx]``, each output's weights together
    (see :meth:`GPT2.matrices`)."""
    matrix: tf.Tensor


def conv1d(x, w, b, lora=None):
    """OpenAI's "conv1d": a dense layer whose weight is stored as ``[1, nx, nf]``
    (or given as the ``[nx, nf]`` matrix itself, or as a :class:`Transposed` one).

    Computed as one 2-D matmul plus ``bias_add``, the form TensorFlow fuses into
    one oneDNN kernel on CPU (measured faster than an einsum and an add).
    ``lora=(A, B, scale)`` adds LoRA's low-rank update beside the frozen ``w``
    (Hu et al. 2021): ``x·w + b + scale·(x·A)·B``, with ``A`` ``[nx, r]`` and
    ``B`` ``[r, nf]`` (see ``lora.py``).

    The decode loop passes matrices at batch 1 (:meth:`GPT2.matrices`), for two
    things XLA on the CPU does with a one-row product. It compiles the product and the
    bias add after it into one kernel of its own, which runs on one core, where the
    product alone runs on all of them: a barrier keeps them apart (a ``[1, nx, nf]``
    weight is left as it is, since behind the barrier XLA copies it at every call to
    reshape it). And it reads a :class:`Transposed` matrix faster, as it does the
    head's ``wte``: the product is then ``(w·xᵀ)ᵀ``. The numbers are the same, up to the
    order of the sums."""
    if isinstance(w, Transposed):
        nf, nx = w.matrix.shape
        x2 = tf.reshape(x, [-1, nx])
        y = tf.transpose(tf.matmul(tf.cast(w.matrix, x.dtype), x2, transpose_b=True))
        matrix = True
    else:
        nx, nf = w.shape[-2:]
        matrix = w.shape.rank == 2
        w = tf.cast(tf.reshape(w, [nx, nf]), x.dtype)  # a reshape's gradient is free; w[0]'s copies
        x2 = tf.reshape(x, [-1, nx])
        y = tf.matmul(x2, w)
    if matrix and x2.shape[0] == 1 and optimization_barrier is not None:
        y = optimization_barrier(y)[0]
    y = tf.nn.bias_add(y, tf.cast(b, x.dtype))
    if lora is not None:
        a, b_, scale = lora
        y += tf.matmul(tf.matmul(x2, tf.cast(a, x.dtype)) * scale, tf.cast(b_, x.dtype))
    return reshape(y, shape_list(x)[:-1] + [nf])


def split_heads(x, n_head):
    """``[batch, seq, features]`` -> ``[batch, heads, seq, features / heads]``."""
    batch, seq, features = shape_list(x)
    x = reshape(x, [batch, seq, n_head, features // n_head])
    return tf.transpose(x, [0, 2, 1, 3])


def merge_heads(x):
    """The inverse of :func:`split_heads`."""
    batch, heads, seq, size = shape_list(x)
    x = tf.transpose(x, [0, 2, 1, 3])
    return reshape(x, [batch, seq, heads * size])


def attention_mask(nd, ns, pos, pad):
    """Which keys each query may see: ``[batch, 1, nd, ns]`` booleans.

    Query ``i`` sits at absolute position ``pos + i`` and sees keys ``j <= pos + i``
    (causal), except row ``r``'s first ``pad[r]`` keys, which are left padding.
    """
    i = tf.range(nd)[:, None] + pos
    j = tf.range(ns)[None, :]
    causal = (j <= i)[None, None]
    if pad is None:
        return causal
    real = (j[None] >= pad[:, None, None])[:, None]
    return tf.logical_and(causal, real)


def multihead_attn(q, k, v, mask):
    """Scaled dot-product attention; the softmax runs in float32."""
    w = tf.matmul(q, k, transpose_b=True)
    w = tf.cast(w, tf.float32) * (1.0 / math.sqrt(q.shape[-1]))
    w = tf.where(mask, w, -1e10)
    w = tf.nn.softmax(w, axis=-1)
    return tf.matmul(tf.cast(w, v.dtype), v)


# Query block of :func:`causal_attn`, chosen with benchmarks/finetune.py at 1024 tokens.
ATTN_BLOCK = 256


def causal_attn(q, k, v, block=None):
    """Causal attention over a whole sequence (no cache, no padding), a block of
    queries at a time: block ``j`` multiplies only the keys up to its own end,
    so the masked upper triangle is never computed (5/8 of the work at 1024
    tokens with blocks of 256). Equal to :func:`multihead_attn` with the causal mask.
    """
    n, block = q.shape[2], block or ATTN_BLOCK
    sizes = [min(block, n - i) for i in range(0, n, block)]
    q = q * tf.cast(1.0 / math.sqrt(q.shape[-1]), q.dtype)  # a power of two for GPT-2: exact
    if len(sizes) > 1:  # split/concat, whose gradients are cheap copies (slicing's are not)
        qs, ks, vs = (tf.split(t, sizes, axis=2) for t in (q, k, v))
    else:
        qs, ks, vs = [q], [k], [v]
    out = []
    for j, size in enumerate(sizes):
        keys = tf.concat(ks[:j + 1], axis=2) if j else ks[0]
        values = tf.concat(vs[:j + 1], axis=2) if j else vs[0]
        i = tf.range(size)
        future = tf.where(i[None, :] <= i[:, None], 0.0, -1e10)  # the diagonal block
        bias = tf.concat([tf.zeros([size, keys.shape[2] - size]), future], 1) if j else future
        w = tf.cast(tf.matmul(qs[j], keys, transpose_b=True), tf.float32)
        w = tf.nn.softmax(w + bias, axis=-1)
        out.append(tf.matmul(tf.cast(w, values.dtype), values))
    return tf.concat(out, axis=2) if len(out) > 1 else out[0]


class KVCache(NamedTuple):
    """One layer's keys and values, preallocated for the whole sequence and written
    in place: each ``[batch * heads, length, head_size]``. Keys and values are two
    buffers with the batch and heads folded together, so that XLA's dot reads each
    as it is: a slice of one stacked buffer, or a size-1 batch it squeezes, is
    copied whole at every step instead (the copy grows with the cache, and
    dominated long generations at batch 8; benchmarks/generate.py ``--length``)."""
    keys: tf.Tensor
    values: tf.Tensor


class Past(NamedTuple):
    """One layer's keys and values that attention reads but does not write (see
    :func:`past_attn`): each ``[batch, heads, length, head_size]``."""
    keys: tf.Tensor
    values: tf.Tensor


def cached_attn(q, cache, mask):
    """Attention of the new tokens' queries ``q`` ``[batch, heads, n, head]`` over a
    :class:`KVCache` that already holds their own keys and values, seeing the
    positions ``mask`` allows (:func:`attention_mask` over the whole cache). The
    softmax runs in float32, as in :func:`multihead_attn`, which this does not call:
    with the buffers reshaped to its ``[batch, heads, length, head]``, XLA copies
    them at every step again (tests/test_decoding.py checks the compiled loop)."""
    batch, heads, n, size = shape_list(q)
    length = shape_list(cache.keys)[1]
    w = tf.matmul(tf.reshape(q, [-1, n, size]), cache.keys, transpose_b=True)
    w = reshape(tf.cast(w, tf.float32) * (1.0 / math.sqrt(size)), [batch, heads, n, length])
    w = tf.nn.softmax(tf.where(mask, w, -1e10), axis=-1)
    a = tf.matmul(tf.cast(tf.reshape(w, [-1, n, length]), cache.values.dtype), cache.values)
    return reshape(a, [batch, heads, n, size])


class PastMask(NamedTuple):
    """Which keys :func:`past_attn`'s queries see: ``past`` ``[batch, 1, 1, length]`` of the
    cache read, ``new`` ``[batch, 1, n, n]`` of the new tokens' own."""
    past: tf.Tensor
    new: tf.Tensor


def past_mask(n, length, pos, pad):
    """The :class:`PastMask` of ``n`` new tokens at ``pos ...`` over a read-only cache of
    ``length`` positions: the cache's positions below ``pos`` and the new tokens up to
    each query's own (causal), except row ``r``'s first ``pad[r]`` (left padding)."""
    at = pos + tf.range(n)  # absolute positions of the new tokens (queries and keys)
    first = pad[:, None, None, None] if pad is not None else 0  # left padding is never seen
    past = tf.range(length)[None, None, None, :]
    causal = (at[None, :] <= at[:, None])[None, None]
    return PastMask(tf.logical_and(past < pos, past >= first),
                    tf.logical_and(causal, at[None, None, None] >= first))


def past_attn(q, k, v, past_k, past_v, mask):
    """Attention of new tokens over a cache that is read but not written: the keys
    and values in ``past_k``/``past_v`` (``[batch, heads, length, head]``) and the new
    tokens' own ``k``/``v``, seeing what ``mask`` allows (:func:`past_mask`: the
    positions below the new tokens' ``pos``; the rest is ignored). One softmax over
    both parts, computed as two exponentials over a shared maximum, so neither the
    cache nor the scores are concatenated. Equal to writing ``k``/``v`` at ``pos`` and calling
    :func:`multihead_attn`; for a runtime where that write copies the whole cache
    (LiteRT, see ``lite.py``). For a single new token (a known ``q.shape[2] == 1``)
    the products with the cache are broadcast multiplies and sums, which read it
    once; LiteRT's batched matmul packs a copy of it first."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    one = q.shape[2] == 1
    if one:  # [b, h, 1, d] * [b, h, length, d] summed over d: [b, h, length] -> [b, h, 1, length]
        s_past = tf.expand_dims(tf.reduce_sum(q * past_k, -1), 2)
    else:
        s_past = tf.matmul(q, past_k, transpose_b=True)
    s_past = tf.where(mask.past, s_past * scale, -1e10)
    s_new = tf.where(mask.new, tf.matmul(q, k, transpose_b=True) * scale, -1e10)
    top = tf.maximum(tf.reduce_max(s_past, -1, keepdims=True),
                     tf.reduce_max(s_new, -1, keepdims=True))
    e_past, e_new = tf.exp(s_past - top), tf.exp(s_new - top)
    total = tf.reduce_sum(e_past, -1, keepdims=True) + tf.reduce_sum(e_new, -1, keepdims=True)
    if one:  # [b, h, length, 1] * [b, h, length, d] summed over length
        out_past = tf.reduce_sum(tf.transpose(e_past, [0, 1, 3, 2]) * past_v, 2, keepdims=True)
    else:
        out_past = tf.matmul(e_past, past_v)
    return (out_past + tf.matmul(e_new, v)) / total


def write_cache(cache, k, v, pos, *, portable=False):
    """The :class:`KVCache` with the new tokens' keys and values ``[batch, heads, n, d]``
    stored at sequence position ``pos``, in place (``portable``: see :func:`update_slice`)."""
    def write(buffer, x):
        return update_slice(buffer, tf.reshape(x, [-1] + shape_list(x)[2:]), pos,
                            axis=1, portable=portable)
    return KVCache(write(cache.keys, k), write(cache.values, v))


def layer_mask(n, cache, pos, pad):
    """What attention masks for ``n`` new tokens at ``pos ...``: the same for every
    layer, so :meth:`GPT2.forward` computes it once. A :class:`PastMask` over a read-only
    :class:`Past` cache, :func:`attention_mask` over a :class:`KVCache` or, without a
    cache, over the tokens themselves; None for a whole unpadded sequence of known
    length, which :func:`causal_attn` masks as it goes (training)."""
    if isinstance(cache, Past):
        return past_mask(n, shape_list(cache.keys)[2], pos, pad)
    if cache is not None:
        return attention_mask(n, shape_list(cache.keys)[1], pos, pad)
    if pad is None and isinstance(n, int):
        return None
    return attention_mask(n, n, 0, pad)


def attn(x, w, prefix, *, n_head, cache, pos, mask, portable=False):
    """Causal self-attention; returns the output and the updated layer cache.
    ``mask`` is :func:`layer_mask`'s for this ``cache``."""
    c = conv1d(x, w[prefix + "c_attn/w"], w[prefix + "c_attn/b"], w.get(prefix + "c_attn/lora"))
    q, k, v = (split_heads(t, n_head) for t in tf.split(c, 3, axis=2))
    if isinstance(cache, Past):  # a cache that is read only; the new keys go back instead
        a = past_attn(q, k, v, *cache, mask)
        cache = Past(k, v)
    elif cache is not None:
        cache = write_cache(cache, k, v, pos, portable=portable)
        a = cached_attn(q, cache, mask)
    elif mask is None:  # training: a whole, unpadded sequence
        a = causal_attn(q, k, v)
    else:
        a = multihead_attn(q, k, v, mask)
    a = merge_heads(a)
    return conv1d(a, w[prefix + "c_proj/w"], w[prefix + "c_proj/b"],
                  w.get(prefix + "c_proj/lora")), cache


def mlp(x, w, prefix):
    h = gelu(conv1d(x, w[prefix + "c_fc/w"], w[prefix + "c_fc/b"], w.get(prefix + "c_fc/lora")))
    return conv1d(h, w[prefix + "c_proj/w"], w[prefix + "c_proj/b"], w.get(prefix + "c_proj/lora"))


def block(x, w, prefix, *, n_head, cache=None, pos=0, mask=None, portable=False):
    """One transformer block: pre-norm attention then pre-norm MLP, both residual.
    ``mask``: :func:`layer_mask`'s (None: a whole unpadded sequence, no cache)."""
    a, cache = attn(norm(x, w[prefix + "ln_1/g"], w[prefix + "ln_1/b"]), w, prefix + "attn/",
                    n_head=n_head, cache=cache, pos=pos, mask=mask, portable=portable)
    x = x + a
    x = x + mlp(norm(x, w[prefix + "ln_2/g"], w[prefix + "ln_2/b"]), w, prefix + "mlp/")
    return x, cache


def positions_for(tokens, pos, pad):
    """Absolute position of each token; left padding shifts a row's positions back."""
    p = tf.range(shape_list(tokens)[1])[None, :] + tf.cast(pos, tf.int32)
    if pad is not None:
        p = tf.maximum(p - pad[:, None], 0)
    return p


@tf.function(autograph=False)
def _transposed(matrices):
    """``[1, nx, nf]`` variables as ``[nf, nx]`` copies: in a graph, which transposes
    them faster than eager execution or XLA do."""
    return [tf.transpose(m[0]) for m in matrices]


# ---------------------------------------------------------------------------

class GPT2(tf.Module):
    """GPT-2: token ids in, logits out.

    ``weights`` maps checkpoint names to arrays (see :func:`variable_shapes`);
    without it the model starts from GPT-2's random initialisation.
    ``compute_dtype`` may be ``"bfloat16"`` or ``"float16"``: matmuls run in
    that type while variables, LayerNorm and softmax stay float32.

    For LoRA (``lora.py``) the weights are a frozen base: ``trainable=False``,
    and ``matrix_dtype="bfloat16"`` or ``"float16"`` holds the weight matrices
    (``wte``, ``wpe``, every ``w``; not the LayerNorm and bias vectors) in half
    the memory, each converted as it is read. ``lora`` then holds the adapters
    that :meth:`forward` adds beside the base.
    """

    def __init__(self, hparams, weights=None, *, seed=None, compute_dtype="float32",
                 matrix_dtype="float32", trainable=True, name="model"):
        super().__init__(name=None)
        self.hparams = hparams
        self.compute_dtype = tf.as_dtype(compute_dtype)
        if weights is None:
            weights = random_weights(hparams, seed)
        matrix_dtype = tf.as_dtype(matrix_dtype)
        self.weights = {}
        for n, s in variable_shapes(hparams).items():  # one variable at a time in memory
            value = np.asarray(weights[n], np.float32).reshape(s)
            if len(s) > 1 and matrix_dtype != tf.float32:
                value = tf.cast(value, matrix_dtype)
            self.weights[n] = tf.Variable(value, name=n, trainable=trainable)
        self.lora = None

    @property
    def wte(self):
        return self.weights["model/wte"]

    @property
    def wpe(self):
        return self.weights["model/wpe"]

    def empty_cache(self, batch_size, length, dtype=None):
        """A zeroed key/value cache for ``length`` positions: a list of :class:`KVCache`,
        one per layer."""
        hp = self.hparams
        shape, dtype = [batch_size * hp.n_head, length, hp.head_size], dtype or self.compute_dtype
        return [KVCache(tf.zeros(shape, dtype), tf.zeros(shape, dtype)) for _ in range(hp.n_layer)]

    def tile_cache(self, cache, batch_size):
        """A one-row cache (:meth:`empty_cache`, filled by :meth:`forward`) repeated for
        ``batch_size`` rows, so that a prompt every row shares is read once (the decode
        loop's ``Decoder._prefill_window``).

            >>> from gpt2_simple_plus.hparams import hparams_for
            >>> model = GPT2(hparams_for("tiny", n_vocab=50))
            >>> tiled = model.tile_cache(model.empty_cache(1, 8), 3)
            >>> tiled[0].keys.shape == model.empty_cache(3, 8)[0].keys.shape
            True
        """
        # batch and heads are folded batch-major, so whole one-row buffers repeat
        return [KVCache(tf.tile(c.keys, [batch_size, 1, 1]), tf.tile(c.values, [batch_size, 1, 1]))
                for c in cache]

    def matrices(self, transposed=False):
        """Each layer's weight matrix, for the decode loop at batch 1 (see :func:`conv1d`):
        ``[nx, nf]`` views that share the variables' memory (an eager reshape copies
        nothing), or with ``transposed=True`` :class:`Transposed` copies, which XLA reads
        faster and which take as much memory again. Made anew at each call, so they
        hold the variables' current values (after fine-tuning too).

            >>> from gpt2_simple_plus.hparams import hparams_for
            >>> model = GPT2(hparams_for("tiny", n_vocab=100), seed=0)
            >>> fc = model.weights["model/h0/mlp/c_fc/w"][0]
            >>> view = model.matrices()["model/h0/mlp/c_fc/w"]
            >>> copy = model.matrices(transposed=True)["model/h0/mlp/c_fc/w"].matrix
            >>> tuple(view.shape), tuple(copy.shape)
            ((32, 128), (128, 32))
            >>> bool(tf.reduce_all(view == fc)), bool(tf.reduce_all(copy == tf.transpose(fc)))
            (True, True)
        """
        layers = self.layer_matrices()
        if transposed:
            return dict(zip(layers, map(Transposed, _transposed(list(layers.values())))))
        return {n: tf.reshape(v.value(), v.shape[1:]) for n, v in layers.items()}

    def layer_matrices(self):
        """``{name: variable}`` of the layers' ``[1, nx, nf]`` weight matrices (not ``wte``,
        ``wpe``, biases or LayerNorm): what :meth:`matrices` gives the decode loop."""
        return {n: v for n, v in self.weights.items() if n.endswith("/w") and v.shape.rank == 3}

    def forward(self, tokens, *, cache=None, pos=0, pad=None, recompute=False, portable=False,
                weights=None):
        """The final hidden states ``[batch, seq, n_embd]`` (after ``ln_f``) and the cache.

        ``tokens`` sit at positions ``pos ...``; with a ``cache`` they are written
        into it and attend to everything before them. ``pad[r]`` counts row ``r``'s
        left-padding tokens, which nobody attends to. ``recompute=True``
        recomputes each block in the backward pass instead of storing its
        activations (memory-saving gradients). A ``cache`` of :class:`Past` pairs,
        one per layer, is read but not written (see :func:`past_attn`): the tokens' own
        keys and values come back in its place, for the caller to store.
        ``portable=True`` writes the cache with core TensorFlow ops instead of XLA's (see
        :func:`update_slice`), for export. ``weights`` (``{name: tensor}``) stand in for
        some of the model's own: the decode loop passes :meth:`matrices`.
        """
        w, hp = self.weights, self.hparams
        if weights:
            w = {**w, **weights}
        if self.lora is not None:  # "model/h0/attn/c_attn/lora": (A, B, scale) beside the base
            w = {**w, **self.lora.terms()}
        tokens = tf.convert_to_tensor(tokens)
        if tokens.dtype != tf.int32:  # int64 from tf.data or NumPy
            tokens = tf.cast(tokens, tf.int32)
        if pad is not None:
            pad = tf.convert_to_tensor(pad, tf.int32)
        # Gather from the read values: a gather on the variable itself would switch it to
        # copy-on-read, and every later read of wte (the head's; 154 MB in 124M) would copy it.
        wte, wpe = tf.convert_to_tensor(w["model/wte"]), tf.convert_to_tensor(w["model/wpe"])
        h = tf.cast(tf.gather(wte, tokens), tf.float32) + tf.cast(
            tf.gather(wpe, positions_for(tokens, pos, pad)), tf.float32)
        h = tf.cast(h, self.compute_dtype)
        mask = layer_mask(shape_list(tokens)[1], None if cache is None else cache[0], pos, pad)
        new_cache = []
        for i in range(hp.n_layer):
            prefix = f"model/h{i}/"
            layer_cache = None if cache is None else cache[i]
            if recompute and cache is None:
                h = self._recomputed_block(h, w, prefix, mask)
            else:
                h, layer_cache = block(h, w, prefix, n_head=hp.n_head, cache=layer_cache,
                                       pos=pos, mask=mask, portable=portable)
            new_cache.append(layer_cache)
        h = norm(h, w["model/ln_f/g"], w["model/ln_f/b"])
        return h, (new_cache if cache is not None else None)

    def _recomputed_block(self, h, w, prefix, mask):
        # Trainable variables are read inside, so recompute_grad differentiates them. A frozen
        # base is read here: TensorFlow keeps every custom gradient's closure for good, and
        # one holding the base's variables would keep their memory after training.
        layer = {n: v if getattr(v, "trainable", True) else tf.convert_to_tensor(v)
                 for n, v in w.items() if n.startswith(prefix)}
        n_head = self.hparams.n_head

        @tf.recompute_grad
        def run(x):
            # A bfloat16 base is cast to the compute dtype in here, so its float32 copy lives
            # only while this block runs, forward or backward: its reads wait for the block's
            # input (else the graph may cast every block's weights at once, up front).
            with tf.control_dependencies([x]):
                w = {n: tf.identity(v) if isinstance(v, tf.Tensor) else v
                     for n, v in layer.items()}
            out, _ = block(x, w, prefix, n_head=n_head, mask=mask)
            return out

        return run(h)

    def logits(self, h):
        """The tied language-model head: ``h · wteᵀ``, returned in float32."""
        wte = tf.cast(self.weights["model/wte"], h.dtype)
        rows = h.shape[0] * h.shape[1] if h.shape[0] and h.shape[1] else None
        if rows is not None and rows <= 64:
            # Few rows (decoding): (wte · hᵀ)ᵀ runs faster than h · wteᵀ under XLA on CPU.
            flat = tf.reshape(h, [rows, h.shape[2]])
            out = tf.transpose(tf.matmul(wte, flat, transpose_b=True))
            return tf.cast(tf.reshape(out, [h.shape[0], h.shape[1], -1]), tf.float32)
        return tf.cast(tf.einsum("bte,ve->btv", h, wte), tf.float32)

    def __call__(self, tokens, *, cache=None, pos=0, pad=None):
        """Logits ``[batch, seq, n_vocab]`` for ``tokens`` (full causal forward pass)."""
        h, _ = self.forward(tokens, cache=cache, pos=pos, pad=pad)
        return self.logits(h)

    def trainable_weights(self, only_transformer_layers=False):
        """Variables to train; with ``only_transformer_layers`` just the ``/h`` blocks
        (gpt-2-simple's ``only_train_transformer_layers``)."""
        return [v for n, v in self.weights.items()
                if not only_transformer_layers or "/h" in n]

    def numpy_weights(self):
        """``{checkpoint name: np.ndarray}`` — what a checkpoint save writes."""
        return {n: v.numpy() for n, v in self.weights.items()}

    def assign(self, weights):
        """Copy arrays (a ``{name: array}`` dict) into the existing variables."""
        for n, v in self.weights.items():
            v.assign(tf.cast(np.asarray(weights[n], np.float32).reshape(v.shape), v.dtype))

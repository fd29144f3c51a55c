"""How the next token is picked from the model's logits.

Each rule is a small function on a ``[batch, vocab]`` float32 tensor, with
gpt-2-simple's definitions: ``top_k=0`` and ``top_p=0.0`` mean off, a
non-zero ``top_p`` overrides ``top_k``, ``temperature=0`` means greedy.
The settings may be Python numbers, fixed when the decode loop is compiled,
or tensors given at run time: the same functions serve ``generate()`` and an
exported SavedModel, whose settings are inputs (``SamplingConfig(runtime=True)``).

    >>> import tensorflow as tf
    >>> logits = tf.constant([[1.0, 3.0, 2.0, 0.0]])
    >>> top_k_logits(logits, 2).numpy().tolist()
    [[-10000000000.0, 3.0, 2.0, -10000000000.0]]
    >>> pick = SamplingConfig(temperature=0.0)
    >>> int(next_token(logits, pick, seed=tf.constant([0, 0]))[0])
    1
"""

import dataclasses

import tensorflow as tf

from .model import shape_list

NEG_INF = -1e10  # what OpenAI's sampler writes into masked-out logits


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """The sampling rule. Its fields decide which ops are compiled into the
    decode loop, so changing ``top_k`` or switching a rule on compiles a new
    loop; temperature, top_p and the penalty's value are run-time inputs.

    ``runtime=True`` fixes nothing but the penalty switch: greedy or not, top-k
    (with its ``k``) or top-p are then chosen inside the graph from the tensors
    given to :func:`next_token`, as a SavedModel whose settings are inputs needs.
    It is slower per token (both branches are in the graph, and ``k`` is not a
    constant), so ``generate()`` compiles the fixed rule instead."""

    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.0
    repetition_penalty: float = 1.0
    runtime: bool = False

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 means off), got {self.top_k}.")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be between 0 and 1 (0 means off), got {self.top_p}.")
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be > 0 (1.0 means off), got {self.repetition_penalty}.")

    @property
    def greedy(self):
        """Always the likeliest token (decided in the graph when ``runtime``)."""
        if self.runtime:
            return False
        return self.temperature == 0 or (self.top_k == 1 and self.top_p == 0)

    def compile_key(self):
        """What must be fixed when the loop is compiled."""
        if self.runtime:
            return ("runtime", self.repetition_penalty != 1.0)
        return (self.greedy, 0 if self.top_p > 0 else self.top_k, self.top_p > 0,
                self.repetition_penalty != 1.0)


def top_k_logits(logits, k):
    """Keep the ``k`` largest logits of each row (ties at the k-th value kept), mask the rest.

    ``k`` is a Python int (fixed when compiled) or an int32 tensor (0 = off).

        >>> logits = tf.constant([[1.0, 3.0, 2.0, 0.0]])
        >>> top_k_logits(logits, tf.constant(3)).numpy().tolist()
        [[1.0, 3.0, 2.0, -10000000000.0]]
    """
    if not tf.is_tensor(k):
        if k <= 0 or k >= logits.shape[-1]:
            return logits
        values, _ = tf.math.top_k(logits, k=k)
        return tf.where(logits < values[:, -1:], NEG_INF, logits)
    k = tf.minimum(k, tf.shape(logits)[-1])

    def cut():
        values, _ = tf.math.top_k(logits, k=k)
        return tf.where(logits < values[:, -1:], NEG_INF, logits)

    return tf.cond(k > 0, cut, lambda: logits)


def top_p_logits(logits, p):
    """Nucleus filter, gpt-2-simple's definition: keep the most likely tokens
    whose probabilities summed *before* them are below ``p`` (so at least one)."""
    sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)
    cumulative = tf.cumsum(tf.nn.softmax(sorted_logits, axis=-1), axis=-1, exclusive=True)
    kept = tf.where(cumulative < p, sorted_logits, 1000.0)
    cutoff = tf.reduce_min(kept, axis=-1, keepdims=True)
    return tf.where(logits < cutoff, NEG_INF, logits)


def penalize_repetition(logits, seen, penalty):
    """Hugging Face's repetition penalty: logits of tokens already ``seen``
    (``[batch, vocab]`` booleans) are divided by ``penalty`` if positive, multiplied if negative."""
    penalized = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalized, logits)


def filter_logits(logits, config, *, temperature, top_p, penalty=None, seen=None, top_k=None):
    """Apply the configured rules in gpt-2-simple's order: penalty, temperature, top-p or top-k.

    With ``config.runtime`` the choice between top-p and top-k (and ``top_k``'s
    value) comes from the ``top_p`` and ``top_k`` tensors."""
    if config.repetition_penalty != 1.0:
        logits = penalize_repetition(logits, seen, penalty)
    if config.greedy:
        return logits
    logits = logits / temperature
    if config.runtime:
        top_k = tf.convert_to_tensor(config.top_k if top_k is None else top_k, tf.int32)
        top_p = tf.convert_to_tensor(top_p, tf.float32)
        return tf.cond(top_p > 0, lambda: top_p_logits(logits, top_p),
                       lambda: top_k_logits(logits, top_k))
    if config.top_p > 0:
        return top_p_logits(logits, top_p)
    return top_k_logits(logits, config.top_k)


def next_token(logits, config, *, seed, temperature=None, top_p=None, penalty=None, seen=None,
               top_k=None):
    """One token id per row (``int32 [batch]``), drawn with a stateless ``seed`` (``int32 [2]``).

    The settings default to ``config``'s; tensors given here are read at run time.
    With ``config.runtime``, ``temperature == 0`` or ``top_k == 1`` (without
    ``top_p``) means greedy, decided in the graph.

        >>> logits = tf.constant([[1.0, 3.0, 2.0, 0.0]])
        >>> rule = SamplingConfig(runtime=True)
        >>> int(next_token(logits, rule, seed=tf.constant([0, 0]),
        ...                temperature=tf.constant(0.0))[0])
        1
    """
    temperature = config.temperature if temperature is None else temperature
    top_p = config.top_p if top_p is None else top_p
    penalty = config.repetition_penalty if penalty is None else penalty
    if config.runtime:
        top_k = tf.convert_to_tensor(config.top_k if top_k is None else top_k, tf.int32)
        temperature = tf.convert_to_tensor(temperature, tf.float32)
        top_p = tf.convert_to_tensor(top_p, tf.float32)
        if config.repetition_penalty != 1.0:
            logits = penalize_repetition(logits, seen, penalty)
        greedy = tf.logical_or(temperature <= 0, tf.logical_and(top_k == 1, top_p <= 0))

        def draw():
            # temperature 1 where greedy: the branch is not taken, but must not divide by 0
            safe = tf.where(greedy, 1.0, temperature)
            kept = filter_logits(logits, dataclasses.replace(config, repetition_penalty=1.0),
                                 temperature=safe, top_p=top_p, top_k=top_k)
            return categorical(kept, seed)

        return tf.cond(greedy, lambda: tf.argmax(logits, axis=-1, output_type=tf.int32), draw)
    logits = filter_logits(logits, config, temperature=temperature, top_p=top_p, penalty=penalty,
                           seen=seen)
    if config.greedy:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    return categorical(logits, seed)


def uniform(shape, seed):
    """Counter-based uniform numbers in (0, 1): a 32-bit integer hash of
    (index, seed). It is a few integer operations per number, where XLA's own
    stateless RNG took many times longer on the CPU when this was written; it is
    deterministic across processes and plenty random for sampling.

        >>> import tensorflow as tf
        >>> u = uniform([4], tf.constant([1, 2]))
        >>> bool(tf.reduce_all((u > 0) & (u < 1)))
        True
    """
    n = tf.reduce_prod(shape)
    x = tf.bitcast(tf.reshape(tf.range(n, dtype=tf.int32), shape), tf.uint32)
    seed = tf.bitcast(tf.cast(seed, tf.int32), tf.uint32)
    x = x * tf.constant(0x9E3779B1, tf.uint32) ^ seed[0]
    x = x + seed[1] * tf.constant(0x85EBCA77, tf.uint32)
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):  # "lowbias32" finaliser
        x = (x ^ tf.bitwise.right_shift(x, tf.constant(shift, tf.uint32))) * tf.constant(
            multiplier, tf.uint32)
    x = x ^ tf.bitwise.right_shift(x, tf.constant(16, tf.uint32))
    # 23 bits, so the largest value, 1 - 2**-24, is still below 1 in float32.
    top23 = tf.cast(tf.bitwise.right_shift(x, tf.constant(9, tf.uint32)), tf.float32)
    return (top23 + 0.5) * (1.0 / (1 << 23))


CDF_BLOCK = 256  # categorical's block size: two short scans instead of one over the vocabulary


def categorical(logits, seed):
    """One draw per row from softmax(logits), by inverting the cumulative sum
    with one uniform number per row (masked -1e10 logits get probability 0).

    The inversion runs in two levels: the vocabulary is cut into blocks of
    ``CDF_BLOCK``; a scan over the block sums finds the block holding the draw,
    and a scan inside that block finds the token. The same token as one scan
    over the whole vocabulary (up to float rounding), for far less work than a
    50k-long cumulative sum per step.
    """
    batch, vocab = shape_list(logits)  # static where known
    weights = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    n_blocks = -(-vocab // CDF_BLOCK)
    blocks = tf.reshape(tf.pad(weights, [[0, 0], [0, n_blocks * CDF_BLOCK - vocab]]),
                        [batch, n_blocks, CDF_BLOCK])
    sums = tf.reduce_sum(blocks, axis=-1)
    cumulative = tf.cumsum(sums, axis=-1)
    u = uniform([batch, 1], seed) * cumulative[:, -1:]
    block = tf.minimum(tf.reduce_sum(tf.cast(cumulative < u, tf.int32), axis=-1), n_blocks - 1)
    before = tf.gather(cumulative - sums, block, batch_dims=1)  # total weight of earlier blocks
    inside = tf.cumsum(tf.gather(blocks, block, batch_dims=1), axis=-1) + before[:, None]
    offset = tf.minimum(tf.reduce_sum(tf.cast(inside < u, tf.int32), axis=-1), CDF_BLOCK - 1)
    return tf.minimum(block * CDF_BLOCK + offset, vocab - 1)

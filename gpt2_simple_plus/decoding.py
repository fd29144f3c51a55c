"""The compiled decode loop: prompt in one pass, then a ``tf.while_loop`` that
samples a token and runs the model on it, over a key/value cache preallocated
for the whole sequence and updated in place. A prompt of a few tokens
(:data:`READ_MAX`) is read by the loop itself, with no pass of its own.

Shapes are bucketed (batch, prompt length rounded up, cache length rounded
up) and each compiled function is kept, so calling again with the same shapes
neither retraces nor grows memory. Text never appears here: token ids in,
token ids out. Any object with GPT-2's ``forward``/``logits``/``empty_cache``
methods and an ``hparams.n_ctx`` works, which is how the tests drive the loop
with a fake model that spells a known string.

    >>> from gpt2_simple_plus.hparams import hparams_for
    >>> from gpt2_simple_plus.model import GPT2
    >>> from gpt2_simple_plus.sampling import SamplingConfig
    >>> decoder = Decoder(GPT2(hparams_for("tiny", n_vocab=100), seed=0))
    >>> rows = decoder.generate([[1, 2, 3]], 5, SamplingConfig(temperature=0.0))
    >>> len(rows[0])
    5
"""

import contextlib
import logging

import numpy as np
import tensorflow as tf

from .memory import available_memory
from .model import update_slice
from .padding import pad_left, round_up
from .sampling import next_token

PROMPT_BUCKET = 16  # prompt lengths are rounded up to a multiple of this
# Cache lengths are rounded up to a multiple of this; attention reads the whole
# cache each step, so a smaller bucket wastes less of it (benchmarks/generate.py).
CACHE_BUCKET = 32
# At batch 1 the loop reads transposed copies of the weight matrices (GPT2.matrices): a
# token then takes about a tenth less time under XLA on the CPU, and making them costs
# about two tokens' time, so they are made (once per call) for a call of at least this
# many tokens, when the memory available holds them twice over (benchmarks/README.md).
ROWS_MIN_TOKENS = 32
# ... and for layer matrices of at most this many bytes: at 774M (2.8 GB of them) the copies
# still made a token 10% faster, at 1558M (5.8 GB) no faster, while they took 6 GB more
# memory and made the first two calls twice as slow (benchmarks/README.md).
ROWS_MAX_BYTES = 4 * 2**30
# A prompt of at most this many tokens (no prefix, a few words) is read by the decode loop
# itself, a token per step (decode_loop's ``prompt``), not by a pass of its own: a process
# whose first generation has such a prompt then compiles one function instead of two and
# comes about 2 s sooner to its first text under XLA. Each token read costs a step: at
# batch 1 this many steps take about what the pass takes; at batch 8, where the pass reads
# a shared prompt once for all rows, a little more (benchmarks/README.md). A LiteRT model
# reads every prompt with its float32 model.
READ_MAX = 4


class _OwnRetracingFilter(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about this
    module's functions only: each shape bucket and sampling rule is compiled
    once on purpose and kept, which that heuristic mistakes for a leak."""

    def filter(self, record):
        return not ("retracing" in record.getMessage() and _MARK in record.getMessage())


_MARK = "gpt2_simple_plus_compiled"
tf.get_logger().addFilter(_OwnRetracingFilter())


def _named(fn):
    fn.__qualname__ = f"{_MARK}.{fn.__name__}"
    return fn


def decode_loop(model, out_len, config, stop_shape=(0, 1), *, portable=False, on_trace=None,
                compile_choice=False):
    """The decode loop: a function that samples up to ``out_len`` tokens after a
    prefilled cache (or after a short ``prompt`` it reads first), each step drawing a
    token with :func:`~gpt2_simple_plus.sampling.next_token` and running the model on it.
    :class:`Decoder` compiles it; the SavedModel of :mod:`~gpt2_simple_plus.export`
    traces the same function (``portable=True``: core TensorFlow ops only, see
    :func:`~gpt2_simple_plus.model.update_slice`).

    ``loop(cache, logits, pos, pad, seen, steps, seed, step0, temperature, top_p,
    penalty, stops, done, top_k=None, matrices=None, prompt=None, reads=None)`` returns
    ``(cache, logits, out, i, done, seen)``: ``out`` holds ``[batch, out_len]`` new ids
    (``-2`` past ``i``, the tokens drawn). Draw ``i`` uses seed ``seed + [0, step0 +
    i]``; ``stops`` are the stop sequences (see :func:`_stop_tensor`), and a row is
    ``done`` once one ended. ``top_k`` is read only by a ``runtime`` rule; a fixed rule
    has its own.

    With ``prompt`` (``[batch, width]`` ids written against the right edge, as
    :func:`~gpt2_simple_plus.padding.pad_left` writes them), the loop first reads the
    last ``reads`` of its columns into the cache, one per step from position ``pos``,
    then draws after them: a prompt of a few tokens needs no pass of its own, so the
    first generation compiles one function instead of two (:data:`READ_MAX`).

    ``compile_choice=True`` compiles each step's choice of token (sampling and its
    bookkeeping) with XLA on its own, for a loop that is not compiled whole because
    its model runs Python (:class:`~gpt2_simple_plus.lite.LiteModel`): one kernel
    launch per step instead of some forty TensorFlow ops, each dispatched to threads
    that the model's own runtime has just been using.
    """
    penalize = config.repetition_penalty != 1.0
    n_stop, stop_width = stop_shape
    margin = max(stop_width - 1, 0)  # room before the output so a stop window never underflows
    portable_arg = {"portable": True} if portable else {}  # test models need not take it

    def loop(cache, logits, pos, pad, seen, steps, seed, step0, temperature, top_p, penalty,
             stops, done, top_k=None, matrices=None, prompt=None, reads=None):
        if on_trace is not None:
            on_trace()
        batch = logits.shape[0]  # static in the Decoder: each batch size has its own loop
        if batch is None:
            batch = tf.shape(logits)[0]
        out = tf.fill([batch, out_len + margin], tf.constant(-2, tf.int32))

        reading = prompt is not None
        limit = reads + steps if reading else steps  # step i draws token i - reads

        def cond(i, cache, logits, out, done, seen):
            go = i < limit
            if n_stop:
                go = tf.logical_and(go, tf.logical_not(tf.reduce_all(done)))
            return go

        def choose(i, logits, out, done, seen):
            """Step ``i``'s token, recorded in ``out``, ``done`` and ``seen``."""
            token = next_token(logits, config, seed=seed + tf.stack([0, step0 + i]),
                               temperature=temperature, top_k=top_k, top_p=top_p,
                               penalty=penalty, seen=seen)
            out = update_slice(out, token[:, None], margin + i, axis=1, portable=portable)
            if n_stop:
                window = tf.slice(out, [0, i], [batch, stop_width])  # the last stop_width tokens
                hit = tf.logical_or(stops[None] < 0, window[:, None, :] == stops[None])
                done = tf.logical_or(done, tf.reduce_any(tf.reduce_all(hit, -1), -1))
            if penalize:
                seen = tf.logical_or(seen, tf.one_hot(token, tf.shape(seen)[1], on_value=True,
                                                      off_value=False))
            return token, out, done, seen

        if compile_choice:
            choose = tf.function(choose, jit_compile=True, autograph=False)

        def body(i, cache, logits, out, done, seen):
            if reading:
                token, out, done, seen = tf.cond(
                    i < reads,
                    lambda: (tf.gather(prompt, prompt.shape[1] - reads + i, axis=1), out, done,
                             seen),
                    lambda: choose(i - reads, logits, out, done, seen))
            else:
                token, out, done, seen = choose(i, logits, out, done, seen)
            # test models need not take portable= or weights=
            extra = dict(portable_arg, **({"weights": matrices} if matrices else {}))
            h, cache = model.forward(token[:, None], cache=cache, pos=pos + i, pad=pad, **extra)
            return i + 1, cache, model.logits(h)[:, 0], out, done, seen

        i, cache, logits, out, done, seen = tf.while_loop(
            cond, body, [tf.constant(0), cache, logits, out, done, seen],
            maximum_iterations=out_len + (prompt.shape[1] if reading else 0))
        return cache, logits, out[:, margin:], i - reads if reading else i, done, seen

    return loop


def batch_seed(seed, index):
    """The seed of batch ``index`` of a ``generate`` call with ``seed``, in 0 .. 2**31 - 1:
    the same arithmetic on Python ints and on int64 tensors (the SavedModel's seed input;
    a floored modulo, which TFLite runs, rather than a bitwise and).

        >>> batch_seed(1, 0), batch_seed(1, 1), batch_seed(-1, 0)
        (1000003, 1000004, 2146483645)
    """
    return (seed * 1_000_003 + index) % 0x80000000


class Decoder:
    """Compiled generation for one model. ``jit_compile`` selects XLA (faster on CPU here);
    ``compile_choice``, for a model that runs Python, compiles just the choice of token
    (see :func:`decode_loop`)."""

    def __init__(self, model, *, jit_compile=True, compile_choice=False):
        self.model = model
        self.jit_compile = jit_compile
        self.compile_choice = compile_choice and not jit_compile  # see decode_loop
        self.reads_prompts = jit_compile  # see READ_MAX
        self._prefill = {}
        self._loops = {}
        self.traces = 0  # how many times a function was traced (tests check it stays flat)

    # -- compiled pieces ---------------------------------------------------

    def prefill_fn(self, batch, prompt_len, cache_len):
        key = (batch, prompt_len, cache_len)
        if key not in self._prefill:
            model = self.model

            def prefill(prompt, pad):
                self.traces += 1
                cache = model.empty_cache(batch, cache_len)
                h, cache = model.forward(prompt, cache=cache, pos=0, pad=pad)
                return cache, model.logits(h[:, -1:])[:, 0]

            self._prefill[key] = tf.function(_named(prefill), jit_compile=self.jit_compile,
                                             autograph=False)
        return self._prefill[key]

    def loop_fn(self, batch, cache_len, out_len, config, stop_shape):
        key = (batch, cache_len, out_len, config.compile_key(), stop_shape)
        if key not in self._loops:
            self._loops[key] = tf.function(
                _named(decode_loop(self.model, out_len, config, stop_shape,
                                   on_trace=self._count_trace,
                                   compile_choice=self.compile_choice)),
                jit_compile=self.jit_compile, autograph=False)
        return self._loops[key]

    def _count_trace(self):
        self.traces += 1

    # -- driving it --------------------------------------------------------

    def generate(self, prompts, length, config, *, seed=0, stop_sequences=(), keep=None):
        """Generate ``length`` new tokens after each prompt (a list of id lists).

        Returns one list of new ids per prompt, cut right after its first stop
        sequence (a row stops early; the loop ends when every row has).
        Prompts and generations longer than the context slide a window: the
        most recent ``keep`` tokens (default ``n_ctx // 2``) are re-read in one
        pass and generation continues.
        """
        rows = [[] for _ in prompts]
        for piece in self.stream(prompts, length, config, seed=seed,
                                 stop_sequences=stop_sequences, keep=keep):
            for row, new in zip(rows, piece):
                row.extend(new)
        return rows

    def stream(self, prompts, length, config, *, seed=0, stop_sequences=(), keep=None, chunk=None):
        """Like :meth:`generate`, but yields each row's new ids piece by piece:
        ``chunk`` tokens per compiled call (the whole window when ``None``)."""
        n_ctx = self.model.hparams.n_ctx
        keep = min(keep or n_ctx // 2, n_ctx - 1)
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        batch = len(prompts)
        stops = _stop_tensor(stop_sequences)
        seed = tf.constant([int(seed) & 0x7FFFFFFF, 0], tf.int32)
        histories = [list(p) for p in prompts]  # what each row has seen and written
        produced = [[] for _ in prompts]
        finished = np.zeros(batch, bool)
        # made once per call: every window of the call reads the same weights
        matrices = self._row_matrices(batch, length)
        step = 0
        while step < length and not finished.all():
            # One window: the most recent context, leaving room to generate.
            room = length - step
            longest = max(map(len, histories))
            reads = 0
            if longest + room <= n_ctx:  # everything fits: one window
                context = histories
                prompt_len = round_up(longest, PROMPT_BUCKET)
                if prompt_len + room > n_ctx:  # no room for the rounding
                    prompt_len = longest
                if self.reads_prompts and longest <= READ_MAX:  # the loop reads it
                    prompt_len = reads = longest
            else:  # slide: keep a bucket-aligned tail, so the window has room to generate
                budget = max(n_ctx - room, keep) // PROMPT_BUCKET * PROMPT_BUCKET or keep
                context = [h[-budget:] for h in histories]
                prompt_len = round_up(max(map(len, context)), PROMPT_BUCKET)
            prompt_len = min(prompt_len, n_ctx - 1)
            context = [c[-prompt_len:] for c in context]
            cache_len = min(round_up(prompt_len + room, CACHE_BUCKET), n_ctx)
            span = cache_len - prompt_len  # tokens this window can hold
            prompt, pad = pad_left(context, prompt_len)
            if reads:
                cache = self.model.empty_cache(batch, cache_len)
                logits = tf.zeros([batch, self.model.hparams.n_vocab])  # read, never drawn from
            else:
                cache, logits = self._prefill_window(context, prompt, pad, cache_len)
            after = self._reading(context, 0)  # the loop's calls once the prompt is in
            reading = self._reading(context, reads) if reads else after
            seen = self._seen(config, histories, logits)
            out_len = min(chunk or span, span)
            loop = self.loop_fn(batch, cache_len, out_len, config, tuple(stops.shape))
            pos = prompt_len
            while pos < cache_len and step < length and not finished.all():
                steps = min(out_len, cache_len - pos, length - step)
                with _python_errors(self.model):
                    cache, logits, out, n, _, seen = loop(
                        cache, logits, tf.constant(pos - reads, tf.int32), pad, seen,
                        tf.constant(steps), seed, tf.constant(step),
                        tf.constant(config.temperature or 1.0, tf.float32),
                        tf.constant(config.top_p, tf.float32),
                        tf.constant(config.repetition_penalty, tf.float32), stops,
                        tf.constant(finished),  # rows stopped in an earlier call count as done
                        matrices=matrices, **reading)
                reads, reading = 0, after
                n = int(n)
                out = out.numpy()[:, :n]
                piece = [[] for _ in prompts]
                for r in range(batch):
                    if finished[r]:
                        continue
                    row = out[r].tolist()
                    cut = _first_stop_end(produced[r], row, stop_sequences)
                    if cut is not None:
                        row = row[:cut]
                        finished[r] = True
                    produced[r].extend(row)
                    histories[r].extend(row)
                    piece[r] = row
                pos += n
                step += n
                yield piece

    def _reading(self, context, reads):
        """The loop's ``prompt`` and ``reads`` (see :func:`decode_loop`): the last ``reads``
        tokens of ``context``'s rows (none: zeros), always :data:`READ_MAX` wide, so that
        one compiled loop serves every window."""
        if not self.reads_prompts:
            return {}
        rows = [row[-reads:] if reads else [] for row in context]
        return {"prompt": tf.constant(pad_left(rows, READ_MAX)[0]),
                "reads": tf.constant(reads, tf.int32)}

    def _prefill_window(self, context, prompt, pad, cache_len):
        """The cache and next-token logits after a window's padded ``prompt``. Rows
        that all hold the same context (``nsamples`` texts from one prefix) are read
        once, as one row, and the cache is tiled: the prompt's pass costs what one
        row's does, at any batch size."""
        batch, prompt_len = prompt.shape
        tile = getattr(self.model, "tile_cache", None)
        if batch == 1 or tile is None or any(c != context[0] for c in context[1:]):
            return self.prefill_fn(batch, prompt_len, cache_len)(prompt, pad)
        cache, logits = self.prefill_fn(1, prompt_len, cache_len)(prompt[:1], pad[:1])
        return tile(cache, batch), tf.tile(logits, [batch, 1])

    def _row_matrices(self, batch, tokens):
        """The weight matrices the loop reads for a call of ``tokens`` at ``batch``
        rows (see :meth:`~gpt2_simple_plus.model.GPT2.matrices`): None (the variables)
        beyond one row, transposed copies when they pay (:data:`ROWS_MIN_TOKENS`,
        :data:`ROWS_MAX_BYTES`) and fit, else views."""
        if batch != 1 or not hasattr(self.model, "matrices"):
            return None
        copies = tokens >= ROWS_MIN_TOKENS
        if copies:
            need = sum(v.shape.num_elements() * v.dtype.size
                       for v in self.model.layer_matrices().values())
            available, _ = available_memory()
            copies = need <= ROWS_MAX_BYTES and (available is None or available >= 2 * need)
        return self.model.matrices(transposed=copies)

    def _seen(self, config, histories, logits):
        vocab = logits.shape[-1]
        if config.repetition_penalty == 1.0:
            return tf.zeros([len(histories), 1], tf.bool)
        seen = np.zeros([len(histories), vocab], bool)
        for r, h in enumerate(histories):
            seen[r, [t for t in h if 0 <= t < vocab]] = True
        return tf.constant(seen)


@contextlib.contextmanager
def _python_errors(model):
    """A model that runs Python inside the loop (:class:`~gpt2_simple_plus.lite.LiteModel`)
    keeps the error it raised there in ``model.raised``: that error, not TensorFlow's
    wrapper of it with the loop's traceback, is what the caller gets."""
    try:
        yield
    except tf.errors.OpError:
        raised, model.raised = getattr(model, "raised", None), None
        if raised is None:
            raise
        raise raised from None


def _stop_tensor(stop_sequences):
    """Stop sequences as an int32 ``[n, width]`` tensor, right-aligned, padded with -1."""
    stop_sequences = [list(s) for s in stop_sequences if len(s)]
    if not stop_sequences:
        return tf.zeros([0, 1], tf.int32)
    width = max(map(len, stop_sequences))
    rows = [[-1] * (width - len(s)) + s for s in stop_sequences]
    return tf.constant(rows, tf.int32)


def _first_stop_end(before, row, stop_sequences):
    """Index in ``row`` just past the first stop sequence ending there (matching may
    start in ``before``), or None."""
    if not stop_sequences:
        return None
    seq = before + row
    for j in range(len(before), len(seq)):
        for s in stop_sequences:
            if s and j + 1 >= len(s) and seq[j + 1 - len(s): j + 1] == list(s):
                return j + 1 - len(before)
    return None

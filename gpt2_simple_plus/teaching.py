"""Looking inside GPT-2: how text becomes tokens, what the model expects next,
and how surprised it is by a text.

Four flat functions on a session that has a model loaded::

    import gpt2_simple_plus as gpt2
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name="124M")
    print(gpt2.tokenize(sess, "Hello world"))                  # tokens, ids, byte spans
    print(gpt2.next_token_probabilities(sess, "The cat sat on the"))
    print(gpt2.score(sess, "The cat sat on the mat."))         # log-probability per token
    gpt2.perplexity(sess, open("held_out.txt").read())         # one number, lower is better

What is scored. A text is read as a document of its own, the way OpenAI
evaluated GPT-2: its tokens are preceded by ``<|endoftext|>``, so the first
token is predicted from ``<|endoftext|>`` alone and every token of the text
gets a log-probability. ``next_token_probabilities`` reads its prefix the
same way, so ``next_token_probabilities(sess, "a")`` gives for each token
``t`` exactly ``exp`` of the last log-probability ``score`` reports for the
text ``"a" + t`` (when ``t`` does not merge with the prefix's last token).

Texts longer than the context (``n_ctx``, 1024 tokens for GPT-2) are scored
with a sliding window: windows of ``context`` tokens moved ``stride`` tokens
at a time (Hugging Face's perplexity recipe). Each token is scored once, in
the first window that predicts it, so it sees at least ``context - stride``
tokens before it; the last window is moved back to end at the text's end, so
it has a full context too.

Logarithms are natural logs throughout. All windows of all texts are scored
together in right-padded batches whose shapes are rounded up to a few sizes
(powers of two), each compiled once per session, so calling again neither
retraces nor grows memory.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from .eager import ensure_eager
from .errors import GenerationError, ModelNotFoundError
from .padding import length_bucket, pad_right

TOKENS_PER_CALL = 2048  # rows x length of one compiled call: bounds the [rows, len, vocab] logits
LOAD_HINT = "load a model first: gpt2.load_gpt2(sess, model_name='124M')"


# ---------------------------------------------------------------------------
# Printing small tables.

def _table(headers, rows, align):
    """Rows as a plain-text table; ``align`` is a string of ``<``/``>`` per column."""
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(f"{c:{a}{w}}" for c, a, w in zip(row, align, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


class _TableList(list):
    """A list that prints as a table (``print(x)``, and in IPython/Jupyter)."""

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


def _quoted(token):
    """A token in quotes, with newlines, tabs and other invisible characters escaped."""
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in token) + "'"


def readable(token_bytes):
    """A token's bytes as text; bytes that are not whole UTF-8 characters show as ``\\xNN``.

        >>> readable(b" the"), readable(b"\\xc3")
        (' the', '\\\\xc3')
    """
    return token_bytes.decode("utf-8", errors="backslashreplace")


# ---------------------------------------------------------------------------
# tokenize

@dataclasses.dataclass(frozen=True)
class Token:
    """One token of a text: its readable ``token`` string, its ``id``, its ``bytes``,
    where it sits in the text's UTF-8 bytes (``start``, ``end``, end exclusive)
    and in the text itself (``text_start``, ``text_end``; ``None`` where the token
    boundary falls inside a character that is several bytes long)."""

    token: str
    id: int
    bytes: bytes
    start: int
    end: int
    text_start: int = None
    text_end: int = None


class Tokens(_TableList):
    """What :func:`tokenize` returns: a list of :class:`Token` that prints as a table."""

    @property
    def ids(self):
        return [t.id for t in self]

    def __str__(self):
        def span(a, b):
            return f"{'?' if a is None else a}:{'?' if b is None else b}"

        rows = [(i, _quoted(t.token), t.id, f"{t.start}:{t.end}", span(t.text_start, t.text_end))
                for i, t in enumerate(self)]
        return _table(("#", "token", "id", "bytes", "text"), rows, "><><<")


def tokenize(sess, text):
    """How GPT-2 reads ``text``: its tokens, their ids and where each sits in the text.

    Returns a list of :class:`Token` records that prints as a table. Byte
    offsets index ``text.encode("utf-8")``; text offsets index ``text`` and
    are ``None`` when a token starts or ends inside a multi-byte character
    (byte-level BPE may split an emoji or an accented letter).

        >>> from gpt2_simple_plus._examples import example_session
        >>> sess = example_session()
        >>> tokens = tokenize(sess, "the café")
        >>> print(tokens)
        #  token    id  bytes  text
        -  ------  ---  -----  ----
        0  'the'   257  0:3    0:3
        1  ' '     220  3:4    3:4
        2  'c'      66  4:5    4:5
        3  'a'      64  5:6    5:6
        4  'f'      69  6:7    6:7
        5  '\\xc3'  127  7:8    7:?
        6  '\\xa9'  102  8:9    ?:8
        >>> [t.id for t in tokens] == sess.encoder.encode("the café")
        True
        >>> tokens[-1].bytes, tokens[-1].start, tokens[-1].end, tokens[-1].text_end
        (b'\\xa9', 8, 9, 8)
    """
    encoder = _encoder(sess, "tokenize")
    ids = encoder.encode(text)
    raw = text.encode("utf-8", errors="surrogatepass")
    # Byte offset of each character boundary -> character offset.
    char_at, offset = {0: 0}, 0
    for i, ch in enumerate(text):
        offset += len(ch.encode("utf-8", errors="surrogatepass"))
        char_at[offset] = i + 1
    tokens, start = Tokens(), 0
    for token_id in ids:
        piece = encoder.token_bytes(token_id)
        end = start + len(piece)
        same = raw[start:end] == piece
        tokens.append(Token(readable(piece), int(token_id), piece, start, end,
                            char_at.get(start) if same else None,
                            char_at.get(end) if same else None))
        start = end
    return tokens


# ---------------------------------------------------------------------------
# next_token_probabilities

class TokenProbability(tuple):
    """``(token, probability)``; also has ``.token``, ``.probability`` and ``.id``."""

    def __new__(cls, token, probability, id):
        self = super().__new__(cls, (token, probability))
        self.id = id
        return self

    token = property(lambda self: self[0])
    probability = property(lambda self: self[1])


class Probabilities(_TableList):
    """What :func:`next_token_probabilities` returns: ``(token, probability)`` pairs,
    most likely first, printing as a table with a bar per probability."""

    def __init__(self, pairs=(), prefix=""):
        super().__init__(pairs)
        self.prefix = prefix

    @property
    def ids(self):
        return [p.id for p in self]

    def __str__(self):
        rows = [(i + 1, _quoted(p.token), p.id, f"{p.probability:.4f}",
                 "#" * round(p.probability * 40)) for i, p in enumerate(self)]
        return _table(("rank", "token", "id", "probability", ""), rows, "><>><")


def next_token_probabilities(sess, prefix, top_k=10, temperature=1.0):
    """The ``top_k`` most likely tokens to follow ``prefix``, with their probabilities.

    ``prefix`` is read as the start of a document (after ``<|endoftext|>``, see
    the module notes); an empty prefix asks what a document starts with. The
    probabilities are ``softmax(logits / temperature)`` over the whole
    vocabulary, so they sum to at most 1; ``temperature=0`` puts all of it on
    the most likely token (greedy decoding). ``top_k=None`` (or 0) lists every
    token. A list of prefixes gives a list of tables, computed in one batch.
    A prefix longer than the context keeps its last ``n_ctx`` tokens.

        >>> from gpt2_simple_plus._examples import example_session
        >>> sess = example_session()
        >>> probs = next_token_probabilities(sess, "the hat", top_k=3)
        >>> len(probs), sum(p for _, p in probs) <= 1
        (3, True)
        >>> token, probability = probs[0]
        >>> print(next_token_probabilities(sess, "the hat", top_k=3, temperature=0.1))
        ... # doctest: +SKIP
        rank  token    id  probability
        ----  ------  ---  -----------  ----------
           1  ' hat'  260       0.2492  ##########
           2  '\\xb7'  115       0.0302  #
           3  '\\xfe'  186       0.0236  #
    """
    model, encoder = _model(sess, "next_token_probabilities")
    if temperature is None or temperature < 0:
        raise GenerationError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}.")
    if top_k is not None and top_k < 0:
        raise GenerationError(f"top_k must be >= 0 (0 or None lists every token), got {top_k}.")
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    _check_texts(prefixes, "next_token_probabilities")
    n_ctx = model.hparams.n_ctx
    rows = [([encoder.eot_token] + encoder.encode(p))[-n_ctx:] for p in prefixes]
    logits = _run_rows(_scorer(sess).next_logits, rows, n_ctx)
    tables = []
    for p, row_logits in zip(prefixes, logits):
        probs = _softmax(row_logits, temperature)
        k = len(probs) if not top_k else min(top_k, len(probs))
        best = np.argpartition(-probs, k - 1)[:k] if k < len(probs) else np.arange(len(probs))
        best = best[np.lexsort((best, -probs[best]))]  # most likely first, ties by id
        tables.append(Probabilities(
            [TokenProbability(_readable_token(encoder, i), float(probs[i]), int(i)) for i in best],
            prefix=p))
    return tables[0] if isinstance(prefix, str) else tables


def _softmax(logits, temperature):
    logits = np.asarray(logits, np.float64)
    if temperature == 0:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    z = logits / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def _readable_token(encoder, token_id):
    try:
        return readable(encoder.token_bytes(int(token_id)))
    except Exception:  # an id the model has but the vocabulary lacks (padded vocabularies)
        return f"<id {int(token_id)}>"


# ---------------------------------------------------------------------------
# score and perplexity

class TokenScore(tuple):
    """``(token, logprob)`` of one token; also has ``.token``, ``.logprob`` and ``.id``."""

    def __new__(cls, token, logprob, id):
        self = super().__new__(cls, (token, logprob))
        self.id = id
        return self

    token = property(lambda self: self[0])
    logprob = property(lambda self: self[1])


class Scores(_TableList):
    """What :func:`score` returns for one text: a list of ``(token, logprob)``
    pairs, one per token, with the totals as attributes:

    ``ids``, ``logprobs`` (a NumPy array), ``total`` (their sum: the log-probability
    of the whole text), ``mean`` and ``perplexity`` (``exp(-mean)``).
    """

    def __init__(self, pairs=(), text=""):
        super().__init__(pairs)
        self.text = text

    @property
    def ids(self):
        return [s.id for s in self]

    @property
    def logprobs(self):
        return np.array([s.logprob for s in self], np.float64)

    @property
    def total(self):
        return float(self.logprobs.sum())

    @property
    def mean(self):
        return float(self.logprobs.mean()) if len(self) else float("nan")

    @property
    def perplexity(self):
        return math.exp(-self.mean) if len(self) else float("nan")

    def __str__(self):
        rows = [(i, _quoted(s.token), s.id, f"{s.logprob:.3f}", f"{math.exp(s.logprob):.4f}")
                for i, s in enumerate(self)]
        table = _table(("#", "token", "id", "log-prob", "prob"), rows, "><>>>")
        return (f"{table}\n{len(self)} tokens, total log-prob {self.total:.3f}, "
                f"perplexity {self.perplexity:.3f}")


def score(sess, texts, *, context=None, stride=None):
    """The log-probability (natural log) the model gives each token of ``texts``.

    One text gives a :class:`Scores` (a list of ``(token, logprob)`` that prints
    as a table, with ``.logprobs``, ``.total``, ``.perplexity``); a list of texts
    gives a list of them, computed in shared batches. The first token is
    predicted from ``<|endoftext|>``, as in GPT-2's evaluation. Longer texts
    than ``context`` tokens (default: the model's ``n_ctx``) are scored with a
    sliding window moved ``stride`` tokens at a time (default ``context // 2``);
    see the module notes.

        >>> from gpt2_simple_plus._examples import example_session
        >>> sess = example_session()
        >>> scores = score(sess, "the hat")
        >>> [token for token, logprob in scores]
        ['the', ' hat']
        >>> all(logprob < 0 for _, logprob in scores)
        True
        >>> round(scores.perplexity, 6) == round(math.exp(-scores.logprobs.mean()), 6)
        True
    """
    model, encoder = _model(sess, "score")
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    _check_texts(texts, "score")
    n_ctx = model.hparams.n_ctx
    context = n_ctx if context is None else int(context)
    if not 2 <= context <= n_ctx:
        raise GenerationError(f"context must be between 2 and the model's n_ctx ({n_ctx}), "
                              f"got {context}.")
    stride = max(1, context // 2) if stride is None else int(stride)
    if not 1 <= stride <= context - 1:
        raise GenerationError(f"stride must be between 1 and context - 1 ({context - 1}), "
                              f"got {stride}.")
    ids = [encoder.encode(t) for t in texts]
    # Every window of every text becomes one row: (text, first scored, tokens, targets).
    rows, placements = [], []
    for n, text_ids in enumerate(ids):
        seq = [encoder.eot_token] + list(text_ids)
        for begin, end, first in sliding_windows(len(seq) - 1, context, stride):
            rows.append(seq[begin:end + 1])  # inputs seq[begin:end], targets seq[begin+1:end+1]
            placements.append((n, first - 1, first - begin - 1, end - begin))
    results = _run_rows(_scorer(sess).token_logprobs, rows, context,
                        targets=True)
    logprobs = [np.zeros(len(t)) for t in ids]
    for (n, at, lo, hi), row in zip(placements, results):
        logprobs[n][at:at + hi - lo] = row[lo:hi]
    out = []
    for text, text_ids, lps in zip(texts, ids, logprobs):
        out.append(Scores([TokenScore(_readable_token(encoder, i), float(lp), int(i))
                           for i, lp in zip(text_ids, lps)], text=text))
    return out[0] if single else out


def sliding_windows(n_targets, context, stride):
    """The windows that score ``n_targets`` tokens with ``context`` tokens of input each.

    Position ``p`` of the sequence ``[<|endoftext|>, t1 ... tn]`` predicts token
    ``p + 1``. Each window is ``(begin, end, first)``: inputs ``begin .. end-1``,
    scoring targets ``first .. end`` (1-based token numbers, each once).

        >>> sliding_windows(10, context=4, stride=2)
        [(0, 4, 1), (2, 6, 5), (4, 8, 7), (6, 10, 9)]
        >>> sliding_windows(3, context=4, stride=2)
        [(0, 3, 1)]
    """
    windows, scored, begin = [], 0, 0
    while scored < n_targets:
        end = min(begin + context, n_targets)
        windows.append((max(0, end - context), end, scored + 1))
        scored, begin = end, begin + stride
    return windows


def perplexity(sess, texts, *, context=None, stride=None):
    """How surprised the model is by ``texts``: ``exp(-mean log-probability per token)``.

    1 would be a model that is certain of every token; a model guessing
    uniformly among ``V`` tokens scores ``V``. Lower is better, which makes it
    the usual measure of a fine-tuned run on held-out text: pass the whole
    held-out file as one string (long texts use the sliding window of
    :func:`score`). A list of texts gives one perplexity per text.

        >>> from gpt2_simple_plus._examples import example_session
        >>> sess = example_session()
        >>> p = perplexity(sess, "the hat on the mat")
        >>> 1 < p
        True
        >>> p == score(sess, "the hat on the mat").perplexity
        True
    """
    single = isinstance(texts, str)
    scores = score(sess, [texts] if single else texts, context=context, stride=stride)
    for s in scores:
        if not len(s):
            raise GenerationError("Cannot compute the perplexity of an empty text: it has no "
                                  "tokens. Pass some text.")
    values = [s.perplexity for s in scores]
    return values[0] if single else values


# ---------------------------------------------------------------------------
# The compiled computations and the batching around them.

def _build_token_logprobs(model):
    def token_logprobs(tokens, targets):
        """log p(targets[b, t] | tokens[b, :t+1]) for every position: ``[batch, len]``."""
        logits = model(tokens)
        return tf.gather(logits, targets, batch_dims=2) - tf.reduce_logsumexp(logits, axis=-1)
    return tf.function(token_logprobs)


def _build_next_logits(model):
    def next_logits(tokens, lengths):
        """The logits after the last real token of each right-padded row: ``[batch, vocab]``."""
        h, _ = model.forward(tokens)
        last = tf.gather(h, lengths - 1, batch_dims=1)
        return model.logits(last[:, None])[:, 0]
    return tf.function(next_logits)


class Scorer:
    """The compiled functions of one model's scoring (a session keeps it as ``scorer``).

    Each is traced once per padded shape and kept, so calling again never retraces."""

    def __init__(self, model):
        self.model = model
        self.token_logprobs = _build_token_logprobs(model)
        self.next_logits = _build_next_logits(model)


def _scorer(sess):
    if sess.scorer is None or sess.scorer.model is not sess.model:
        sess.scorer = Scorer(sess.model)
    return sess.scorer


def _run_rows(fn, rows, limit, targets=False):
    """Run a compiled function over ragged rows of token ids, a few padded batches at a time.

    Rows are sorted by length and cut into batches of at most
    ``TOKENS_PER_CALL`` tokens; each batch is right-padded to a bucketed shape
    (rows and length powers of two). With ``targets`` a row holds inputs and
    their next tokens (one more than the inputs) and the function returns a
    value per input position; otherwise it returns one vector per row.
    """
    lengths = [len(r) - 1 if targets else len(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    out = [None] * len(rows)
    at = 0
    while at < len(order):
        width = length_bucket(lengths[order[at]], limit)
        most = max(1, TOKENS_PER_CALL // width)
        chunk = order[at:at + most]
        height = min(length_bucket(len(chunk), most, smallest=1), most)
        tokens, lens = pad_right([rows[i][:lengths[i]] for i in chunk], height, width, 0)
        if targets:
            nexts, _ = pad_right([rows[i][1:lengths[i] + 1] for i in chunk], height, width, 0)
        result = fn(tokens, nexts) if targets else fn(tokens, lens)
        result = result.numpy()
        for r, i in enumerate(chunk):
            out[i] = result[r, :lengths[i]] if targets else result[r]
        at += len(chunk)
    return out


def _encoder(sess, what):
    if sess is None or getattr(sess, "encoder", None) is None:
        raise ModelNotFoundError(f"{what} needs a model's vocabulary, and this session has "
                                 f"none: {LOAD_HINT}.")
    return sess.encoder


def _model(sess, what):
    ensure_eager()
    encoder = _encoder(sess, what)
    if sess.model is None:
        raise ModelNotFoundError(f"{what} needs a model, and this session has none: {LOAD_HINT}.")
    return sess.model, encoder


def _check_texts(texts, what):
    for t in texts:
        if not isinstance(t, str):
            raise GenerationError(f"{what} takes a string or a list of strings, got an item of "
                                  f"type {type(t).__name__}: {t!r:.60}.")

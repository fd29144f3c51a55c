"""GPT-2's byte-level BPE: text to token ids and back, identical to OpenAI's ``encoder.py``.

    >>> import gpt2_simple_plus as gpt2
    >>> from gpt2_simple_plus._examples import example_vocab
    >>> enc = gpt2.get_encoder(example_vocab())   # normally "models/124M"
    >>> enc.encode("the hat")
    [257, 260]
    >>> enc.decode([257, 260])
    'the hat'

How it works, in OpenAI's words: the text is cut into pre-tokens by one regular
expression (:data:`GPT2_PATTERN`), each pre-token's UTF-8 bytes are spelled as
printable characters (:func:`bytes_to_unicode`), and neighbouring symbols are
merged, lowest-ranked pair of ``vocab.bpe`` first, until no pair is in the list.

``<|endoftext|>`` is text by default. ``encode("a<|endoftext|>b")`` spells the
literal as ordinary pieces (``<``, ``|``, ``end`` ...), exactly like OpenAI's and
gpt-2-simple's encoders, so datasets encoded by gpt-2-simple keep their ids and
a document cannot inject the separator by accident. Ask for the single id
(50256 in GPT-2) with ``encode(text, allowed_special={"<|endoftext|>"})`` or
``allowed_special="all"``; it is also ``enc.eot_token``.

Two backends give the same ids:

* ``"tiktoken"``: OpenAI's Rust implementation, built offline from the same two
  files. Used when the vocabulary is rank-consistent the way tiktoken assumes
  (every byte is a token, and merge results get increasing ids in merge order;
  GPT-2's id is 256 + merge rank) and a probe text encodes the same both ways.
* ``"python"``: the readable reference below, for any vocabulary in GPT-2's
  format, e.g. one trained with Hugging Face ``tokenizers`` whose ids do not
  follow merge order. It caches the ids of every pre-token it has seen.

``backend="auto"`` (the default) picks tiktoken when it may. ``encode_file`` and
``encode_iter`` encode corpora of any size a chunk at a time; the chunks, joined,
are exactly ``encode`` of the whole text. Nothing here imports TensorFlow.
"""

import functools
import hashlib
import itertools
import json
import os
import unicodedata

import numpy as np
import regex

from .errors import DatasetError, EncoderError, ModelNotFoundError

# OpenAI's pre-tokeniser, verbatim. (Contractions are case-sensitive: "DON'T"
# splits differently from "don't"; that is GPT-2's behaviour and we keep it.)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

ENDOFTEXT = "<|endoftext|>"
BACKENDS = ("auto", "tiktoken", "python")

_DOWNLOAD_HINT = "download a model first: gpt2.download_gpt2(model_name='124M')"
_NO_MERGE = float("inf")  # the rank of a pair that is not in vocab.bpe
_PIECE_CACHE_LIMIT = 1 << 17  # pre-tokens remembered by the python backend
# Vocabularies whose every token was checked to be what OpenAI's merges make of
# its bytes (see Encoder._tiktoken_mismatch); tests/test_encoder.py re-checks them.
_VERIFIED = {
    "46cc184bb7bd3a8d5763e776914c32926cc969ab3dd7f883be619270af66fcf3": "GPT-2 (124M-1558M)",
}
# Text whose ids both backends must agree on before tiktoken is trusted.
_PROBE = ("Hello, World! DON'T he's  multiple   spaces\n\n\tcode(x) = 42; 3.14159 "
          "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F600 \u0645\u0631\u062d\u0628\u0627 "
          "<|endoftext|> don't\r\n  trailing  ")


@functools.lru_cache()
def bytes_to_unicode():
    """GPT-2's table from each byte (0-255) to a printable character.

    Printable Latin-1 bytes map to themselves; the others (space, control
    bytes ...) to characters from U+0100 on, so a space is spelled ``Ġ``.

        >>> bytes_to_unicode()[ord("A")], bytes_to_unicode()[ord(" ")]
        ('A', 'Ġ')
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class _PieceCache(dict):
    """pre-token -> tuple of ids, computing missing entries with ``encode_piece``."""

    def __init__(self, encode_piece):
        super().__init__()
        self.encode_piece = encode_piece

    def __missing__(self, piece):
        ids = self[piece] = self.encode_piece(piece)
        return ids


class Encoder:
    """A GPT-2 style vocabulary: ``encoder.json`` (token -> id) and ``vocab.bpe`` (merges).

    ``bpe_merges`` is a list of ``(first, second)`` pairs, lowest rank first, as
    in OpenAI's ``Encoder``. Tokens of ``encoder`` that are neither a single byte
    nor made by a merge are special tokens (GPT-2 has one: ``<|endoftext|>``).

        >>> from gpt2_simple_plus._examples import example_vocab
        >>> enc = get_encoder(example_vocab())
        >>> enc.n_vocab, enc.eot_token, enc.backend
        (262, 261, 'tiktoken')
        >>> Encoder(enc.encoder, list(enc.bpe_ranks), backend="python").encode("the hat")
        [257, 260]
    """

    def __init__(self, encoder, bpe_merges, *, backend="auto"):
        if backend not in BACKENDS:
            raise EncoderError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
        self.encoder = dict(encoder)
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {tuple(pair): rank for rank, pair in enumerate(bpe_merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.pat = regex.compile(GPT2_PATTERN)
        self.n_vocab = max(self.decoder) + 1 if self.decoder else 0
        self.eot_token = self.encoder.get(ENDOFTEXT)
        self._check_merges()
        made = {a + b for a, b in self.bpe_ranks} | set(self.byte_encoder.values())
        self.special_tokens = {t: i for t, i in self.encoder.items() if t not in made}
        self._bytes = [None] * self.n_vocab  # id -> bytes, None for unused ids
        for token, i in self.encoder.items():
            self._bytes[i] = self._spell(token)
        self._dtype = np.uint16 if self.n_vocab <= 1 << 16 else np.int32
        self._cache = _PieceCache(self._encode_piece)
        self._special_splitters = {}
        self._tiktoken, self.fallback_reason = None, None
        if backend != "python":
            self._tiktoken, self.fallback_reason = self._build_tiktoken()
            if backend == "tiktoken" and self._tiktoken is None:
                raise EncoderError(f"backend='tiktoken' cannot encode this vocabulary: "
                                   f"{self.fallback_reason}. Use backend='auto' or 'python'.")
        self.backend = "python" if self._tiktoken is None else "tiktoken"

    def __repr__(self):
        return f"<Encoder n_vocab={self.n_vocab} backend={self.backend!r}>"

    # -- encoding ---------------------------------------------------------------

    def encode(self, text, *, allowed_special=()):
        """Token ids of ``text`` (a list of ints).

        ``<|endoftext|>`` in the text is ordinary text unless it is in
        ``allowed_special`` (a set of special tokens, or ``"all"``).

            >>> from gpt2_simple_plus._examples import example_vocab
            >>> enc = get_encoder(example_vocab())
            >>> enc.encode("hat<|endoftext|>", allowed_special="all")
            [71, 64, 83, 261]
            >>> len(enc.encode("hat<|endoftext|>"))   # spelled as text
            16
        """
        allowed = self._allowed(allowed_special)
        if self._tiktoken is not None:
            if allowed:
                return self._tiktoken.encode(text, allowed_special=allowed, disallowed_special=())
            return self._tiktoken.encode_ordinary(text)
        return self._encode_python(text, allowed)

    def encode_to_array(self, text, *, allowed_special=()):
        """Like :meth:`encode`, as a numpy array (uint16, or int32 past 65,536 tokens).

            >>> from gpt2_simple_plus._examples import example_vocab
            >>> get_encoder(example_vocab()).encode_to_array("the hat")
            array([257, 260], dtype=uint16)
        """
        allowed = self._allowed(allowed_special)
        if self._tiktoken is not None:
            ids = self._tiktoken.encode_to_numpy(text, allowed_special=allowed,
                                                 disallowed_special=())
            return ids.astype(self._dtype)
        return np.array(self._encode_python(text, allowed), dtype=self._dtype)

    def encode_iter(self, texts, *, chunk_chars=1 << 20, allowed_special=()):
        """Encode an iterable of strings a chunk at a time, yielding numpy arrays.

        The arrays, concatenated, are exactly ``encode_to_array("".join(texts))``.
        Text is cut only where GPT-2's pre-tokeniser cannot join the two sides
        (before whitespace that follows a non-space, or between a letter, a digit
        and punctuation); a stretch with no such place (one enormous word) is kept
        whole. About ``chunk_chars`` characters are held at a time.

            >>> from gpt2_simple_plus._examples import example_vocab
            >>> enc = get_encoder(example_vocab())
            >>> [a.tolist() for a in enc.encode_iter(["the ", "hat\\n", "the hat"], chunk_chars=4)]
            [[257], [260], [198, 257], [260]]
        """
        allowed = self._allowed(allowed_special)
        # a cut needs the characters on both sides, and must not split a special token
        margin = max(map(len, allowed), default=1)
        parts, size, need, searched = [], 0, chunk_chars, 0
        for text in _pieces(texts, chunk_chars):
            parts.append(text)
            size += len(text)
            if size < need:
                continue
            pending = "".join(parts)
            cut = _last_safe_cut(pending, searched, len(pending) - margin, allowed)
            if cut:
                yield self.encode_to_array(pending[:cut], allowed_special=allowed)
                pending = pending[cut:]
                searched, need = 0, chunk_chars
            else:  # no place to cut yet: keep reading, and search only new text next time
                searched, need = max(len(pending) - margin, 0), len(pending) + chunk_chars
            parts, size = [pending], len(pending)
        if size:
            yield self.encode_to_array("".join(parts), allowed_special=allowed)

    def encode_file(self, path, *, chunk_chars=1 << 20, allowed_special=(), encoding="utf-8",
                    newline=None):
        """Encode a text file of any size a chunk at a time, yielding numpy arrays.

        Concatenated, they equal ``encode_to_array(open(path, encoding=encoding,
        newline=newline).read())``: like gpt-2-simple, ``\\r\\n`` is read as ``\\n``
        unless ``newline=""``.

            >>> import os, tempfile
            >>> path = os.path.join(tempfile.mkdtemp(), "corpus.txt")
            >>> _ = open(path, "w").write("the hat\\n" * 3)
            >>> from gpt2_simple_plus._examples import example_vocab
            >>> enc = get_encoder(example_vocab())
            >>> np.concatenate(list(enc.encode_file(path, chunk_chars=8))).tolist()
            [257, 260, 198, 257, 260, 198, 257, 260, 198]
        """
        try:
            f = open(path, encoding=encoding, newline=newline)
        except FileNotFoundError:
            raise DatasetError(f"No such text file: {path!r}. Check the path (relative paths "
                               f"start from {os.getcwd()!r}).") from None
        with f:
            yield from self.encode_iter(iter(functools.partial(f.read, chunk_chars), ""),
                                        chunk_chars=chunk_chars, allowed_special=allowed_special)

    # -- decoding ---------------------------------------------------------------

    def decode(self, ids):
        """The text of token ids; bytes that are not valid UTF-8 become U+FFFD.

        Accepts a list, tuple or numpy array of ids (or one id).

            >>> from gpt2_simple_plus._examples import example_vocab
            >>> enc = get_encoder(example_vocab())
            >>> enc.decode(np.array([257, 260], dtype=np.uint16))
            'the hat'
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids):
        """The raw bytes of token ids (a token may hold part of a UTF-8 character).

            >>> from gpt2_simple_plus._examples import example_vocab
            >>> get_encoder(example_vocab()).decode_bytes([257])
            b'the'
        """
        ids = self._as_id_list(ids)
        try:
            if ids and (min(ids) < 0 or max(ids) >= self.n_vocab):
                raise IndexError
            return b"".join(map(self._bytes.__getitem__, ids))
        except (TypeError, IndexError):  # find the culprit, and name it
            for i in ids:
                self.token_bytes(i)
            raise

    def token_bytes(self, token_id):
        """The bytes one token stands for.

            >>> from gpt2_simple_plus._examples import example_vocab
            >>> get_encoder(example_vocab()).token_bytes(260)
            b' hat'
        """
        if isinstance(token_id, (bool, float)) or not hasattr(token_id, "__index__"):
            raise EncoderError(f"Token ids are whole numbers; got {token_id!r}.")
        i = int(token_id)
        if not 0 <= i < self.n_vocab or self._bytes[i] is None:
            raise EncoderError(f"Token id {i} is not in this vocabulary of {self.n_vocab} "
                               f"tokens (valid ids: 0 to {self.n_vocab - 1}).")
        return self._bytes[i]

    # -- the pure-Python reference ---------------------------------------------

    def _encode_python(self, text, allowed):
        if not allowed:
            return self._encode_ordinary(text)
        splitter = self._special_splitters.get(allowed)
        if splitter is None:
            longest_first = sorted(allowed, key=len, reverse=True)
            splitter = regex.compile("(" + "|".join(map(regex.escape, longest_first)) + ")")
            self._special_splitters[allowed] = splitter
        ids = []
        for n, part in enumerate(splitter.split(text)):
            if n % 2:  # a captured special token
                ids.append(self.encoder[part])
            elif part:
                ids.extend(self._encode_ordinary(part))
        return ids

    def _encode_ordinary(self, text):
        """Pre-tokenise, then look each pre-token's ids up (computing them once)."""
        if len(self._cache) > _PIECE_CACHE_LIMIT:
            self._cache.clear()
        try:
            pieces = self.pat.findall(text)
            return list(itertools.chain.from_iterable(map(self._cache.__getitem__, pieces)))
        except UnicodeEncodeError:  # lone surrogates: replace them, as tiktoken does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_ordinary(text)

    def _encode_piece(self, piece):
        symbols = [self.byte_encoder[b] for b in piece.encode("utf-8")]
        try:
            return tuple(self.encoder[s] for s in self._bpe(symbols))
        except KeyError as err:
            raise EncoderError(f"{piece!r} needs the symbol {err.args[0]!r}, which is not in "
                               f"encoder.json; this vocabulary cannot encode that text.") from None

    def _bpe(self, symbols):
        """Merge the lowest-ranked neighbouring pair, everywhere it occurs, until none is left."""
        rank_of = self.bpe_ranks.get
        while len(symbols) > 1:
            pairs = list(zip(symbols, symbols[1:]))
            ranks = list(map(rank_of, pairs, itertools.repeat(_NO_MERGE)))
            best = min(ranks)
            if best == _NO_MERGE:
                break
            # a pair has one rank, so ranks[j] == best marks each occurrence of the pair
            j = ranks.index(best)
            token = pairs[j][0] + pairs[j][1]
            merged, start = [], 0
            while j >= 0:  # left to right, never reusing a symbol ("aaa" -> "aa a")
                merged += symbols[start:j]
                merged.append(token)
                start = j + 2
                j = ranks.index(best, start) if best in ranks[start:] else -1
            symbols = merged + symbols[start:]
        return symbols

    # -- helpers -----------------------------------------------------------------

    def _spell(self, token):
        """The bytes a token's characters stand for (characters outside the table: UTF-8)."""
        return b"".join(bytes([self.byte_decoder[c]]) if c in self.byte_decoder
                        else c.encode("utf-8") for c in token)

    def _allowed(self, allowed_special):
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        if isinstance(allowed_special, str):
            allowed_special = {allowed_special}
        allowed = frozenset(allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise EncoderError(f"allowed_special: {', '.join(sorted(map(repr, unknown)))} is not "
                               f"a special token of this vocabulary (it has "
                               f"{', '.join(map(repr, self.special_tokens)) or 'none'}).")
        return allowed

    def _as_id_list(self, ids):
        if isinstance(ids, np.ndarray):
            if ids.dtype.kind not in "iu":
                raise EncoderError(f"Token ids are whole numbers; got an array of {ids.dtype}.")
            if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
                bad = ids[(ids < 0) | (ids >= self.n_vocab)].flat[0]
                self.token_bytes(bad)
            return ids.ravel().tolist()
        if hasattr(ids, "__index__"):
            return [ids]
        return ids if isinstance(ids, (list, tuple)) else list(ids)

    def _check_merges(self):
        for (first, second), rank in self.bpe_ranks.items():
            for token in (first, second, first + second):
                if token not in self.encoder:
                    raise EncoderError(
                        f"vocab.bpe merge {rank + 1} ({first} {second}) uses {token!r}, which is "
                        f"not in encoder.json: the two files are not from the same vocabulary.")

    def _tiktoken_mismatch(self):
        """Why tiktoken could encode differently from OpenAI's merges, or None if it cannot.

        tiktoken merges any two neighbours whose bytes join into a token, taking
        the lowest id first, and returns a pre-token that is itself a token
        whole. OpenAI's code merges only the pairs listed in vocab.bpe. They
        agree when (1) every byte is a token, (2) merges build on earlier merges
        and their results' ids increase in merge order (GPT-2: id = 256 + rank),
        and (3) OpenAI's merges turn each token's bytes back into that token (or,
        for a token that can never be a whole pre-token, into three or more
        pieces). Then no reachable state holds two neighbours that join into a
        token through a pair vocab.bpe does not list. (1) and (2) alone are not enough: with
        merges "i n", "Ġ i", "Ġi n", OpenAI encodes " in" as "Ġ" "in", tiktoken
        as "Ġin". (3) costs a second on a 50,000-token vocabulary, so it is
        skipped for vocabularies in _VERIFIED (GPT-2's, checked by the tests).
        """
        if len(self.decoder) != len(self.encoder):
            return "two tokens of encoder.json share an id"
        missing = [b for b, c in self.byte_encoder.items() if c not in self.encoder]
        if missing:
            return f"byte {missing[0]} has no token"
        alphabet = self.byte_decoder.keys()
        previous = -1
        for (first, second), rank in self.bpe_ranks.items():
            token_id = self.encoder[first + second]
            if token_id <= previous:
                return (f"ids do not follow merge order (merge {rank + 1}, {first} {second}, "
                        f"has id {token_id})")
            if not alphabet >= set(first + second):
                return f"merge {rank + 1} uses characters outside GPT-2's byte table"
            if any(len(part) > 1 and self.encoder[part] >= token_id for part in (first, second)):
                return f"merge {rank + 1} ({first} {second}) uses a token made by a later merge"
            previous = token_id
        if self._fingerprint() in _VERIFIED:
            return None
        token = self._token_merges_do_not_make()
        if token is not None:
            return f"OpenAI's merges do not turn {token!r} into that token"
        return None

    def _token_merges_do_not_make(self):
        """A token tiktoken would emit where OpenAI's merges stop short of it, or None."""
        for token, i in self.encoder.items():
            if len(token) == 1 or token in self.special_tokens:
                continue
            parts = self._bpe(list(token))
            if len(parts) == 1:
                continue
            if len(parts) == 2:  # tiktoken joins these two, vocab.bpe does not
                return token
            text = self._bytes[i].decode("utf-8", errors="replace")
            if text.encode("utf-8") == self._bytes[i] and self.pat.findall(text) == [text]:
                return token  # a whole pre-token, which tiktoken looks up directly
        return None

    def _fingerprint(self):
        """sha256 of the merges and the id -> token table."""
        table = [list(self.bpe_ranks), sorted(self.decoder.items())]
        return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _build_tiktoken(self):
        """tiktoken's Encoding over the same merges, or (None, reason it cannot be used)."""
        reason = self._tiktoken_mismatch()
        if reason:
            return None, reason
        try:
            import tiktoken
        except ImportError:
            return None, "tiktoken is not installed"
        ranks = {self._bytes[i]: i for t, i in self.encoder.items() if t not in self.special_tokens}
        fast = tiktoken.Encoding(name=f"gpt2_simple_plus_{self.n_vocab}", pat_str=GPT2_PATTERN,
                                 mergeable_ranks=ranks, special_tokens=self.special_tokens)
        allowed = self._allowed("all")
        if fast.encode(_PROBE, allowed_special=allowed, disallowed_special=()) \
                != self._encode_python(_PROBE, allowed):
            return None, "tiktoken and the merges disagree on a probe text"
        return fast, None


def _pieces(texts, size):
    """The strings of ``texts``, long ones sliced to ``size`` characters."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"encode_iter needs strings, got {type(text).__name__}.")
        if len(text) <= size:
            yield text
        else:
            yield from (text[start:start + size] for start in range(0, len(text), size))


# -- where text may be cut without changing its tokens --------------------------
#
# GPT-2's pattern has no look-behind, and its matches tile the text. A cut between
# characters x and y is safe when no match can contain both: x is not whitespace
# and y is (a whitespace match starts at y; letters, digits, punctuation and
# contractions all stop before whitespace), or x and y are in different classes of
# {letter, digit, other} and are not the "'" + letter of a contraction. Categories
# are taken from Python's Unicode tables and characters unknown to them are never
# cut next to, so the regex engines of both backends agree on the classes.

_CUT_BEFORE_SPACE = regex.compile(r"(?r)(?<=\S)(?=\s)")
_CUT_BETWEEN_CLASSES = regex.compile(
    r"(?r)(?<=\p{L})(?=[^\s\p{L}])|(?<=\p{N})(?=[^\s\p{N}])|(?<=[^\s\p{L}\p{N}])(?=[\p{L}\p{N}])")


def _char_class(c):
    category = unicodedata.category(c)
    if category == "Cn" or category[0] == "Z" or c.isspace():
        return None  # whitespace or unassigned: never a side of a class cut
    return category[0] if category[0] in "LN" else "O"


def _cut_is_safe(text, cut, allowed, before_space):
    x, y = text[cut - 1], text[cut]
    if before_space:
        ok = unicodedata.category(x) != "Cn"
    else:
        cx, cy = _char_class(x), _char_class(y)
        ok = cx and cy and cx != cy and not (x == "'" and cy == "L")
    # never inside an allowed special token
    return ok and not any(s in text[max(cut - len(s) + 1, 0):cut + len(s) - 1] for s in allowed)


def _last_safe_cut(text, lo, hi, allowed):
    """The last index in [lo, hi] where ``text`` may be cut, or 0 if there is none."""
    lo, hi = max(lo, 1), min(hi, len(text) - 1)
    if hi < lo:
        return 0
    for pattern, before_space in ((_CUT_BEFORE_SPACE, True), (_CUT_BETWEEN_CLASSES, False)):
        end = hi + 1
        while True:
            match = pattern.search(text, lo - 1, end)
            if match is None or match.start() < lo:
                break
            if _cut_is_safe(text, match.start(), allowed, before_space):
                return match.start()
            end = match.start()
    return 0


# -- loading --------------------------------------------------------------------

def get_encoder(folder, *, backend="auto"):
    """The :class:`Encoder` of a model folder holding ``encoder.json`` and ``vocab.bpe``.

    Loaded once per folder: later calls return the same object until a file changes.

        >>> from gpt2_simple_plus._examples import example_vocab
        >>> enc = get_encoder(example_vocab())
        >>> enc.decode(enc.encode("the hat"))
        'the hat'
        >>> get_encoder(example_vocab()) is enc
        True
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ModelNotFoundError(f"No model folder {folder!r}. To use GPT-2's vocabulary, "
                                 f"{_DOWNLOAD_HINT}, or pass the folder that holds "
                                 f"encoder.json and vocab.bpe.")
    stats = []
    for name in ("encoder.json", "vocab.bpe"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ModelNotFoundError(f"{path} is missing. A model folder needs encoder.json and "
                                     f"vocab.bpe; {_DOWNLOAD_HINT}.")
        st = os.stat(path)
        stats.append((os.path.realpath(path), st.st_mtime_ns, st.st_size))
    return _load_encoder(tuple(stats), backend)


@functools.lru_cache(maxsize=8)
def _load_encoder(stats, backend):
    (json_path, *_), (bpe_path, *_) = stats
    return Encoder(_read_encoder_json(json_path), _read_merges(bpe_path), backend=backend)


def _read_encoder_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            encoder = json.load(f)
    except (OSError, ValueError) as err:  # ValueError covers bad JSON and bad UTF-8
        raise EncoderError(f"Cannot read {path}: {err}. Delete it and download the "
                           f"model again.") from None
    if not isinstance(encoder, dict) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in encoder.values()):
        raise EncoderError(f"{path} should map each token to a whole number id >= 0. Delete "
                           f"it and download the model again.")
    return encoder


def _read_merges(path):
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, ValueError) as err:
        raise EncoderError(f"Cannot read {path}: {err}. Delete it and download the "
                           f"model again.") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise EncoderError(f"{path}, line {number}: expected two symbols separated by a "
                               f"space, got {line!r}. Delete it and download the model again.")
        merges.append(pair)
    return merges

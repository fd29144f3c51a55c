"""Training data: text, CSV and pre-encoded files in, token chunks out, and the Sampler.

``finetune(sess, dataset)`` accepts what gpt-2-simple accepts:

* a file, a folder (read recursively, files in sorted order) or a glob pattern;
* ``.txt`` (in fact any file that is not ``.csv`` or ``.npz``): small files are
  joined with the literal text ``<|endoftext|>`` until ``combine`` characters
  have been read, then encoded as one chunk (exactly gpt-2-simple's rule, and
  like gpt-2-simple the separator is encoded as ordinary text);
* ``.csv``: the first column of every row after the header, each wrapped as
  ``<|startoftext|>row<|endoftext|>\\n``;
* ``.npz``: token chunks already encoded by :func:`encode_dataset` (or by
  gpt-2-simple's ``encode_dataset``).

Files are read with ``errors='ignore'`` like gpt-2-simple, but a file with
bytes that are not UTF-8 is named in a warning. Text is encoded a megabyte at a
time and the tokens are written straight to disk as ``uint16``, so a corpus of
many gigabytes needs little memory; :func:`load_dataset` memory-maps the
result. With ``cache_dir`` (``finetune`` uses the run folder) the tokens are
kept as ``dataset-<key>.npy`` and reused while the files, ``combine`` and the
vocabulary stay the same.

    >>> import os, tempfile
    >>> from gpt2_simple_plus.encoder import get_encoder
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "hats.txt")
    >>> _ = open(path, "w").write(" the hat" * 50)
    >>> from gpt2_simple_plus._examples import example_vocab
    >>> enc = get_encoder(example_vocab())
    >>> chunks = load_dataset(enc, path)
    >>> sampler = Sampler(chunks, seed=0)
    >>> sampler.total_size   # 150 tokens of text, 13 of the literal "<|endoftext|>" after it
    163
    >>> enc.decode(sampler.sample(4))
    'the hat the'

"""

import codecs
import csv
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import warnings

import numpy as np

from .errors import DatasetError, TrainingError
from .files import atomic_open, atomic_path, write_text_atomic

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
CACHE_VERSION = 1
READ_CHARS = 1 << 20  # characters read from a text file at a time

# Decoding errors are ignored like gpt-2-simple's errors='ignore', but counted so
# the file can be named in a warning.
_IGNORE_AND_COUNT = "gpt2_simple_plus.ignore"
_undecodable = [0]


def _ignore_and_count(err):
    _undecodable[0] += 1
    return "", err.end


codecs.register_error(_IGNORE_AND_COUNT, _ignore_and_count)


# ---------------------------------------------------------------------------
# Finding and reading the files

def dataset_files(path):
    """The files ``path`` names: itself, every file under a folder, or a glob's matches.

        >>> dataset_files("no/such/file.txt")
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.DatasetError: No file or folder 'no/such/file.txt' ...
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
        if not files:
            raise DatasetError(f"The folder {path!r} has no files in it (its subfolders were "
                               f"searched too). Put .txt, .csv or .npz files there, or pass a file.")
        return files
    files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    if not files:
        raise DatasetError(f"No file or folder {path!r} (and no file matches it as a pattern). "
                           f"Check the spelling; a relative path starts in {os.getcwd()!r}.")
    return files


def _read_text(path):
    """A text file's characters, a megabyte at a time (gpt-2-simple's ``open(path, 'r',
    encoding='utf8', errors='ignore')``), warning once if bytes were skipped."""
    before = _undecodable[0]
    with open(path, "r", encoding="utf-8", errors=_IGNORE_AND_COUNT) as f:
        while True:
            text = f.read(READ_CHARS)
            if not text:
                break
            yield text
    skipped = _undecodable[0] - before
    if skipped:
        warnings.warn(f"{path}: {skipped} stretch(es) of bytes are not UTF-8 text and were "
                      f"skipped (gpt-2-simple skips them too). If this is not a text file, "
                      f"move it out of the dataset; otherwise save it as UTF-8.",
                      UnicodeWarning, stacklevel=4)


def _csv_rows(path, start_token=START_TOKEN, end_token=END_TOKEN, header=True):
    """``start_token + first column + end_token + "\\n"`` for every row after the header."""
    before, rows = _undecodable[0], 0
    with open(path, "r", encoding="utf-8", errors=_IGNORE_AND_COUNT) as f:
        if header:
            f.readline()
        try:
            for row in csv.reader(f):
                if not row:  # a blank line has no first column: nothing to train on
                    continue
                rows += 1
                yield start_token + row[0] + end_token + "\n"
        except csv.Error as err:
            raise DatasetError(f"{path} is not a readable CSV file: {err}.") from None
    if not rows:
        raise DatasetError(
            f"{path} has no rows with a first column{' after its header line' if header else ''}. "
            f"Training reads the first column of every row (the first line is a header); "
            f"put one text per row there.")
    if _undecodable[0] > before:
        warnings.warn(f"{path}: some bytes are not UTF-8 text and were skipped.",
                      UnicodeWarning, stacklevel=4)


def _read_npz(path, n_vocab):
    """The token arrays of a pre-encoded ``.npz`` (one chunk per array)."""
    try:
        with np.load(path) as npz:
            chunks = [np.asarray(npz[name]) for name in npz.files]
    except Exception as err:  # zipfile, pickle and value errors all mean "not an npz of tokens"
        raise DatasetError(f"{path} is not a readable .npz file of encoded tokens ({err}). "
                           f"Make it with gpt2.encode_dataset(...), or rename it if it is "
                           f"text.") from None
    for chunk in chunks:
        if chunk.ndim != 1 or chunk.dtype.kind not in "iu":
            raise DatasetError(f"{path} holds an array of shape {chunk.shape} and type "
                               f"{chunk.dtype}; an encoded dataset holds 1-D arrays of token ids.")
        if chunk.size and (int(chunk.min()) < 0 or int(chunk.max()) >= n_vocab):
            raise DatasetError(f"{path} holds token id {int(chunk.max())}, but the vocabulary "
                               f"has {n_vocab} tokens: it was encoded with another vocabulary. "
                               f"Encode it again with this model's encode_dataset.")
    return chunks


_END = object()  # marks the end of a chunk in the text stream


def _text_stream(paths, combine, arrays, counts):
    """gpt-2-simple's ``load_dataset`` as a stream of text pieces with ``_END`` between chunks.

    Pre-encoded arrays are appended to ``arrays`` (they are chunks of their own);
    ``counts["chars"]`` counts the characters read from the files.
    """
    size = 0  # characters in the current chunk, gpt-2-simple's len(raw_text)
    for path in paths:
        if path.endswith(".npz"):
            new = _read_npz(path, counts["n_vocab"])
            arrays.extend(new)
            counts["tokens"] += sum(len(a) for a in new)
            continue
        reader = _csv_rows(path) if path.endswith(".csv") else _read_text(path)
        for text in reader:
            size += len(text)
            counts["chars"] += len(text)
            yield text
        if path.endswith(".csv"):
            continue
        if size >= combine:
            yield _END
            size = 0
        else:
            yield END_TOKEN
            size += len(END_TOKEN)
    if size:
        yield _END


class _TokenWriter:
    """Appends token arrays to a file on disk and remembers where each chunk ends."""

    def __init__(self, path, dtype):
        self.path, self.dtype = path, np.dtype(dtype)
        self.file = open(path, "wb")
        self.n_tokens, self.bounds = 0, [0]

    def add(self, tokens):
        tokens = np.asarray(tokens)
        if tokens.size and int(tokens.max()) > np.iinfo(self.dtype).max:
            raise DatasetError(f"Token id {int(tokens.max())} does not fit in {self.dtype}.")
        self.file.write(tokens.astype(self.dtype, copy=False).tobytes())
        self.n_tokens += len(tokens)

    def end_chunk(self):
        if self.n_tokens > self.bounds[-1]:
            self.bounds.append(self.n_tokens)

    def close(self):
        self.file.close()


def _encode_to_disk(enc, paths, combine, raw_path, dtype):
    """Encode ``paths`` into the raw token file ``raw_path``; returns (n_tokens, chunk bounds)."""
    arrays, counts = [], {"chars": 0, "tokens": 0, "n_vocab": enc.n_vocab}
    stream = _text_stream(paths, combine, arrays, counts)
    exhausted = [False]

    def one_chunk():
        for piece in stream:
            if piece is _END:
                return
            yield piece
        exhausted[0] = True

    writer = _TokenWriter(raw_path, dtype)
    try:
        while not exhausted[0]:
            for tokens in enc.encode_iter(one_chunk(), chunk_chars=READ_CHARS):
                writer.add(tokens)
            writer.end_chunk()
            for tokens in arrays:
                writer.add(tokens)
                writer.end_chunk()
            arrays.clear()
    finally:
        writer.close()
    if counts["chars"] == 0 and counts["tokens"] == 0:
        names = paths[0] if len(paths) == 1 else f"{len(paths)} files starting with {paths[0]}"
        raise DatasetError(f"The dataset ({names}) is empty: there is no text to train on.")
    return writer.n_tokens, writer.bounds


def _raw_to_npy(raw_path, npy_path, n_tokens, dtype, block=1 << 26):
    """Turn a raw token file into a ``.npy`` file, a block at a time."""
    out = np.lib.format.open_memmap(npy_path, mode="w+", dtype=dtype, shape=(n_tokens,))
    raw = np.memmap(raw_path, dtype=dtype, mode="r", shape=(n_tokens,))
    for i in range(0, n_tokens, block):
        out[i:i + block] = raw[i:i + block]
    out.flush()
    del out, raw


def _split(tokens, bounds):
    return [tokens[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(paths, combine, vocab_key):
    """A short hash of what the tokens depend on: file paths, sizes and times, ``combine``,
    the vocabulary."""
    stats = []
    for p in paths:
        st = os.stat(p)
        stats.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    text = json.dumps([CACHE_VERSION, stats, combine, vocab_key])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def vocab_key(folder):
    """A hash of ``folder``'s ``encoder.json`` and ``vocab.bpe``, or ``None`` if they are absent."""
    try:
        return [_file_digest(os.path.join(folder, n)) for n in ("encoder.json", "vocab.bpe")]
    except OSError:
        return None


def load_dataset(enc, path, combine=50000, *, cache_dir=None, vocab_folder=None,
                 write_cache=True, log=print):
    """Token chunks (a list of 1-D ``uint16`` arrays) of the dataset at ``path``.

    Same chunks as gpt-2-simple's ``load_dataset(enc, path, combine)``. With
    ``cache_dir`` the tokens are stored there as ``dataset-<key>.npy`` (plus a
    ``.json`` of chunk boundaries) and memory-mapped; a later call with the
    same files, ``combine`` and vocabulary (``vocab_folder``'s files) reuses
    them. Without it they are encoded into a temporary file and read into memory.
    ``write_cache=False`` reads a complete cache in ``cache_dir`` but never writes
    one: the workers of a multi-worker run other than the chief share the chief's
    run folder and must not write into it. ``log`` prints the one line saying a
    cache was used.
    """
    paths = dataset_files(path)
    dtype = np.uint16 if enc.n_vocab <= 1 << 16 else np.int32
    if cache_dir is not None:
        key = cache_key(paths, combine, vocab_key(vocab_folder) if vocab_folder else enc.n_vocab)
        npy, meta = (os.path.join(cache_dir, f"dataset-{key}{ext}") for ext in (".npy", ".json"))
        cached = _read_cache(npy, meta)
        if cached is not None:
            log(f"Using the dataset encoded before: {npy}")
            return cached
    if cache_dir is None or not write_cache:
        tmp = tempfile.mkdtemp(prefix="gpt2-dataset-")
        try:
            raw = os.path.join(tmp, "tokens.bin")
            n_tokens, bounds = _encode_to_disk(enc, paths, combine, raw, dtype)
            tokens = np.fromfile(raw, dtype=dtype, count=n_tokens)
            return _split(tokens, bounds)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    os.makedirs(cache_dir, exist_ok=True)
    raw = npy + ".tmp-raw"
    try:
        n_tokens, bounds = _encode_to_disk(enc, paths, combine, raw, dtype)
        with atomic_path(npy, suffix=".npy") as tmp:
            _raw_to_npy(raw, tmp, n_tokens, dtype)
    finally:
        if os.path.exists(raw):
            os.remove(raw)
    # written last: marks the cache complete
    write_text_atomic(meta, json.dumps({"bounds": bounds, "files": len(paths),
                                        "combine": combine}))
    return _split(np.load(npy, mmap_mode="r"), bounds)


def _read_cache(npy, meta):
    """The chunks of a complete cache (its ``.json`` is written last), else ``None``."""
    if not (os.path.isfile(npy) and os.path.isfile(meta)):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            bounds = json.load(f)["bounds"]
        tokens = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is simply rebuilt
    return _split(tokens, bounds) if len(tokens) == bounds[-1] else None


def remove_stale_caches(cache_dir, keep):
    """Delete ``dataset-*.npy``/``.json`` in ``cache_dir`` except those of the arrays in ``keep``."""
    keep_names = set()
    for chunks in keep:
        filename = getattr(chunks[0], "filename", None) if chunks else None
        if filename:
            keep_names.add(os.path.basename(filename)[:-len(".npy")])
    if not os.path.isdir(cache_dir):
        return
    for name in os.listdir(cache_dir):
        stem, ext = os.path.splitext(name)
        if name.startswith("dataset-") and ext in (".npy", ".json") and stem not in keep_names:
            os.remove(os.path.join(cache_dir, name))


# ---------------------------------------------------------------------------
# Sampling training windows

class Sampler:
    """Fairly samples windows from a set of variable-sized chunks (gpt-2-simple's ``Sampler``).

    "Fairly" means every window that lies inside one chunk is equally likely, as
    if sampling from the concatenation but never crossing a chunk boundary.
    ``seed`` fixes the sequence; :attr:`state` saves and restores it.

        >>> s = Sampler([np.arange(10), np.arange(100, 103)], seed=1)
        >>> s.total_size, s.longest
        (13, 10)
        >>> s.sample(3).tolist()
        [4, 5, 6]
    """

    def __init__(self, chunks, seed=None):
        self.chunks = [c for c in chunks if len(c)]
        if not self.chunks:
            raise DatasetError("The dataset has no tokens.")
        self.sizes = np.array([len(c) for c in self.chunks], dtype=np.int64)
        self.total_size = int(self.sizes.sum())
        self.longest = int(self.sizes.max())
        self.rng = np.random.default_rng(seed)

    def window(self, n_ctx):
        """The training window: ``n_ctx`` tokens, or the longest chunk if that is shorter."""
        return min(n_ctx, self.longest)

    def sample(self, length):
        """One window of ``length`` tokens."""
        return self.sample_many(1, length)[0]

    def sample_many(self, count, length):
        """``count`` windows as an ``int32`` array ``[count, length]``."""
        if length > self.longest:
            raise DatasetError(f"The dataset's longest chunk has {self.longest} tokens; "
                               f"cannot sample {length} at a time.")
        starts = np.maximum(self.sizes - length + 1, 0)
        ends = np.cumsum(starts)
        picks = self.rng.integers(0, ends[-1], size=count)
        which = np.searchsorted(ends, picks, side="right")
        offsets = picks - (ends[which] - starts[which])
        return np.stack([np.asarray(self.chunks[i][o:o + length], dtype=np.int32)
                         for i, o in zip(which, offsets)])

    @property
    def state(self):
        return json.dumps(self.rng.bit_generator.state)

    @state.setter
    def state(self, text):
        self.rng.bit_generator.state = json.loads(text)


def split_validation(chunks, fraction):
    """Keep the last ``fraction`` of every chunk for validation: ``(train, val)``."""
    if not 0 < fraction < 1:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {fraction!r}.")
    train, val = [], []
    for c in chunks:
        cut = int(round(len(c) * (1 - fraction)))
        train.append(c[:cut])
        val.append(c[cut:])
    if not any(len(c) >= 2 for c in train) or not any(len(c) >= 2 for c in val):
        raise DatasetError(f"The dataset is too small to keep {fraction:.0%} of it for "
                           f"validation; pass val_dataset=... or a larger dataset.")
    return [c for c in train if len(c)], [c for c in val if len(c)]


def validation_windows(chunks, length, max_windows=16):
    """Non-overlapping windows of ``length`` tokens (fewer if the chunks are shorter), at most
    ``max_windows`` spread evenly: the fixed set every validation pass scores."""
    length = min(length, max(len(c) for c in chunks))
    windows = [np.asarray(c[i:i + length], np.int32)
               for c in chunks for i in range(0, len(c) - length + 1, length)]
    if len(windows) > max_windows:
        windows = [windows[int(i)] for i in np.linspace(0, len(windows) - 1, max_windows)]
    return np.stack(windows)


# ---------------------------------------------------------------------------
# gpt-2-simple's helpers

def encode_dataset(file_path, model_dir="models", out_path="text_encoded.npz", model_name="124M",
                   combine=50000):
    """Pre-encode a text file, folder or CSV into ``out_path`` (compressed ``.npz``), so
    ``finetune`` starts at once. gpt-2-simple reads the file too.

        >>> import os, tempfile, shutil
        >>> d = tempfile.mkdtemp()
        >>> from gpt2_simple_plus._examples import example_vocab
        >>> _ = shutil.copytree(example_vocab(), os.path.join(d, "models", "toy"))
        >>> _ = open(os.path.join(d, "a.txt"), "w").write("the hat")
        >>> encode_dataset(os.path.join(d, "a.txt"), model_dir=os.path.join(d, "models"),
        ...                out_path=os.path.join(d, "a.npz"), model_name="toy")
        Reading files
        Writing ...a.npz
        >>> np.load(os.path.join(d, "a.npz"))["arr_0"].tolist()[:2]
        [257, 260]
    """
    from .encoder import get_encoder

    model_path = os.path.join(model_dir, model_name)
    enc = get_encoder(model_path)
    print("Reading files")
    paths = dataset_files(file_path)
    tmp = tempfile.mkdtemp(prefix="gpt2-encode-")
    try:
        dtype = np.uint16 if enc.n_vocab <= 1 << 16 else np.int32
        raw = os.path.join(tmp, "tokens.bin")
        n_tokens, bounds = _encode_to_disk(enc, paths, combine, raw, dtype)
        tokens = np.memmap(raw, dtype=dtype, mode="r", shape=(n_tokens,))
        print("Writing", out_path)
        np.savez_compressed(out_path, *_split(tokens, bounds))
        del tokens
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def encode_csv(csv_path, out_path="csv_encoded.txt", header=True, start_token=START_TOKEN,
               end_token=END_TOKEN):
    """Write a single-column CSV as text, each row wrapped in ``start_token`` ... ``end_token``
    (gpt-2-simple's ``encode_csv``; the output is a dataset for ``finetune``).

        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> _ = open(os.path.join(d, "t.csv"), "w").write("text\\nhello\\n\\"a, b\\"\\n")
        >>> encode_csv(os.path.join(d, "t.csv"), os.path.join(d, "t.txt"))
        >>> print(open(os.path.join(d, "t.txt")).read(), end="")
        <|startoftext|>hello<|endoftext|>
        <|startoftext|>a, b<|endoftext|>
    """
    if not os.path.isfile(csv_path):
        raise DatasetError(f"No such CSV file: {csv_path!r}.")
    with atomic_open(out_path, errors="ignore", fsync=False) as w:
        for row in _csv_rows(csv_path, start_token, end_token, header):
            w.write(row)


# ---------------------------------------------------------------------------
# Labelled data (texts and their labels), for the classifier.

def read_labelled(dataset, text_column="text", label_column="label"):
    """``(texts, labels)`` from a CSV / JSON-lines file, a ``(texts, labels)`` pair,
    a list of dicts or a dict of columns.

    In a CSV every value is text, so a label column of whole numbers only
    (``0``, ``1``, ``5`` ...) is read as ``int``; JSON keeps its types.

        >>> read_labelled((["good", "bad"], ["pos", "neg"]))
        (['good', 'bad'], ['pos', 'neg'])
        >>> read_labelled([{"review": "meh", "stars": 3}], "review", "stars")
        (['meh'], [3])
    """
    if isinstance(dataset, (str, os.PathLike)):
        texts, labels = _read_file(os.fspath(dataset), text_column, label_column)
        source = os.fspath(dataset)
    elif isinstance(dataset, dict):
        missing = [c for c in (text_column, label_column) if c not in dataset]
        if missing:
            raise DatasetError(f"The dataset has no column {missing[0]!r}; its columns are "
                               f"{_names(dataset)}. Pass text_column=... and label_column=....")
        texts, labels = list(dataset[text_column]), list(dataset[label_column])
        source = "the dataset"
    elif isinstance(dataset, (list, tuple)) and dataset and all(
            isinstance(r, dict) for r in dataset):
        texts, labels = [], []
        for n, row in enumerate(dataset):
            missing = [c for c in (text_column, label_column) if c not in row]
            if missing:
                raise DatasetError(f"Row {n} of the dataset has no {missing[0]!r}; its keys are "
                                   f"{_names(row)}. Pass text_column=... and label_column=....")
            texts.append(row[text_column])
            labels.append(row[label_column])
        source = "the dataset"
    elif isinstance(dataset, (list, tuple)) and len(dataset) == 2 and all(
            isinstance(c, (list, tuple, np.ndarray)) for c in dataset):
        texts, labels = list(dataset[0]), list(dataset[1])
        if len(texts) != len(labels):
            raise DatasetError(f"The dataset has {len(texts)} texts but {len(labels)} labels; "
                               f"pass (texts, labels) of the same length.")
        source = "the dataset"
    else:
        raise DatasetError(
            "The dataset should be a CSV or JSON-lines file, a (texts, labels) pair of lists, "
            f"a list of dicts or a dict of columns; got {type(dataset).__name__}.")
    if not texts:
        raise DatasetError(f"{source} has no rows. A classifier needs labelled examples.")
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise DatasetError(f"Text {n} in {source} is {type(text).__name__} {text!r:.40}, "
                               f"not a string.")
    return texts, _check_labels([_plain(x) for x in labels], source)


def _plain(label):
    return label.item() if isinstance(label, np.generic) else label


def _names(mapping):
    return ", ".join(repr(k) for k in mapping) or "none"


def _check_labels(labels, source):
    for n, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, (int, str)) or label == "":
            raise DatasetError(f"Label {n} in {source} is {label!r}: labels must be strings or "
                               f"whole numbers, and none may be empty.")
    if len({type(x) for x in labels}) > 1:
        raise DatasetError(f"{source} mixes string and number labels; make them all one kind.")
    return labels


def _read_file(path, text_column, label_column):
    if not os.path.isfile(path):
        raise DatasetError(f"The dataset file {path!r} does not exist.")
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8-sig", newline="") as f:
        head = f.read(1)
    if ext in (".jsonl", ".json", ".ndjson") or (ext not in (".csv", ".tsv") and head in "{["):
        return _read_json(path, text_column, label_column)
    return _read_csv(path, text_column, label_column, "\t" if ext == ".tsv" else ",")


def _read_csv(path, text_column, label_column, delimiter):
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # reviews may be long
    texts, labels = [], []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        for column in (text_column, label_column):
            if column not in columns:
                raise DatasetError(
                    f"{path} has no column {column!r}; its columns are "
                    f"{', '.join(repr(c) for c in columns) or 'none (the file is empty)'}. "
                    f"Pass text_column=... and label_column=... to choose.")
        for row in reader:
            text, label = row[text_column], row[label_column]
            if label is None or label.strip() == "":
                raise DatasetError(f"{path}, line {reader.line_num}: the {label_column!r} "
                                   f"column is empty. Every row needs a label.")
            texts.append(text or "")
            labels.append(label.strip())
    if labels and all(re.fullmatch(r"[+-]?\d+", x) for x in labels):
        labels = [int(x) for x in labels]
    return texts, labels


def _read_json(path, text_column, label_column):
    with open(path, encoding="utf-8-sig") as f:
        content = f.read()
    try:
        if content.lstrip().startswith("["):
            rows = json.loads(content)
            numbered = list(enumerate(rows, start=1))
            where = "item"
        else:
            numbered = [(n, json.loads(line)) for n, line in enumerate(content.splitlines(), 1)
                        if line.strip()]
            where = "line"
    except ValueError as err:
        raise DatasetError(f"{path} is not valid JSON lines ({err}). Each line should be an "
                           f"object like {{\"{text_column}\": \"...\", \"{label_column}\": ...}}."
                           ) from None
    texts, labels = [], []
    for n, row in numbered:
        if not isinstance(row, dict):
            raise DatasetError(f"{path}, {where} {n}: expected a JSON object, got "
                               f"{type(row).__name__}.")
        for column in (text_column, label_column):
            if column not in row:
                raise DatasetError(
                    f"{path}, {where} {n} has no {column!r}; its keys are {_names(row)}. "
                    f"Pass text_column=... and label_column=... to choose.")
        texts.append(row[text_column])
        labels.append(row[label_column])
    return texts, labels


def holdout_rows(n, val_fraction, seed):
    """Row numbers ``(train, validation)``: a random ``val_fraction`` of ``n`` labelled rows
    held out (the classifier's validation; :func:`split_validation` is the language
    model's, which keeps the end of every chunk).

        >>> holdout_rows(5, 0.4, seed=0)
        ([0, 1, 3], [2, 4])
    """
    if not 0 <= val_fraction < 1:
        raise TrainingError(f"val_fraction must be at least 0 and below 1, got {val_fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(val_fraction * n)))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())

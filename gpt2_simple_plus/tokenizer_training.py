"""Train your own GPT-2 vocabulary: byte-level BPE on your texts, saved in GPT-2's format.

GPT-2's 50,257 tokens were learned from English web pages. A model trained
from scratch on something else (another language, code, music in ABC
notation) learns faster with a vocabulary learned from its own data, and a
small vocabulary keeps a small model small.

    >>> import gpt2_simple_plus as gpt2
    >>> from gpt2_simple_plus._examples import example_texts
    >>> import tempfile
    >>> folder = gpt2.train_tokenizer(example_texts(), vocab_size=280,
    ...                               out_dir=tempfile.mkdtemp())   # doctest: +ELLIPSIS
    Trained a byte-level BPE vocabulary of 280 tokens ...
    >>> enc = gpt2.get_encoder(folder)
    >>> enc.decode(enc.encode("the cat sat on the hat"))
    'the cat sat on the hat'

How it works: Hugging Face ``tokenizers`` learns the merges, cutting the text
into pre-tokens with GPT-2's own regular expression and spelling bytes with
GPT-2's byte-to-character table, so the result is a GPT-2 vocabulary in every
respect but its size. The two files written are the ones ``download_gpt2``
puts in ``models/124M``:

* ``encoder.json``: token (as GPT-2 spells it, a space is ``Ġ``) -> id. The
  256 single bytes come first in GPT-2's order (ids 0-255), then each merged
  token in the order it was learned, then ``<|endoftext|>`` with the last id,
  ``vocab_size - 1``, exactly like GPT-2's 50256.
* ``vocab.bpe``: ``#version: 0.2``, then one merge per line, most frequent first.

Every byte is a token, so any text encodes, whatever the corpus held. The
text ``<|endoftext|>`` in the corpus is trained on as ordinary characters, the
way the encoder reads it by default.
"""

import json
import os
import time

from .encoder import ENDOFTEXT, bytes_to_unicode
from .errors import DatasetError, TrainingError
from .files import write_text_atomic

DEFAULT_VOCAB_SIZE = 4096  # fits a small demo corpus (1-10 MB); GPT-2 itself has 50,257
DEFAULT_OUT_DIR = os.path.join("models", "custom")
_CHUNK_CHARS = 1 << 20  # the corpus reaches the trainer in pieces of about this size
_SAMPLE_CHARS = 100_000  # characters encoded to report characters per token


def train_tokenizer(files, vocab_size=DEFAULT_VOCAB_SIZE, out_dir=DEFAULT_OUT_DIR,
                    min_frequency=2):
    """Learn a byte-level BPE vocabulary from ``files``; write ``encoder.json`` and
    ``vocab.bpe`` to ``out_dir`` and return ``out_dir``.

    ``files`` is a text file, a folder (every file in it and its sub-folders,
    hidden ones skipped), a list of files and folders, or an iterator of
    strings (``iter(texts)``, a generator): a *list* of strings is read as file
    names. Files are read as UTF-8.

    ``vocab_size`` counts everything: 256 bytes, the merges, and
    ``<|endoftext|>``. The default, 4,096, suits a corpus of a few megabytes;
    a pair of symbols becomes a merge only if it occurs ``min_frequency``
    times, so a small corpus may stop short of ``vocab_size`` (the summary
    says so). Prints a short summary.

        >>> import gpt2_simple_plus as gpt2
        >>> import tempfile
        >>> folder = gpt2.train_tokenizer(iter(["low lower lowest"] * 20), vocab_size=262,
        ...                               out_dir=tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Trained a byte-level BPE vocabulary of 262 tokens ...
        >>> print(open(os.path.join(folder, "vocab.bpe")).read())
        #version: 0.2
        l o
        lo w
        Ġ low
        Ġlow e
        s t
        <BLANKLINE>
        >>> enc = gpt2.get_encoder(folder)
        >>> [enc.decode([i]) for i in enc.encode(" lower")]
        [' lowe', 'r']
    """
    vocab_size = _check_int("vocab_size", vocab_size, 257,
                            "256 byte tokens and <|endoftext|> need 257")
    min_frequency = _check_int("min_frequency", min_frequency, 0, "")
    start = time.perf_counter()
    stats = {"chars": 0, "sample": ""}
    if isinstance(files, (str, bytes, os.PathLike, list, tuple)):
        paths = _corpus_paths(files)
        stats["source"] = f"{len(paths):,} file{'s' if len(paths) != 1 else ''}"
        texts = _read_files(paths)
    else:
        try:
            texts = iter(files)
        except TypeError:
            raise DatasetError(f"train_tokenizer needs a file name, a folder, a list of them, or "
                               f"an iterator of strings; got {type(files).__name__}.") from None
        stats["source"] = "the texts given"
    tokenizer = _train_bpe(_counted(texts, stats), vocab_size, min_frequency)
    if stats["chars"] == 0:
        raise DatasetError(f"The corpus is empty: {stats['source']} held no text to learn a "
                           f"vocabulary from.")
    encoder, merges = gpt2_vocabulary(tokenizer)
    os.makedirs(out_dir, exist_ok=True)
    _write_atomic(os.path.join(out_dir, "encoder.json"), json.dumps(encoder, ensure_ascii=False))
    _write_atomic(os.path.join(out_dir, "vocab.bpe"),
                  "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    _print_summary(tokenizer, encoder, merges, vocab_size, min_frequency, out_dir, stats,
                   time.perf_counter() - start)
    return out_dir


def _check_int(name, value, minimum, why):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TrainingError(f"{name} should be a whole number of at least {minimum}"
                            f"{' (' + why + ')' if why else ''}; got {value!r}.")
    return value


def _train_bpe(texts, vocab_size, min_frequency):
    """Hugging Face ``tokenizers`` BPE with GPT-2's pre-tokeniser, trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # ByteLevel's regular expression is GPT-2's; add_prefix_space=False as in GPT-2.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def gpt2_vocabulary(tokenizer):
    """``(encoder, merges)`` in GPT-2's layout from a trained byte-level BPE ``tokenizer``.

    Ids are renumbered: the 256 bytes in GPT-2's order, then merged tokens in
    the order they were learned, then ``<|endoftext|>``. Token strings and
    merges are unchanged, so encoding gives the same tokens.
    """
    model = json.loads(tokenizer.to_str())["model"]
    vocab = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    encoder = {}
    for symbol in bytes_to_unicode().values():
        if symbol not in vocab:
            raise TrainingError(f"The trained vocabulary lacks the byte {symbol!r}; "
                                f"train with ByteLevel.alphabet() as the initial alphabet.")
        encoder[symbol] = len(encoder)
    for a, b in merges:
        # Two merges may make the same token ("a bc", "ab c"); it keeps its first id.
        encoder.setdefault(a + b, len(encoder))
    stray = set(vocab) - set(encoder) - {ENDOFTEXT}
    if stray:
        raise TrainingError(f"The trained vocabulary has tokens no merge makes: "
                            f"{sorted(stray)[:5]}.")
    encoder[ENDOFTEXT] = len(encoder)
    return encoder, merges


def _corpus_paths(files):
    """The files to read, in a stable order; raises DatasetError for a missing one."""
    items = [files] if isinstance(files, (str, bytes, os.PathLike)) else list(files)
    if not items:
        raise DatasetError("train_tokenizer got an empty list of files.")
    paths = []
    for item in items:
        path = os.fsdecode(item)
        if os.path.isdir(path):
            found = []
            for folder, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(folder, n) for n in sorted(names) if not n.startswith(".")]
            if not found:
                raise DatasetError(f"The folder {path!r} holds no files to train on.")
            paths += found
        elif os.path.isfile(path):
            paths.append(path)
        else:
            hint = ("" if len(path) < 80 and "\n" not in path else
                    " To train on texts rather than files, pass an iterator: "
                    "gpt2.train_tokenizer(iter(texts)).")
            raise DatasetError(f"No file or folder {path[:80]!r} (looked at "
                               f"{os.path.abspath(path)[:200]}).{hint}")
    return paths


def _read_files(paths):
    """The files' text in pieces of about a megabyte, each ending at a line end if it can."""
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                carry = ""
                while True:
                    block = f.read(_CHUNK_CHARS)
                    if not block:
                        break
                    text = carry + block
                    cut = text.rfind("\n") + 1 or len(text)
                    carry = text[cut:]
                    yield text[:cut]
                if carry:
                    yield carry
        except UnicodeDecodeError as err:
            raise DatasetError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}). "
                               f"Save it as UTF-8, or leave it out.") from None
        except OSError as err:
            raise DatasetError(f"Cannot read {path}: {err.strerror or err}.") from None


def _counted(texts, stats):
    for text in texts:
        if not isinstance(text, str):
            raise DatasetError(f"train_tokenizer's texts should be strings; got "
                               f"{type(text).__name__}.")
        stats["chars"] += len(text)
        if len(stats["sample"]) < _SAMPLE_CHARS:
            stats["sample"] += text[:_SAMPLE_CHARS - len(stats["sample"])]
        yield text


def _write_atomic(path, text):
    write_text_atomic(path, text, newline="\n")


def _print_summary(tokenizer, encoder, merges, vocab_size, min_frequency, out_dir, stats, secs):
    n_merged = len(encoder) - 257
    lines = [f"Trained a byte-level BPE vocabulary of {len(encoder):,} tokens (256 bytes + "
             f"{n_merged:,} merged + {ENDOFTEXT}) on {stats['source']}, "
             f"{stats['chars']:,} characters, in {secs:.1f}s."]
    if len(encoder) < vocab_size:
        lines.append(f"  Asked for {vocab_size:,}: no other pair of symbols occurs "
                     f"{min_frequency} times or more. A larger corpus gives more.")
    sample = stats["sample"]
    if sample.strip():
        n_tokens = len(tokenizer.encode(sample, add_special_tokens=False).ids)
        lines.append(f"  {len(sample) / max(n_tokens, 1):.2f} characters per token on the first "
                     f"{len(sample):,} characters.")
    lines.append(f"  Wrote {os.path.join(out_dir, 'encoder.json')} and "
                 f"{os.path.join(out_dir, 'vocab.bpe')}; "
                 f"n_vocab={len(encoder)} for a model using them.")
    print("\n".join(lines))

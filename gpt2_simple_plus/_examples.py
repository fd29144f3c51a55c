"""Fixtures for the docstring examples and the tests (not part of the API).

Tiny vocabularies, tiny random GPT-2s and a fake Google Drive, made in
temporary folders, so every example in the package runs offline in seconds.
``tests/helpers.py`` builds its models with the same functions.

    >>> from gpt2_simple_plus.encoder import get_encoder
    >>> get_encoder(example_vocab()).encode("the hat")
    [257, 260]
"""

import hashlib
import json
import os
import tempfile

from .encoder import ENDOFTEXT, bytes_to_unicode

# Merges of the example vocabulary (example_vocab) and of the tests' (make_tiny_vocab).
EXAMPLE_MERGES = ["t h", "th e", "Ġ h", "Ġh a", "Ġha t"]
TINY_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "e r", "Ġ s", "o n", "Ġ w", "r e",
               "Ġa n", "Ġan d", "Ġ o", "Ġo f", "a t", "e n", "Ġt o", "Ġ i", "Ġi n", "o u"]

_saved_environment = {}  # variables changed by a fixture: name -> value before (None: unset)


def vocab_files(merges):
    """``{"encoder.json": text, "vocab.bpe": text}``: GPT-2's byte-level vocabulary
    (256 bytes), one token per merge, then ``<|endoftext|>``."""
    encoder = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for merge in merges:
        encoder["".join(merge.split())] = len(encoder)
    encoder[ENDOFTEXT] = len(encoder)
    return {"encoder.json": json.dumps(encoder, ensure_ascii=False),
            "vocab.bpe": "#version: 0.2\n" + "".join(m + "\n" for m in merges)}


def make_tiny_vocab(folder, merges=TINY_MERGES):
    """Write a byte-level BPE vocabulary in GPT-2's format into ``folder``; returns its size.

        >>> make_tiny_vocab(tempfile.mkdtemp())
        277
    """
    from .files import write_text_atomic

    os.makedirs(folder, exist_ok=True)
    files = vocab_files(merges)
    for name, text in files.items():  # atomically: other processes may be reading
        write_text_atomic(os.path.join(folder, name), text)
    return len(json.loads(files["encoder.json"]))


def example_vocab():
    """A tiny vocabulary (256 bytes, 5 merges spelling "the" and " hat") in a folder of
    the temporary directory named after its contents, made once and shared."""
    files = vocab_files(EXAMPLE_MERGES)
    version = hashlib.sha256(json.dumps(files).encode("utf-8")).hexdigest()[:12]
    folder = os.path.join(tempfile.gettempdir(), f"gpt2_simple_plus_example_vocab_{version}")
    if not os.path.isfile(os.path.join(folder, "vocab.bpe")):
        make_tiny_vocab(folder, EXAMPLE_MERGES)
    return folder


def make_model_dir(folder, *, vocab_dir=None, size="tiny", seed=0, weights=None, **overrides):
    """A random GPT-2 in OpenAI's release layout at ``folder``; returns its hparams.

    With ``vocab_dir`` the vocabulary is copied from there; otherwise the tiny
    vocabulary of :func:`make_tiny_vocab` is written. ``weights(hparams)``, if
    given, makes the weights instead of GPT-2's random initialisation.
    """
    from .checkpoints import save_pretrained_layout
    from .hparams import hparams_for
    from .model import random_weights

    os.makedirs(folder, exist_ok=True)
    if vocab_dir:
        with open(os.path.join(vocab_dir, "encoder.json"), encoding="utf-8") as f:
            n_vocab = len(json.load(f))
    else:
        n_vocab = make_tiny_vocab(folder)
    hparams = hparams_for(size, n_vocab=n_vocab, **overrides)
    values = weights(hparams) if weights else random_weights(hparams, seed)
    save_pretrained_layout(folder, values, hparams, vocab_from=vocab_dir)
    return hparams


def example_model_dir():
    """``<tmp>/gpt2_simple_plus_example_models/tiny``: a tiny random GPT-2 over
    :func:`example_vocab`, made once and shared."""
    folder = os.path.join(tempfile.gettempdir(), "gpt2_simple_plus_example_models", "tiny")
    if not os.path.isfile(os.path.join(folder, "checkpoint")):
        make_model_dir(folder, vocab_dir=example_vocab())
    return folder


def example_session():
    """A session holding a tiny random GPT-2 over :func:`example_vocab`."""
    from .encoder import get_encoder
    from .hparams import hparams_for
    from .model import GPT2
    from .session import start_tf_sess

    encoder = get_encoder(example_vocab())
    sess = start_tf_sess()
    sess.set_model(GPT2(hparams_for("tiny", n_vocab=encoder.n_vocab), seed=0), encoder,
                   example_vocab())
    return sess


def example_drive():
    """A temporary folder holding ``drive/MyDrive``, made the Google Drive through
    ``GPT2_SIMPLE_PLUS_DRIVE_ROOT``, and a small run ``checkpoint/run1``; returns the
    folder. :func:`restore_environment` puts the variable back."""
    from .colab import DRIVE_ROOT_ENV

    work = tempfile.mkdtemp()
    os.makedirs(os.path.join(work, "drive", "MyDrive"))
    set_environment(DRIVE_ROOT_ENV, os.path.join(work, "drive"))
    run = os.path.join(work, "checkpoint", "run1")
    os.makedirs(run)
    for name, text in (("checkpoint", 'model_checkpoint_path: "model-5"\n'), ("counter", "5")):
        with open(os.path.join(run, name), "w", encoding="utf-8") as f:
            f.write(text)
    return work


def set_environment(name, value):
    """``os.environ[name] = value``, remembering the value before for
    :func:`restore_environment`."""
    _saved_environment.setdefault(name, os.environ.get(name))
    os.environ[name] = value


def restore_environment():
    """Put back every variable the fixtures changed.

        >>> set_environment("GPT2_SIMPLE_PLUS_EXAMPLE", "1")
        >>> restore_environment()
        >>> "GPT2_SIMPLE_PLUS_EXAMPLE" in os.environ
        False
    """
    while _saved_environment:
        name, value = _saved_environment.popitem()
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def example_texts():
    """A few hundred short sentences, for training a tokenizer in the examples."""
    import itertools

    animals = ["cat", "dog", "hat", "bat", "rat"]
    verbs = ["sat on", "ran to", "looked at", "jumped over"]
    return iter([f"the {a} {v} the {b}." for a, v, b in
                 itertools.product(animals, verbs, animals)] * 5)

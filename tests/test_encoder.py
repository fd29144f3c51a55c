"""GPT-2's byte-level BPE (gpt2_simple_plus/encoder.py).

On the real vocabulary (../shared/gpt2-vocab or $GPT2_VOCAB_DIR) the ids are
checked against three independent oracles built offline from the same two
files: tiktoken's own "gpt2" loader, Hugging Face ``tokenizers``, and OpenAI's
original ``encoder.py`` as shipped by gpt-2-simple. The tests at the bottom use
hand-made vocabularies and run without ../shared.
"""

import itertools
import json
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import helpers
from gpt2_simple_plus import _examples
from gpt2_simple_plus import encoder as encoder_module
from gpt2_simple_plus.encoder import Encoder, bytes_to_unicode, get_encoder
from gpt2_simple_plus.errors import (DatasetError, EncoderError, Gpt2Error,
                                     ModelNotFoundError)

HYPOTHESIS = settings(deadline=None, max_examples=150,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])

SAMPLES = {
    "empty": "",
    "prose": "It was the best of times, it was the worst of times; it was the age of wisdom.",
    "code": 'def f(x):\n    return {"a": x ** 2, \'b\': [1, 2, 3]}  # comment\n\tpass\n',
    "digits": "1234567890 3.14159 1,000,000.00 2024-01-31 0x1F -42 007 ٣٤٥ ½",
    "whitespace runs": "a  b   c\t\t d \n\n\n  e   \n \n\t \x0b\x0c end   ",
    "crlf": "line one\r\nline two\r\n\r\n  indented\r\n",
    "contractions": "DON'T He'S I'M we'LL They'Re it'D you'VE don't he's I'm we'll 'tis",
    "quotes": "'s 's' ''s \"quoted\" ’curly’ it''s",
    "emoji": "👍🏽 great! 👨‍👩‍👧‍👦 family 🇫🇷 flag 😀😀😀",
    "cjk": "日本語のテキストです。中文文本，包括标点。한국어 텍스트",
    "arabic": "مرحبا بالعالم، كيف حالك؟ ١٢٣",
    "devanagari": "नमस्ते दुनिया। हिन्दी पाठ",
    "combining marks": "e\u0301le\u0300ve n\u0303 Z\u0324\u0308algo a\u030a\u0323",
    "zero-width joiner": "a\u200db \u200c\u200d\ufeff x\u2060y",
    "endoftext literal": "first document<|endoftext|>second document <|endoftext|>\n",
    "unicode spaces": "no\u00a0break thin\u2009space ideo\u3000graphic \u2028sep\u2029par",
    "control bytes": "\x00\x01\x1b[31mred\x1b[0m\x1c\x1d\x1e\x1f\x7f\x85",
    "long word": "a" * 300 + " " + "Supercalifragilisticexpialidocious" * 20,
    "url": "https://example.com/path?q=1&r=two#frag user@example.org C:\\Windows\\",
    "trailing space": "hello world   ",
}


# -- oracles built offline from the real vocabulary --------------------------------

@pytest.fixture(scope="module")
def real(gpt2_vocab_dir):
    return get_encoder(gpt2_vocab_dir)


@pytest.fixture(scope="module")
def real_python(gpt2_vocab_dir):
    return get_encoder(gpt2_vocab_dir, backend="python")


@pytest.fixture(scope="module")
def tiktoken_gpt2(gpt2_vocab_dir):
    """tiktoken's own "gpt2" encoding, loaded from the local files instead of the web."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext import openai_public

    with mock.patch.dict(os.environ, {"TIKTOKEN_CACHE_DIR": ""}):  # no cache writes
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=os.path.join(gpt2_vocab_dir, "vocab.bpe"),
            encoder_json_file=os.path.join(gpt2_vocab_dir, "encoder.json"))
    return tiktoken.Encoding(name="gpt2", pat_str=openai_public.r50k_pat_str,
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256},
                             explicit_n_vocab=50257)


def hf_byte_level_bpe(folder):
    """Hugging Face's byte-level BPE over a folder's encoder.json and vocab.bpe."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers

    with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(folder, "vocab.bpe"), encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line]
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


@pytest.fixture(scope="module")
def hf_gpt2(gpt2_vocab_dir):
    return hf_byte_level_bpe(gpt2_vocab_dir)


openai_encoder_module = helpers.openai_encoder_module


@pytest.fixture(scope="module")
def openai_gpt2(gpt2_vocab_dir):
    return openai_encoder_module().get_encoder(gpt2_vocab_dir)


# -- conformance on the real vocabulary ---------------------------------------

def test_real_vocabulary_uses_tiktoken(real, real_python):
    assert (real.backend, real.n_vocab, real.eot_token) == ("tiktoken", 50257, 50256)
    assert real.fallback_reason is None
    assert real_python.backend == "python"
    assert real.special_tokens == {"<|endoftext|>": 50256}


@pytest.mark.parametrize("name", SAMPLES)
def test_ids_match_every_oracle(name, real, real_python, tiktoken_gpt2, hf_gpt2, openai_gpt2):
    text = SAMPLES[name]
    expected = openai_gpt2.encode(text)
    assert real.encode(text) == expected
    assert real_python.encode(text) == expected
    assert tiktoken_gpt2.encode_ordinary(text) == expected
    assert hf_gpt2.encode(text, add_special_tokens=False).ids == expected
    assert real.decode(expected) == real_python.decode(expected) == openai_gpt2.decode(expected)
    assert real.decode(expected) == text


def test_known_ids(real):
    assert real.encode("Hello world") == [15496, 995]
    assert real.encode(" the") == [262]
    assert real.token_bytes(220) == b" "
    assert real.token_bytes(50256) == b"<|endoftext|>"


def test_endoftext_is_text_unless_allowed(real, real_python, tiktoken_gpt2, openai_gpt2):
    text = "one<|endoftext|>two <|endoftext|>"
    for enc in (real, real_python):
        as_text = enc.encode(text)
        assert as_text == openai_gpt2.encode(text)  # what gpt-2-simple's datasets hold
        assert 50256 not in as_text
        assert enc.decode(as_text) == text
        allowed = enc.encode(text, allowed_special={"<|endoftext|>"})
        assert allowed == enc.encode(text, allowed_special="all") \
            == enc.encode(text, allowed_special="<|endoftext|>") \
            == tiktoken_gpt2.encode(text, allowed_special="all")
        assert allowed == enc.encode("one") + [50256] + enc.encode("two ") + [50256]
        assert enc.decode(allowed) == text
        assert enc.encode_to_array(text, allowed_special="all").tolist() == allowed
        with pytest.raises(EncoderError, match="<|startoftext|>"):
            enc.encode(text, allowed_special={"<|startoftext|>"})


def test_encode_to_array(real, real_python):
    text = SAMPLES["prose"] + SAMPLES["emoji"]
    for enc in (real, real_python):
        ids = enc.encode_to_array(text)
        assert ids.dtype == np.uint16
        assert ids.tolist() == enc.encode(text)


def test_decode_accepts_lists_tuples_arrays_and_numpy_ints(real, real_python):
    ids = real.encode("Hello world")
    for enc in (real, real_python):
        for form in (ids, tuple(ids), np.array(ids, dtype=np.uint16),
                     np.array(ids, dtype=np.int64), [np.int32(i) for i in ids],
                     np.array([ids]), iter(ids)):
            assert enc.decode(form) == "Hello world"
        assert enc.decode(np.int64(995)) == " world"
        assert enc.decode([]) == ""


def test_decode_replaces_partial_utf8(real):
    ids = real.encode("😀")
    assert len(ids) > 1  # the emoji's four bytes are spread over several tokens
    assert real.decode(ids[:1]) == "\ufffd"
    assert real.decode_bytes(ids) == "😀".encode("utf-8")


@pytest.mark.parametrize("bad", [-1, 50257, 10**9, np.int64(60000)])
def test_out_of_range_id_names_the_id_and_the_vocab_size(real, real_python, bad):
    for enc in (real, real_python):
        for ids in ([15496, bad], np.array([15496, bad], dtype=np.int64)):
            with pytest.raises(EncoderError, match=rf"{int(bad)}\b.*50257"):
                enc.decode(ids)
        with pytest.raises(EncoderError, match=str(int(bad))):
            enc.token_bytes(bad)


def test_non_integer_ids_are_refused(real):
    with pytest.raises(EncoderError, match="whole numbers"):
        real.decode(np.array([1.0, 2.0]))
    with pytest.raises(EncoderError, match="whole numbers"):
        real.decode([15496, 1.5])


def test_lone_surrogates_become_replacement_characters_in_both_backends(real, real_python):
    text = "a\ud800b \udfff"
    assert real.encode(text) == real_python.encode(text) == real.encode("a\ufffdb \ufffd")


@HYPOTHESIS
@given(text=st.text(max_size=60))
def test_roundtrip_and_backends_agree_on_any_text(real, real_python, text):
    ids = real.encode(text)
    assert real.decode(ids) == text
    assert real_python.encode(text) == ids
    assert real_python.decode(ids) == text


# -- streaming -----------------------------------------------------------------

STREAM_ALPHABET = list(" \n\t\r'\u00a0\u3000.,;!-_(\"") * 3 + list("aZé9日😀\u0301") \
    + ["'s", " 's", "DON'T", "<|endoftext|>", "\r\n", "  ", "42", "\u200d"]
stream_texts = st.lists(st.sampled_from(STREAM_ALPHABET), max_size=80).map("".join)


def split_randomly(text, cuts):
    bounds = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0] + bounds, bounds + [len(text)])]


@HYPOTHESIS
@given(text=stream_texts, cuts=st.lists(st.integers(0, 80), max_size=6),
       chunk_chars=st.integers(1, 12), specials=st.booleans())
def test_streaming_equals_whole_encode(real, real_python, text, cuts, chunk_chars, specials):
    allowed = "all" if specials else ()
    for enc in (real, real_python):
        arrays = list(enc.encode_iter(split_randomly(text, cuts), chunk_chars=chunk_chars,
                                      allowed_special=allowed))
        assert all(a.dtype == np.uint16 for a in arrays)
        joined = np.concatenate(arrays).tolist() if arrays else []
        assert joined == enc.encode(text, allowed_special=allowed)


@HYPOTHESIS
@given(text=stream_texts, cuts=st.lists(st.integers(0, 80), max_size=6),
       chunk_chars=st.integers(1, 12))
def test_streaming_equals_whole_encode_without_shared_vocab(text, cuts, chunk_chars):
    folder = _examples.example_vocab()
    for enc in (get_encoder(folder), get_encoder(folder, backend="python")):
        arrays = list(enc.encode_iter(split_randomly(text, cuts), chunk_chars=chunk_chars,
                                      allowed_special="all"))
        joined = np.concatenate(arrays).tolist() if arrays else []
        assert joined == enc.encode(text, allowed_special="all")


@pytest.mark.parametrize("text", [
    "a" * 5000,                                    # one enormous word: kept whole
    "\n" * 3000 + "x" + " " * 3000,                # whitespace only
    "日本語のテキスト。" * 600,                      # no spaces: cut between classes
    "x'sx'sx's'" * 400,                            # contractions everywhere
    ("word " * 7 + "\n") * 200,
    "<|endoftext|>" * 300,
])
def test_streaming_pathological_inputs(real, text):
    for allowed in ((), "all"):
        arrays = list(real.encode_iter([text], chunk_chars=64, allowed_special=allowed))
        assert np.concatenate(arrays).tolist() == real.encode(text, allowed_special=allowed)


def test_streaming_cuts_text_without_spaces_into_chunks(real):
    arrays = list(real.encode_iter(["日本語のテキスト。" * 600], chunk_chars=64))
    assert len(arrays) > 50


def test_streaming_holds_only_a_few_chunks():
    # An endless stream: the encoder must hand out arrays without reading it all.
    enc = get_encoder(_examples.example_vocab())
    consumed = []

    def endless():
        for n in itertools.count():
            consumed.append(n)
            yield "the hat sat.\n"

    first = list(itertools.islice(enc.encode_iter(endless(), chunk_chars=1000), 3))
    assert len(first) == 3
    assert len(consumed) * len("the hat sat.\n") < 5 * 1000


def test_encode_file_equals_encode_of_the_read_text(real, tmp_path):
    path = tmp_path / "corpus.txt"
    text = "".join(SAMPLES.values()) * 3
    path.write_bytes(text.encode("utf-8"))
    for newline in (None, ""):
        with open(path, encoding="utf-8", newline=newline) as f:
            expected = real.encode(f.read())
        arrays = list(real.encode_file(str(path), chunk_chars=100, newline=newline))
        assert len(arrays) > 5
        assert np.concatenate(arrays).tolist() == expected


def test_encode_file_missing(real, tmp_path):
    with pytest.raises(DatasetError, match="nothing.txt"):
        next(real.encode_file(str(tmp_path / "nothing.txt")))


# -- loading and its errors ------------------------------------------------------

def test_missing_folder_says_how_to_download(tmp_path):
    folder = str(tmp_path / "models" / "124M")
    with pytest.raises(ModelNotFoundError) as info:
        get_encoder(folder)
    message = str(info.value)
    assert folder in message
    assert "download a model first: gpt2.download_gpt2(model_name='124M')" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, Gpt2Error)


def test_missing_vocab_bpe_names_it(tmp_path):
    helpers.make_tiny_vocab(str(tmp_path))
    os.remove(tmp_path / "vocab.bpe")
    with pytest.raises(ModelNotFoundError, match=r"vocab\.bpe.*download a model first"):
        get_encoder(str(tmp_path))


@pytest.mark.parametrize("content", ['{"a": 0, "b":', "[1, 2, 3]", '{"a": "zero"}', "\xff\xfe"])
def test_corrupt_encoder_json_names_the_file(tmp_path, content):
    helpers.make_tiny_vocab(str(tmp_path))
    (tmp_path / "encoder.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(EncoderError, match="encoder.json"):
        get_encoder(str(tmp_path))


def test_corrupt_merges_name_the_file_and_line(tmp_path):
    helpers.make_tiny_vocab(str(tmp_path))
    with open(tmp_path / "vocab.bpe", "a", encoding="utf-8") as f:
        f.write("o u t\n")
    with pytest.raises(EncoderError, match=r"vocab\.bpe, line 22"):
        get_encoder(str(tmp_path))


def test_merges_from_another_vocabulary_are_refused(tmp_path):
    helpers.make_tiny_vocab(str(tmp_path))
    with open(tmp_path / "vocab.bpe", "a", encoding="utf-8") as f:
        f.write("o ut\n")
    with pytest.raises(EncoderError, match="'ut'.*not in encoder.json"):
        get_encoder(str(tmp_path))


def test_unknown_backend(tmp_path):
    helpers.make_tiny_vocab(str(tmp_path))
    with pytest.raises(EncoderError, match="backend"):
        get_encoder(str(tmp_path), backend="rust")


def test_loaded_once_until_a_file_changes(tmp_path):
    helpers.make_tiny_vocab(str(tmp_path))
    first = get_encoder(str(tmp_path))
    assert get_encoder(str(tmp_path) + "/") is first
    encoder = json.loads((tmp_path / "encoder.json").read_text(encoding="utf-8"))
    encoder["<|startoftext|>"] = len(encoder)
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    os.utime(tmp_path / "encoder.json", ns=(1, 1))  # a distinct mtime even on coarse clocks
    second = get_encoder(str(tmp_path))
    assert second is not first and "<|startoftext|>" in second.special_tokens


# -- hand-made vocabularies: these run without ../shared -----------------------------

TINY_TEXTS = ["the cat and the dog", " the theater in tent", "there\n\nthe  the   the",
              "THE The tHe", "ou ou out", "é日😀 <|endoftext|>", "", "  \n"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tinyvocab")
    helpers.make_tiny_vocab(str(folder))
    return str(folder)


def test_tiny_vocabulary_by_hand(tiny_dir):
    enc = get_encoder(tiny_dir)
    e = enc.encoder
    assert enc.n_vocab == 277 and enc.eot_token == 276
    # merges "i n", "Ġ i", "Ġi n": OpenAI's code stops at "Ġ" "in", tiktoken would
    # look " in" up whole, so this vocabulary must take the python backend
    assert enc.backend == "python" and "'Ġin'" in enc.fallback_reason
    assert enc.encode(" in") == [e["Ġ"], e["in"]]
    # "h e" (rank 1) then nothing joins "t" + "he"; " the" goes Ġ t -> Ġt, h e -> he, Ġt he
    assert enc.encode("the") == [e["t"], e["he"]]
    assert enc.encode(" the") == [e["Ġthe"]]
    assert enc.encode(" and") == [e["Ġand"]]
    assert enc.encode("hi <|endoftext|>", allowed_special="all") == [e["h"], e["i"], e["Ġ"], 276]
    assert enc.decode(enc.encode("Ünïcödé ✓")) == "Ünïcödé ✓"


def test_tiny_vocabulary_backends_and_oracles_agree(tiny_dir):
    auto = get_encoder(tiny_dir)
    python = get_encoder(tiny_dir, backend="python")
    openai = openai_encoder_module().get_encoder(tiny_dir)
    hf = hf_byte_level_bpe(tiny_dir)
    for text in TINY_TEXTS:
        ids = openai.encode(text)
        assert auto.encode(text) == python.encode(text) == ids
        assert hf.encode(text, add_special_tokens=False).ids == ids


def test_gpt2_is_verified_token_by_token(real_python):
    # backs the _VERIFIED entry that lets GPT-2 skip this check when loading
    assert real_python._fingerprint() in encoder_module._VERIFIED
    assert real_python._token_merges_do_not_make() is None


@settings(deadline=None, max_examples=120)
@given(data=st.data())
def test_tiktoken_is_chosen_only_when_it_agrees_with_the_merges(data):
    # random merge lists over "abĠ" with ids in merge order: whenever the encoder
    # trusts tiktoken, tiktoken must give OpenAI's ids on any text
    base = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    tokens, merges, encoder = ["a", "b", "Ġ"], [], dict(base)
    for _ in range(data.draw(st.integers(1, 12))):
        first, second = data.draw(st.sampled_from(tokens)), data.draw(st.sampled_from(tokens))
        if first + second not in encoder:
            merges.append((first, second))
            encoder[first + second] = len(encoder)
            tokens.append(first + second)
    auto, python = Encoder(encoder, merges), Encoder(encoder, merges, backend="python")
    for text in data.draw(st.lists(st.text(alphabet="ab ", max_size=12), min_size=1, max_size=5)):
        assert auto.encode(text) == python.encode(text), (auto.backend, merges, text)


def test_ids_out_of_merge_order_use_the_python_backend(tmp_path):
    # Same tokens, ids shuffled (as a Hugging Face trainer may write them).
    tiny = get_encoder(_examples.example_vocab())
    order = np.random.default_rng(0).permutation(tiny.n_vocab).tolist()
    shuffled = {token: order[i] for token, i in tiny.encoder.items()}
    merges = list(tiny.bpe_ranks)
    enc = Encoder(shuffled, merges)
    assert enc.backend == "python" and "merge order" in enc.fallback_reason
    with pytest.raises(EncoderError, match="backend='tiktoken' cannot"):
        Encoder(shuffled, merges, backend="tiktoken")
    for text in ["the hat", " the hat<|endoftext|>the", "hot thé 😀"]:
        assert enc.encode(text) == [order[i] for i in tiny.encode(text)]
        assert enc.decode(enc.encode(text)) == text


def test_vocabulary_trained_with_hugging_face_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    corpus = ["The quick brown fox jumps over the lazy dog. " * 3,
              "Don't panic! 42 is the answer; it's 3.14 or so.\n", "日本語 テキスト 😀"] * 20
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    vocab_file, merges_file = tok.model.save(str(tmp_path))
    os.replace(vocab_file, tmp_path / "encoder.json")
    os.replace(merges_file, tmp_path / "vocab.bpe")
    hf = hf_byte_level_bpe(str(tmp_path))
    auto = get_encoder(str(tmp_path))
    python = get_encoder(str(tmp_path), backend="python")
    assert auto.eot_token == 0
    for text in corpus[:3] + ["unseen words, Ünïcödé 👍 and   spaces\n"]:
        ids = hf.encode(text, add_special_tokens=False).ids
        assert auto.encode(text) == python.encode(text) == ids
        assert auto.decode(ids) == text


def test_missing_byte_in_a_small_vocabulary_is_an_encoder_error():
    enc = Encoder({"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4}, [("a", "b")])
    assert enc.backend == "python" and "byte" in enc.fallback_reason
    assert enc.encode("ab c") == [4, 3, 2]
    with pytest.raises(EncoderError, match="'z'"):
        enc.encode("z")


@HYPOTHESIS
@given(text=st.text(max_size=40))
def test_tiny_vocabulary_roundtrip_both_backends(tiny_dir, text):
    auto, python = get_encoder(tiny_dir), get_encoder(tiny_dir, backend="python")
    ids = auto.encode(text)
    assert python.encode(text) == ids
    assert auto.decode(ids) == python.decode(ids) == text


def test_bytes_to_unicode_is_a_printable_bijection():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_importing_the_encoder_does_not_import_tensorflow(tiny_dir):
    code = ("import sys; import gpt2_simple_plus as gpt2; "
            f"enc = gpt2.get_encoder({tiny_dir!r}); assert enc.decode(enc.encode('hi')) == 'hi'; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    result = helpers.run_python(code, cwd=helpers.REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

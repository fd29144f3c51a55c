"""train_tokenizer: byte-level BPE learned with Hugging Face tokenizers, saved in GPT-2's format.

The corpus is Python's own help text (``pydoc_data.topics``, ~460 KB). The
files written are read back by this package's encoder and by OpenAI's original
``encoder.py`` (loaded by path from gpt-2-simple, never imported as a package),
and both must give the ids Hugging Face's trained tokenizer gives.
"""

import json
import os

import pytest

import helpers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpt2_simple_plus as gpt2
from gpt2_simple_plus import tokenizer_training
from gpt2_simple_plus.encoder import bytes_to_unicode, get_encoder
from gpt2_simple_plus.errors import DatasetError, TrainingError

VOCAB_SIZE = 1024

SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    'def f(x):\n    return {"a": x ** 2}  # comment\n\tpass\n',
    "DON'T He'S I'M we'll they're it'd you've 'tis",
    "a  b   c\t\t d \n\n\n  e   \n \n\t end   ",
    "line one\r\nline two\r\n\r\n",
    "emoji 👍🏽 👨‍👩‍👧‍👦 🇫🇷 😀😀",
    "日本語のテキストです。中文文本。한국어",
    "مرحبا بالعالم ١٢٣ नमस्ते",
    "control \x00\x01\x1b[31mred\x1b[0m\x7f\x85 \u00a0\u2009\u3000",
    "1234567890 3.14159 1,000,000.00 0x1F",
]


def corpus_text():
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


openai_encoder_module = helpers.openai_encoder_module


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "python_help.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(corpus_file, tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("vocab") / "models" / "custom")
    assert gpt2.train_tokenizer(corpus_file, vocab_size=VOCAB_SIZE, out_dir=out_dir) == out_dir
    return out_dir


@pytest.fixture(scope="module")
def hf_tokenizer(corpus_file):
    """Hugging Face's own tokenizer, trained the same way on the same corpus."""
    return tokenizer_training._train_bpe(tokenizer_training._read_files([corpus_file]),
                                         VOCAB_SIZE, 2)


@pytest.fixture(scope="module")
def encoder_json(trained):
    with open(os.path.join(trained, "encoder.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def ours(trained):
    return get_encoder(trained)


@pytest.fixture(scope="module")
def openai(trained):
    return openai_encoder_module().get_encoder(trained)


# --- the files ------------------------------------------------------------------------------


def test_encoder_json_is_gpt2s_layout(trained, encoder_json):
    ids = sorted(encoder_json.values())
    assert ids == list(range(VOCAB_SIZE))  # contiguous 0..n-1, no duplicates
    byte_symbols = list(bytes_to_unicode().values())
    assert list(encoder_json)[:256] == byte_symbols  # ids 0-255: the bytes in GPT-2's order
    assert [encoder_json[s] for s in byte_symbols] == list(range(256))
    assert encoder_json["<|endoftext|>"] == VOCAB_SIZE - 1
    raw = open(os.path.join(trained, "encoder.json"), encoding="utf-8").read()
    assert raw.startswith('{"!": 0, "\\"": 1, "#": 2,')  # GPT-2's spelling: UTF-8, not \u escapes
    assert "\\u0120" not in raw and "Ġ" in raw


def test_vocab_bpe_is_gpt2s_layout(trained, encoder_json):
    raw = open(os.path.join(trained, "vocab.bpe"), encoding="utf-8").read()
    lines = raw.split("\n")
    assert lines[0] == "#version: 0.2"
    assert lines[-1] == "" and lines[-2] != ""  # one newline at the end, as OpenAI's reader needs
    merges = [tuple(line.split(" ")) for line in lines[1:-1]]
    assert all(len(m) == 2 and all(m) for m in merges)
    assert len(merges) >= VOCAB_SIZE - 257
    made = set()
    for a, b in merges:  # every part exists before the merge that uses it (rank order)
        assert a in encoder_json and b in encoder_json and a + b in encoder_json
        assert encoder_json[a] < encoder_json[a + b] > encoder_json[b]
        made.add(a + b)
    assert made | set(bytes_to_unicode().values()) | {"<|endoftext|>"} == set(encoder_json)
    first_ids = {}
    for a, b in merges:
        first_ids.setdefault(a + b, encoder_json[a + b])
    assert list(first_ids.values()) == list(range(256, 256 + len(first_ids)))  # merge order


def test_training_is_reproducible(corpus_file, trained, tmp_path):
    again = gpt2.train_tokenizer(corpus_file, vocab_size=VOCAB_SIZE, out_dir=str(tmp_path))
    for name in ("encoder.json", "vocab.bpe"):
        with open(os.path.join(trained, name), "rb") as a, open(os.path.join(again, name),
                                                                  "rb") as b:
            assert a.read() == b.read(), name


def test_merges_are_those_hugging_face_learned(trained, hf_tokenizer):
    model = json.loads(hf_tokenizer.to_str())["model"]
    hf_merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    lines = open(os.path.join(trained, "vocab.bpe"), encoding="utf-8").read().split("\n")[1:-1]
    assert lines == hf_merges
    assert set(model["vocab"]) == set(json.load(open(os.path.join(trained, "encoder.json"),
                                                     encoding="utf-8")))


# --- encoding -------------------------------------------------------------------------------


def hf_ids(hf_tokenizer, encoder_json, text):
    """Hugging Face's encoding of ``text``, as ids of encoder.json."""
    return [encoder_json[t] for t in hf_tokenizer.encode(text, add_special_tokens=False).tokens]


@pytest.mark.parametrize("text", [corpus_text()[:20000]] + SAMPLES,
                         ids=["corpus"] + [f"sample{i}" for i in range(len(SAMPLES))])
def test_ids_equal_hugging_face_and_openai(text, hf_tokenizer, encoder_json, ours, openai):
    expected = hf_ids(hf_tokenizer, encoder_json, text)
    assert ours.encode(text) == expected
    assert openai.encode(text) == expected
    assert ours.decode(expected) == text == openai.decode(expected)


def test_vocabulary_compresses_the_corpus(ours):
    text = corpus_text()[:20000]
    assert len(ours.encode(text)) < len(text.encode("utf-8")) / 2.5  # ~3 bytes a token


def test_bytes_never_seen_in_training_still_encode(tmp_path, capsys):
    folder = gpt2.train_tokenizer(iter(["plain ascii words, over and over. "] * 50),
                                  vocab_size=300, out_dir=str(tmp_path))
    text = "é 😀 日本 \x00\xff"
    for enc in (get_encoder(folder), openai_encoder_module().get_encoder(folder)):
        assert enc.decode(enc.encode(text)) == text


def test_endoftext_is_one_token_only_when_allowed(ours):
    assert ours.encode("<|endoftext|>", allowed_special="all") == [VOCAB_SIZE - 1]
    assert VOCAB_SIZE - 1 not in ours.encode("a<|endoftext|>b")


PROPERTY = settings(deadline=None, max_examples=200,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# Any text, and text from a small alphabet (repeats, runs of spaces, contractions, emoji, CJK,
# control characters) that the first strategy rarely makes.
texts = st.text(max_size=80) | st.text(alphabet="ab \n\t\r😀日本語\x00\x1f\x85'sSé",
                                       max_size=80)


@PROPERTY
@given(text=texts)
def test_decode_encode_round_trip(text, ours, openai):
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    assert openai.decode(openai.encode(text)) == text


@PROPERTY
@given(text=texts)
def test_any_text_encodes_like_hugging_face(text, ours, hf_tokenizer, encoder_json):
    assume("<|endoftext|>" not in text)  # Hugging Face reads it as the special token
    assert ours.encode(text) == hf_ids(hf_tokenizer, encoder_json, text)


def test_two_merges_making_the_same_token_keep_its_first_id():
    class Trained:  # what tokenizers' to_str() holds, for merges "a bc" and "ab c"
        def to_str(self):
            vocab = {s: i for i, s in enumerate(bytes_to_unicode().values())}
            vocab.update({"<|endoftext|>": 256, "ab": 257, "bc": 258, "abc": 259})
            return json.dumps({"model": {"vocab": vocab,
                                         "merges": [["a", "b"], ["b", "c"], ["a", "bc"],
                                                    ["ab", "c"]]}})

    encoder, merges = tokenizer_training.gpt2_vocabulary(Trained())
    assert merges == [("a", "b"), ("b", "c"), ("a", "bc"), ("ab", "c")]
    assert [(t, encoder[t]) for t in ("ab", "bc", "abc", "<|endoftext|>")] == \
        [("ab", 256), ("bc", 257), ("abc", 258), ("<|endoftext|>", 259)]
    assert sorted(encoder.values()) == list(range(260))


# --- inputs and errors ----------------------------------------------------------------------


def test_folder_list_and_single_file_inputs(tmp_path, capsys):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / ".hidden").mkdir()
    (docs / "a.txt").write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    (docs / "sub" / "b.txt").write_text("the dog ran to the log. " * 40, encoding="utf-8")
    (docs / ".hidden" / "c.txt").write_text("zzzzzzzz qqqqqqq " * 100, encoding="utf-8")
    (docs / ".DS_Store").write_bytes(b"\xff\xfe\x00binary")
    from_folder = gpt2.train_tokenizer(docs, vocab_size=300, out_dir=str(tmp_path / "f"))
    assert "on 2 files" in capsys.readouterr().out
    from_list = gpt2.train_tokenizer([str(docs / "a.txt"), docs / "sub" / "b.txt"],
                                     vocab_size=300, out_dir=str(tmp_path / "l"))
    for name in ("encoder.json", "vocab.bpe"):
        assert open(os.path.join(from_folder, name), encoding="utf-8").read() == \
            open(os.path.join(from_list, name), encoding="utf-8").read()
    assert "zzzz" not in open(os.path.join(from_folder, "encoder.json"), encoding="utf-8").read()
    single = gpt2.train_tokenizer(str(docs / "a.txt"), vocab_size=300, out_dir=str(tmp_path / "s"))
    assert "on 1 file," in capsys.readouterr().out
    assert get_encoder(single).decode(get_encoder(single).encode("the cat")) == "the cat"


def test_summary_says_when_the_corpus_is_too_small(tmp_path, capsys):
    gpt2.train_tokenizer(iter(["tiny tiny corpus"] * 3), vocab_size=5000, out_dir=str(tmp_path))
    out = capsys.readouterr().out
    assert "Asked for 5,000" in out and "occurs 2 times or more" in out
    with open(tmp_path / "encoder.json", encoding="utf-8") as f:
        n = len(json.load(f))
    assert 257 < n < 300 and f"n_vocab={n}" in out


def test_errors(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(DatasetError, match=r"No file or folder 'missing\.txt'"):
        gpt2.train_tokenizer("missing.txt", out_dir=out)
    with pytest.raises(DatasetError, match=r"pass an iterator: gpt2\.train_tokenizer\(iter"):
        gpt2.train_tokenizer(["Once upon a time there was a text, not a file name. " * 3],
                             out_dir=out)
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(DatasetError, match="holds no files"):
        gpt2.train_tokenizer(tmp_path / "empty_folder", out_dir=out)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DatasetError, match="The corpus is empty"):
        gpt2.train_tokenizer(str(tmp_path / "empty.txt"), out_dir=out)
    with pytest.raises(DatasetError, match="The corpus is empty"):
        gpt2.train_tokenizer(iter([]), out_dir=out)
    with pytest.raises(DatasetError, match="empty list"):
        gpt2.train_tokenizer([], out_dir=out)
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 ".encode("latin-1") * 10)
    with pytest.raises(DatasetError, match=r"latin1\.txt is not UTF-8 text"):
        gpt2.train_tokenizer(str(tmp_path / "latin1.txt"), out_dir=out)
    with pytest.raises(DatasetError, match="should be strings; got bytes"):
        gpt2.train_tokenizer(iter([b"bytes"]), out_dir=out)
    with pytest.raises(DatasetError, match="got int"):
        gpt2.train_tokenizer(42, out_dir=out)
    for bad in (256, 0, 1000.0, "4096", True):
        with pytest.raises(TrainingError, match="vocab_size should be a whole number of at "
                                                "least 257"):
            gpt2.train_tokenizer(iter(["text"]), vocab_size=bad, out_dir=out)
    assert not os.path.exists(out)  # nothing written by a failed call

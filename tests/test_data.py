"""Datasets: gpt-2-simple's chunking rules, each file kind, streaming, the cache, bad input."""

import importlib.util
import json
import os
import tracemalloc
import warnings

import numpy as np
import pytest

import helpers
from gpt2_simple_plus import data
from gpt2_simple_plus.data import (Sampler, encode_csv, encode_dataset, load_dataset,
                                   split_validation, validation_windows)
from gpt2_simple_plus.encoder import get_encoder
from gpt2_simple_plus.errors import DatasetError

EOT = "<|endoftext|>"


def needs_gpt2_simple():
    # find it without importing it: importing gpt_2_simple turns eager execution off
    if importlib.util.find_spec("gpt_2_simple") is None:
        pytest.skip("gpt-2-simple is not installed (pip install gpt-2-simple==0.8.1)")


@pytest.fixture(scope="module")
def enc(tiny_model_dir):
    return get_encoder(tiny_model_dir)


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)
    return str(path)


def as_lists(chunks):
    return [np.asarray(c).tolist() for c in chunks]


# -- gpt-2-simple's rules -----------------------------------------------------

def test_small_files_are_joined_with_the_literal_endoftext_until_combine(tmp_path, enc):
    texts = ["the cat sat", "on the mat", "and then slept"]
    for i, t in enumerate(texts):
        write(tmp_path / "docs" / f"{i}.txt", t)
    chunks = load_dataset(enc, str(tmp_path / "docs"), combine=50000)
    joined = EOT.join(texts) + EOT  # encoded as ordinary text, not as one special id
    assert as_lists(chunks) == [enc.encode(joined)]
    assert enc.eot_token not in chunks[0]
    assert chunks[0].dtype == np.uint16


def test_each_file_its_own_chunk_once_combine_is_reached(tmp_path, enc):
    texts = ["the cat sat", "on the mat", "and then slept"]
    for i, t in enumerate(texts):
        write(tmp_path / f"{i}.txt", t)
    chunks = load_dataset(enc, str(tmp_path / "*.txt"), combine=5)  # a glob
    assert as_lists(chunks) == [enc.encode(t) for t in texts]
    # combine=15: the first file is short, so it is joined to the second one
    chunks = load_dataset(enc, str(tmp_path / "*.txt"), combine=15)
    assert as_lists(chunks) == [enc.encode(texts[0] + EOT + texts[1]), enc.encode(texts[2] + EOT)]


def test_folders_are_read_recursively(tmp_path, enc):
    write(tmp_path / "a" / "b" / "deep.txt", "deep text")
    write(tmp_path / "a" / "top.txt", "top text")
    chunks = load_dataset(enc, str(tmp_path / "a"), combine=1)
    assert sorted(as_lists(chunks)) == sorted([enc.encode("deep text"), enc.encode("top text")])


def test_csv_rows_are_wrapped_and_the_header_skipped(tmp_path, enc):
    path = write(tmp_path / "q.csv", 'text,label\nhello there,1\n"a, quoted\nrow",2\n\nlast,3\n')
    expected = "".join(f"<|startoftext|>{t}<|endoftext|>\n"
                       for t in ["hello there", "a, quoted\nrow", "last"])
    assert as_lists(load_dataset(enc, path)) == [enc.encode(expected)]
    out = str(tmp_path / "q.txt")
    encode_csv(path, out)
    assert open(out).read() == expected
    encode_csv(path, out, header=False, start_token="[", end_token="]")
    assert open(out).read().startswith("[text]\n[hello there]\n")


def test_encode_dataset_round_trips_through_npz(tmp_path, tiny_model_dir, enc):
    write(tmp_path / "d" / "a.txt", "the cat sat on the mat " * 50)
    write(tmp_path / "d" / "b.txt", "short one")
    out = str(tmp_path / "enc.npz")
    model_dir, name = os.path.split(tiny_model_dir)
    encode_dataset(str(tmp_path / "d"), model_dir=model_dir, model_name=name, out_path=out,
                   combine=100)
    direct = load_dataset(enc, str(tmp_path / "d"), combine=100)
    assert as_lists(load_dataset(enc, out)) == as_lists(direct)
    assert len(direct) == 2


def test_text_is_streamed_in_pieces_with_the_same_tokens(tmp_path, enc, monkeypatch):
    text = "".join(f"line {i}: the quick brown fox\n" for i in range(3000))
    path = write(tmp_path / "big.txt", text)
    monkeypatch.setattr(data, "READ_CHARS", 1000)
    chunks = load_dataset(enc, path, combine=10)
    assert as_lists(chunks) == [enc.encode(text)]


def test_encoding_a_large_file_needs_far_less_memory_than_the_file(tmp_path, enc, monkeypatch):
    monkeypatch.setattr(data, "READ_CHARS", 1 << 15)  # as a 1 MB read is to a multi-GB file
    line = "the quick brown fox jumps over the lazy dog, then the cat sat on the mat.\n"
    path = write(tmp_path / "big.txt", line * 20_000)  # 1.5 MB, ~600k tokens
    size = os.path.getsize(path)
    tracemalloc.start()
    try:
        chunks = load_dataset(enc, path, cache_dir=str(tmp_path / "run"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n_tokens = len(chunks[0])
    assert n_tokens > 500_000
    # the whole text as a str (1.5 MB), the ids as a Python list (4.8 MB) or as uint16 in
    # memory (1.2 MB) would each cost more than this
    assert peak < size * 0.75, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"
    assert isinstance(chunks[0], np.memmap) and chunks[0].dtype == np.uint16


# -- the cache -------------------------------------------------------------------

def test_the_cache_is_reused_until_a_file_changes(tmp_path, enc, tiny_model_dir, capsys,
                                                  monkeypatch):
    path = write(tmp_path / "a.txt", "the cat sat on the mat")
    run = str(tmp_path / "run")
    first = as_lists(load_dataset(enc, path, cache_dir=run, vocab_folder=tiny_model_dir))
    cached = sorted(n for n in os.listdir(run) if n.startswith("dataset-"))
    assert len(cached) == 2 and cached[1].endswith(".npy")

    calls = []
    real = type(enc).encode_iter
    monkeypatch.setattr(type(enc), "encode_iter",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    capsys.readouterr()
    again = load_dataset(enc, path, cache_dir=run, vocab_folder=tiny_model_dir)
    assert as_lists(again) == first and not calls
    assert "encoded before" in capsys.readouterr().out

    write(path, "the cat sat on the mat and more")
    changed = load_dataset(enc, path, cache_dir=run, vocab_folder=tiny_model_dir)
    assert calls and as_lists(changed) == [enc.encode("the cat sat on the mat and more" + EOT)]
    assert as_lists(load_dataset(enc, path, cache_dir=run, combine=3)) == [
        enc.encode("the cat sat on the mat and more")]  # combine is part of the key


def test_stale_caches_are_removed(tmp_path, enc):
    run = str(tmp_path / "run")
    a = load_dataset(enc, write(tmp_path / "a.txt", "one text"), cache_dir=run)
    load_dataset(enc, write(tmp_path / "b.txt", "another text"), cache_dir=run)
    assert len(os.listdir(run)) == 4
    data.remove_stale_caches(run, keep=[a])
    assert sorted(os.listdir(run)) == sorted(
        os.path.basename(a[0].filename)[:-4] + ext for ext in (".npy", ".json"))


# -- bad input -------------------------------------------------------------------

def test_a_missing_path_names_it(enc):
    with pytest.raises(DatasetError, match=r"No file or folder 'no/such/data\.txt'"):
        load_dataset(enc, "no/such/data.txt")


def test_an_empty_folder_says_so(tmp_path, enc):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"The folder .*empty' has no files"):
        load_dataset(enc, str(tmp_path / "empty"))


def test_an_empty_file_is_an_error(tmp_path, enc):
    path = write(tmp_path / "blank.txt", "")
    with pytest.raises(DatasetError, match=r"blank\.txt\) is empty"):
        load_dataset(enc, path)


def test_undecodable_bytes_are_skipped_with_a_warning_naming_the_file(tmp_path, enc):
    path = write(tmp_path / "latin1.txt", "caf\xe9 au lait".encode("latin-1"), mode="wb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunks = load_dataset(enc, path)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnicodeWarning)]
    assert len(messages) == 1 and "latin1.txt" in messages[0]
    assert as_lists(chunks) == [enc.encode("caf au lait" + EOT)]  # errors='ignore', like gpt-2-simple


def test_a_csv_without_the_column_names_the_file(tmp_path, enc):
    path = write(tmp_path / "only_header.csv", "text\n\n\n")
    with pytest.raises(DatasetError, match=r"only_header\.csv has no rows with a first column"):
        load_dataset(enc, path)
    with pytest.raises(DatasetError, match=r"only_header\.csv has no rows"):
        encode_csv(path, str(tmp_path / "out.txt"))
    assert not os.path.exists(tmp_path / "out.txt")


def test_a_broken_npz_names_the_file(tmp_path, enc):
    path = write(tmp_path / "broken.npz", b"not a zip file", mode="wb")
    with pytest.raises(DatasetError, match=r"broken\.npz is not a readable \.npz"):
        load_dataset(enc, path)


def test_an_npz_from_another_vocabulary_names_the_file(tmp_path, enc):
    path = str(tmp_path / "big_ids.npz")
    np.savez(path, np.array([1, 2, 50000]))
    with pytest.raises(DatasetError, match=r"big_ids\.npz holds token id 50000.*another vocabulary"):
        load_dataset(enc, path)


# -- sampling --------------------------------------------------------------------

def test_sampler_never_crosses_a_chunk_and_is_fair():
    chunks = [np.arange(0, 20), np.arange(100, 106)]
    s = Sampler(chunks, seed=0)
    windows = s.sample_many(6000, 5)
    starts = windows[:, 0]
    assert np.all(np.diff(windows, axis=1) == 1)  # contiguous: inside one chunk
    # 16 starts in the first chunk, 2 in the second: all equally likely
    counts = np.array([np.sum(starts == v) for v in list(range(16)) + [100, 101]])
    assert set(starts.tolist()) == set(range(16)) | {100, 101}
    assert counts.min() > 6000 / 18 * 0.7 and counts.max() < 6000 / 18 * 1.3


def test_short_datasets_train_on_what_they_have():
    s = Sampler([np.arange(10), np.arange(30)], seed=0)
    assert s.window(1024) == 30 and s.window(8) == 8
    assert s.sample(30).tolist() == list(range(30))


def test_sampler_state_round_trips():
    a = Sampler([np.arange(1000)], seed=3)
    a.sample_many(5, 10)
    b = Sampler([np.arange(1000)], seed=99)
    b.state = a.state
    assert a.sample_many(4, 10).tolist() == b.sample_many(4, 10).tolist()


def test_validation_split_and_windows():
    train, val = split_validation([np.arange(100), np.arange(100, 150)], 0.2)
    assert [len(c) for c in train] == [80, 40] and [c[0] for c in val] == [80, 140]
    w = validation_windows(val, 8)
    assert w.shape == (3, 8) and w[0].tolist() == list(range(80, 88))
    assert validation_windows([np.arange(1000)], 10, max_windows=4).shape == (4, 10)
    with pytest.raises(DatasetError, match="too small"):
        split_validation([np.arange(3)], 0.1)


# -- gpt-2-simple reads our files, and we read its rules exactly ------------------

def test_gpt2_simple_loads_the_same_chunks(tmp_path, tiny_model_dir, enc):
    """gpt-2-simple's own load_dataset (and encoder) on the same folder, in a subprocess,
    gives the chunks we give; and it reads the .npz that encode_dataset writes."""
    needs_gpt2_simple()
    folder = tmp_path / "mixed"
    write(folder / "a.txt", "the cat sat on the mat. " * 30)
    write(folder / "b.txt", "a short note")
    write(folder / "c.csv", "text\nfirst row\n\"second, row\"\n")
    write(folder / "d.txt", "and the end of it")
    model_dir, name = os.path.split(tiny_model_dir)
    npz = str(tmp_path / "ours.npz")
    encode_dataset(str(folder), model_dir=model_dir, model_name=name, out_path=npz, combine=200)
    code = f"""
import json, os, numpy as np
walk = os.walk  # gpt-2-simple takes os.walk's order; make it sorted like ours
os.walk = lambda p: ((d, sorted(ds), sorted(fs)) for d, ds, fs in walk(p))
from gpt_2_simple.src import encoder
from gpt_2_simple.src.load_dataset import load_dataset
enc = encoder.get_encoder({tiny_model_dir!r})
theirs = load_dataset(enc, {str(folder)!r}, 200)
from_npz = load_dataset(enc, {npz!r}, 200)
print(json.dumps([[c.tolist() for c in theirs], [c.tolist() for c in from_npz]]))
"""
    proc = helpers.run_python(code, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs, from_npz = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = as_lists(load_dataset(enc, str(folder), combine=200))
    assert len(ours) == 2 and ours == theirs
    assert from_npz == ours

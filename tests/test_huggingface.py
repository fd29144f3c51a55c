"""Hugging Face GPT-2 repositories: download from a loopback server, convert, compare logits."""

import json
import math
import os

import numpy as np
import pytest
from safetensors.numpy import save, save_file

import helpers
from gpt2_simple_plus import huggingface
from gpt2_simple_plus.download import download_gpt2, is_gpt2_downloaded
from gpt2_simple_plus.errors import DownloadError, ModelNotFoundError
from gpt2_simple_plus.hparams import hparams_for
from helpers import FileServer, config_for, hf_tensors, repo_files

REPO = "tester/tiny-gpt2"
CONVERTED = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
             "model.ckpt.index", "vocab.bpe")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("GPT2_SIMPLE_PLUS_BASE_URL", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    n_vocab = helpers.make_tiny_vocab(str(folder))
    return {"n_vocab": n_vocab, "vocab.json": (folder / "encoder.json").read_bytes(),
            "merges.txt": (folder / "vocab.bpe").read_bytes()}


def numpy_gpt2(t, tokens, hp, prefix):
    """GPT-2's forward pass in NumPy (float64) straight from Hugging Face's tensors."""
    w = {k[len(prefix):] if k.startswith(prefix) else k: np.asarray(v, np.float64)
         for k, v in t.items()}

    def ln(x, name):
        u = x.mean(-1, keepdims=True)
        s = ((x - u) ** 2).mean(-1, keepdims=True)
        return (x - u) / np.sqrt(s + 1e-5) * w[name + ".weight"] + w[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    def dense(x, name):
        return x @ w[name + ".weight"] + w[name + ".bias"]

    n, hs = len(tokens), hp.n_embd // hp.n_head
    x = w["wte.weight"][tokens] + w["wpe.weight"][:n]
    causal = np.tril(np.ones((n, n), bool))
    for i in range(hp.n_layer):
        p = f"h.{i}."
        q, k, v = np.split(dense(ln(x, p + "ln_1"), p + "attn.c_attn"), 3, axis=-1)
        q, k, v = (a.reshape(n, hp.n_head, hs).transpose(1, 0, 2) for a in (q, k, v))
        scores = np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(hs), -np.inf)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        a = (scores / scores.sum(-1, keepdims=True)) @ v
        x = x + dense(a.transpose(1, 0, 2).reshape(n, hp.n_embd), p + "attn.c_proj")
        x = x + dense(gelu(dense(ln(x, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    return ln(x, "ln_f") @ w["wte.weight"].T


@pytest.fixture(scope="module")
def tiny(vocab):
    """A tiny GPT-2 repository: hparams, tensors and the files a server would hold."""
    hp = hparams_for("tiny", n_vocab=vocab["n_vocab"])
    tensors = hf_tensors(hp)
    files = {"config.json": config_for(hp), "model.safetensors": save(tensors),
             "vocab.json": vocab["vocab.json"], "merges.txt": vocab["merges.txt"]}
    return hp, tensors, files


def get(tmp_path, server, model_name=f"hf:{REPO}", **kw):
    options = dict(model_dir=str(tmp_path / "models"), model_name=model_name,
                   hf_endpoint=server.url, progress=False, backoff=0, retries=2, timeout=5)
    options.update(kw)
    return download_gpt2(**options)


def assert_same_logits(folder, tensors, hp, prefix):
    from gpt2_simple_plus.loading import load_model

    model = load_model(folder)
    tokens = np.array([5, 17, 200, 3, 99, 0, hp.n_vocab - 1, 42])
    got = model(tokens[None]).numpy()[0]
    want = numpy_gpt2(tensors, tokens, hp, prefix)
    assert np.max(np.abs(got - want)) <= 1e-4


# ---------------------------------------------------------------------------

def test_converts_to_openai_layout_with_identical_logits(tmp_path, tiny, vocab, capsys):
    hp, tensors, files = tiny
    with FileServer(repo_files(REPO, files)) as server:
        folder = get(tmp_path, server, progress=True)
    assert folder == str(tmp_path / "models" / "hf-tester--tiny-gpt2")
    assert sorted(os.listdir(folder)) == sorted(CONVERTED + (".download.json",))  # hf/ removed
    assert is_gpt2_downloaded(str(tmp_path / "models"), f"hf:{REPO}")
    with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
        assert json.load(f) == json.loads(vocab["vocab.json"])
    with open(os.path.join(folder, "vocab.bpe"), "rb") as f:
        assert f.read() == vocab["merges.txt"]
    with open(os.path.join(folder, "hparams.json")) as f:
        assert json.load(f) == hp.to_dict()
    manifest = json.loads(open(os.path.join(folder, ".download.json")).read())
    assert manifest["source"] == "huggingface" and manifest["repo"] == REPO
    assert "Fetching hf/model.safetensors" in capsys.readouterr().err
    assert_same_logits(folder, tensors, hp, "transformer.")


def test_second_call_neither_downloads_nor_converts(tmp_path, tiny):
    hp, tensors, files = tiny
    with FileServer(repo_files(REPO, files)) as server:
        folder = get(tmp_path, server)
        assert len(server.bodies()) == 4
        index = os.path.join(folder, "model.ckpt.index")
        stamp = os.stat(index).st_mtime_ns
        requests_before = len(server.log)
        get(tmp_path, server)
        assert len(server.log) == requests_before
        assert os.stat(index).st_mtime_ns == stamp


def test_unprefixed_float16_tensors_and_merges_without_header(tmp_path, vocab):
    hp = hparams_for("tiny", n_vocab=vocab["n_vocab"])
    tensors = {k: v.astype(np.float16) for k, v in hf_tensors(hp, prefix="", seed=1).items()}
    merges = vocab["merges.txt"].split(b"\n", 1)[1].rstrip(b"\n")  # no header, no final newline
    files = {"config.json": config_for(hp), "model.safetensors": save(tensors),
             "vocab.json": vocab["vocab.json"], "merges.txt": merges}
    with FileServer(repo_files("distilbert/distilgpt2", files)) as server:
        folder = get(tmp_path, server, model_name="distilgpt2")
    assert folder == str(tmp_path / "models" / "distilgpt2")
    with open(os.path.join(folder, "vocab.bpe"), "rb") as f:
        assert f.read() == b"#version: 0.2\n" + merges + b"\n"
    assert_same_logits(folder, {k: v.astype(np.float32) for k, v in tensors.items()}, hp, "")


def test_sharded_bfloat16_repository_at_a_revision(tmp_path, tiny):
    import ml_dtypes

    hp, tensors, files = tiny
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}
    names = sorted(bf16)
    first, second = names[: len(names) // 2], names[len(names) // 2:]
    shards = {"model-00001-of-00002.safetensors": save({k: bf16[k] for k in first}),
              "model-00002-of-00002.safetensors": save({k: bf16[k] for k in second})}
    weight_map = {k: "model-00001-of-00002.safetensors" for k in first}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in second})
    index = {"metadata": {}, "weight_map": weight_map}
    sharded = {"config.json": files["config.json"], "vocab.json": files["vocab.json"],
               "merges.txt": files["merges.txt"],
               "model.safetensors.index.json": json.dumps(index).encode(), **shards}
    with FileServer(repo_files(REPO, sharded, revision="v1.0")) as server:
        folder = get(tmp_path, server, revision="v1.0")
        assert [e[3] for e in server.log if e[1].endswith("/model.safetensors")] == [404]
    assert_same_logits(folder, {k: v.astype(np.float32) for k, v in bf16.items()}, hp,
                       "transformer.")
    with pytest.warns(UserWarning, match="revision 'v1.0'.*Delete the folder"):
        get(tmp_path, server)  # the server is gone: nothing is fetched


def test_gpt2_from_hugging_face_only_when_asked(tmp_path, tiny, monkeypatch):
    hp, tensors, files = tiny
    with FileServer(repo_files("openai-community/gpt2", files)) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        folder = download_gpt2(str(tmp_path / "models"), "gpt2", source="huggingface",
                               progress=False, backoff=0)
    models = str(tmp_path / "models")
    assert folder == os.path.join(models, "hf-openai-community--gpt2")
    assert is_gpt2_downloaded(models, "gpt2", source="huggingface")
    assert is_gpt2_downloaded(models, "hf:openai-community/gpt2")
    assert not is_gpt2_downloaded(models, "gpt2")  # plain "gpt2" is OpenAI's 124M, not fetched


def test_dropped_connection_resumes_the_safetensors_file(tmp_path, tiny):
    hp, tensors, files = tiny
    path = f"/{REPO}/resolve/main/model.safetensors"
    half = len(files["model.safetensors"]) // 2
    with FileServer(repo_files(REPO, files)) as server:
        server.inject(path, ("drop", half))
        folder = get(tmp_path, server)
        ranges = [e[2] for e in server.log if e[1] == path]
    assert ranges == [None, f"bytes={half}-"]
    assert_same_logits(folder, tensors, hp, "transformer.")


def test_failure_midway_then_resume_fetches_only_what_is_missing(tmp_path, tiny):
    hp, tensors, files = tiny
    served = repo_files(REPO, files)
    vocab_path = f"/{REPO}/resolve/main/vocab.json"
    data = served.pop(vocab_path)
    with FileServer(served) as server:
        with pytest.raises(DownloadError) as info:
            get(tmp_path, server)
        text = str(info.value)
        assert REPO in text and server.url + vocab_path in text and "HF_ENDPOINT" in text
        assert "by hand" in text
        assert not is_gpt2_downloaded(str(tmp_path / "models"), f"hf:{REPO}")
        server.files[vocab_path] = data
        fetched = len(server.bodies())
        get(tmp_path, server)
        again = [e[1] for e in server.bodies()[fetched:]]
        assert again == [vocab_path, f"/{REPO}/resolve/main/merges.txt"]
    assert is_gpt2_downloaded(str(tmp_path / "models"), f"hf:{REPO}")


def test_a_config_that_is_not_gpt2_is_refused_before_the_weights(tmp_path, tiny):
    hp, tensors, files = tiny
    llama = dict(files, **{"config.json": json.dumps(
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode()})
    with FileServer(repo_files(REPO, llama)) as server:
        with pytest.raises(DownloadError) as info:
            get(tmp_path, server)
        assert len(server.bodies()) == 1  # config.json only
    text = str(info.value)
    assert REPO in text and "config.json" in text and "'llama'" in text and "gpt2" in text
    assert not os.path.exists(tmp_path / "models" / "hf-tester--tiny-gpt2")
    assert not is_gpt2_downloaded(str(tmp_path / "models"), f"hf:{REPO}")


def test_repository_without_safetensors(tmp_path, tiny):
    hp, tensors, files = tiny
    no_weights = {k: v for k, v in files.items() if k != "model.safetensors"}
    with FileServer(repo_files(REPO, no_weights)) as server:
        with pytest.raises(DownloadError, match="no safetensors weights") as info:
            get(tmp_path, server)
    assert info.value.status == 404 and REPO in str(info.value)
    assert not is_gpt2_downloaded(str(tmp_path / "models"), f"hf:{REPO}")


def test_untied_head_and_stray_tensors_are_refused(tiny):
    hp, tensors, files = tiny
    untied = dict(tensors, **{"lm_head.weight": tensors["lm_head.weight"] + 1})
    with pytest.raises(DownloadError, match="not tied"):
        huggingface.hf_weights_to_openai(untied, hp)
    with pytest.raises(DownloadError, match="score.weight"):
        huggingface.hf_weights_to_openai(dict(tensors, **{"score.weight": np.zeros(2)}), hp)
    weights = huggingface.hf_weights_to_openai(tensors, hp)
    assert weights["model/h1/mlp/c_fc/w"].shape == (1, 32, 128)
    np.testing.assert_array_equal(weights["model/h1/mlp/c_fc/w"][0],
                                  tensors["transformer.h.1.mlp.c_fc.weight"])


def test_config_checks():
    base = {"model_type": "gpt2", "vocab_size": 10, "n_ctx": 8, "n_embd": 4, "n_head": 2,
            "n_layer": 1}
    assert huggingface.hparams_from_config(base).n_ctx == 8
    assert huggingface.hparams_from_config(
        {"architectures": ["GPT2LMHeadModel"], **{k: v for k, v in base.items()
                                                  if k != "model_type"}}).n_vocab == 10
    with pytest.raises(DownloadError, match="activation_function 'gelu'"):
        huggingface.hparams_from_config(dict(base, activation_function="gelu"))
    with pytest.raises(DownloadError, match="lacks n_layer"):
        huggingface.hparams_from_config({k: v for k, v in base.items() if k != "n_layer"})


def test_names():
    assert huggingface.repo_for("distilgpt2") == "distilbert/distilgpt2"
    assert huggingface.repo_for("gpt2") is None and huggingface.repo_for("117M") is None
    assert huggingface.repo_for("117M", source="huggingface") == "openai-community/gpt2"
    assert huggingface.repo_for("someone/gpt2-poems", source="huggingface") == "someone/gpt2-poems"
    assert huggingface.folder_name_for_repo("distilbert/distilgpt2") == "distilgpt2"
    for bad in ("hf:", "hf:../x", "hf:a--b/c", "hf:one/two/three"):
        with pytest.raises(ModelNotFoundError):
            huggingface.repo_for(bad)
    with pytest.raises(ModelNotFoundError, match="source='huggingface'"):
        huggingface.repo_for("llama", source="huggingface")
    assert huggingface.hf_url("http://h/", "a/b", "refs/pr/1", "x.json") == \
        "http://h/a/b/resolve/refs%2Fpr%2F1/x.json"


def test_truncated_safetensors_is_caught(tmp_path, tiny):
    hp, tensors, files = tiny
    path = tmp_path / "model.safetensors"
    save_file({"a": np.zeros(10, np.float32)}, str(path))
    huggingface.check_safetensors(str(path))
    path.write_bytes(path.read_bytes()[:-4])
    from gpt2_simple_plus.fetch import Invalid
    with pytest.raises(Invalid, match="header describes"):
        huggingface.check_safetensors(str(path))

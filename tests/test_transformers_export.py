"""export_model(format="transformers"): Hugging Face's transformers loads what we write.

A tiny run is trained here and exported; one child process with torch and
transformers loads it (``GPT2LMHeadModel.from_pretrained`` and
``pipeline("text-generation")``), computes logits and greedy text, and saves
a random ``GPT2LMHeadModel`` of its own, which we then download from a
loopback server, convert and export back.
"""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors import safe_open

import gpt2_simple_plus as gpt2
import helpers
from gpt2_simple_plus.checkpoints import save_pretrained_layout
from gpt2_simple_plus.demo import corpus_text
from gpt2_simple_plus.generation import decoder_for
from gpt2_simple_plus.hparams import hparams_for
from gpt2_simple_plus.huggingface import save_transformers
from gpt2_simple_plus.model import random_weights
from gpt2_simple_plus.sampling import SamplingConfig
from helpers import FileServer
from helpers import repo_files

TOKENS = [51, 257, 220, 69, 78, 81, 262, 83, 270, 68, 76, 271, 83, 13, 10, 40]
PROMPTS = ["The for statement", "Return the"]
N_NEW = 24
TRICKY = "Don't   stop: café 🍕 naïve\n\n  x=1;  ’quotes’ 12345 <|endoftext|> end"
# (transformers reads "<|endoftext|>" in text as the one token, as encode(...,
# allowed_special={"<|endoftext|>"}) does here; by default we spell it, as OpenAI did)

CHILD = r'''
import json, sys, warnings
warnings.simplefilter("always")
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, pipeline

args = json.loads(sys.argv[1])
path = args["path"]
model, info = GPT2LMHeadModel.from_pretrained(path, output_loading_info=True)
model.eval()
result = {"info": {k: sorted(map(str, v)) for k, v in info.items()}}
with torch.no_grad():
    result["logits"] = model(torch.tensor([args["tokens"]])).logits[0].tolist()
tokenizer = AutoTokenizer.from_pretrained(path)
result["ids"] = [tokenizer.encode(p) for p in args["prompts"]]
result["greedy"] = [model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                   dtype=torch.long), max_new_tokens=args["n_new"],
                                   do_sample=False)[0, len(ids):].tolist()
                    for ids in result["ids"]]
generator = pipeline("text-generation", model=path)
result["texts"] = [generator(p, max_new_tokens=args["n_new"], do_sample=False)[0]
                   ["generated_text"] for p in args["prompts"]]
if args.get("real_vocab_path"):
    real = AutoTokenizer.from_pretrained(args["real_vocab_path"])
    ids = real.encode(args["tricky"])
    result["real"] = {"ids": ids, "text": real.decode(ids)}
torch.manual_seed(0)
eot = args["n_vocab"] - 1
config = GPT2Config(vocab_size=args["n_vocab"], n_positions=64, n_embd=32, n_layer=2, n_head=2,
                    bos_token_id=eot, eos_token_id=eot)
GPT2LMHeadModel(config).save_pretrained(args["hf_src"])
print("RESULT " + json.dumps(result))
'''


def run_transformers(args, cwd):
    code = f"import sys; sys.argv = ['child', {json.dumps(args)!r}]\n" + CHILD
    proc = helpers.run_python(code, cwd=str(cwd), timeout=300, env={"PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    result = json.loads([x for x in lines if x.startswith("RESULT ")][-1][len("RESULT "):])
    said = [x for x in lines if not x.startswith("RESULT ")] + proc.stderr.splitlines()
    return result, "\n".join(said)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny run fine-tuned here on Python's help pages, exported for transformers, and
    what transformers made of it (in a child process)."""
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf_export")
    base = folder / "models" / "tiny"
    n_vocab = helpers.make_tiny_vocab(str(base))
    hp = hparams_for("tiny", n_vocab=n_vocab)
    # sharp random weights, so that greedy text depends on its context (see helpers)
    save_pretrained_layout(str(base), helpers.decisive_weights(hp, 0), hp)
    (folder / "data.txt").write_text(corpus_text()[:30_000], encoding="utf-8")
    sess = gpt2.start_tf_sess()
    gpt2.finetune(sess, str(folder / "data.txt"), model_name="tiny",
                  model_dir=str(folder / "models"), steps=10, learning_rate=1e-4, batch_size=2,
                  accumulate_gradients=1, sample_every=0, print_every=10, seed=0,
                  checkpoint_dir=str(folder / "checkpoint"))
    path = gpt2.export_model(sess, str(folder / "for_hf"), format="transformers")
    args = {"path": path, "tokens": TOKENS, "prompts": PROMPTS, "n_new": N_NEW,
            "n_vocab": n_vocab, "hf_src": str(folder / "hf_src"), "tricky": TRICKY}
    real = helpers.real_vocab_dir()
    if real:  # the tokenizer files of a model with GPT-2's own 50,257-token vocabulary
        hp = hparams_for("tiny", n_vocab=50257)
        args["real_vocab_path"] = save_transformers(str(folder / "real_vocab"),
                                                    random_weights(hp, 0), hp, real)
    result, output = run_transformers(args, folder)
    return sess, folder, result, output


def test_transformers_loads_it_without_weight_warnings(exported):
    sess, folder, result, output = exported
    assert result["info"] == {"error_msgs": [], "missing_keys": [], "mismatched_keys": [],
                              "unexpected_keys": []}
    for phrase in ("newly initialized", "not used", "not initialized", "missing",
                   "unexpected", "mismatch"):
        assert phrase not in output.lower()
    assert sorted(os.listdir(folder / "for_hf")) == [
        "config.json", "generation_config.json", "merges.txt", "model.safetensors",
        "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]


def test_same_logits(exported):
    sess, folder, result, output = exported
    ours = sess.model(np.array([TOKENS], np.int32))[0].numpy()
    theirs = np.array(result["logits"])
    assert theirs.shape == ours.shape
    assert np.max(np.abs(theirs - ours)) <= 1e-4


def test_same_tokens_and_greedy_text(exported):
    sess, folder, result, output = exported
    assert result["ids"] == [sess.encoder.encode(p) for p in PROMPTS]
    greedy = SamplingConfig(temperature=0.0)
    ours = [decoder_for(sess.model).generate([ids], N_NEW, greedy, seed=0)[0]
            for ids in result["ids"]]
    assert all(sess.encoder.eot_token not in row for row in ours)  # transformers stops there
    assert all(len(set(row)) >= 3 for row in ours)  # not one repeated token
    assert result["greedy"] == ours
    texts = [gpt2.generate(sess, prefix=p, length=N_NEW, temperature=0.0, seed=0,
                           return_as_list=True)[0] for p in PROMPTS]
    assert result["texts"] == texts


def test_gpt2_vocabulary_tokenizes_the_same(exported, gpt2_vocab_dir):
    sess, folder, result, output = exported
    encoder = gpt2.get_encoder(gpt2_vocab_dir)
    assert result["real"]["ids"] == encoder.encode(TRICKY, allowed_special={"<|endoftext|>"})
    assert encoder.eot_token in result["real"]["ids"]
    assert result["real"]["text"] == TRICKY


def test_hugging_face_model_round_trips_byte_for_byte(exported, tmp_path):
    sess, folder, result, output = exported
    src = folder / "hf_src"
    files = {name: (src / name).read_bytes() for name in ("config.json", "model.safetensors")}
    files["vocab.json"] = (folder / "models" / "tiny" / "encoder.json").read_bytes()
    files["merges.txt"] = (folder / "models" / "tiny" / "vocab.bpe").read_bytes()
    with FileServer(repo_files("tester/random-gpt2", files)) as server:
        gpt2.download_gpt2(model_dir=str(tmp_path / "models"), model_name="hf:tester/random-gpt2",
                           hf_endpoint=server.url, progress=False, backoff=0)
    out = gpt2.export_model(None, str(tmp_path / "back"), model_name="hf:tester/random-gpt2",
                            model_dir=str(tmp_path / "models"), format="transformers")
    with safe_open(str(src / "model.safetensors"), "np") as a, \
            safe_open(os.path.join(out, "model.safetensors"), "np") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert len(list(a.keys())) == 28 and a.metadata() == b.metadata()
        for key in a.keys():
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert (x.dtype, x.shape) == (y.dtype, y.shape), key
            assert x.tobytes() == y.tobytes(), key
    theirs = json.loads(files["config.json"])
    back = json.loads((tmp_path / "back" / "config.json").read_bytes())
    for key in ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer",
                "activation_function", "layer_norm_epsilon", "model_type", "architectures"):
        assert back[key] == theirs[key], key


def test_a_folder_saved_by_transformers_imports_and_exports_back(exported, tmp_path):
    sess, folder, result, output = exported
    src = tmp_path / "saved"
    shutil.copytree(folder / "hf_src", src)
    with pytest.raises(gpt2.ModelNotFoundError, match="vocab.json, merges.txt"):
        gpt2.import_transformers(str(src), "from-hf", model_dir=str(tmp_path / "models"))
    shutil.copyfile(folder / "models" / "tiny" / "encoder.json", src / "vocab.json")
    shutil.copyfile(folder / "models" / "tiny" / "vocab.bpe", src / "merges.txt")
    models = str(tmp_path / "models")
    assert gpt2.import_transformers(str(src), "from-hf", model_dir=models) == \
        os.path.join(models, "from-hf")
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name="from-hf", model_dir=models)
    out = gpt2.export_model(sess, str(tmp_path / "back"), format="transformers")
    with safe_open(str(src / "model.safetensors"), "np") as a, \
            safe_open(os.path.join(out, "model.safetensors"), "np") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(a.get_tensor(k).tobytes() == b.get_tensor(k).tobytes() for k in a.keys())
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(config, activation_function="relu")))
    with pytest.raises(gpt2.CheckpointError, match="activation_function 'relu'"):
        gpt2.import_transformers(str(src), "relu", model_dir=models)
    assert not os.path.exists(os.path.join(models, "relu"))


def test_export_format_errors(exported, tmp_path):
    sess = exported[0]
    with pytest.raises(gpt2.GenerationError, match="'transformers' for Hugging Face"):
        gpt2.export_model(sess, str(tmp_path / "x"), format="pytorch")
    with pytest.raises(gpt2.GenerationError, match="format='saved_model' only"):
        gpt2.export_model(sess, str(tmp_path / "x"), format="transformers", tflite=True)
    assert not os.path.exists(tmp_path / "x")


def test_doctests():
    import doctest

    from gpt2_simple_plus import export, huggingface

    for module in (huggingface, export):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 3 and result.failed == 0, module.__name__

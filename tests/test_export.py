"""export_model: a SavedModel that a process without this package loads and runs,
checked against the package's model (logits, greedy decoding, sampling rules)."""

import json
import os

import numpy as np
import pytest
from tensorflow.core.protobuf import saved_model_pb2

import gpt2_simple_plus as gpt2
from gpt2_simple_plus.checkpoints import save_checkpoint, save_pretrained_layout
from gpt2_simple_plus.loading import load_model
from gpt2_simple_plus.encoder import get_encoder
from gpt2_simple_plus.generation import sample_tokens

import helpers

PROMPTS = [[10, 20, 30, 40], [257, 5, 99, 276]]
N_NEW = 12

# Runs in a fresh process: TensorFlow only, never gpt2_simple_plus.
SERVER = r'''
import json, os, sys
import numpy as np
import tensorflow as tf

path, prompts, n_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
served = tf.saved_model.load(path)
generate = served.signatures["generate"]

def gen(prompts, length, temperature=0.0, top_k=0, top_p=0.0, seed=0):
    out = generate(tokens=tf.constant(prompts, tf.int32), length=tf.constant(length),
                   temperature=tf.constant(temperature), top_k=tf.constant(top_k),
                   top_p=tf.constant(top_p), seed=tf.constant(seed))
    return out["tokens"].numpy().tolist()

result = {
    "signatures": {name: {k: [v.dtype.name, v.shape.as_list()]
                          for k, v in fn.structured_input_signature[1].items()}
                   for name, fn in served.signatures.items()},
    "outputs": {name: sorted(fn.structured_outputs) for name, fn in served.signatures.items()},
    "logits": served.signatures["serving_default"](tokens=tf.constant(prompts))["logits"]
              .numpy().tolist(),
    "logits_one": served.signatures["logits"](tokens=tf.constant(prompts[:1]))["logits"]
                  .numpy().tolist(),
    "greedy": gen(prompts, n_new),
    "greedy_zero": gen(prompts, 0),
    "sampled": gen(prompts, n_new, 100.0, 0, 0.0, 7),
    "sampled_again": gen(prompts, n_new, 100.0, 0, 0.0, 7),
    "sampled_other_seed": gen(prompts, n_new, 100.0, 0, 0.0, 8),
    "top_k_1": gen(prompts, n_new, 100.0, 1, 0.0, 3),
    "top_k_5": [gen(prompts, 1, 100.0, 5, 0.0, seed) for seed in range(20)],
    "top_p_tiny": gen(prompts, n_new, 100.0, 0, 1e-9, 3),
    "top_p_overrides_top_k": gen(prompts, n_new, 100.0, 50, 1e-9, 3),
    "assets": sorted(os.listdir(os.path.join(path, "assets"))),
}
with open(os.path.join(path, "assets", "export.json")) as f:
    result["export_json"] = json.load(f)
try:
    gen(prompts, 10_000)
except tf.errors.InvalidArgumentError as err:
    result["too_long"] = err.message
tflite = os.path.join(path, "model.tflite")
if os.path.exists(tflite):
    interpreter = tf.lite.Interpreter(model_path=tflite)
    runner = interpreter.get_signature_runner("logits")
    result["tflite_logits"] = runner(tokens=np.array(prompts, np.int32))["logits"].tolist()
    runner = interpreter.get_signature_runner("generate")
    result["tflite_greedy"] = runner(
        tokens=np.array(prompts, np.int32), length=np.array(n_new, np.int32),
        temperature=np.array(0.0, np.float32), top_k=np.array(0, np.int32),
        top_p=np.array(0.0, np.float32), seed=np.array(0, np.int32))["tokens"].tolist()
result["imported_package"] = "gpt2_simple_plus" in sys.modules
print("RESULT " + json.dumps(result))
'''


def serve(path, prompts=PROMPTS, n_new=N_NEW):
    """Load ``path`` in a fresh process without this package; returns what it computed."""
    code = (f"import sys; sys.argv = ['serve', {path!r}, {json.dumps(prompts)!r}, "
            f"'{n_new}']\n" + SERVER)
    result = helpers.run_python(code, cwd=os.path.dirname(path), timeout=300,
                                env={"PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def greedy_reference(model, prompts, n_new):
    """Greedy decoding with the package's model: a full forward pass per new token, no cache."""
    rows = np.array(prompts, np.int32)
    for _ in range(n_new):
        logits = model(rows)[:, -1].numpy()
        rows = np.concatenate([rows, logits.argmax(-1)[:, None].astype(np.int32)], axis=1)
    return rows[:, len(prompts[0]):].tolist()


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """A tiny model with weights 20x GPT-2's initial scale, so that its greedy output
    depends on the context (at 1x it repeats one token), exported and served."""
    folder = str(tmp_path_factory.mktemp("sharp") / "tiny")
    model = load_model(tiny_model_dir)
    weights = {n: w * 20 if n.rsplit("/", 1)[1] in ("w", "wte", "wpe") else w
               for n, w in model.numpy_weights().items()}
    save_pretrained_layout(folder, weights, model.hparams, vocab_from=tiny_model_dir)
    sess = gpt2.start_tf_sess()
    sess.set_model(load_model(folder), get_encoder(folder), folder)
    path = str(tmp_path_factory.mktemp("export") / "gpt2" / "1")
    assert gpt2.export_model(sess, path, tflite=True) == path
    return sess, path, serve(path)


@pytest.mark.slow
def test_loads_without_the_package_and_matches_the_model(exported):
    sess, path, served = exported
    assert served["imported_package"] is False
    expected = sess.model(np.array(PROMPTS, np.int32))[:, -1].numpy()
    np.testing.assert_allclose(served["logits"], expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(served["logits_one"], expected[:1], rtol=1e-4, atol=1e-3)
    assert served["greedy"] == greedy_reference(sess.model, PROMPTS, N_NEW)
    assert served["greedy"] == sample_tokens(sess.model, PROMPTS, N_NEW, temperature=0.0)
    assert all(len(set(row)) >= 4 for row in served["greedy"])  # not one repeated token
    assert served["greedy_zero"] == [[], []]


@pytest.mark.slow
def test_signatures_have_fixed_dtypes_and_dynamic_sizes(exported):
    _, _, served = exported
    signatures = served["signatures"]
    assert set(signatures) == {"serving_default", "logits", "generate"}
    assert signatures["serving_default"] == {"tokens": ["int32", [None, None]]}
    assert signatures["logits"] == signatures["serving_default"]
    assert signatures["generate"] == {
        "tokens": ["int32", [None, None]], "length": ["int32", []],
        "temperature": ["float32", []], "top_k": ["int32", []], "top_p": ["float32", []],
        "seed": ["int32", []]}
    assert served["outputs"] == {"serving_default": ["logits"], "logits": ["logits"],
                                 "generate": ["tokens"]}


@pytest.mark.slow
def test_sampling_rules(exported):
    sess, _, served = exported
    greedy = served["greedy"]
    assert served["sampled"] == served["sampled_again"]  # seeded: deterministic
    assert served["sampled"] != served["sampled_other_seed"]
    assert served["sampled"] != greedy  # a random model's distribution is nearly flat
    assert served["top_k_1"] == greedy
    assert served["top_p_tiny"] == greedy
    assert served["top_p_overrides_top_k"] == greedy  # top_k=50 would sample; top_p wins
    logits = sess.model(np.array(PROMPTS, np.int32))[:, -1].numpy()
    for r, row in enumerate(logits):
        firsts = {draw[r][0] for draw in served["top_k_5"]}
        assert firsts <= set(np.argsort(-row)[:5]) and len(firsts) > 1
    n_vocab = sess.model.hparams.n_vocab
    assert all(0 <= t < n_vocab for row in served["sampled"] for t in row)


@pytest.mark.slow
def test_assets_limits_and_portable_ops(exported):
    sess, path, served = exported
    assert served["assets"] == ["encoder.json", "export.json", "hparams.json", "vocab.bpe"]
    with open(os.path.join(path, "assets", "encoder.json"), encoding="utf-8") as f:
        assert json.load(f) == sess.encoder.encoder
    info = served["export_json"]
    assert info["eot_token"] == sess.encoder.eot_token
    assert info["n_vocab"] == sess.model.hparams.n_vocab
    assert info["max_length"] == info["n_ctx"] == sess.model.hparams.n_ctx
    assert "at most 64 tokens" in served["too_long"]
    # Only core TensorFlow ops: TensorFlow Serving builds without XLA kernels can run it.
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops = {n.op for g in saved.meta_graphs for fn in g.graph_def.library.function
           for n in fn.node_def}
    assert "TensorScatterUpdate" in ops and not any(op.startswith("Xla") for op in ops)


@pytest.mark.slow
def test_tflite_matches(exported):
    sess, _, served = exported
    np.testing.assert_allclose(served["tflite_logits"], served["logits"], rtol=1e-4, atol=1e-3)
    assert served["tflite_greedy"] == served["greedy"]


def test_export_from_a_run_or_a_model_folder(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    weights = model.numpy_weights()
    weights["model/ln_f/b"] = weights["model/ln_f/b"] + 0.5  # a "fine-tuned" run
    run = tmp_path / "checkpoint" / "run1"
    save_checkpoint(str(run), weights, 10, hparams=model.hparams,
                    model_files_from=tiny_model_dir)
    import tensorflow as tf

    for kwargs, source in [
            (dict(run_name="run1", checkpoint_dir=str(tmp_path / "checkpoint")), str(run)),
            (dict(model_name="tiny", model_dir=os.path.dirname(tiny_model_dir), max_length=16),
             tiny_model_dir)]:
        path = gpt2.export_model(None, str(tmp_path / "out" / kwargs.get("run_name", "tiny")),
                                 **kwargs)
        served = tf.saved_model.load(path)
        tokens = tf.constant([[1, 2, 3]])
        np.testing.assert_allclose(served.signatures["logits"](tokens=tokens)["logits"],
                                   load_model(source)(tokens)[:, -1], atol=1e-4)
    with open(os.path.join(path, "assets", "export.json"), encoding="utf-8") as f:
        assert json.load(f)["max_length"] == 16
    # Longer inputs than max_length: the last max_length tokens are read.
    long = tf.constant([list(range(1, 41))])
    np.testing.assert_allclose(served.signatures["logits"](tokens=long)["logits"],
                               load_model(tiny_model_dir)(long[:, -16:])[:, -1], atol=1e-4)


def test_export_errors(tiny_model_dir, tmp_path):
    with pytest.raises(gpt2.ModelNotFoundError, match=r"load_gpt2\(sess, model_name="):
        gpt2.export_model(gpt2.start_tf_sess(), str(tmp_path / "x"))
    with pytest.raises(gpt2.ModelNotFoundError):
        gpt2.export_model(None, str(tmp_path / "x"), run_name="missing",
                          checkpoint_dir=str(tmp_path))
    with pytest.raises(gpt2.GenerationError, match="max_length"):
        gpt2.export_model(None, str(tmp_path / "x"), model_name="tiny",
                          model_dir=os.path.dirname(tiny_model_dir), max_length=65)


@pytest.mark.slow
def test_exported_generate_matches_generate(exported):
    """The SavedModel's generate runs generate()'s own loop and sampling rules: the same
    prompt, settings and seed give the same tokens, for every rule."""
    import tensorflow as tf

    sess, path, _ = exported
    generate = tf.saved_model.load(path).signatures["generate"]
    prompt = "the hat and"
    ids = sess.encoder.encode(prompt)
    settings = [(0.0, 0, 0.0, 0), (1.0, 0, 0.0, 3), (0.7, 5, 0.0, 11), (1.0, 0, 0.9, 5),
                (1.0, 1, 0.0, 2), (2.0, 40, 0.0, -7), (1.5, 50, 0.5, 123456789)]
    sampled = set()
    for temperature, top_k, top_p, seed in settings:
        new = generate(tokens=tf.constant([ids]), length=tf.constant(N_NEW),
                       temperature=tf.constant(temperature), top_k=tf.constant(top_k),
                       top_p=tf.constant(top_p), seed=tf.constant(seed))["tokens"]
        text = gpt2.generate(sess, prefix=prompt, length=N_NEW, temperature=temperature,
                             top_k=top_k, top_p=top_p, seed=seed, return_as_list=True)[0]
        served = sess.encoder.decode(ids + new.numpy()[0].tolist()).lstrip("\n")
        assert served == text, (temperature, top_k, top_p, seed)
        sampled.add(text)
    assert len(sampled) >= 5  # the settings really differ: the comparison is not vacuous

"""Generation on LiteRT, ``load_gpt2(quantize="int8")`` (8-bit weights) and
``load_gpt2(runtime="litert")`` (float32 weights), and ``compute_dtype="bfloat16"``.

The quality guard trains a small GPT-2 from scratch (as the demo does) and
compares held-out perplexity in each mode with float32's; a "decisive" random
model (sharp logits, see helpers.decisive_weights) checks that greedy text is
the same as float32's, with every generation feature on.
"""

import collections
import glob
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import gpt2_simple_plus as gpt2
import helpers
from gpt2_simple_plus import checkpoints, lite
from gpt2_simple_plus.checkpoints import find_checkpoint
from gpt2_simple_plus.loading import load_model
from gpt2_simple_plus.generation import decoder_for
from gpt2_simple_plus.hparams import HParams, hparams_for
from gpt2_simple_plus.model import GPT2, Past, multihead_attn, past_attn, past_mask, update_slice
from gpt2_simple_plus.sampling import SamplingConfig


def load(folder, **options):
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name=os.path.basename(folder),
                   model_dir=os.path.dirname(folder), **options)
    return sess


@pytest.fixture(scope="module")
def decisive_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantize") / "models" / "tiny"
    helpers.make_model_dir(str(folder), weights=lambda hp: helpers.decisive_weights(hp, 3))
    return str(folder)


@pytest.fixture(scope="module")
def full(decisive_dir):
    return load(decisive_dir)


@pytest.fixture(scope="module")
def int8(decisive_dir):
    return load(decisive_dir, quantize="int8")


# ---------------------------------------------------------------------------
# The attention the converted step uses

@pytest.mark.parametrize("n", [1, 3])
def test_past_attn_equals_writing_the_cache_then_attending(n):
    rng = np.random.default_rng(0)
    b, h, length, d, pos = 2, 3, 8, 4, 4
    q, k, v = (tf.constant(rng.standard_normal([b, h, n, d]), tf.float32) for _ in range(3))
    past_k, past_v = (tf.constant(rng.standard_normal([b, h, length, d]), tf.float32)
                      for _ in range(2))  # positions >= pos hold junk that must be ignored
    pad = tf.constant([0, 2])
    ours = past_attn(q, k, v, past_k, past_v, past_mask(n, length, pos, pad))
    keys = update_slice(past_k, k, pos, axis=2)
    values = update_slice(past_v, v, pos, axis=2)
    at = pos + tf.range(n)
    j = tf.range(length)
    mask = tf.logical_and((j[None, :] <= at[:, None])[None, None],
                          (j[None, :] >= pad[:, None])[:, None, None, :])
    theirs = multihead_attn(q, keys, values, mask)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)


def test_a_read_only_cache_returns_the_new_keys_and_values():
    model = GPT2(hparams_for("tiny", n_vocab=50), seed=1)
    hp = model.hparams
    cache = model.empty_cache(1, 8)
    h, cache = model.forward([[1, 2, 3]], cache=cache, pos=0)
    nothing = tf.zeros([1, hp.n_head, 1, hp.head_size])
    h2, new = model.forward([[1, 2, 3]], cache=[Past(nothing, nothing)] * hp.n_layer, pos=0)
    np.testing.assert_allclose(h2.numpy(), h.numpy(), rtol=1e-5, atol=1e-5)
    for (k, v), written in zip(new, cache):  # KVCache: [batch * heads, length, head]
        np.testing.assert_allclose(k.numpy().reshape(-1, 3, hp.head_size),
                                   written.keys[:, :3].numpy(), atol=1e-6)
        np.testing.assert_allclose(v.numpy().reshape(-1, 3, hp.head_size),
                                   written.values[:, :3].numpy(), atol=1e-6)


# ---------------------------------------------------------------------------
# int8: the same text as float32, every feature on

def texts(sess, **options):
    options = {"length": 30, "temperature": 0.0, "return_as_list": True, **options}
    return gpt2.generate(sess, **options)


@pytest.fixture(scope="module")
def float_steps(decisive_dir):
    """``runtime="litert"``: generation on the LiteRT step with float32 weights, the same
    machinery as int8 without the rounding, so its text must equal float32's."""
    sess = load(decisive_dir, runtime="litert")
    assert isinstance(decoder_for(sess.model).model, lite.LiteModel)
    assert decoder_for(sess.model).compile_choice  # the step runs Python: the choice is XLA's
    return sess


@pytest.mark.parametrize("options", [
    {"prefix": "the cat", "length": 40},
    {"prefix": ["a", "the dog ran"], "nsamples": 3, "batch_size": 2},  # padding, a short batch
    {"prefix": "the dog", "nsamples": 3, "batch_size": 3, "temperature": 0.9, "seed": 3},
    {"prefix": "on the", "stop": "e"},
    {"prefix": "on the", "truncate": "t", "include_prefix": False},
    {"prefix": "the", "repetition_penalty": 1.5},
    {"prefix": "the", "length": 150},  # longer than the context (64): the window slides
    {"prefix": "the", "top_k": 3, "temperature": 0.9, "seed": 1},
    {"prefix": "the", "top_p": 0.9, "temperature": 0.9, "seed": 2},
], ids=["greedy", "batches", "shared", "stop", "truncate", "penalty", "sliding", "top_k",
        "top_p"])
def test_the_litert_step_generates_what_float32_does(full, float_steps, options):
    assert texts(float_steps, **options) == texts(full, **options)


@pytest.mark.parametrize("options", [
    {"prefix": ["a", "the dog ran"], "nsamples": 3, "batch_size": 2},
    {"prefix": "on the", "stop": "e", "length": 60},
    {"prefix": "the", "repetition_penalty": 1.5},
    {"prefix": "the", "length": 150},
    {"prefix": "the", "top_k": 3, "temperature": 0.9, "seed": 1},
], ids=["batches", "stop", "penalty", "sliding", "top_k"])
def test_int8_generation_features(int8, options):
    out = texts(int8, **options)
    assert len(out) == options.get("nsamples", 1)
    if "stop" in options:
        assert "e" not in out[0][len("on the"):]
    if options.get("length") == 150:
        assert len(int8.encoder.encode(out[0])) > 64  # past the context


def test_int8_streams_the_same_text(int8):
    pieces = list(gpt2.generate(int8, prefix="the cat", length=25, temperature=0.0,
                                stream=True))
    assert len(pieces) > 3
    assert "".join(pieces) == texts(int8, prefix="the cat", length=25)[0]


def test_int8_sampling_is_reproducible(int8):
    a = texts(int8, prefix="the", temperature=1.0, seed=5, nsamples=2, batch_size=2)
    assert a == texts(int8, prefix="the", temperature=1.0, seed=5, nsamples=2, batch_size=2)
    assert a != texts(int8, prefix="the", temperature=1.0, seed=6, nsamples=2, batch_size=2)


@pytest.mark.parametrize("mode", [{"quantize": "int8"}, {"runtime": "litert"}],
                         ids=["int8", "float32"])
def test_the_litert_step_is_prepared_once_per_checkpoint(decisive_dir, capsys, monkeypatch,
                                                         mode):
    prefix = find_checkpoint(decisive_dir, "latest")
    path = prefix + lite.SUFFIXES["int8" if "quantize" in mode else "float32"]
    if os.path.exists(path):
        os.remove(path)
    kind = "int8" if "quantize" in mode else "float32"
    other = "float32" if kind == "int8" else "int8"
    stale, kept = prefix + f".{kind}-v0.tflite", prefix + f".{other}-v0.tflite"
    for name in (stale, kept):  # files an earlier version of the step left
        with open(name, "wb") as f:
            f.write(b"old")
    calls = []
    convert = lite.convert_step
    monkeypatch.setattr(lite, "convert_step",
                        lambda m, quantize: calls.append(quantize) or convert(m, quantize=quantize))
    sess = load(decisive_dir, **mode)
    assert calls == ["quantize" in mode] and os.path.isfile(path)
    assert "Converting" in capsys.readouterr().out
    assert not os.path.exists(stale) and os.path.exists(kept)  # only its own kind's go
    os.remove(kept)
    decoder = decoder_for(sess.model)
    texts(sess, prefix="the")
    traces = decoder.traces
    texts(sess, prefix="the")
    texts(sess, prefix="the")
    assert len(calls) == 1 and decoder.traces == traces  # no conversion or tracing per call
    load(decisive_dir, **mode)  # the next load reads the file
    assert len(calls) == 1 and "Converting" not in capsys.readouterr().out
    os.utime(prefix + ".index", (1, 1))  # only a data shard is newer than the converted copy:
    os.utime(path, (2, 2))               # the checkpoint changed, so it is converted again
    os.utime(glob.glob(prefix + ".data-*")[0])
    load(decisive_dir, **mode)
    assert len(calls) == 2


def test_a_folder_that_cannot_be_written_keeps_the_step_in_memory(decisive_dir, monkeypatch):
    def refuse(path, blob):
        raise PermissionError(path)

    monkeypatch.setattr(lite, "write_bytes_atomic", refuse)
    prefix = find_checkpoint(decisive_dir, "latest")
    path = prefix + lite.SUFFIXES["float32"]
    if os.path.exists(path):
        os.remove(path)
    sess = load(decisive_dir, runtime="litert")
    assert not os.path.exists(path)
    assert texts(sess, prefix="the cat") == texts(load(decisive_dir), prefix="the cat")


def test_a_conversion_that_would_not_fit_stops_before_it_starts(decisive_dir, monkeypatch):
    prefix = find_checkpoint(decisive_dir, "latest")
    path = prefix + lite.SUFFIXES["int8"]
    if os.path.exists(path):
        os.remove(path)
    converted = []
    convert = lite.convert_step

    def counted(model, quantize):
        converted.append(quantize)
        return convert(model, quantize=quantize)

    monkeypatch.setattr(lite, "convert_step", counted)
    monkeypatch.setattr(lite, "host_memory", lambda: (10_000, "this machine has"))
    with pytest.raises(gpt2.OutOfMemoryError,
                       match=r"needs about .* GB of memory .* this machine has .* GB available.*"
                             r"copy the file it keeps, model\.ckpt\.int8-v2\.tflite"):
        load(decisive_dir, quantize="int8")
    assert converted == [] and not os.path.exists(path)  # stopped before converting
    monkeypatch.setattr(lite, "host_memory", lambda: (None, "this machine's memory is unknown"))
    load(decisive_dir, quantize="int8")  # memory unknown: converting is tried
    assert converted == [True] and os.path.isfile(path)
    monkeypatch.setattr(lite, "host_memory", lambda: (10_000, "this machine has"))
    sess = load(decisive_dir, quantize="int8")  # the kept file needs no conversion
    assert converted == [True] and texts(sess, prefix="the")


def int8_tensors(flatbuffer):
    """``[(shape, int8 values, scales)]`` of a LiteRT flatbuffer's int8 tensors with data."""
    from ai_edge_litert import schema_py_generated as schema

    tflite = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    found = []
    for tensor in tflite.subgraphs[0].tensors:
        data = tflite.buffers[tensor.buffer].data
        if tensor.type == schema.TensorType.INT8 and data is not None and len(data):
            found.append((tuple(tensor.shape), np.asarray(data).view(np.int8).reshape(tensor.shape),
                          np.asarray(tensor.quantization.scale, np.float32)))
    return found


def test_quantize_rows_stores_what_the_converter_stores():
    w = np.random.RandomState(0).randn(48, 64).astype(np.float32)  # [outputs, inputs]
    w[0, :5] = [127, 2.5, -3.5, 0.5, -0.5]  # a scale of exactly 1: halves to round
    w[1] *= 1e-3

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)], autograph=False)
    def product(x):
        return tf.matmul(x, tf.constant(w.T))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([product.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    [(shape, values, scales)] = int8_tensors(converter.convert())
    q, scale = lite.quantize_rows(w)
    assert shape == (48, 64) and q[0, :5].tolist() == [127, 3, -4, 1, -1]
    np.testing.assert_array_equal(values, q)
    np.testing.assert_array_equal(scales, scale)


def test_the_int8_step_holds_each_layer_matrix_as_the_converter_would():
    model = GPT2(hparams_for("tiny", n_vocab=100), seed=0)
    tensors = int8_tensors(lite.convert_step(model))
    for name, variable in model.layer_matrices().items():
        q, scale = lite.quantize_rows(variable.numpy()[0].T)
        same = [t for t in tensors
                if t[0] == q.shape and np.array_equal(t[1], q) and np.array_equal(t[2], scale)]
        assert len(same) == 1, name
    stand_ins = [lite._marker(k) / 127 for k in range(8)]  # no tensor keeps a stand-in's scales
    assert not any(np.allclose(t[2], s) for t in tensors for s in stand_ins)
    with pytest.raises(RuntimeError, match="did not keep 8 of the model's 8 weight matrices"):
        lite.put_matrices(lite.convert_step(model, quantize=False), model)


def test_the_litert_step_holds_no_shape_arithmetic_per_layer():
    """The step's batch is set when it runs; each reshape gives that one unknown
    dimension as -1 (``model.reshape``), so no layer computes a shape from it (Shape,
    StridedSlice and Pack were more than a quarter of the 124M step's operations)."""
    from ai_edge_litert import schema_py_generated as schema

    model = GPT2(hparams_for("tiny", n_vocab=100), seed=0)
    tflite = schema.ModelT.InitFromPackedBuf(lite.convert_step(model, quantize=False), 0)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
    ops = collections.Counter()
    for op in tflite.subgraphs[0].operators:
        code = tflite.operatorCodes[op.opcodeIndex]
        ops[names[max(code.builtinCode, code.deprecatedBuiltinCode)]] += 1
    assert ops["FULLY_CONNECTED"] == 4 * model.hparams.n_layer + 1 and ops["RESHAPE"], ops
    assert ops["SHAPE"] <= 1 and ops["PACK"] == 0 and ops["STRIDED_SLICE"] < 10, ops


def test_deleting_a_checkpoint_deletes_its_litert_copies(tmp_path):
    prefix = str(tmp_path / "model-1")
    for ext in (".index", ".data-00000-of-00001", *lite.SUFFIXES.values()):
        (tmp_path / ("model-1" + ext)).write_bytes(b"x")
    checkpoints._remove_bundle(prefix)
    assert list(tmp_path.iterdir()) == []


def test_interleaved_int8_streams_stop_with_a_clear_error(int8):
    first = gpt2.generate(int8, prefix="the", length=20, temperature=0.0, stream=True)
    second = gpt2.generate(int8, prefix="a", length=20, temperature=0.0, stream=True)
    next(first), next(first)  # the prefix, then the first generated piece
    next(second), next(second)
    with pytest.raises(gpt2.GenerationError, match="one batch at a time"):
        list(first)
    assert texts(int8, prefix="the")  # and the model still works afterwards


def test_bad_quantize_settings_are_one_clear_error(decisive_dir):
    with pytest.raises(gpt2.GenerationError, match="quantize must be None or one of"):
        load(decisive_dir, quantize="int4")
    with pytest.raises(gpt2.GenerationError, match="leave compute_dtype"):
        load(decisive_dir, quantize="int8", compute_dtype="bfloat16")
    with pytest.raises(gpt2.GenerationError, match="runtime must be None or one of"):
        load(decisive_dir, runtime="onnx")
    with pytest.raises(gpt2.GenerationError, match="runs on LiteRT"):
        load(decisive_dir, quantize="int8", runtime="tensorflow")
    with pytest.raises(gpt2.GenerationError, match="runtime='litert' computes in float32"):
        load(decisive_dir, runtime="litert", compute_dtype="bfloat16")


def test_without_litert_int8_says_what_to_install(decisive_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(gpt2.MissingDependencyError, match=r"gpt2_simple_plus\[lite\]"):
        load(decisive_dir, quantize="int8")


@pytest.mark.parametrize("flags", [["--quantize", "int8"], ["--runtime", "litert"]],
                         ids=["int8", "float32"])
def test_cli_generates_on_litert(decisive_dir, tmp_path, flags):
    models = os.path.dirname(decisive_dir)
    result = helpers.run_cli("generate", "--model_name", "tiny", "--model_dir", models,
                             *flags, "--prefix", "the cat", "--length", "20",
                             "--temperature", "0", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    full = texts(load(decisive_dir), prefix="the cat", length=20)[0]
    assert full in result.stdout


def test_serve_batches_requests_on_the_int8_model(decisive_dir):
    """``serve(quantize="int8")``: concurrent requests answered together, each the text
    ``generate`` makes on the same model."""
    import concurrent.futures
    import json
    import urllib.request

    pytest.importorskip("uvicorn", reason='pip install -e ".[test]" installs the server')
    server = gpt2.serve(model_name="tiny", model_dir=os.path.dirname(decisive_dir), port=0,
                        quantize="int8", batch_wait=0.5, background=True)
    try:
        def ask(prompt):
            body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 12,
                               "temperature": 0}).encode()
            request = urllib.request.Request(server.url + "/v1/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as answer:
                return json.load(answer)["choices"][0]["text"]

        prompts = ["the cat", "a", "on the mat"]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, prompts))
        stats = json.load(urllib.request.urlopen(server.url + "/health", timeout=30))
    finally:
        server.stop()
    int8 = load(decisive_dir, quantize="int8")
    for prompt, answer in zip(prompts, answers):
        expected = texts(int8, prefix=prompt, length=12, include_prefix=False)[0]
        assert answer.lstrip("\n") == expected
    assert max(int(k) for k in stats["batches"]) > 1, stats  # answered together


def test_serve_runs_float32_on_litert(decisive_dir):
    import json
    import urllib.request

    pytest.importorskip("uvicorn", reason='pip install -e ".[test]" installs the server')
    server = gpt2.serve(model_name="tiny", model_dir=os.path.dirname(decisive_dir), port=0,
                        runtime="litert", background=True)
    try:
        assert isinstance(decoder_for(server.worker.model).model, lite.LiteModel)
        body = json.dumps({"prompt": "the cat", "max_tokens": 12, "temperature": 0}).encode()
        request = urllib.request.Request(server.url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            text = json.load(answer)["choices"][0]["text"]
    finally:
        server.stop()
    expected = texts(load(decisive_dir), prefix="the cat", length=12, include_prefix=False)[0]
    assert text.lstrip("\n") == expected


def test_the_exported_model_stays_float32(int8, tmp_path):
    path = gpt2.export_model(int8, str(tmp_path / "export"))
    served = tf.saved_model.load(path)
    logits = served.signatures["logits"](tokens=tf.constant([[1, 2, 3]], tf.int32))["logits"]
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits.numpy(), int8.model([[1, 2, 3]])[:, -1].numpy(), atol=1e-4)


# ---------------------------------------------------------------------------
# The quality guard: a model that has learned something

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-layer GPT-2 trained from scratch on Python's manual (the demo's corpus), and a
    held-out stretch of the same manual, encoded."""
    from gpt2_simple_plus.demo import corpus_text

    root = tmp_path_factory.mktemp("trained")
    vocab = str(root / "vocab")
    helpers.make_tiny_vocab(vocab)
    text = corpus_text()
    corpus = root / "corpus.txt"
    corpus.write_text(text[:150_000], encoding="utf-8")
    sess = gpt2.start_tf_sess()
    hp = HParams(n_vocab=len(gpt2.encoder.get_encoder(vocab).encoder), n_ctx=64, n_embd=64,
                 n_head=4, n_layer=2)
    gpt2.finetune(sess, str(corpus), model_name=None, hparams=hp, vocab_dir=vocab,
                  checkpoint_dir=str(root / "checkpoint"), run_name="run1", steps=200,
                  batch_size=16, learning_rate=3e-3, warmup_steps=10, print_every=100,
                  sample_every=0, save_every=0, seed=0)
    held_out = sess.encoder.encode(text[-20_000:])
    rows = np.array([held_out[i:i + 64] for i in range(0, 64 * 32, 64)], np.int32)
    return str(root / "checkpoint" / "run1"), rows


def perplexity_full(model, rows):
    logits = tf.cast(model(rows[:, :-1]), tf.float32)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(rows[:, 1:], logits)
    return float(np.exp(np.mean(loss.numpy())))


def perplexity_int8(model, rows):
    """Teacher-forced through the int8 step: the first token read as a prompt, then
    every following token one at a time, as generation runs."""
    steps = lite.LiteModel(model, lite.convert_step(model))
    batch, n = rows.shape
    logits, cache = steps.forward(rows[:, :1], cache=steps.empty_cache(batch, n), pos=0)
    losses = []
    for t in range(1, n):
        losses.append(tf.nn.sparse_softmax_cross_entropy_with_logits(rows[:, t], logits[:, 0]))
        if t < n - 1:
            logits, cache = steps.forward(rows[:, t:t + 1], cache=cache, pos=tf.constant(t))
    return float(np.exp(np.mean(np.stack(losses))))


def test_quality_guard_perplexity_of_each_mode(trained):
    run_dir, rows = trained
    prefix = find_checkpoint(run_dir, "latest")
    full = perplexity_full(load_model(run_dir, prefix), rows)
    assert full < 0.25 * rows.max()  # it learned something: far below a uniform guess
    bf16 = perplexity_full(load_model(run_dir, prefix, compute_dtype="bfloat16"), rows)
    int8 = perplexity_int8(load_model(run_dir, prefix), rows)
    print(f"held-out perplexity: float32 {full:.3f}, bfloat16 {bf16:.3f}, int8 {int8:.3f}")
    assert abs(bf16 / full - 1) <= 0.01
    assert abs(int8 / full - 1) <= 0.02


@pytest.fixture(scope="module")
def decisive_run(tmp_path_factory):
    """A decisive model: the same small GPT-2 trained on one passage of the manual
    repeated, until its greedy continuation of any stretch of it is the passage."""
    from gpt2_simple_plus.demo import corpus_text

    root = tmp_path_factory.mktemp("decisive")
    vocab = str(root / "vocab")
    helpers.make_tiny_vocab(vocab)
    passage = corpus_text()[48:448]  # from "Assert statements": past the heading's row of stars
    (root / "passage.txt").write_text(passage * 200, encoding="utf-8")
    sess = gpt2.start_tf_sess()
    hp = HParams(n_vocab=len(gpt2.encoder.get_encoder(vocab).encoder), n_ctx=64, n_embd=64,
                 n_head=4, n_layer=2)
    gpt2.finetune(sess, str(root / "passage.txt"), model_name=None, hparams=hp,
                  vocab_dir=vocab, checkpoint_dir=str(root / "checkpoint"), run_name="run1",
                  steps=250, batch_size=16, learning_rate=3e-3, warmup_steps=10,
                  print_every=50, sample_every=0, save_every=0, seed=0)
    return str(root / "checkpoint"), passage


@pytest.mark.parametrize("mode", [{"quantize": "int8"}, {"compute_dtype": "bfloat16"}],
                         ids=["int8", "bfloat16"])
def test_greedy_text_of_a_decisive_model_agrees_with_float32(decisive_run, mode):
    checkpoint_dir, passage = decisive_run
    sessions = []
    for options in ({}, mode):
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, checkpoint_dir=checkpoint_dir, run_name="run1", **options)
        sessions.append(sess)
    for start in range(0, 300, 60):
        prompt = passage[start:start + 30]
        full, ours = (s.encoder.decode(decoder_for(s.model).generate(
            [s.encoder.encode(prompt)], 24, SamplingConfig(temperature=0.0))[0])
            for s in sessions)
        assert len(sessions[0].encoder.encode(full)) >= 20
        assert ours == full, prompt
    assert passage[30:60] in full_text(sessions[0], passage[:30])  # it did learn the passage


def full_text(sess, prompt):
    return gpt2.generate(sess, prefix=prompt, length=40, temperature=0.0, return_as_list=True)[0]

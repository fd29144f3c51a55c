"""The TF2 GPT-2 against an independent NumPy GPT-2, on tiny random models.

The reference below is written from OpenAI's ``src/model.py`` and the GPT-2
paper, in float64, sharing nothing with ``gpt2_simple_plus.model`` but the
checkpoint's variable names.
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from gpt2_simple_plus.errors import HParamsError
from gpt2_simple_plus.hparams import (HParams, MODEL_SIZES, canonical_model_name, hparams_for,
                                      load_hparams)
from gpt2_simple_plus.model import GPT2, random_weights, variable_shapes

# ---------------------------------------------------------------------------
# Reference GPT-2 in NumPy (float64).


def ref_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def ref_norm(x, g, b, eps=1e-5):
    u = x.mean(-1, keepdims=True)
    s = ((x - u) ** 2).mean(-1, keepdims=True)
    return (x - u) / np.sqrt(s + eps) * g + b


def ref_conv1d(x, w, b):
    return x @ w[0] + b


def ref_softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def ref_attn(x, W, p, n_head):
    batch, t, e = x.shape
    d = e // n_head
    q, k, v = np.split(ref_conv1d(x, W[p + "c_attn/w"], W[p + "c_attn/b"]), 3, axis=-1)

    def heads(m):  # [batch, t, e] -> [batch, head, t, d]
        return m.reshape(batch, t, n_head, d).transpose(0, 2, 1, 3)

    q, k, v = heads(q), heads(k), heads(v)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    causal = np.tril(np.ones((t, t)))
    scores = scores * causal - 1e10 * (1 - causal)
    a = ref_softmax(scores) @ v
    a = a.transpose(0, 2, 1, 3).reshape(batch, t, e)
    return ref_conv1d(a, W[p + "c_proj/w"], W[p + "c_proj/b"])


def ref_logits(weights, hp, tokens):
    """Logits ``[batch, t, n_vocab]`` of OpenAI's GPT-2 for ``tokens`` ``[batch, t]``."""
    W = {n: np.asarray(a, np.float64) for n, a in weights.items()}
    tokens = np.asarray(tokens)
    h = W["model/wte"][tokens] + W["model/wpe"][np.arange(tokens.shape[1])][None]
    for i in range(hp.n_layer):
        p = f"model/h{i}/"
        h = h + ref_attn(ref_norm(h, W[p + "ln_1/g"], W[p + "ln_1/b"]), W, p + "attn/", hp.n_head)
        m = ref_norm(h, W[p + "ln_2/g"], W[p + "ln_2/b"])
        m = ref_conv1d(ref_gelu(ref_conv1d(m, W[p + "mlp/c_fc/w"], W[p + "mlp/c_fc/b"])),
                       W[p + "mlp/c_proj/w"], W[p + "mlp/c_proj/b"])
        h = h + m
    h = ref_norm(h, W["model/ln_f/g"], W["model/ln_f/b"])
    return h @ W["model/wte"].T


def busy_weights(hp, seed):
    """Random weights with every parameter non-trivial: LayerNorm gains and all
    biases random, and matrices large enough that attention is far from uniform,
    so a wrong mask, bias or norm shows up in the logits."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in variable_shapes(hp).items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "g":
            w = 1.0 + 0.2 * rng.standard_normal(shape)
        elif leaf == "b":
            w = 0.2 * rng.standard_normal(shape)
        else:
            w = rng.standard_normal(shape) / math.sqrt(shape[-2] if len(shape) == 3 else 4.0)
        weights[name] = w.astype(np.float32)
    return weights


SHAPES = [
    # n_vocab, n_ctx, n_embd, n_head, n_layer
    (50, 8, 8, 1, 1),
    (97, 12, 16, 4, 2),
    (64, 10, 24, 3, 3),
]


def small_model(shape, seed=0, **kwargs):
    hp = HParams(*shape)
    weights = busy_weights(hp, seed)
    return GPT2(hp, weights, **kwargs), weights


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------------------
# Forward pass


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "v{}-c{}-e{}-h{}-l{}".format(*s))
def test_forward_matches_numpy_reference_at_every_length(shape):
    model, weights = small_model(shape, seed=sum(shape))
    hp = model.hparams
    rng = np.random.default_rng(1)
    for t in range(1, hp.n_ctx + 1):
        tokens = rng.integers(0, hp.n_vocab, size=(2, t))
        ours = model(tokens).numpy()
        assert ours.shape == (2, t, hp.n_vocab) and ours.dtype == np.float32
        ref = ref_logits(weights, hp, tokens)
        assert max_diff(ours, ref) <= 1e-4, f"length {t}"
    # The weights are far from uniform: logits spread over several units, so
    # the 1e-4 agreement above is not agreement between near-constant outputs.
    assert np.std(ref) > 0.5


def test_reference_disagrees_with_a_broken_model():
    """The comparison can fail: with one bias entry off by 0.01 the logits move past 1e-4."""
    model, weights = small_model(SHAPES[1])
    tokens = np.arange(10)[None] % model.hparams.n_vocab
    broken = dict(weights)
    broken["model/h1/attn/c_proj/b"] = weights["model/h1/attn/c_proj/b"].copy()
    broken["model/h1/attn/c_proj/b"][0] += 0.01
    assert max_diff(model(tokens), ref_logits(broken, model.hparams, tokens)) > 1e-3


def test_forward_is_causal():
    model, _ = small_model(SHAPES[1])
    a = np.array([[5, 6, 7, 8, 9, 10]])
    b = a.copy()
    b[0, 4] = 11
    la, lb = model(a).numpy(), model(b).numpy()
    np.testing.assert_array_equal(la[:, :4], lb[:, :4])
    assert max_diff(la[:, 4:], lb[:, 4:]) > 1e-3


def test_blocked_causal_attention_matches_numpy_reference(monkeypatch):
    """Whole sequences attend a block of queries at a time (model.causal_attn); with
    blocks of 3 every length, divisible or not, still equals the reference."""
    import gpt2_simple_plus.model as model_module

    monkeypatch.setattr(model_module, "ATTN_BLOCK", 3)
    model, weights = small_model(SHAPES[1], seed=4)
    hp = model.hparams
    rng = np.random.default_rng(2)
    for t in (1, 3, 4, 8, 9, hp.n_ctx):
        tokens = rng.integers(0, hp.n_vocab, size=(2, t))
        assert max_diff(model(tokens), ref_logits(weights, hp, tokens)) <= 1e-4, f"length {t}"


def test_blocked_causal_attention_gradients_equal_unblocked(monkeypatch):
    import gpt2_simple_plus.model as model_module

    model, _ = small_model(SHAPES[1], seed=6)
    tokens = tf.constant(np.random.default_rng(3).integers(0, model.hparams.n_vocab, (2, 11)))

    def grads(block):
        monkeypatch.setattr(model_module, "ATTN_BLOCK", block)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(model(tokens)))
        grads = tape.gradient(loss, model.trainable_weights())
        return [tf.convert_to_tensor(g).numpy() for g in grads]

    for name, a, b in zip(model.weights, grads(4), grads(1000)):
        assert np.any(b != 0), name
        assert max_diff(a, b) <= 1e-6 * np.abs(b).max(), name  # float32 round-off only


def ref_gelu_slope(x):
    """d gelu / dx of the tanh formula, by the chain rule in float64."""
    c = np.sqrt(2 / np.pi)
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c * (1 + 3 * 0.044715 * x ** 2)


@pytest.mark.parametrize("dtype, tol", [("float32", 5e-6), ("bfloat16", 1e-2)])
def test_gelu_hand_written_gradient_is_the_formulas_derivative(dtype, tol):
    from gpt2_simple_plus.model import gelu

    x64 = np.concatenate([np.linspace(-8, 8, 2001), [-30.0, 30.0, 0.0]])
    x = tf.cast(tf.constant(x64, tf.float32), dtype)
    dy = tf.cast(tf.constant(np.cos(x64), tf.float32), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = gelu(x)
    grad = tape.gradient(y, x, output_gradients=dy)
    assert grad.dtype == x.dtype
    x64 = tf.cast(x, tf.float64).numpy()  # the rounded inputs, so only the gradient's error counts
    assert max_diff(y, ref_gelu(x64)) <= tol * 10
    numeric = (ref_gelu(x64 + 1e-4) - ref_gelu(x64 - 1e-4)) / 2e-4  # the reference slope is right
    assert max_diff(ref_gelu_slope(x64), numeric) <= 1e-6
    expected = tf.cast(dy, tf.float64).numpy() * ref_gelu_slope(x64)
    assert max_diff(grad, expected) <= tol * max(1.0, np.abs(expected).max())


# ---------------------------------------------------------------------------
# Key/value cache


@pytest.mark.parametrize("shape", SHAPES[1:], ids=["h4-l2", "h3-l3"])
def test_cached_decoding_one_token_at_a_time_equals_full_pass(shape):
    model, _ = small_model(shape, seed=3)
    hp = model.hparams
    tokens = np.random.default_rng(2).integers(0, hp.n_vocab, size=(2, hp.n_ctx))
    full = model(tokens).numpy()

    prompt = 4
    cache = model.empty_cache(batch_size=2, length=hp.n_ctx)
    h, cache = model.forward(tokens[:, :prompt], cache=cache, pos=0)
    pieces = [model.logits(h).numpy()]
    for pos in range(prompt, hp.n_ctx):
        h, cache = model.forward(tokens[:, pos:pos + 1], cache=cache, pos=pos)
        pieces.append(model.logits(h).numpy())
    assert max_diff(np.concatenate(pieces, axis=1), full) <= 1e-5


def test_cached_decoding_in_chunks_equals_full_pass():
    model, _ = small_model(SHAPES[1], seed=4)
    hp = model.hparams
    tokens = np.random.default_rng(3).integers(0, hp.n_vocab, size=(1, hp.n_ctx))
    full = model(tokens).numpy()
    cache = model.empty_cache(batch_size=1, length=hp.n_ctx)
    pieces, pos = [], 0
    for size in (3, 1, 4, 2, 2):
        h, cache = model.forward(tokens[:, pos:pos + size], cache=cache, pos=pos)
        pieces.append(model.logits(h).numpy())
        pos += size
    assert pos == hp.n_ctx
    assert max_diff(np.concatenate(pieces, axis=1), full) <= 1e-5


def test_cache_longer_than_the_sequence_is_ignored_beyond_it():
    """Unused cache slots (zeros, or stale values) never leak into attention."""
    model, _ = small_model(SHAPES[1], seed=5)
    tokens = np.array([[1, 2, 3, 4, 5]])
    full = model(tokens).numpy()
    cache = tf.nest.map_structure(lambda c: c + 7.0,  # stale garbage
                                  model.empty_cache(batch_size=1, length=12))
    h, cache = model.forward(tokens[:, :3], cache=cache, pos=0)
    h2, _ = model.forward(tokens[:, 3:], cache=cache, pos=3)
    got = np.concatenate([model.logits(h).numpy(), model.logits(h2).numpy()], axis=1)
    assert max_diff(got, full) <= 1e-5


# ---------------------------------------------------------------------------
# Left padding


def test_left_padding_gives_the_unpadded_logits():
    model, _ = small_model(SHAPES[1], seed=6)
    long_row = [3, 14, 15, 92, 65, 35, 89]
    short_row = [27, 18, 28, 18]
    pad = len(long_row) - len(short_row)
    batch = np.array([long_row, [95, 96, 0] + short_row])  # arbitrary tokens as padding
    logits = model(batch, pad=[0, pad]).numpy()
    assert max_diff(logits[0], model([long_row]).numpy()[0]) <= 1e-5
    assert max_diff(logits[1, pad:], model([short_row]).numpy()[0]) <= 1e-5
    # without pad= the padding is visible, so the test above can fail
    assert max_diff(model(batch).numpy()[1, pad:], model([short_row]).numpy()[0]) > 1e-3


def test_left_padding_with_cache_matches_unpadded_decoding():
    model, _ = small_model(SHAPES[2], seed=7)
    hp = model.hparams
    short_row = [5, 6, 7]
    pad = 2
    batch = np.array([[1, 2, 3, 4, 5], [0, 0] + short_row])
    follow = np.array([[8, 9], [10, 11]])
    cache = model.empty_cache(batch_size=2, length=hp.n_ctx)
    pads = tf.constant([0, pad])
    h, cache = model.forward(batch, cache=cache, pos=0, pad=pads)
    out = [model.logits(h).numpy()]
    for i in range(follow.shape[1]):
        h, cache = model.forward(follow[:, i:i + 1], cache=cache, pos=batch.shape[1] + i, pad=pads)
        out.append(model.logits(h).numpy())
    got = np.concatenate(out, axis=1)
    want0 = model(np.concatenate([batch[0], follow[0]])[None]).numpy()[0]
    want1 = model(np.array(short_row + list(follow[1]))[None]).numpy()[0]
    assert max_diff(got[0], want0) <= 1e-5
    assert max_diff(got[1, pad:], want1) <= 1e-5


# ---------------------------------------------------------------------------
# Reduced precision


def test_bfloat16_compute_is_close_to_float32_and_returns_float32():
    shape = SHAPES[1]
    hp = HParams(*shape)
    weights = busy_weights(hp, 8)
    f32 = GPT2(hp, weights)
    bf16 = GPT2(hp, weights, compute_dtype="bfloat16")
    tokens = np.random.default_rng(4).integers(0, hp.n_vocab, size=(2, hp.n_ctx))
    a, b = f32(tokens), bf16(tokens)
    assert b.dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in bf16.weights.values())
    scale = float(np.max(np.abs(a)))
    diff = max_diff(a, b)
    assert 0 < diff <= 0.05 * scale, (diff, scale)  # > 0: bfloat16 really was used
    # greedy choices mostly agree
    assert np.mean(np.argmax(a, -1) == np.argmax(b, -1)) >= 0.75
    # the cached path runs in bfloat16 too
    cache = bf16.empty_cache(batch_size=2, length=hp.n_ctx)
    assert cache[0].keys.dtype == cache[0].values.dtype == tf.bfloat16
    h, cache = bf16.forward(tokens[:, :5], cache=cache, pos=0)
    h, cache = bf16.forward(tokens[:, 5:6], cache=cache, pos=5)
    assert bf16.logits(h).dtype == tf.float32
    assert max_diff(bf16.logits(h)[:, 0], a[:, 5]) <= 0.05 * scale


# ---------------------------------------------------------------------------
# Memory-saving gradients


def test_recompute_gives_the_same_loss_and_gradients():
    model, _ = small_model(SHAPES[2], seed=9)
    tokens = tf.constant(np.random.default_rng(5).integers(0, model.hparams.n_vocab, (2, 10)), tf.int32)

    def loss_and_grads(recompute):
        with tf.GradientTape() as tape:
            h, _ = model.forward(tokens, recompute=recompute)
            logits = model.logits(h)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tokens[:, 1:], logits=logits[:, :-1]))
        grads = tape.gradient(loss, model.trainable_weights())
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]

    loss, grads = loss_and_grads(False)
    loss_r, grads_r = loss_and_grads(True)
    assert loss_r == pytest.approx(loss, abs=1e-6)
    assert len(grads_r) == len(variable_shapes(model.hparams))
    for name, g, gr in zip(model.weights, grads, grads_r):
        assert np.any(g != 0), name
        assert max_diff(g, gr) <= 1e-6, name


# ---------------------------------------------------------------------------
# Variables, shapes and initialisation


def openai_124m_shapes():
    """The variables of OpenAI's 124M ``model.ckpt``, written out by hand."""
    shapes = {"model/wte": (50257, 768), "model/wpe": (1024, 768)}
    for i in range(12):
        p = f"model/h{i}/"
        shapes[p + "ln_1/g"] = shapes[p + "ln_1/b"] = (768,)
        shapes[p + "attn/c_attn/w"] = (1, 768, 2304)
        shapes[p + "attn/c_attn/b"] = (2304,)
        shapes[p + "attn/c_proj/w"] = (1, 768, 768)
        shapes[p + "attn/c_proj/b"] = (768,)
        shapes[p + "ln_2/g"] = shapes[p + "ln_2/b"] = (768,)
        shapes[p + "mlp/c_fc/w"] = (1, 768, 3072)
        shapes[p + "mlp/c_fc/b"] = (3072,)
        shapes[p + "mlp/c_proj/w"] = (1, 3072, 768)
        shapes[p + "mlp/c_proj/b"] = (768,)
    shapes["model/ln_f/g"] = shapes["model/ln_f/b"] = (768,)
    return shapes


def test_variable_names_and_shapes_are_openais_for_124m():
    shapes = variable_shapes(hparams_for("124M"))
    assert {n: tuple(s) for n, s in shapes.items()} == openai_124m_shapes()
    assert len(shapes) == 148
    assert sum(int(np.prod(s)) for s in shapes.values()) == 124_439_808


def test_model_variables_follow_variable_shapes():
    hp = hparams_for("tiny", n_vocab=100)
    model = GPT2(hp, seed=0)
    assert {n: tuple(v.shape) for n, v in model.weights.items()} == variable_shapes(hp)
    assert all(v.dtype == tf.float32 and v.trainable for v in model.weights.values())
    only_h = model.trainable_weights(only_transformer_layers=True)
    assert len(only_h) == 12 * hp.n_layer


def test_random_initialisation_statistics():
    hp = hparams_for("tiny", n_vocab=2000)
    w = random_weights(hp, seed=0)
    assert np.std(w["model/wte"]) == pytest.approx(0.02, rel=0.02)
    assert np.std(w["model/wpe"]) == pytest.approx(0.01, rel=0.05)
    matrices = np.concatenate([w[n].ravel() for n in w if n.endswith("/w")])
    assert np.std(matrices) == pytest.approx(0.02, rel=0.02)
    assert abs(np.mean(matrices)) < 1e-3
    for name, value in w.items():
        assert value.dtype == np.float32, name
        if name.endswith("/g"):
            assert np.all(value == 1), name
        if name.endswith("/b"):
            assert np.all(value == 0), name
    again = random_weights(hp, seed=0)
    other = random_weights(hp, seed=1)
    np.testing.assert_array_equal(w["model/wte"], again["model/wte"])
    assert not np.array_equal(w["model/wte"], other["model/wte"])
    model = GPT2(hp, seed=0)
    np.testing.assert_array_equal(model.weights["model/h1/mlp/c_fc/w"].numpy(),
                                  w["model/h1/mlp/c_fc/w"])


# ---------------------------------------------------------------------------
# Hyper-parameters


def test_n_embd_must_divide_by_n_head():
    with pytest.raises(HParamsError, match=r"n_embd \(30\).*divisible by n_head \(4\)"):
        HParams(n_vocab=10, n_ctx=8, n_embd=30, n_head=4, n_layer=1)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "8", True])
def test_fields_must_be_positive_integers(bad):
    with pytest.raises(HParamsError, match="n_layer must be a positive whole number"):
        HParams(n_vocab=10, n_ctx=8, n_embd=8, n_head=2, n_layer=bad)


def test_missing_field_in_hparams_json_names_the_file(tmp_path):
    path = tmp_path / "hparams.json"
    path.write_text(json.dumps({"n_vocab": 10, "n_ctx": 8, "n_embd": 8, "n_head": 2}))
    with pytest.raises(HParamsError) as err:
        load_hparams(str(tmp_path))
    assert str(path) in str(err.value) and "n_layer" in str(err.value)


def test_bad_value_in_hparams_json_names_the_file(tmp_path):
    path = tmp_path / "hparams.json"
    path.write_text(json.dumps({"n_vocab": 10, "n_ctx": 8, "n_embd": 10, "n_head": 4,
                                "n_layer": 1}))
    with pytest.raises(HParamsError) as err:
        load_hparams(str(tmp_path))
    assert str(path) in str(err.value) and "divisible" in str(err.value)


def test_unknown_size_lists_the_choices():
    with pytest.raises(HParamsError) as err:
        hparams_for("125M")
    message = str(err.value)
    assert "'125M'" in message
    for name in ("124M", "355M", "774M", "1558M", "tiny", "gpt2-medium"):
        assert name in message


@pytest.mark.parametrize("alias, name", [
    ("117M", "124M"), ("345M", "355M"), ("gpt2", "124M"), ("gpt2-medium", "355M"),
    ("gpt2-large", "774M"), ("gpt2-xl", "1558M"), ("124M", "124M"), ("my-model", "my-model"),
])
def test_aliases(alias, name):
    assert canonical_model_name(alias) == name
    if name in MODEL_SIZES:
        assert hparams_for(alias) == MODEL_SIZES[name]


def test_named_sizes_are_openais():
    assert [(h.n_embd, h.n_head, h.n_layer) for h in MODEL_SIZES.values()] == [
        (768, 12, 12), (1024, 16, 24), (1280, 20, 36), (1600, 25, 48)]
    assert all(h.n_vocab == 50257 and h.n_ctx == 1024 for h in MODEL_SIZES.values())
    assert hparams_for("tiny", n_vocab=300, n_ctx=16) == HParams(300, 16, 32, 2, 2)

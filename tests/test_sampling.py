"""The sampling rules, tested without weights.

The rules (``top_k_logits``, ``top_p_logits``, ``penalize_repetition``,
``categorical``) are compared with NumPy re-implementations of gpt-2-simple's
and Hugging Face's formulas, with fixed settings and with run-time (tensor)
settings. The decode loop that applies them is tested in test_decoding.py.
"""

import numpy as np
import pytest

from helpers import (assert_frequencies, assert_same_nucleus, np_repetition_penalty, np_softmax,
                     np_top_k, np_top_p)
import tensorflow as tf

from gpt2_simple_plus.sampling import (NEG_INF, SamplingConfig, categorical, filter_logits,
                                       next_token, penalize_repetition, top_k_logits,
                                       top_p_logits, uniform)


# ---------------------------------------------------------------------------
# gpt-2-simple's rules (gpt_2_simple/src/sample.py), rewritten in NumPy.


def random_logits(seed, shape=(8, 500), scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("k", [0, 1, 2, 7, 50, 499, 500])
def test_top_k_matches_gpt2_simple(k):
    logits = random_logits(k)
    ours = top_k_logits(tf.constant(logits), k).numpy()
    np.testing.assert_array_equal(ours, np_top_k(logits, k))
    if 0 < k < 500:
        assert ((ours > NEG_INF).sum(axis=-1) == k).all()  # no ties in random logits


def test_top_k_keeps_ties_at_the_kth_value():
    logits = np.array([[1.0, 3.0, 3.0, 2.0, 0.0],
                       [1.0, 3.0, 2.0, 2.0, 0.0],
                       [5.0, 5.0, 5.0, 5.0, 5.0]], np.float32)
    ours = top_k_logits(tf.constant(logits), 2).numpy()
    np.testing.assert_array_equal(ours, np_top_k(logits, 2))
    assert (ours > NEG_INF).tolist() == [[False, True, True, False, False],
                                         [False, True, True, True, False],
                                         [True] * 5]


@pytest.mark.parametrize("p", [1e-7, 0.05, 0.3, 0.5, 0.9, 0.99, 0.999999, 1.0])
def test_top_p_matches_gpt2_simple(p):
    logits = random_logits(int(p * 1000))
    ours = top_p_logits(tf.constant(logits), p).numpy()
    assert_same_nucleus(ours, np_top_p(logits, p), logits, p)
    kept = (ours > NEG_INF).sum(axis=-1)
    assert (kept >= 1).all()
    if p == 1e-7:
        assert (kept == 1).all()  # only the most likely token: its sum *before* it is 0 < p
    np.testing.assert_array_equal(ours[ours > NEG_INF], logits[ours > NEG_INF])


def test_top_p_drops_a_token_whose_cumulative_sum_before_it_equals_p():
    # probabilities 1/2, 1/4, 1/8, 1/16, 1/16 (in shuffled order): sums before them 0, .5, .75, .875
    logits = np.log(np.array([[1 / 8, 1 / 2, 1 / 16, 1 / 4, 1 / 16]])).astype(np.float32)
    sorted_logits = tf.sort(tf.constant(logits), direction="DESCENDING")
    cums = tf.cumsum(tf.nn.softmax(sorted_logits), axis=-1, exclusive=True).numpy()[0]
    np.testing.assert_allclose(cums, [0, 0.5, 0.75, 0.875, 0.9375], atol=1e-6)

    p = float(cums[2])  # exactly the sum before the 1/8 token, as float32 computes it
    kept = top_p_logits(tf.constant(logits), p).numpy() > NEG_INF
    assert kept.tolist() == [[False, True, False, True, False]]  # 1/2 and 1/4 only
    assert (np_top_p(logits, 0.75) > NEG_INF).tolist() == kept.tolist()

    above = float(np.nextafter(np.float32(p), np.float32(1)))
    kept = top_p_logits(tf.constant(logits), above).numpy() > NEG_INF
    assert kept.tolist() == [[True, True, False, True, False]]  # and now the 1/8 token

    # p=1: every token whose sum before it is below 1, i.e. all five here
    assert (top_p_logits(tf.constant(logits), 1.0).numpy() > NEG_INF).all()


def test_top_p_overrides_top_k_and_comes_after_temperature():
    logits = tf.constant(random_logits(5, (4, 50)))
    config = SamplingConfig(temperature=0.5, top_k=3, top_p=0.8)
    ours = filter_logits(logits, config, temperature=0.5, top_p=0.8).numpy()
    np.testing.assert_array_equal(ours, np_top_p(logits.numpy() / np.float32(0.5), 0.8))
    assert ((ours > NEG_INF).sum(-1) != 3).any()  # top_k=3 was not applied


def test_repetition_penalty_is_hugging_faces():
    logits = random_logits(11, (4, 60))
    logits[0, :4] = [0.0, 2.0, -2.0, 1e-3]
    seen = np.random.default_rng(12).random((4, 60)) < 0.3
    seen[0, :4] = True
    for penalty in (1.0, 1.3, 2.0, 0.5):
        ours = penalize_repetition(tf.constant(logits), tf.constant(seen), penalty).numpy()
        np.testing.assert_allclose(ours, np_repetition_penalty(logits, seen, penalty), rtol=1e-6)
    ours = penalize_repetition(tf.constant(logits), tf.constant(seen), 2.0).numpy()
    np.testing.assert_allclose(ours[0, :4], [0.0, 1.0, -4.0, 5e-4], rtol=1e-6)


# ---------------------------------------------------------------------------
# Drawing tokens.


LOGITS6 = np.array([2.0, 1.0, 0.5, 0.0, -1.0, NEG_INF], np.float32)


def test_categorical_matches_softmax_across_rows_and_across_seeds():
    probs = np_softmax(LOGITS6.astype(np.float64))
    rows = tf.constant(np.tile(LOGITS6, (20000, 1)))
    draws = categorical(rows, tf.constant([3, 0])).numpy()
    freq = assert_frequencies(draws, probs, 6)
    assert freq[5] == 0  # a masked token is never drawn

    one_row = tf.constant(LOGITS6[None])
    draw = tf.function(lambda s: categorical(one_row, tf.stack([s, tf.constant(0)]))[0])
    by_seed = [int(draw(tf.constant(s))) for s in range(2000)]
    assert_frequencies(by_seed, probs, 6)

    again = categorical(rows, tf.constant([3, 0])).numpy()
    np.testing.assert_array_equal(draws, again)  # stateless: same seed, same draws
    other = categorical(rows, tf.constant([4, 0])).numpy()
    assert (draws != other).mean() > 0.5


def test_categorical_over_many_blocks_is_the_one_scan_inverse_cdf():
    """A vocabulary of several CDF blocks, some masked: each draw is the token that a
    single cumulative sum over the whole row gives for the same uniform number."""
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, size=(64, 1000)).astype(np.float32)
    logits[:, 300:700] = NEG_INF  # whole blocks and parts of blocks with zero weight
    seed = tf.constant([9, 4])
    draws = categorical(tf.constant(logits), seed).numpy()
    weights = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    cumulative = np.cumsum(weights, -1)
    u = uniform([64, 1], seed).numpy() * cumulative[:, -1:]
    np.testing.assert_array_equal(draws, (cumulative < u).sum(-1))
    assert not ((draws >= 300) & (draws < 700)).any()
    assert len(set(draws.tolist())) > 20


def test_uniform_is_in_the_open_interval_and_flat():
    u = uniform([1 << 18], tf.constant([7, 1])).numpy()
    assert u.min() > 0 and u.max() < 1
    hist = np.histogram(u, bins=16, range=(0, 1))[0] / u.size
    np.testing.assert_allclose(hist, 1 / 16, atol=0.003)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbouring indices independent


def test_temperature_zero_is_greedy_and_higher_temperature_spreads():
    rows = tf.constant(np.tile(LOGITS6, (20000, 1)))
    greedy = next_token(rows, SamplingConfig(temperature=0.0), seed=tf.constant([1, 2])).numpy()
    assert (greedy == 0).all()
    entropies = []
    for t in (0.25, 0.7, 1.0, 3.0):
        draws = next_token(rows, SamplingConfig(temperature=t), seed=tf.constant([1, 2])).numpy()
        probs = np_softmax(LOGITS6.astype(np.float64) / t)
        freq = assert_frequencies(draws, probs, 6)
        nz = freq[freq > 0]
        entropies.append(float(-(nz * np.log(nz)).sum()))
    assert entropies == sorted(entropies) and entropies[-1] > entropies[0] + 0.8


def test_top_k_one_and_top_k_sampling_only_draw_the_best():
    logits = random_logits(21, (4000, 30))
    best3 = np.argsort(-logits, axis=-1)[:, :3]
    draws = next_token(tf.constant(logits), SamplingConfig(temperature=1.0, top_k=3),
                       seed=tf.constant([5, 0])).numpy()
    assert (draws[:, None] == best3).any(axis=-1).all()
    assert np.bincount((draws[:, None] == best3).argmax(-1), minlength=3).min() > 200  # all 3
    top1 = next_token(tf.constant(logits), SamplingConfig(temperature=1.0, top_k=1),
                      seed=tf.constant([5, 0])).numpy()
    np.testing.assert_array_equal(top1, best3[:, 0])


def test_sampling_config_refuses_impossible_values():
    for bad in (dict(temperature=-0.1), dict(top_k=-1), dict(top_p=1.01), dict(top_p=-0.5),
                dict(repetition_penalty=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingConfig(**bad)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (0.0, 0, 0.0), (0.0, 40, 0.9), (1.0, 1, 0.0), (1.0, 0, 0.0), (0.5, 5, 0.0), (2.0, 0, 0.8),
    (1.0, 50, 1e-9), (0.7, 500, 0.0), (0.7, 2000, 0.0)])
def test_runtime_rules_pick_what_the_fixed_rules_pick(temperature, top_k, top_p):
    """SamplingConfig(runtime=True) takes the settings as tensors (the SavedModel's
    inputs) and must draw exactly what the rule fixed at compile time draws."""
    logits = tf.constant(random_logits(7))
    seed = tf.constant([11, 3])
    fixed = next_token(logits, SamplingConfig(temperature=temperature, top_k=top_k,
                                              top_p=top_p), seed=seed)
    runtime = tf.function(lambda t, k, p: next_token(
        logits, SamplingConfig(runtime=True), seed=seed, temperature=t, top_k=k, top_p=p))(
        tf.constant(temperature), tf.constant(top_k), tf.constant(top_p))
    np.testing.assert_array_equal(runtime.numpy(), fixed.numpy())
    if top_k > 1 and top_p == 0 and top_k < 500:
        tensor_k = top_k_logits(logits, tf.constant(top_k)).numpy()
        np.testing.assert_array_equal(tensor_k, np_top_k(logits.numpy(), top_k))

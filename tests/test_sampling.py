"""The sampler and the decode loop, tested without weights.

The rules (``top_k_logits``, ``top_p_logits``, ``penalize_repetition``,
``categorical``) are compared with NumPy re-implementations of gpt-2-simple's
and Hugging Face's formulas. The loop (:class:`Decoder`) is driven by
:class:`FakeModel`, which "spells" a known token sequence (keras-hub's habit):
whatever the sampling rule, its output is known in advance, so the loop's
padding, stopping and streaming can be checked token for token, and its
``calls`` counter shows how many steps really ran. With ``score=0`` the fake
is a die with known logits, for statistical checks of the whole loop.
"""

import numpy as np
import pytest

import helpers
from helpers import (FakeModel, assert_same_nucleus, calls_during, np_softmax,
                     np_top_k, np_top_p)
import tensorflow as tf

from gpt2_simple_plus.decoding import Decoder
from gpt2_simple_plus.hparams import hparams_for
from gpt2_simple_plus.model import GPT2
from gpt2_simple_plus.sampling import (NEG_INF, SamplingConfig, categorical, filter_logits,
                                       next_token, penalize_repetition, top_k_logits,
                                       top_p_logits, uniform)


# ---------------------------------------------------------------------------
# gpt-2-simple's rules (gpt_2_simple/src/sample.py), rewritten in NumPy.


def np_repetition_penalty(logits, seen, penalty):
    """Hugging Face's RepetitionPenaltyLogitsProcessor."""
    return np.where(seen, np.where(logits < 0, logits * penalty, logits / penalty), logits)


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

def assert_frequencies(draws, probs, n_vocab):
    """Empirical frequencies within 5 standard errors of ``probs`` (plus 0.002)."""
    freq = np.bincount(np.asarray(draws).ravel(), minlength=n_vocab) / np.size(draws)
    tolerance = 5 * np.sqrt(probs * (1 - probs) / np.size(draws)) + 2e-3
    assert (np.abs(freq - probs) <= tolerance).all(), (freq.round(4), probs.round(4))
    return freq


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


# ---------------------------------------------------------------------------
# The decode loop, driven by the fake.

SPELL = list(range(10, 40))  # the fake spells 10, 11, ..., 39, 10, 11, ...
GREEDY = SamplingConfig(temperature=0.0)
WARM = SamplingConfig(temperature=0.7)


def spelled_after(prompt_len, n):
    return [SPELL[(prompt_len + i) % len(SPELL)] for i in range(n)]


@pytest.fixture(scope="module")
def speller():
    return FakeModel(SPELL, 50)


@pytest.fixture(scope="module")
def spell_decoder(speller):
    # Traced without XLA: the loop's logic is the same and compiles 5x faster.
    # The XLA path is checked by test_xla_loop_stops_too and the GPT-2 tests.
    return Decoder(speller, jit_compile=False)


@pytest.mark.parametrize("config", [GREEDY, WARM, SamplingConfig(temperature=1.5, top_k=5),
                                    SamplingConfig(temperature=1.0, top_p=0.9)])
def test_the_fake_is_spelled_whatever_the_rule(spell_decoder, config):
    rows = spell_decoder.generate([SPELL[:3], SPELL[:1], SPELL[:20]], 12, config, seed=4)
    assert rows == [spelled_after(3, 12), spelled_after(1, 12), spelled_after(20, 12)]


def test_a_step_is_one_forward_pass(spell_decoder, speller):
    rows, calls = calls_during(speller, lambda: spell_decoder.generate([SPELL[:3]], 10, WARM))
    assert rows == [spelled_after(3, 10)]
    assert calls == 1 + 10  # the prompt in one pass, then one pass per new token


@pytest.mark.parametrize("stop", [[[17]], [[16, 17]], [[99], [17]]])
def test_a_stop_sequence_ends_the_row_and_the_loop(spell_decoder, speller, stop):
    rows, calls = calls_during(speller, lambda: spell_decoder.generate(
        [SPELL[:3]], 20, WARM, stop_sequences=stop))
    assert rows == [[13, 14, 15, 16, 17]]  # kept up to and including the stop sequence
    assert calls == 1 + 5, "the loop ran on after every row had stopped"


def test_rows_stop_each_at_its_own_stop_and_the_loop_at_the_last(spell_decoder, speller):
    rows, calls = calls_during(speller, lambda: spell_decoder.generate(
        [SPELL[:3], SPELL[:1]], 20, GREEDY, stop_sequences=[[17]]))
    assert rows == [[13, 14, 15, 16, 17], [11, 12, 13, 14, 15, 16, 17]]
    assert calls == 1 + 7


def test_xla_loop_stops_too():
    speller = FakeModel(SPELL, 50)
    decoder = Decoder(speller, jit_compile=True)
    rows, calls = calls_during(speller, lambda: decoder.generate(
        [SPELL[:3], SPELL[:1]], 20, WARM, stop_sequences=[[16, 17]]))
    assert rows == [[13, 14, 15, 16, 17], [11, 12, 13, 14, 15, 16, 17]]
    assert calls == 1 + 7


def test_a_stop_sequence_split_between_chunks_is_found(spell_decoder):
    pieces = list(spell_decoder.stream([SPELL[:3]], 20, WARM, stop_sequences=[[15, 16, 17]],
                                       chunk=2))
    assert [p[0] for p in pieces] == [[13, 14], [15, 16], [17]]


def test_a_row_that_stopped_in_an_earlier_chunk_does_not_keep_the_loop_going(spell_decoder,
                                                                             speller):
    # chunk=4: row 0 stops at its 4th token (end of chunk 1), row 1 at its 6th (chunk 2)
    pieces, calls = calls_during(speller, lambda: list(spell_decoder.stream(
        [SPELL[:3], SPELL[:1]], 20, GREEDY, stop_sequences=[[16]], chunk=4)))
    assert [sum((p[r] for p in pieces), []) for r in range(2)] == [[13, 14, 15, 16],
                                                                   [11, 12, 13, 14, 15, 16]]
    assert calls == 1 + 6, "chunk 2 ran to its end although every row had stopped"


@pytest.fixture(scope="module")
def eager_tiny_decoder():
    # Not XLA-compiled, to save compile time: test_generation streams through XLA.
    return Decoder(GPT2(hparams_for("tiny", n_vocab=50), seed=1), jit_compile=False)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_stream_pieces_add_up_to_generate(eager_tiny_decoder, chunk):
    decoder = eager_tiny_decoder
    config = SamplingConfig(temperature=1.0)
    whole = decoder.generate([[1, 2, 3], [4]], 30, config, seed=9)
    pieces = list(decoder.stream([[1, 2, 3], [4]], 30, config, seed=9, chunk=chunk))
    assert [sum((p[r] for p in pieces), []) for r in range(2)] == whole
    assert len(pieces) == (1 if chunk is None else -(-30 // chunk))
    assert len(set(whole[0])) > 5  # really sampled


# ---------------------------------------------------------------------------
# The loop with known logits: sampling rules see what the model says.

DIE = np.array([1.5, 1.0, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0], np.float32)


_die_decoders = {}


def die_draws(config, *, rows=64, steps=40, seed=0):
    """``rows`` x ``steps`` tokens drawn by the loop from a fake whose logits are always DIE."""
    if "die" not in _die_decoders:  # one decoder for the module: each rule compiles once
        _die_decoders["die"] = Decoder(FakeModel([0], len(DIE), score=0.0, base=DIE),
                                       jit_compile=False)
    out = _die_decoders["die"].generate([[0]] * rows, steps, config, seed=seed)
    return np.array(out)


def test_the_loop_draws_from_softmax_at_each_step():
    for t in (0.5, 1.0, 2.0):
        draws = die_draws(SamplingConfig(temperature=t))
        assert_frequencies(draws, np_softmax(DIE.astype(np.float64) / t), 8)
    # consecutive steps and neighbouring rows are not copies of each other
    draws = die_draws(SamplingConfig(temperature=1.0))
    assert (draws[:, 1:] != draws[:, :-1]).mean() > 0.6
    assert (draws[1:] != draws[:-1]).mean() > 0.6


def test_the_loop_only_draws_the_top_k_including_ties():
    draws = die_draws(SamplingConfig(temperature=1.0, top_k=2))
    assert set(np.unique(draws)) == {0, 1, 2}  # 1.0 ties with 1.0: both kept, as gpt-2-simple
    assert_frequencies(draws, np_softmax(np.array([1.5, 1.0, 1.0] + [-np.inf] * 5)), 8)


def test_the_loop_only_draws_the_nucleus():
    probs = np_softmax(DIE.astype(np.float64))
    cums = np.cumsum(probs) - probs  # DIE is sorted already
    for p in (0.3, float(cums[3]) + 1e-4, 0.95):
        draws = die_draws(SamplingConfig(temperature=1.0, top_p=p))
        nucleus = int((cums < p).sum())
        assert set(np.unique(draws)) == set(range(nucleus)), p


def test_repetition_penalty_through_the_loop_counts_the_prompt():
    base = np.array([3.1, 2.5, 2.2, 1.7, 1.1, 0.4, -1.0, -2.0], np.float32)

    def expected(prompt, n, penalty):
        seen, out = set(prompt), []
        for _ in range(n):
            logits = np_repetition_penalty(base, np.isin(np.arange(8), list(seen)), penalty)
            out.append(int(np.argmax(logits)))
            seen.add(out[-1])
        return out

    die = FakeModel([0], 8, score=0.0, base=base)
    decoder = Decoder(die, jit_compile=False)
    for prompt in ([0], [5], [1, 2, 6]):
        config = SamplingConfig(temperature=0.0, repetition_penalty=2.0)
        rows = decoder.generate([prompt], 12, config)
        assert rows == [expected(prompt, 12, 2.0)], prompt
    assert decoder.generate([[0]], 3, GREEDY) == [[0, 0, 0]]  # no penalty: argmax forever
    first = decoder.generate([[0], [5]], 1, SamplingConfig(temperature=0.0,
                                                           repetition_penalty=2.0))
    assert first == [[1], [0]]  # a token in the prompt is already penalised


# ---------------------------------------------------------------------------
# Longer than the context: the window slides.

def decisive_model(seed, scale=8.0, n_vocab=277):
    """A random tiny GPT-2 (n_ctx 64) with sharpened weights, so greedy picks
    are far apart (no near-ties) and the text varies."""
    hparams = hparams_for("tiny", n_vocab=n_vocab)
    weights = helpers.decisive_weights(hparams, seed, scale)
    return GPT2(hparams, weights)


def window_context_length(history_len, remaining, n_ctx, keep):
    """How many recent tokens a window re-reads (the decoder's policy): all of
    them when the rest of the generation fits, else as many as leave room for
    it, but at least ``keep``, rounded down to the prompt bucket (16) so the
    window keeps room to generate, and at most ``n_ctx - 1``."""
    if history_len + remaining <= n_ctx:
        return history_len
    budget = max(n_ctx - remaining, keep) // 16 * 16 or keep
    return min(budget, n_ctx - 1)


@pytest.mark.parametrize("prompt_len,length", [(70, 100)])
def test_greedy_past_the_context_equals_full_forward_passes_over_each_window(prompt_len, length):
    """What is checked: generation runs window by window (one ``stream`` piece
    each, with ``chunk=None``). A window starts from the last L tokens of
    everything so far (L from :func:`window_context_length`, n_ctx 64, keep
    32), and each of its tokens is the argmax of a plain forward pass, no
    cache and no padding, over those L tokens plus the window's tokens before
    it (one causal pass over the whole window gives all of them). Every token
    is checked; the reference's best and second-best logits are at least 1e-3
    apart, so float differences cannot flip a pick."""
    model = decisive_model(3, scale=16.0)  # greedy text that does not settle into a loop
    decoder = Decoder(model)
    prompt = [int(t) for t in np.random.default_rng(prompt_len).integers(0, 277, prompt_len)]
    pieces = [p[0] for p in decoder.stream([prompt], length, GREEDY)]
    tokens = sum(pieces, [])
    assert len(tokens) == length
    assert decoder.generate([prompt], length, GREEDY) == [tokens]

    history, smallest_gap = list(prompt), np.inf
    for piece in pieces:
        n = window_context_length(len(history), length - (len(history) - prompt_len), 64, 32)
        window = history[-n:] + piece
        assert len(window) <= 64
        # one causal pass over the window: position n - 1 + i predicts the piece's token i
        logits = model([window]).numpy()[0, n - 1:-1]
        top2 = np.sort(logits, axis=-1)[:, -2:]
        smallest_gap = min(smallest_gap, float((top2[:, 1] - top2[:, 0]).min()))
        assert piece == np.argmax(logits, axis=-1).tolist(), (len(history), n)
        history += piece
    assert smallest_gap > 1e-3
    if length > 64:
        assert len(pieces) >= 3 and len(set(tokens[-40:])) > 10  # kept producing, varied text


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

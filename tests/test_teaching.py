"""Teaching tools against direct computations with the model: tokenize, next-token
probabilities, per-token scores with a sliding window, perplexity, batching, tracing."""

import math

import numpy as np
import pytest
import tensorflow as tf

import gpt2_simple_plus as gpt2
from gpt2_simple_plus.loading import load_model
from gpt2_simple_plus.encoder import get_encoder
from gpt2_simple_plus.teaching import sliding_windows

LONG = ("the cat sat on the mat and then the dog ran in to see what the cat had done; "
        "it was a fine day, and the sun was out over the hills of the town. ") * 3


@pytest.fixture(scope="module")
def sess(tiny_model_dir):
    sess = gpt2.start_tf_sess()
    sess.set_model(load_model(tiny_model_dir), get_encoder(tiny_model_dir), tiny_model_dir)
    return sess


def direct_logprobs(model, seq):
    """log p(seq[k] | seq[:k]) for k = 1 .. len(seq)-1, from one unpadded forward pass."""
    logits = model(np.array([seq[:-1]], np.int32))[0].numpy().astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    return logp[np.arange(len(seq) - 1), seq[1:]]


# -- tokenize -------------------------------------------------------------------

def test_tokenize_ids_bytes_and_spans(sess):
    text = "the café, naïve\n\ttea ☕!"
    tokens = gpt2.tokenize(sess, text)
    raw = text.encode("utf-8")
    assert [t.id for t in tokens] == sess.encoder.encode(text)
    assert b"".join(t.bytes for t in tokens) == raw
    assert tokens[0].start == 0 and tokens[-1].end == len(raw)
    for a, b in zip(tokens, tokens[1:]):
        assert a.end == b.start
    for t in tokens:
        assert raw[t.start:t.end] == t.bytes
        if t.text_start is not None and t.text_end is not None:
            assert text[t.text_start:t.text_end].encode("utf-8") == t.bytes
    # The tiny vocabulary has no merges for "é": its two bytes are two tokens,
    # each with a text span only on the side that is a character boundary.
    split = [t for t in tokens if t.bytes in (b"\xc3", b"\xa9")]
    assert len(split) >= 2
    first, second = split[0], split[1]
    assert first.text_start == text.index("é") and first.text_end is None
    assert second.text_start is None and second.text_end == text.index("é") + 1
    assert first.token == "\\xc3"
    table = str(tokens)
    assert "'he'" in table and "'\\n'" in table and "1:3" in table


def test_tokenize_empty_text(sess):
    assert gpt2.tokenize(sess, "") == []


# -- next_token_probabilities -------------------------------------------------

def test_next_token_probabilities_match_softmax_of_logits(sess):
    enc = sess.encoder
    prefix = "the hat on the"
    probs = gpt2.next_token_probabilities(sess, prefix, top_k=10)
    logits = sess.model(np.array([[enc.eot_token] + enc.encode(prefix)], np.int32))[0, -1]
    expected = tf.nn.softmax(tf.cast(logits, tf.float64)).numpy()
    assert len(probs) == 10
    assert [p.id for p in probs] == list(np.argsort(-expected, kind="stable")[:10])
    np.testing.assert_allclose([p for _, p in probs], np.sort(expected)[::-1][:10], rtol=1e-5)
    assert sum(p for _, p in probs) <= 1
    assert probs[0].token == enc.decode([probs[0].id])
    # Every token: a whole distribution.
    everything = gpt2.next_token_probabilities(sess, prefix, top_k=None)
    assert len(everything) == sess.model.hparams.n_vocab
    assert abs(sum(p for _, p in everything) - 1) < 1e-6
    # Temperature sharpens; 0 is greedy.
    cold = gpt2.next_token_probabilities(sess, prefix, top_k=3, temperature=0.5)
    np.testing.assert_allclose(
        [p for _, p in cold],
        np.sort(tf.nn.softmax(tf.cast(logits, tf.float64) / 0.5).numpy())[::-1][:3], rtol=1e-5)
    greedy = gpt2.next_token_probabilities(sess, prefix, top_k=2, temperature=0)
    assert [p for _, p in greedy] == [1.0, 0.0] and greedy[0].id == probs[0].id
    assert "rank" in str(probs) and repr(probs[0].token) in str(probs)


def test_next_token_probabilities_empty_prefix_and_batch(sess):
    enc = sess.encoder
    start = gpt2.next_token_probabilities(sess, "", top_k=5)
    logits = sess.model(np.array([[enc.eot_token]], np.int32))[0, -1]
    np.testing.assert_allclose(start[0][1], tf.reduce_max(tf.nn.softmax(logits)).numpy(),
                               rtol=1e-5)
    prefixes = ["a", "the hat on the mat, the cat in the hat", ""]
    batch = gpt2.next_token_probabilities(sess, prefixes, top_k=5)
    for prefix, table in zip(prefixes, batch):
        single = gpt2.next_token_probabilities(sess, prefix, top_k=5)
        assert table.ids == single.ids
        np.testing.assert_allclose([p for _, p in table], [p for _, p in single], rtol=1e-5)


def test_probability_agrees_with_score(sess):
    """P(next = t | prefix) is exp of the last log-prob score gives prefix + t."""
    probs = gpt2.next_token_probabilities(sess, "the hat", top_k=None)
    checked = 0
    for p in probs:
        ids = sess.encoder.encode("the hat") + [p.id]
        text = sess.encoder.decode(ids)
        if sess.encoder.encode(text) != ids:
            continue  # the token would merge with the prefix, or is half a character
        assert math.isclose(math.exp(gpt2.score(sess, text)[-1].logprob), p.probability,
                            rel_tol=1e-4)
        checked += 1
        if checked == 3:
            break
    assert checked == 3


# -- score and perplexity -----------------------------------------------------

def test_score_matches_log_softmax(sess):
    enc = sess.encoder
    text = "the hat, the mat"
    scores = gpt2.score(sess, text)
    expected = direct_logprobs(sess.model, [enc.eot_token] + enc.encode(text))
    assert scores.ids == enc.encode(text)
    assert [t for t, _ in scores] == [enc.decode([i]) for i in scores.ids]
    np.testing.assert_allclose(scores.logprobs, expected, atol=1e-4)
    assert math.isclose(scores.total, expected.sum(), rel_tol=1e-5)
    assert "perplexity" in str(scores)


def test_sliding_windows_cover_each_token_once():
    assert sliding_windows(37, context=16, stride=8) == [
        (0, 16, 1), (8, 24, 17), (16, 32, 25), (21, 37, 33)]
    for n, context, stride in [(1, 4, 1), (100, 16, 5), (64, 64, 32), (65, 64, 32), (9, 8, 7)]:
        windows = sliding_windows(n, context, stride)
        scored = [k for _, end, first in windows for k in range(first, end + 1)]
        assert scored == list(range(1, n + 1))
        for begin, end, first in windows:
            assert end - begin <= context
            assert first - 1 - begin >= min(first - 1, context - stride)  # context of 1st scored


@pytest.mark.parametrize("context,stride", [(16, 8), (None, None), (24, 5)])
def test_score_long_text_equals_per_window_computation(sess, context, stride):
    enc = sess.encoder
    ids = enc.encode(LONG)
    n_ctx = sess.model.hparams.n_ctx
    assert len(ids) > 3 * n_ctx  # longer than the model's context
    scores = gpt2.score(sess, LONG, context=context, stride=stride)
    context = context or n_ctx
    stride = stride or context // 2
    seq = [enc.eot_token] + ids
    expected = np.full(len(ids), np.nan)
    for begin, end, first in sliding_windows(len(ids), context, stride):
        window = direct_logprobs(sess.model, seq[begin:end + 1])  # targets begin+1 .. end
        expected[first - 1:end] = window[first - begin - 1:]
    assert not np.isnan(expected).any()
    np.testing.assert_allclose(scores.logprobs, expected, atol=1e-4)


def test_perplexity_is_exp_of_mean_negative_logprob(sess):
    scores = gpt2.score(sess, LONG)
    ppl = gpt2.perplexity(sess, LONG)
    assert math.isclose(ppl, math.exp(-np.mean(scores.logprobs)), rel_tol=1e-9)
    # A random model is roughly uniform over its vocabulary.
    assert 0.5 * sess.model.hparams.n_vocab < ppl < 2 * sess.model.hparams.n_vocab
    assert gpt2.perplexity(sess, ["the hat", LONG]) == [gpt2.perplexity(sess, "the hat"), ppl]
    with pytest.raises(gpt2.GenerationError, match="empty"):
        gpt2.perplexity(sess, "")


def test_batches_equal_singles(sess):
    texts = ["the", "the hat on the mat", LONG, "", "naïve ☕", "the cat " * 20]
    batch = gpt2.score(sess, texts)
    assert len(batch) == len(texts)
    for text, scores in zip(texts, batch):
        single = gpt2.score(sess, text)
        assert scores.ids == single.ids == sess.encoder.encode(text)
        np.testing.assert_allclose(scores.logprobs, single.logprobs, atol=1e-5)


def test_repeated_calls_do_not_retrace(sess):
    sess.scorer = None

    def traces():
        return {f"teaching.{k}": getattr(sess.scorer, k).experimental_get_tracing_count()
                for k in ("token_logprobs", "next_logits")
                if getattr(sess.scorer, k).experimental_get_tracing_count()}

    # Short texts (< 16 tokens) all pad to one bucket: [2 rows, 16 tokens].
    gpt2.score(sess, ["the hat", "on the mat"])
    gpt2.next_token_probabilities(sess, ["the", "a hat"])
    gpt2.score(sess, LONG)
    first = traces()
    assert set(first) == {"teaching.token_logprobs", "teaching.next_logits"}
    for _ in range(3):
        gpt2.score(sess, ["a cat", "the dog ran"])
        gpt2.perplexity(sess, ["in", "to the sea"])
        gpt2.next_token_probabilities(sess, ["on", "the cat"])
        gpt2.score(sess, LONG)
        gpt2.perplexity(sess, LONG)
    assert traces() == first
    # Each padded shape is traced once: a single row is a new shape, once.
    gpt2.next_token_probabilities(sess, "the")
    once_more = traces()
    assert once_more["teaching.next_logits"] == first["teaching.next_logits"] + 1
    for text in ("a", "the hat", "on the mat"):
        gpt2.next_token_probabilities(sess, text)
    assert traces() == once_more


def test_errors_without_a_model_and_for_bad_arguments(sess):
    empty = gpt2.start_tf_sess()
    for call in (lambda: gpt2.tokenize(empty, "a"),
                 lambda: gpt2.next_token_probabilities(empty, "a"),
                 lambda: gpt2.score(empty, "a"),
                 lambda: gpt2.perplexity(empty, "a")):
        with pytest.raises(gpt2.ModelNotFoundError, match=r"load_gpt2\(sess, model_name="):
            call()
    with pytest.raises(gpt2.GenerationError, match="temperature"):
        gpt2.next_token_probabilities(sess, "a", temperature=-1)
    with pytest.raises(gpt2.GenerationError, match="context"):
        gpt2.score(sess, "a", context=10_000)
    with pytest.raises(gpt2.GenerationError, match="stride"):
        gpt2.score(sess, "a", context=16, stride=16)
    with pytest.raises(gpt2.GenerationError, match="list of strings"):
        gpt2.score(sess, ["a", 3])

"""The decode loop (:class:`Decoder`), tested without weights.

The loop is driven by :class:`helpers.FakeModel`, which "spells" a known token
sequence (keras-hub's habit): whatever the sampling rule, its output is known in
advance, so the loop's padding, stopping and streaming can be checked token for
token, and its ``calls`` counter shows how many steps really ran. With
``score=0`` the fake is a die with known logits, for statistical checks of the
whole loop. A tiny GPT-2 checks the window that slides past the context, and
what XLA makes of the loop's key/value cache.
"""

import collections
import math
import re

import numpy as np
import pytest

import helpers
from helpers import FakeModel, assert_frequencies, calls_during, np_repetition_penalty, np_softmax

from gpt2_simple_plus import decoding
from gpt2_simple_plus.decoding import Decoder
from gpt2_simple_plus.hparams import HParams, hparams_for
from gpt2_simple_plus.model import GPT2
from gpt2_simple_plus.sampling import SamplingConfig


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
    assert calls == 3 + 7  # under XLA the loop reads a short prompt itself, a pass per token


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


# ---------------------------------------------------------------------------
# What XLA makes of the cache


def _compiled_loop_body(decoder, prompts, length, config):
    """The HLO text of the while loop's body in the decode loop that ``generate`` runs."""
    compiled, make = [], decoder.loop_fn

    def spy(*key):
        fn = make(*key)

        def call(*args, **kwargs):
            kwargs = {"top_k": None, **kwargs}
            compiled.append(fn.experimental_get_compiler_ir(*args, **kwargs)(
                stage="optimized_hlo"))
            return fn(*args, **kwargs)
        return call

    decoder.loop_fn = spy
    decoder.generate(prompts, length, config)
    hlo = compiled[0]
    body = re.search(r"\bwhile\(.*\bbody=%([\w.\-]+)", hlo).group(1)
    lines = hlo.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"%{body} "))
    return lines[start + 1:lines.index("}", start)]


def _count_matrices(monkeypatch, model):
    made = []
    real = model.matrices

    def matrices(transposed=False):
        if transposed:
            made.append(len(made))
        return real(transposed)
    monkeypatch.setattr(model, "matrices", matrices)
    return made


@pytest.mark.parametrize("copies", [True, False])
def test_at_batch_1_each_matrix_vector_product_stands_alone_and_no_weight_is_copied(
        monkeypatch, copies):
    """XLA on the CPU fuses a matrix-vector product with the bias add after it into a
    kernel of its own that runs on one core; alone, the product runs on every core
    (benchmarks/generate.py, batch 1). Each layer's four products must stand alone,
    and nothing weight-sized may be made at each step (behind the barrier that keeps
    them apart, a [1, nx, nf] weight reshaped inside the loop is copied every step),
    with the transposed copies (a long window) and with views of the variables."""
    if not copies:
        monkeypatch.setattr(decoding, "ROWS_MIN_TOKENS", 10 ** 6)
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=128, n_head=2, n_layer=2)
    model = GPT2(hp, seed=0)
    copied = _count_matrices(monkeypatch, model)
    body = _compiled_loop_body(Decoder(model), [[1, 2]], 40, WARM)
    assert len(copied) == copies
    assert not [line for line in body if "kind=kOutput" in line]
    # 4 per layer for the weights, 2 per layer over the cache, 1 for the head
    assert sum(" dot(" in line for line in body) == 6 * hp.n_layer + 1
    smallest_matrix = hp.n_embd * hp.n_embd
    made = []
    for line in body:
        m = re.match(r"\s*(?:ROOT )?%\S+ = \w+\[([\d,]*)\]\S* ([\w-]+)\(", line)
        if m and m.group(2) not in ("parameter", "get-tuple-element", "bitcast", "tuple"):
            if math.prod(int(d) for d in m.group(1).split(",") if d) >= smallest_matrix:
                made.append(line.strip()[:120])
    assert not made, made


def test_at_batch_1_a_long_enough_window_reads_transposed_copies_that_change_no_token(
        monkeypatch):
    """Batch 1 reads [nf, nx] copies of the matrices (faster under XLA on the CPU), made
    once per call of at least ROWS_MIN_TOKENS and never for more rows; the tokens are
    the ones the variables themselves give."""
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=64, n_head=2, n_layer=2)
    model = GPT2(hp, helpers.decisive_weights(hp, seed=3))
    made = _count_matrices(monkeypatch, model)
    rows = Decoder(model).generate([[5, 6, 7]], 40, GREEDY)
    assert made == [0]
    Decoder(model).generate([[5, 6, 7]], decoding.ROWS_MIN_TOKENS - 1, GREEDY)
    Decoder(model).generate([[5, 6, 7]] * 2, 40, GREEDY)
    assert made == [0]
    monkeypatch.setattr(decoding, "ROWS_MIN_TOKENS", 10 ** 6)  # the variables themselves
    assert Decoder(model).generate([[5, 6, 7]], 40, GREEDY) == rows
    assert made == [0]
    assert len(set(rows[0])) > 5  # a decisive model: the comparison means something


def test_a_generation_that_slides_makes_the_copies_once_for_all_its_windows(monkeypatch):
    """150 tokens in a 64-token context take several windows; the copies are made once
    and every window reads them: the tokens equal the variables' own."""
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=64, n_head=2, n_layer=2)
    model = GPT2(hp, helpers.decisive_weights(hp, seed=4))
    made = _count_matrices(monkeypatch, model)
    windows = []
    prefill_fn = Decoder.prefill_fn
    monkeypatch.setattr(Decoder, "prefill_fn", lambda self, *a: windows.append(a) or
                        prefill_fn(self, *a))
    rows = Decoder(model).generate([[5, 6, 7]], 150, GREEDY)
    assert len(windows) >= 3 and made == [0]
    monkeypatch.setattr(decoding, "ROWS_MIN_TOKENS", 10 ** 6)
    assert Decoder(model).generate([[5, 6, 7]], 150, GREEDY) == rows
    assert made == [0] and len(rows[0]) == 150


def test_a_short_prompt_is_read_by_the_loop_and_gives_the_tokens_a_pass_gives(monkeypatch):
    """Under XLA a prompt of at most READ_MAX tokens is read by the decode loop, a token per
    step, so the first generation compiles no pass for it. The tokens drawn, greedy and
    sampled, with rows of different lengths and in chunks, are the ones the prompt's pass
    gives. A longer prompt still has its pass."""
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=64, n_head=2, n_layer=2)
    model = GPT2(hp, helpers.decisive_weights(hp, seed=3))
    passes = []
    prefill_fn = Decoder.prefill_fn
    monkeypatch.setattr(Decoder, "prefill_fn", lambda self, *a: passes.append(a) or
                        prefill_fn(self, *a))
    reader, passer = Decoder(model), Decoder(model)
    passer.reads_prompts = False
    prompts = [list(range(5, 5 + decoding.READ_MAX)), [9]]
    for config in (GREEDY, WARM):
        read = reader.generate(prompts, 10, config, seed=2)
        assert passes == [], "a short prompt had a pass of its own"
        assert read == passer.generate(prompts, 10, config, seed=2)
        assert len(set(read[0])) > 3  # a decisive model: the comparison means something
        passes.clear()
    chunks = [p[0] for p in reader.stream(prompts[:1], 10, GREEDY, chunk=3)]
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert sum(chunks, []) == passer.generate(prompts[:1], 10, GREEDY)[0]

    longer = [list(range(1, decoding.READ_MAX + 2))] * 2
    passes.clear()
    assert reader.generate(longer, 10, GREEDY) == passer.generate(longer, 10, GREEDY)
    assert len(passes) == 2  # one pass each


def test_the_copies_are_made_only_where_memory_holds_them_twice_and_they_pay(monkeypatch):
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=64, n_head=2, n_layer=2)
    model = GPT2(hp, seed=0)
    made = _count_matrices(monkeypatch, model)
    need = sum(v.numpy().nbytes for n, v in model.weights.items() if n.endswith("/w")
               and len(v.shape) == 3)
    decoder = Decoder(model, jit_compile=False)
    for available, copies in ((2 * need - 1, 0), (2 * need, 1), (None, 2)):
        monkeypatch.setattr(decoding, "available_memory", lambda: (available, "this machine has"))
        decoder.generate([[1, 2]], 32, WARM)
        assert len(made) == copies
    monkeypatch.setattr(decoding, "ROWS_MAX_BYTES", need - 1)  # too big to pay, as 1558M's
    decoder.generate([[1, 2]], 32, WARM)
    assert len(made) == 2


def test_a_decoder_at_batch_1_reads_the_weights_as_they_are_now():
    """The copies are made at each generation, so new weights (fine-tuning, a reload)
    show at once in the same decoder."""
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=64, n_head=2, n_layer=2)
    first, second = (helpers.decisive_weights(hp, seed=s) for s in (1, 2))
    model = GPT2(hp, first)
    decoder = Decoder(model)
    before = decoder.generate([[5, 6, 7]], 40, GREEDY)
    model.assign(second)
    after = decoder.generate([[5, 6, 7]], 40, GREEDY)
    assert after == Decoder(GPT2(hp, second)).generate([[5, 6, 7]], 40, GREEDY)
    assert after != before


@pytest.mark.parametrize("config", [WARM, SamplingConfig(temperature=1.0, top_k=5,
                                                          repetition_penalty=1.3)])
def test_a_loop_around_python_compiles_the_choice_alone_and_draws_the_same_tokens(config):
    """``compile_choice`` (the LiteRT modes' loop, whose step runs Python): the choice
    of token is one XLA function inside the loop, and every token, stop included, is
    the one the uncompiled loop draws."""
    model = GPT2(hparams_for("tiny", n_vocab=50), seed=1)
    run = dict(seed=3, stop_sequences=[[7, 8]])
    plain = Decoder(model, jit_compile=False).generate([[3, 4], [5]], 30, config, **run)
    chooser = Decoder(model, jit_compile=False, compile_choice=True)
    assert chooser.generate([[3, 4], [5]], 30, config, **run) == plain
    (loop,) = chooser._loops.values()
    (traced,) = loop._list_all_concrete_functions()
    compiled = [f.signature.name for f in traced.graph.as_graph_def().library.function
                if f.attr["_XlaMustCompile"].b]
    assert len(compiled) == 1 and "choose" in compiled[0], compiled


def test_rows_that_share_a_prompt_read_it_once_and_generate_what_separate_reads_do(
        monkeypatch):
    """``nsamples`` texts from one prefix: the prompt's pass runs on one row and its
    cache is tiled (the pass costs one row's whatever the batch), and every token
    drawn is the one the rows read apart would have drawn."""
    model = GPT2(hparams_for("tiny", n_vocab=50), seed=1)
    shared = Decoder(model, jit_compile=False)
    rows = shared.generate([[3, 4, 5]] * 3, 20, WARM, seed=4)
    assert [key[0] for key in shared._prefill] == [1]  # read as one row
    assert len(set(map(tuple, rows))) == 3  # three draws, not one copied
    different = Decoder(model, jit_compile=False)
    different.generate([[3, 4, 5], [3, 4, 6], [3, 4, 5]], 5, WARM)
    assert [key[0] for key in different._prefill] == [3]  # rows differ: read apart
    monkeypatch.setattr(GPT2, "tile_cache", None)  # a model that cannot tile: rows apart
    apart = Decoder(model, jit_compile=False)
    assert apart.generate([[3, 4, 5]] * 3, 20, WARM, seed=4) == rows
    assert [key[0] for key in apart._prefill] == [3]


def test_the_compiled_graphs_compute_no_shape_and_build_one_mask_per_pass():
    """Every shape in the prompt's pass and the decode loop is known when tracing, so
    each reshape's shape is a constant, not sliced and packed from ``tf.shape``: that
    arithmetic was half of each graph, and tracing and compiling the two were most of
    the wait for the first text (benchmarks/README.md). The attention mask, the same
    for every layer, is built once per pass (one causal comparison, one for the left
    padding)."""
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=128, n_head=2, n_layer=3)
    decoder = Decoder(GPT2(hp, seed=0), jit_compile=False)
    decoder.generate([[1, 2], [3]], 10, WARM)  # rows of two lengths: padded
    functions = [*decoder._prefill.values(), *decoder._loops.values()]
    assert len(functions) == 2
    for fn in functions:
        (traced,) = fn._list_all_concrete_functions()
        graph = traced.graph.as_graph_def()
        ops, computed = collections.Counter(), []
        for nodes in [graph.node, *(f.node_def for f in graph.library.function)]:
            kind = {node.name: node.op for node in nodes}
            ops.update(kind.values())
            computed += [node.input[1] for node in nodes if node.op == "Reshape"
                         and kind.get(node.input[1].split(":")[0]) != "Const"]
        assert ops["MatMul"] >= 4 * hp.n_layer and ops["Reshape"] >= 4 * hp.n_layer
        assert not computed, computed
        assert ops["LessEqual"] == ops["GreaterEqual"] == 1, ops


@pytest.mark.parametrize("batch", [1, 3])
def test_each_step_writes_the_cache_in_place_and_copies_none_of_it(batch):
    """Inside the compiled loop the only cache-sized results are the in-place writes
    of each layer's keys and values: no copy of a buffer, of a slice of one, or of
    one reshaped (a batch of 1 squeezed) at every step. A stacked keys-and-values
    buffer made XLA copy the whole cache at each step, which was most of a long
    generation's time at batch 8 (benchmarks/generate.py --length 1000)."""
    hp = HParams(n_vocab=97, n_ctx=64, n_embd=128, n_head=2, n_layer=2)
    body = _compiled_loop_body(Decoder(GPT2(hp, seed=0)), [[1, 2]] * batch, 40, WARM)
    buffer = batch * hp.n_head * hp.n_ctx * hp.head_size
    big = []
    for line in body:
        m = re.match(r"\s*(?:ROOT )?%\S+ = \w+\[([\d,]*)\]\S* ([\w-]+)\(", line)
        if m and m.group(2) not in ("parameter", "get-tuple-element", "bitcast", "tuple"):
            if math.prod(int(d) for d in m.group(1).split(",") if d) >= buffer:
                big.append(m.group(2))
    assert big == ["fusion"] * (2 * hp.n_layer), big  # one in-place update per buffer

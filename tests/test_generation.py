"""``generate`` / ``generate_to_file`` / ``load_gpt2``: gpt-2-simple's API over the compiled loop.

Most tests put a fake model in a session (``sess.set_model(fake, encoder,
folder)``, with the tiny vocabulary's encoder): the fake spells the token ids
of a known text, so what ``generate`` prints, returns and writes is known in
advance whatever the sampling rule. Seeds, streaming, repeated calls and two
models in one process use the tiny random GPT-2 (n_ctx 64, 277-token
vocabulary). The last tests compare with gpt-2-simple itself, run in a
subprocess (importing it turns off eager execution).
"""

import gc
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import gpt2_simple_plus as gpt2
import helpers
from gpt2_simple_plus.decoding import Decoder
from gpt2_simple_plus.encoder import get_encoder
from gpt2_simple_plus.generation import decoder_for
from gpt2_simple_plus.sampling import top_k_logits, top_p_logits
from helpers import FakeModel, assert_same_nucleus, np_top_k, np_top_p

TEXT = "The cat sat on the mat. Then the dog ran in, and out of the house.\nThe end!"
DELIM = "=" * 20 + "\n"


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return get_encoder(tiny_model_dir)


def fake_session(encoder, folder, text=TEXT, **fake_args):
    """A session holding a fake that spells ``text`` (see helpers.FakeModel).

    Its decoder is registered traced without XLA (the same loop, compiled 5x
    faster); generate() over XLA is tested with the tiny GPT-2 below."""
    sess = gpt2.start_tf_sess()
    fake = FakeModel(encoder.encode(text), encoder.n_vocab, **fake_args)
    sess.set_model(fake, encoder, folder)
    sess.decoder = Decoder(fake, jit_compile=False)
    return sess


@pytest.fixture(scope="module")
def spell(encoder, tiny_model_dir):
    return fake_session(encoder, tiny_model_dir)


def spelled(encoder, prefix, n, text=TEXT):
    """What the fake writes after ``prefix``: the prefix is positions 0..k-1,
    so the next tokens are the text's tokens k, k+1, ... (without a prefix,
    ``<|endoftext|>`` is position 0, so they start at token 1)."""
    ids = encoder.encode(text)
    k = len(encoder.encode(prefix)) if prefix else 1
    new = encoder.decode([ids[(k + i) % len(ids)] for i in range(n)])
    return (prefix or "") + new


def calls_during(sess, fn):
    before = int(sess.model.calls.numpy())
    result = fn()
    return result, int(sess.model.calls.numpy()) - before


class Child:
    """A Python process started now (``code`` with ``ARGS`` set) and awaited
    later, so the subprocess tests run while the others do."""

    def __init__(self, code, cwd, **args):
        prelude = f"import json\nARGS = json.loads({json.dumps(args)!r})\n"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
        self.out, self.err = (os.path.join(cwd, name) for name in ("stdout.txt", "stderr.txt"))
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code)],
                                         cwd=str(cwd), env=env, stdout=out, stderr=err)

    def result(self, timeout=600):
        """The child's ``RESULT {json}`` line, parsed."""
        self.proc.wait(timeout=timeout)
        with open(self.out) as f_out, open(self.err) as f_err:
            out, err = f_out.read(), f_err.read()
        assert self.proc.returncode == 0, f"child failed:\n{out[-2000:]}\n{err[-4000:]}"
        lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
        assert lines, f"no RESULT line in the child's output:\n{out[-2000:]}"
        return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def children(request, tmp_path_factory, tiny_model_dir):
    """The subprocesses of this module's selected tests, started at its first test."""
    selected = {item.name for item in request.session.items}
    started = {}
    if "test_seeds_repeat_in_a_fresh_process" in selected:
        started["seeded"] = Child(SEEDED_CHILD, tmp_path_factory.mktemp("seeded"),
                                  model_dir=os.path.dirname(tiny_model_dir))
    vocab_dir = helpers.real_vocab_dir()
    if "test_greedy_text_and_sampling_rules_match_gpt2_simple" in selected and vocab_dir:
        folder = tmp_path_factory.mktemp("gpt2_simple")
        np.save(folder / "logits.npy", INTEROP_LOGITS)
        started["gpt2_simple"] = Child(GPT2_SIMPLE_GENERATE, folder, folder=str(folder),
                                       vocab_dir=vocab_dir, **INTEROP_ARGS)
    yield started
    for child in started.values():
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait()


@pytest.fixture(autouse=True)
def _start_children_early(children):
    """Every test asks for ``children``, so they start with the first one."""


# ---------------------------------------------------------------------------
# What comes out.

@pytest.mark.parametrize("rule", [dict(temperature=0.0), dict(temperature=0.7),
                                  dict(top_k=1), dict(temperature=1.5, top_k=4),
                                  dict(temperature=1.0, top_p=0.9),
                                  dict(temperature=1.0, repetition_penalty=1.3)])
def test_the_fake_is_spelled_through_generate(spell, encoder, rule):
    texts = gpt2.generate(spell, prefix="The cat", length=9, return_as_list=True, seed=1, **rule)
    assert texts == [spelled(encoder, "The cat", 9)] == ["The cat sat on the mat."]
    texts = gpt2.generate(spell, length=4, return_as_list=True, seed=1, **rule)
    assert texts == [spelled(encoder, None, 4)] == ["he cat"]


def test_include_prefix(spell):
    kept = gpt2.generate(spell, prefix="The cat", length=9, return_as_list=True)
    dropped = gpt2.generate(spell, prefix="The cat", length=9, return_as_list=True,
                            include_prefix=False)
    assert kept == ["The cat sat on the mat."]
    assert dropped == [" sat on the mat."]
    # without a prefix there is nothing to drop
    assert gpt2.generate(spell, length=4, return_as_list=True, include_prefix=False) == ["he cat"]


@pytest.mark.parametrize("include_prefix", [True, False])
def test_truncate_cuts_at_the_first_appearance_and_stops_the_loop(spell, encoder, include_prefix):
    full = spelled(encoder, "The cat", 40)
    assert full.count(".") == 2
    texts, calls = calls_during(spell, lambda: gpt2.generate(
        spell, prefix="The cat", length=40, truncate=".", return_as_list=True,
        include_prefix=include_prefix))
    assert texts == ["The cat sat on the mat" if include_prefix else " sat on the mat"]
    new_tokens = len(encoder.encode(" sat on the mat."))  # up to and including the "."
    assert calls == 1 + new_tokens < 1 + 40, "the loop should stop at the truncate string"


def test_stop_strings_token_ids_and_lists(spell, encoder):
    dot = encoder.encode(".")[0]
    assert gpt2.generate(spell, prefix="The cat", length=40, stop=["dog", "mat"],
                         return_as_list=True) == ["The cat sat on the "]
    assert gpt2.generate(spell, prefix="The cat", length=40, stop="mat", truncate="sat",
                         return_as_list=True) == ["The cat "]
    texts, calls = calls_during(spell, lambda: gpt2.generate(
        spell, prefix="The cat", length=40, stop=dot, return_as_list=True))
    assert calls == 1 + len(encoder.encode(" sat on the mat."))
    # "truncate and stop (strings or token ids) end each sample at their first
    # appearance, which is left out of the text"
    assert texts == ["The cat sat on the mat"]


def test_a_stop_string_that_is_never_made_changes_nothing(spell, encoder):
    texts, calls = calls_during(spell, lambda: gpt2.generate(
        spell, prefix="The cat", length=12, truncate="zebra", return_as_list=True))
    assert texts == [spelled(encoder, "The cat", 12)]
    assert calls == 1 + 12


def test_list_prefixes_give_one_sample_each_and_nsamples_grows(spell, encoder):
    prefixes = ["The cat", "Then the dog", "A"]
    texts = gpt2.generate(spell, prefix=prefixes, length=3, return_as_list=True)
    assert texts == [spelled(encoder, p, 3) for p in prefixes]
    texts = gpt2.generate(spell, prefix=prefixes[:2], nsamples=5, batch_size=2, length=3,
                          return_as_list=True)
    assert texts == [spelled(encoder, prefixes[i % 2], 3) for i in range(5)]


def test_printed_output_is_gpt2_simples_format(spell, encoder, capsys):
    assert gpt2.generate(spell, prefix="The cat", length=9) is None
    assert capsys.readouterr().out == "The cat sat on the mat.\n"  # nsamples=1: no delimiter

    gpt2.generate(spell, prefix=["The cat", "A"], nsamples=3, batch_size=2, length=9)
    texts = [spelled(encoder, p, 9) for p in ["The cat", "A", "The cat"]]
    assert capsys.readouterr().out == "".join(f"{t}\n{DELIM}" for t in texts)

    gpt2.generate(spell, prefix="The cat", nsamples=2, length=9, sample_delim="--\n")
    assert capsys.readouterr().out == "The cat sat on the mat.\n--\n" * 2

    assert gpt2.generate(spell, prefix="The cat", nsamples=2, length=9,
                         return_as_list=True) == ["The cat sat on the mat."] * 2
    assert capsys.readouterr().out == ""


def test_destination_path_and_generate_to_file(spell, encoder, tmp_path, capsys):
    path = tmp_path / "out.txt"
    assert gpt2.generate(spell, prefix="The cat", nsamples=3, batch_size=2, length=9,
                         destination_path=str(path)) is None
    assert path.read_text(encoding="utf-8") == f"The cat sat on the mat.\n{DELIM}" * 3
    gpt2.generate_to_file(spell, prefix="The cat", length=9, destination_path=str(path))
    assert path.read_text(encoding="utf-8") == "The cat sat on the mat.\n"
    gpt2.generate_to_file(spell, prefix="Then the dog", nsamples=2, length=3, truncate="!",
                          destination_path=str(path), sample_delim="##\n")
    assert path.read_text(encoding="utf-8") == f"{spelled(encoder, 'Then the dog', 3)}\n##\n" * 2
    assert capsys.readouterr().out == ""


def test_repetition_penalty_counts_the_prefix(encoder, tiny_model_dir):
    a, b = encoder.encode("a")[0], encoder.encode("b")[0]
    base = np.zeros(encoder.n_vocab, np.float32)
    base[a], base[b] = 3.0, 2.5
    sess = fake_session(encoder, tiny_model_dir, text="x", score=0.0, base=base)
    greedy = dict(length=2, temperature=0.0, return_as_list=True)
    assert gpt2.generate(sess, prefix="a", **greedy) == ["aaa"]
    assert gpt2.generate(sess, prefix="a", repetition_penalty=2.0, **greedy) == ["aba"]
    assert gpt2.generate(sess, prefix="c", repetition_penalty=2.0, **greedy) == ["cab"]


# ---------------------------------------------------------------------------
# Streaming.

STREAM_CASES = [dict(prefix="The cat"), dict(prefix="The cat", include_prefix=False), dict(),
                dict(prefix="The cat", truncate="."), dict(prefix="Then", truncate="g ran"),
                dict(prefix="The cat", truncate="mat", include_prefix=False)]


@pytest.mark.parametrize("args", STREAM_CASES)
def test_stream_adds_up_to_the_text(spell, args):
    whole = gpt2.generate(spell, length=30, return_as_list=True, seed=3, **args)[0]
    pieces = list(gpt2.generate(spell, length=30, stream=True, seed=3, **args))
    assert "".join(pieces) == whole
    assert len([p for p in pieces if p]) > 3  # really piece by piece


def test_stream_with_a_stop_token_id_adds_up_to_the_text(spell, encoder):
    args = dict(prefix="The cat", length=30, stop=encoder.encode(".")[0])
    whole = gpt2.generate(spell, return_as_list=True, **args)
    assert whole == ["The cat sat on the mat"]
    assert "".join(gpt2.generate(spell, stream=True, **args)) == whole[0]


@pytest.mark.parametrize("args", [dict(), dict(prefix="X", include_prefix=False),
                                  dict(prefix="\nX")])
def test_stream_strips_leading_newlines_like_the_text(encoder, tiny_model_dir, args):
    sess = fake_session(encoder, tiny_model_dir, text="X\n\n\nHello there")
    whole = gpt2.generate(sess, length=8, return_as_list=True, **args)[0]
    assert not whole.startswith("\n")
    assert "".join(gpt2.generate(sess, length=8, stream=True, **args)) == whole


def test_callback_receives_the_pieces(spell):
    pieces = []
    texts = gpt2.generate(spell, prefix="The cat", length=12, callback=pieces.append,
                          return_as_list=True, seed=2)
    assert len(pieces) > 3 and "".join(pieces) == texts[0]
    assert texts == gpt2.generate(spell, prefix="The cat", length=12, return_as_list=True,
                                  seed=2)
    streamed = []
    assert "".join(gpt2.generate(spell, prefix="The cat", length=12, stream=True,
                                 callback=streamed.append)) == texts[0]
    assert streamed == pieces


# ---------------------------------------------------------------------------
# Longer than the context (n_ctx 64).

def test_long_prefix_and_long_length_keep_producing(encoder, tiny_model_dir):
    # Digits are one token each in the tiny vocabulary: characters count tokens.
    sess = fake_session(encoder, tiny_model_dir, text="0123456789")
    prefix = "0123456789" * 10
    assert len(encoder.encode(prefix)) == 100
    (text,), calls = calls_during(sess, lambda: gpt2.generate(
        sess, prefix=prefix, length=150, return_as_list=True))
    assert text.startswith(prefix) and len(text) == 250 and text.isdigit()
    assert calls > 150 + 3  # 150 steps, and more than three windows re-read the context
    cut = gpt2.generate(sess, prefix=prefix, length=150, return_as_list=True,
                        include_prefix=False, truncate="5")
    assert cut == [text[100:].split("5")[0]]


# ---------------------------------------------------------------------------
# The tiny random GPT-2: seeds, streams, repeated calls, two models.

@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name="tiny", model_dir=os.path.dirname(tiny_model_dir))
    return sess


SAMPLE = dict(prefix="The cat", length=20, temperature=1.0, return_as_list=True)


def test_seeds_repeat_within_a_process(tiny):
    first = gpt2.generate(tiny, seed=7, nsamples=3, batch_size=2, **SAMPLE)
    assert len(first) == 3 and len(set(first)) == 3
    assert all(t.startswith("The cat") and len(t) > 20 for t in first)
    assert gpt2.generate(tiny, seed=7, nsamples=3, batch_size=2, **SAMPLE) == first
    other = gpt2.generate(tiny, seed=8, nsamples=3, batch_size=2, **SAMPLE)
    assert all(a != b for a, b in zip(first, other))
    unseeded = [gpt2.generate(tiny, **SAMPLE)[0] for _ in range(2)]
    assert unseeded[0] != unseeded[1]


SEEDED_CHILD = """
import json
import gpt2_simple_plus as gpt2
sess = gpt2.start_tf_sess()
gpt2.load_gpt2(sess, model_name="tiny", model_dir=ARGS["model_dir"])
texts = gpt2.generate(sess, prefix="The cat", length=20, temperature=1.0, return_as_list=True,
                      seed=7, nsamples=3, batch_size=2)
print("RESULT " + json.dumps(texts))
"""


@pytest.mark.slow
def test_seeds_repeat_in_a_fresh_process(tiny, children):
    here = gpt2.generate(tiny, seed=7, nsamples=3, batch_size=2, **SAMPLE)
    assert children["seeded"].result() == here


@pytest.mark.parametrize("include_prefix", [True, False])
def test_stream_of_sampled_text_adds_up_to_the_text(tiny, include_prefix):
    args = dict(SAMPLE, include_prefix=include_prefix, seed=11)
    whole = gpt2.generate(tiny, **args)[0]
    del args["return_as_list"]
    pieces = list(gpt2.generate(tiny, stream=True, **args))
    assert "".join(pieces) == whole and len(pieces) > 5


def vm_rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    pytest.skip("no VmRSS in /proc/self/status")


def test_repeated_calls_neither_retrace_nor_grow(tiny):
    decoder = decoder_for(tiny.model)
    for t in (1.0, 0.5):  # warm-up: every compiled shape exists, allocator settled
        for _ in range(5):
            gpt2.generate(tiny, **dict(SAMPLE, temperature=t))
    traces = decoder.traces
    gc.collect()
    rss = vm_rss_kb()
    texts = set()
    for i in range(50):
        # temperature, top_p's value and the seed are run-time inputs: no new trace
        texts.add(gpt2.generate(tiny, **dict(SAMPLE, temperature=0.5 + i / 50, seed=i))[0])
    gc.collect()
    grown = vm_rss_kb() - rss
    assert decoder.traces == traces
    assert len(texts) == 50
    assert grown < 4 * 1024, f"RSS grew by {grown} kB over 50 calls"  # measured: 0 kB


def test_two_models_in_one_process(tiny, tiny_model_dir, tmp_path):
    other_dir = tmp_path / "models" / "tiny"
    helpers.make_model_dir(str(other_dir), seed=1)
    other = gpt2.start_tf_sess()
    gpt2.load_gpt2(other, model_name="tiny", model_dir=str(tmp_path / "models"))
    assert other.model is not tiny.model

    args = dict(SAMPLE, seed=5)
    alone_a = gpt2.generate(tiny, **args)
    alone_b = gpt2.generate(other, **args)
    assert alone_a != alone_b
    for _ in range(2):
        assert gpt2.generate(other, **args) == alone_b
        assert gpt2.generate(tiny, **args) == alone_a
    assert decoder_for(tiny.model) is not decoder_for(other.model)

    fresh = gpt2.reset_session(other)
    assert other.model is None and fresh.model is None and fresh is not other
    gpt2.load_gpt2(fresh, model_name="tiny", model_dir=os.path.dirname(tiny_model_dir))
    for name, value in fresh.model.weights.items():  # tiny's weights, in a new model
        np.testing.assert_array_equal(value.numpy(), tiny.model.weights[name].numpy())
    assert fresh.model is not tiny.model


# ---------------------------------------------------------------------------
# Errors.

def test_an_empty_session_without_a_run_lists_the_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(gpt2.ModelNotFoundError) as err:
        gpt2.generate(gpt2.start_tf_sess())
    assert "run1" in str(err.value) and "finetune" in str(err.value)
    for run in ("shakespeare", "poems"):
        (tmp_path / "checkpoint" / run).mkdir(parents=True)
    with pytest.raises(gpt2.ModelNotFoundError, match="runs found: poems, shakespeare"):
        gpt2.generate(gpt2.start_tf_sess())


def test_load_gpt2_for_a_missing_model_says_to_download_it(tmp_path):
    with pytest.raises(gpt2.ModelNotFoundError,
                       match=r"download_gpt2\(model_name='124M'.*\) first"):
        gpt2.load_gpt2(gpt2.start_tf_sess(), model_name="124M", model_dir=str(tmp_path))


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(top_p=1.5), dict(top_p=-0.1),
                                 dict(top_k=-3), dict(repetition_penalty=0.0), dict(length=0),
                                 dict(nsamples=0)])
def test_bad_sampling_arguments(spell, bad):
    with pytest.raises(gpt2.GenerationError):
        gpt2.generate(spell, prefix="The cat", **{"length": 5, **bad})


@pytest.mark.parametrize("prefix", [123, 4.5, b"The cat", [1, 2], ["The cat", 5], [""]])
def test_a_prefix_that_is_not_text(spell, prefix):
    with pytest.raises(gpt2.GenerationError, match="prefix"):
        gpt2.generate(spell, prefix=prefix, length=5)


# ---------------------------------------------------------------------------
# Against gpt-2-simple 0.8.1, in a subprocess.

GPT2_SIMPLE_GENERATE = """
import contextlib, io, json, os, shutil
import numpy as np
import tensorflow as tf
import gpt_2_simple as gpt2
from gpt_2_simple.src import model, sample

# A random tiny model made and saved by gpt-2-simple's own code, weights
# sharpened so greedy decoding picks a varied sequence.
tf.compat.v1.disable_eager_execution()
tf.compat.v1.set_random_seed(1234)
hparams = model.default_hparams()
hparams.override_from_dict(ARGS["hparams"])
X = tf.compat.v1.placeholder(tf.int32, [1, None])
model.model(hparams=hparams, X=X)
sess = gpt2.start_tf_sess()
sess.run(tf.compat.v1.global_variables_initializer())
rng = np.random.default_rng(0)
for v in tf.compat.v1.global_variables():
    value = sess.run(v)
    leaf = v.op.name.rsplit("/", 1)[1]
    if leaf == "g":
        value = 1 + 0.1 * rng.standard_normal(value.shape)
    elif leaf == "b":
        value = 0.1 * rng.standard_normal(value.shape)
    else:
        value = value * 8
    sess.run(v.assign(value.astype(np.float32)))
run = os.path.join("checkpoint", "run1")
os.makedirs(run)
with open(os.path.join(run, "hparams.json"), "w") as f:
    json.dump(ARGS["hparams"], f)
for name in ("encoder.json", "vocab.bpe"):
    shutil.copyfile(os.path.join(ARGS["vocab_dir"], name), os.path.join(run, name))
tf.compat.v1.train.Saver().save(sess, os.path.join(run, "model"), global_step=0)

# The sampling rules themselves, on the parent's random logits.
logits = tf.constant(np.load("logits.npy"))
rules = {f"k{k}": sample.top_k_logits(logits, k) for k in ARGS["ks"]}
rules.update({f"p{p}": sample.top_p_logits(logits, p) for p in ARGS["ps"]})
np.savez("rules.npz", **sess.run(rules))

# generate() as a user calls it, on a fresh session.
sess = gpt2.reset_session(sess)
gpt2.load_gpt2(sess, run_name="run1")
common = dict(run_name="run1", length=20, top_k=1, seed=0)
prefix = ARGS["prefix"]
result = {"folder": ARGS["folder"]}
result["none"] = gpt2.generate(sess, return_as_list=True, **common)[0]
result["prefix"] = gpt2.generate(sess, prefix=prefix, return_as_list=True, **common)[0]

def pick_truncate(text, start):
    # three characters of the continuation that appear nowhere before it
    for i in range(start + 2, len(text) - 3):
        t = text[i:i + 3]
        if text.find(t) == i and t not in prefix:
            return t
    raise SystemExit("no truncate string found in " + repr(text))

t1 = pick_truncate(result["prefix"], len(prefix))
t2 = pick_truncate(result["none"], 0)
result["truncates"] = [t1, t2]
for key, args in {"cut": dict(prefix=prefix, truncate=t1),
                  "cut_no_prefix": dict(prefix=prefix, truncate=t1, include_prefix=False),
                  "cut_none": dict(truncate=t2)}.items():
    result[key] = gpt2.generate(sess, return_as_list=True, **args, **common)[0]
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    gpt2.generate(sess, prefix=prefix, nsamples=2, batch_size=1, truncate=t1, **common)
result["printed"] = printed.getvalue()
gpt2.generate(sess, prefix=prefix, nsamples=2, batch_size=1, destination_path="theirs.txt",
              **common)
print("RESULT " + json.dumps(result))
"""

INTEROP_LOGITS = (np.random.default_rng(0).standard_normal((8, 500)) * 3).astype(np.float32)
INTEROP_ARGS = dict(hparams=dict(n_vocab=50257, n_ctx=64, n_embd=32, n_head=2, n_layer=2),
                    prefix="The quick brown fox", ks=[1, 2, 7, 50],
                    ps=[1e-7, 0.05, 0.5, 0.9, 0.999999, 1.0])


@pytest.mark.slow
def test_greedy_text_and_sampling_rules_match_gpt2_simple(children, gpt2_vocab_dir, capsys,
                                                          monkeypatch):
    theirs = children["gpt2_simple"].result()
    folder = theirs["folder"]
    logits, prefix = INTEROP_LOGITS, INTEROP_ARGS["prefix"]

    # the rules: bit for bit, except a top-p cut within rounding of p
    rules = np.load(os.path.join(folder, "rules.npz"))
    for k in INTEROP_ARGS["ks"]:
        ours = top_k_logits(tf.constant(logits), k).numpy()
        np.testing.assert_array_equal(ours, rules[f"k{k}"])
        np.testing.assert_array_equal(ours, np_top_k(logits, k))
    for p in INTEROP_ARGS["ps"]:
        ours = top_p_logits(tf.constant(logits), p).numpy()
        assert_same_nucleus(ours, rules[f"p{p}"], logits, p)
        assert_same_nucleus(np_top_p(logits, p), rules[f"p{p}"], logits, p)
        if p <= 0.9:
            np.testing.assert_array_equal(ours, rules[f"p{p}"])

    # generate(), on the checkpoint gpt-2-simple saved
    sess = gpt2.start_tf_sess()
    monkeypatch.chdir(folder)
    common = dict(run_name="run1", length=20, top_k=1, return_as_list=True)
    assert len(set(theirs["none"])) > 8 and theirs["prefix"].startswith(prefix)
    assert gpt2.generate(sess, **common) == [theirs["none"]]
    assert gpt2.generate(sess, prefix=prefix, **common) == [theirs["prefix"]]
    t1, t2 = theirs["truncates"]
    assert gpt2.generate(sess, prefix=prefix, truncate=t1, **common) == [theirs["cut"]]
    assert gpt2.generate(sess, prefix=prefix, truncate=t1, include_prefix=False,
                         **common) == [theirs["cut_no_prefix"]]
    assert gpt2.generate(sess, truncate=t2, **common) == [theirs["cut_none"]]
    assert len(theirs["cut"]) < len(theirs["prefix"])

    del common["return_as_list"]
    capsys.readouterr()
    gpt2.generate(sess, prefix=prefix, nsamples=2, batch_size=1, truncate=t1, **common)
    assert capsys.readouterr().out == theirs["printed"]
    gpt2.generate(sess, prefix=prefix, nsamples=2, batch_size=1,
                  destination_path="ours.txt", **common)
    with open("ours.txt", "rb") as ours, open("theirs.txt", "rb") as theirs_file:
        assert ours.read() == theirs_file.read()

"""Interoperability with gpt-2-simple 0.8.1, run in subprocesses.

Importing gpt-2-simple turns off eager execution for the whole process, so it
only ever runs in a child process (``helpers.run_python``); each child writes
its logits to ``logits.npy`` and prints one ``RESULT {json}`` line.
"""

import functools
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import helpers
from helpers import FINETUNE, PROMPT, TOKENS, run_gpt2_simple
from gpt2_simple_plus.checkpoints import latest_checkpoint, read_counter, save_checkpoint
from gpt2_simple_plus.loading import load_model
from gpt2_simple_plus.hparams import hparams_for

pytestmark = pytest.mark.slow

TINY = dict(n_vocab=50257, n_ctx=64, n_embd=32, n_head=2, n_layer=2)


def greedy(model, prompt, length):
    """Greedy decoding with the model's key/value cache: the prompt in one pass,
    then one token at a time. Returns the new tokens and the smallest gap
    between the best and second-best logit (how close a tie came)."""
    cache = model.empty_cache(batch_size=1, length=len(prompt) + length)
    h, cache = model.forward([prompt], cache=cache, pos=0)
    tokens, gap = [], np.inf
    for i in range(length):
        logits = model.logits(h)[0, -1].numpy()
        top2 = np.sort(logits)[-2:]
        gap = min(gap, float(top2[1] - top2[0]))
        tokens.append(int(np.argmax(logits)))
        if i + 1 < length:
            h, cache = model.forward([[tokens[-1]]], cache=cache, pos=len(prompt) + i)
    return tokens, gap


@functools.lru_cache(maxsize=1)
def _decoder(vocab_dir):
    with open(os.path.join(vocab_dir, "encoder.json"), encoding="utf-8") as f:
        decoder = {i: s for s, i in json.load(f).items()}
    byte_decoder = {c: b for b, c in helpers.bytes_to_unicode().items()}
    return decoder, byte_decoder


def openai_decode(vocab_dir, ids):
    """OpenAI's ``Encoder.decode``: token strings joined, mapped back to bytes, UTF-8."""
    decoder, byte_decoder = _decoder(vocab_dir)
    text = "".join(decoder[i] for i in ids)
    return bytearray(byte_decoder[c] for c in text).decode("utf-8", errors="replace")


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------------------
# (a) A checkpoint made by gpt-2-simple's own graph loads here.

MAKE_CHECKPOINTS = """
import os, shutil
import numpy as np
import tensorflow as tf
from gpt_2_simple.src import model, sample

tf.compat.v1.disable_eager_execution()
tf.compat.v1.set_random_seed(1234)
hparams = model.default_hparams()
hparams.override_from_dict(ARGS["hparams"])

X = tf.compat.v1.placeholder(tf.int32, [1, None])
logits = model.model(hparams=hparams, X=X)["logits"]
context = tf.compat.v1.placeholder(tf.int32, [1, None])
sequence = sample.sample_sequence(hparams=hparams, length=ARGS["length"], context=context,
                                  batch_size=1, temperature=1, top_k=1)
saver = tf.compat.v1.train.Saver()
result = {}

def save_run(sess, run_name):
    run = os.path.join("checkpoint", run_name)
    os.makedirs(run)
    with open(os.path.join(run, "hparams.json"), "w") as f:
        json.dump(ARGS["hparams"], f)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(os.path.join(ARGS["vocab_dir"], name), os.path.join(run, name))
    saver.save(sess, os.path.join(run, "model"), global_step=0)
    with open(os.path.join(run, "counter"), "w") as f:
        f.write("0\\n")
    np.save(run_name + "-logits.npy", sess.run(logits, {X: [ARGS["tokens"]]}))
    out = sess.run(sequence, {context: [ARGS["prompt"]]})
    result[run_name] = out[0, len(ARGS["prompt"]):].tolist()

with tf.compat.v1.Session() as sess:
    sess.run(tf.compat.v1.global_variables_initializer())
    save_run(sess, "run1")  # gpt-2-simple's own random initialisation
    # Its init (std 0.02) makes greedy decoding repeat one token; sharpened
    # weights make it pick a varied sequence, which tests the cache harder.
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
    save_run(sess, "run2")
print("RESULT " + json.dumps(result))
"""


def test_checkpoints_made_by_gpt2_simple_load_and_decode_the_same(tmp_path, gpt2_vocab_dir):
    result, _ = run_gpt2_simple(MAKE_CHECKPOINTS, tmp_path, hparams=TINY,
                                vocab_dir=gpt2_vocab_dir, tokens=TOKENS, prompt=PROMPT, length=20)
    for run_name in ("run1", "run2"):
        run = str(tmp_path / "checkpoint" / run_name)
        assert os.path.basename(latest_checkpoint(run)) == "model-0"
        assert read_counter(run) == 0
        model = load_model(run)
        assert model.hparams == hparams_for("tiny")

        theirs = np.load(tmp_path / f"{run_name}-logits.npy")
        ours = model([TOKENS]).numpy()
        assert ours.shape == theirs.shape == (1, len(TOKENS), 50257)
        assert np.std(theirs) > 0.01  # really gpt-2-simple's random weights, not zeros
        assert max_diff(ours, theirs) <= 1e-4, run_name

        tokens, gap = greedy(model, PROMPT, 20)
        assert len(result[run_name]) == 20
        assert tokens == result[run_name], f"{run_name}; closest tie: {gap:.2e}"
    assert len(set(result["run2"])) >= 5  # a varied sequence, not one token repeated


# ---------------------------------------------------------------------------
# (b) A run saved here loads in gpt-2-simple's load_gpt2 and generates the same text.

LOAD_AND_GENERATE = """
import numpy as np
import tensorflow as tf
import gpt_2_simple as gpt2
from gpt_2_simple.src import encoder, model

sess = gpt2.start_tf_sess()
gpt2.load_gpt2(sess, run_name="run1", checkpoint_dir="checkpoint")
hparams = model.default_hparams()
with open("checkpoint/run1/hparams.json") as f:
    hparams.override_from_dict(json.load(f))
X = tf.compat.v1.placeholder(tf.int32, [1, None])
logits = model.model(hparams=hparams, X=X, reuse=True)["logits"]  # the variables load_gpt2 restored
np.save("logits.npy", sess.run(logits, {X: [ARGS["tokens"]]}))
text = gpt2.generate(sess, run_name="run1", checkpoint_dir="checkpoint", prefix=ARGS["prefix"],
                     length=20, temperature=1.0, top_k=1, seed=0, return_as_list=True)[0]
enc = encoder.get_encoder("checkpoint/run1")
print("RESULT " + json.dumps({"text": text, "prefix_tokens": enc.encode(ARGS["prefix"])}))
"""


decisive_weights = helpers.decisive_weights


def test_run_saved_here_loads_in_gpt2_simple_and_generates_the_same_text(tmp_path,
                                                                          gpt2_vocab_dir):
    hparams = hparams_for("tiny")
    run = str(tmp_path / "checkpoint" / "run1")
    save_checkpoint(run, decisive_weights(hparams, 3), 5, hparams=hparams)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(os.path.join(gpt2_vocab_dir, name), os.path.join(run, name))

    prefix = "The quick brown fox"
    result, stdout = run_gpt2_simple(LOAD_AND_GENERATE, tmp_path, tokens=TOKENS, prefix=prefix)
    assert "Loading checkpoint checkpoint/run1/model-5" in stdout

    model = load_model(run)
    theirs = np.load(tmp_path / "logits.npy")
    ours = model([TOKENS]).numpy()
    assert np.std(ours) > 0.5
    assert max_diff(ours, theirs) <= 1e-4

    prefix_tokens = result["prefix_tokens"]
    assert openai_decode(gpt2_vocab_dir, prefix_tokens) == prefix
    tokens, gap = greedy(model, prefix_tokens, 20)
    # generate() decodes the first prefix token apart from the rest, then strips newlines
    expected = (openai_decode(gpt2_vocab_dir, prefix_tokens[:1])
                + openai_decode(gpt2_vocab_dir, prefix_tokens[1:] + tokens)).lstrip("\n")
    assert result["text"] == expected, f"closest tie: {gap:.2e}"
    assert len(result["text"]) > len(prefix)


# ---------------------------------------------------------------------------
# (c) A run written by gpt-2-simple's finetune loads here.


def test_run_written_by_gpt2_simple_finetune_loads_here(tmp_path, gpt2_vocab_dir):
    # gpt-2-simple's finetune always samples 1024-token windows, so n_ctx must be 1024.
    helpers.make_model_dir(str(tmp_path / "models" / "tiny"), vocab_dir=gpt2_vocab_dir,
                           n_ctx=1024, seed=5)
    sentences = ["The cat sat on the mat.", "A dog ran in the park!", "Is it raining today?",
                 "We went to the sea and back."]
    (tmp_path / "data.txt").write_text("\n".join(sentences * 80) + "\n", encoding="utf-8")

    _, stdout = run_gpt2_simple(FINETUNE, tmp_path, tokens=TOKENS)
    assert "[2 | " in stdout and "loss=" in stdout

    run = str(tmp_path / "checkpoint" / "run1")
    assert read_counter(run) == 2
    assert os.path.basename(latest_checkpoint(run)) == "model-2"
    model = load_model(run)
    assert model.hparams == hparams_for("tiny", n_ctx=1024)
    theirs = np.load(tmp_path / "logits.npy")
    ours = model([TOKENS]).numpy()
    assert max_diff(ours, theirs) <= 1e-4
    # the two Adam steps moved the weights away from the base model
    base = load_model(str(tmp_path / "models" / "tiny"))
    assert max_diff(base.weights["model/wte"], model.weights["model/wte"]) > 1e-5
    assert max_diff(base([TOKENS]).numpy(), ours) > 1e-4
    # and this process's decoding runs on the loaded run
    assert len(greedy(model, PROMPT, 3)[0]) == 3
    assert tf.executing_eagerly()

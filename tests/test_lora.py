"""LoRA: adapters beside a frozen base, the merge, the run's files, resuming, and bad values."""

import gc
import os
import textwrap
import weakref

import numpy as np
import pytest
import tensorflow as tf

import helpers
import gpt2_simple_plus as gpt2
from gpt2_simple_plus import checkpoints, loading, lora, training
from gpt2_simple_plus.losses import lm_loss
from gpt2_simple_plus.errors import CheckpointError, TrainingError
from gpt2_simple_plus.hparams import hparams_for
from gpt2_simple_plus.model import GPT2, random_weights
from gpt2_simple_plus.optimizers import make_optimizer

HP = hparams_for("tiny", n_vocab=100, n_ctx=32)
TOKENS = np.random.default_rng(0).integers(0, 100, (3, 2, 16)).astype(np.int32)
TEXT = "the cat sat on the mat. " * 40


def lora_model(rank=4, weights=None, base_dtype="float32", **kwargs):
    model = GPT2(HP, weights or random_weights(HP, 0), trainable=False, matrix_dtype=base_dtype)
    model.lora = lora.Adapters(HP, rank, seed=1, **kwargs)
    return model


def train(model, steps=3, **kwargs):
    opt = make_optimizer("adam", model.lora.variables_by_name(), fused=not kwargs.get("jit"))
    step = training.make_train_step(model, opt, recompute=kwargs.get("recompute", False),
                                    jit_compile=kwargs.get("jit", False))
    losses = [float(step(tf.constant(TOKENS), tf.constant(1e-2))) for _ in range(steps)]
    return losses, step


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# -- the model ----------------------------------------------------------------------

def test_at_step_zero_the_logits_are_the_base_models():
    weights = random_weights(HP, 0)
    base, model = GPT2(HP, weights), lora_model(weights=weights)
    np.testing.assert_array_equal(model(TOKENS[0]).numpy(), base(TOKENS[0]).numpy())
    # the decoding path (key/value cache) too
    cache = model.empty_cache(2, 16)
    h, _ = model.forward(TOKENS[0], cache=cache, pos=0)
    np.testing.assert_array_equal(model.logits(h).numpy(), base(TOKENS[0]).numpy())
    # ... and only because B starts at zero: a non-zero B moves them
    model.lora.B["model/h1/mlp/c_proj"].assign(tf.random.normal([4, HP.n_embd], seed=0) * 0.1)
    assert max_diff(model(TOKENS[0]), base(TOKENS[0])) > 1e-3


def test_training_changes_only_the_adapters_and_the_merge_is_base_plus_update():
    weights = random_weights(HP, 0)
    model = lora_model(weights=weights)
    assert all(not v.trainable for v in model.weights.values())
    with tf.GradientTape() as tape:
        lm_loss(model, TOKENS[0])
    watched = {v.name.split(":")[0] for v in tape.watched_variables()}
    assert watched == set(model.lora.variables_by_name())  # no gradients for the base

    losses, _ = train(model, steps=5)
    assert losses[-1] < losses[0]
    for name, value in weights.items():  # the base did not move, not even by a rounding
        np.testing.assert_array_equal(model.weights[name].numpy(), value.reshape(
            model.weights[name].shape))
    assert all(np.abs(b.numpy()).max() > 1e-3 for b in model.lora.B.values())
    moved_a = [a for a in model.lora.A.values()]
    assert all(np.abs(a.numpy()).max() > 0 for a in moved_a)

    merged = lora.MergedWeights(weights, model.lora)
    scale = model.lora.alpha / model.lora.rank
    assert scale == 2.0  # alpha defaults to 2 * rank
    for name in weights:
        prefix = name[:-2]
        if name.endswith("/w") and prefix in model.lora.A:
            a, b = model.lora.A[prefix].numpy(), model.lora.B[prefix].numpy()
            expected = weights[name] + scale * (a @ b)[None]
        else:
            expected = weights[name]
        np.testing.assert_allclose(merged[name], expected, rtol=0, atol=1e-6)
    assert max_diff(GPT2(HP, merged)(TOKENS[0]), model(TOKENS[0])) < 1e-4



def test_merging_in_place_writes_base_plus_update_into_the_same_variables(tmp_path):
    weights = random_weights(HP, 0)
    checkpoints.save_pretrained_layout(str(tmp_path), weights, HP)
    model = lora_model(weights=weights, targets=["attn", "mlp/c_fc"])
    train(model, steps=3)
    expected = dict(lora.MergedWeights(weights, model.lora).items())
    logits = model(TOKENS[0]).numpy()
    variables = dict(model.weights)
    assert lora.merge_in_place(model, str(tmp_path / "model.ckpt")) is model
    assert model.lora is None and model.weights == variables  # the same variables
    for name, var in model.weights.items():
        np.testing.assert_array_equal(var.numpy(), expected[name].reshape(var.shape))
    assert max_diff(weights["model/h0/attn/c_attn/w"], model.weights["model/h0/attn/c_attn/w"]) \
        > 1e-4  # the update is in, and nothing else moved:
    np.testing.assert_array_equal(model.weights["model/h1/mlp/c_proj/w"].numpy(),
                                  weights["model/h1/mlp/c_proj/w"])
    assert max_diff(model(TOKENS[0]), logits) < 1e-4

def test_targets_pick_the_projections():
    assert lora.target_layers(lora.LAYERS) == lora.LAYERS
    assert lora.target_layers("c_proj") == ("attn/c_proj", "mlp/c_proj")
    assert lora.target_layers(["mlp"]) == ("mlp/c_fc", "mlp/c_proj")
    model = lora_model(targets=["attn/c_attn"])
    assert sorted(model.lora.A) == ["model/h0/attn/c_attn", "model/h1/attn/c_attn"]
    train(model, steps=2)
    merged = lora.MergedWeights(random_weights(HP, 0), model.lora)
    assert max_diff(merged["model/h0/mlp/c_fc/w"], random_weights(HP, 0)["model/h0/mlp/c_fc/w"]) \
        == 0
    assert max_diff(GPT2(HP, merged)(TOKENS[0]), model(TOKENS[0])) < 1e-4


def test_a_bfloat16_base_with_memory_saving_gradients():
    weights = random_weights(HP, 0)
    model = lora_model(weights=weights, base_dtype="bfloat16")
    dtypes = {n: v.dtype for n, v in model.weights.items()}
    assert dtypes["model/wte"] == tf.bfloat16 and dtypes["model/h0/attn/c_attn/w"] == tf.bfloat16
    assert dtypes["model/h0/ln_1/g"] == tf.float32 and dtypes["model/h0/mlp/c_fc/b"] == tf.float32
    assert all(v.dtype == tf.float32 for v in model.lora.variables_by_name().values())
    assert max_diff(model(TOKENS[0]), GPT2(HP, weights)(TOKENS[0])) < 0.05
    losses, _ = train(model, steps=5, recompute=True)
    assert losses[-1] < losses[0]


def test_the_lora_train_step_compiles_with_xla():
    """What a TPUStrategy needs: the whole step (a bfloat16 base, memory-saving gradients)
    through XLA, and the same losses as TensorFlow's own kernels."""
    plain, _ = train(lora_model(base_dtype="bfloat16"), steps=3, recompute=True)
    xla, step = train(lora_model(base_dtype="bfloat16"), steps=3, recompute=True, jit=True)
    hlo = step.experimental_get_compiler_ir(tf.constant(TOKENS), tf.constant(1e-2))(stage="hlo")
    assert "HloModule" in hlo
    np.testing.assert_allclose(xla, plain, rtol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=0), "lora_rank must be a whole number of at least 1"),
    (dict(rank=2.5), "lora_rank must be a whole number"),
    (dict(rank=True), "lora_rank must be a whole number"),
    (dict(rank=33), "lora_rank=33 is larger than attn/c_attn's smaller side \\(32"),
    (dict(rank=4, targets=["q_proj"]), "Unknown LoRA target 'q_proj'"),
    (dict(rank=4, targets=[]), "lora_targets is empty"),
    (dict(rank=4, alpha=0), "lora_alpha must be a positive number"),
    (dict(rank=4, alpha="big"), "lora_alpha must be a number"),
    (dict(rank=4, base_dtype="int8"), "Unknown lora_base_dtype 'int8'"),
    (dict(rank=4, save="all"), "Unknown lora_save 'all'"),
])
def test_bad_values_say_what_to_do(kwargs, message):
    with pytest.raises(TrainingError, match=message):
        lora.check_settings(HP, **kwargs)


# -- checkpoints in pieces ----------------------------------------------------------

def test_a_bundle_written_in_shards_reads_back_whole(tmp_path):
    weights = random_weights(HP, 3)
    run = str(tmp_path / "run")
    checkpoints.save_checkpoint(run, weights, 5, hparams=HP, shard_bytes=20_000)
    shards = sorted(n for n in os.listdir(run) if n.startswith("model-5.data-"))
    assert len(shards) > 3 and shards[-1].endswith(f"-of-{len(shards):05d}")
    assert checkpoints.latest_checkpoint(run) == os.path.join(run, "model-5")
    back = loading.read_checkpoint(run)
    assert all(np.array_equal(back[n], weights[n]) for n in weights)
    assert [n for n in os.listdir(run) if n.startswith(".")] == []  # no staging left
    # a missing shard makes the checkpoint incomplete, and rotation removes every shard
    os.rename(os.path.join(run, shards[1]), os.path.join(run, "aside"))
    assert checkpoints.list_checkpoints(run) == []
    os.rename(os.path.join(run, "aside"), os.path.join(run, shards[1]))
    checkpoints.save_checkpoint(run, weights, 6, hparams=HP)
    assert not any(n.startswith("model-5") for n in os.listdir(run))


# -- finetune -----------------------------------------------------------------------

@pytest.fixture
def work(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text(TEXT)
    return tmp_path


def tune(sess, tiny_model_dir, **kwargs):
    args = dict(model_name="tiny", model_dir=os.path.dirname(tiny_model_dir), steps=4,
                accumulate_gradients=1, learning_rate=3e-3, sample_every=0, save_every=0,
                print_every=1, seed=0, lora_rank=4)
    args.update(kwargs)
    gpt2.finetune(sess, "data.txt", **args)


def losses_printed(out):
    lines = [line for line in out.splitlines() if line.startswith("[") and " loss=" in line]
    return {int(line[1:].split(" ")[0]): line.split("loss=")[1].split(" ")[0] for line in lines}


def test_a_lora_run_saves_the_merged_model_and_its_adapters(work, tiny_model_dir, capsys):
    sess = gpt2.start_tf_sess()
    base_before = dict(loading.read_checkpoint(tiny_model_dir).items())
    tune(sess, tiny_model_dir, steps=6, save_every=3, max_checkpoints=None)
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("Saving")] == [
        "Saving checkpoint/run1/model-3", "Saving checkpoint/run1/model-6"]
    run = "checkpoint/run1"
    for step in (3, 6):
        for prefix in ("model", "lora", "train_state"):
            assert os.path.isfile(f"{run}/{prefix}-{step}.index"), (prefix, step)
    assert checkpoints.latest_checkpoint(run).endswith("model-6")

    base = dict(loading.read_checkpoint(tiny_model_dir).items())
    assert all(np.array_equal(base[n], base_before[n]) for n in base)  # the base is untouched
    merged = dict(loading.read_checkpoint(run).items())
    adapters = checkpoints.read_adapters(run, 6)
    assert int(adapters["lora/rank"]) == 4 and float(adapters["lora/alpha"]) == 8.0
    changed = 0
    for name in base:
        a = adapters.get(name[:-2] + "/lora_A") if name.endswith("/w") else None
        expected = base[name] if a is None else \
            base[name] + 2.0 * (a @ adapters[name[:-2] + "/lora_B"])[None]
        np.testing.assert_allclose(merged[name], expected, rtol=0, atol=1e-6)
        changed += not np.array_equal(merged[name], base[name])
    assert changed == 8  # four projections in each of two blocks; nothing else
    # the optimizer state is the adapters' alone
    state = checkpoints.read_train_state(run, 6)
    slots = [k for k in state if k.startswith("optimizer/model")]
    assert slots and all("/lora_" in k for k in slots)

    # the session holds the merged model, equal to what a fresh load gives
    assert sess.model.lora is None
    tokens = [[1, 2, 3, 4]]
    np.testing.assert_allclose(sess.model(tokens).numpy(),
                               loading.load_model(run)(tokens).numpy(), atol=1e-5)
    assert len(gpt2.generate(sess, return_as_list=True, length=5, prefix="the")[0]) > 3


def test_resuming_a_lora_run_continues_the_same_trajectory(work, tiny_model_dir, capsys):
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=8, run_name="straight")
    straight = losses_printed(capsys.readouterr().out)

    tune(sess, tiny_model_dir, steps=4, run_name="resumed")
    capsys.readouterr()
    tune(sess, tiny_model_dir, steps=4, run_name="resumed")
    out = capsys.readouterr().out
    base_line = [line for line in out.splitlines() if line.startswith("Loading checkpoint")]
    assert os.path.abspath(base_line[0].split()[-1]) == os.path.join(tiny_model_dir, "model.ckpt")
    assert "Loading LoRA adapters checkpoint/resumed/model-4" in out
    resumed = losses_printed(out)
    assert sorted(resumed) == [5, 6, 7, 8]
    assert [resumed[s] for s in range(5, 9)] == [straight[s] for s in range(5, 9)]
    a = dict(loading.read_checkpoint("checkpoint/straight").items())
    b = dict(loading.read_checkpoint("checkpoint/resumed").items())
    assert max(max_diff(a[n], b[n]) for n in a) < 1e-5

    # resuming on the merged checkpoint (the update added twice) would go elsewhere
    assert max(max_diff(a[n], dict(loading.read_checkpoint(tiny_model_dir).items())[n])
               for n in a) > 1e-4

    # adapters only: small files, no model bundle; resumes, and loads merged
    tune(sess, tiny_model_dir, steps=4, run_name="small", lora_save="adapters")
    tune(sess, tiny_model_dir, steps=4, run_name="small", lora_save="adapters")
    out = capsys.readouterr().out
    assert "Saving checkpoint/small/lora-8" in out
    assert not any(n.startswith("model-") for n in os.listdir("checkpoint/small"))
    assert [losses_printed(out)[s] for s in range(5, 9)] == [straight[s] for s in range(5, 9)]
    gpt2.load_gpt2(sess, run_name="small")
    c = dict(loading.read_checkpoint("checkpoint/small").items())
    assert max(max_diff(a[n], c[n]) for n in a) < 1e-5
    tokens = [[1, 2, 3]]
    np.testing.assert_allclose(sess.model(tokens).numpy(),
                               GPT2(sess.model.hparams, a)(tokens).numpy(), atol=1e-5)


def test_lora_with_the_large_model_settings(work, tiny_model_dir, capsys, monkeypatch):
    """only_train_transformer_layers, memory-saving gradients and a bfloat16 base together;
    the merged checkpoint still adds the update to the float32 base, not a rounded one; and
    the session's merged model is the trained one merged in place, not a second copy."""
    built = []
    real_build = lora.build_model

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        built.append(weakref.ref(model.weights["model/h0/attn/c_attn/w"]))
        return model

    monkeypatch.setattr(lora, "build_model", build)
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=20, only_train_transformer_layers=True,
         use_memory_saving_gradients=True, lora_base_dtype="bfloat16", learning_rate=1e-2)
    gc.collect()
    w = sess.model.weights["model/h0/attn/c_attn/w"]
    assert len(built) == 1 and built[0]() is w and sess.model.lora is None  # merged in place
    assert w.dtype == tf.bfloat16  # merged, halved
    losses = [float(v) for v in losses_printed(capsys.readouterr().out).values()]
    assert losses[-1] < losses[0] - 0.3, losses
    base = dict(loading.read_checkpoint(tiny_model_dir).items())
    merged = dict(loading.read_checkpoint("checkpoint/run1").items())
    adapters = checkpoints.read_adapters("checkpoint/run1", 20)
    name = "model/h0/attn/c_attn"
    expected = base[name + "/w"] + 2.0 * (adapters[name + "/lora_A"] @ adapters[
        name + "/lora_B"])[None]
    np.testing.assert_allclose(merged[name + "/w"], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(merged["model/wte"], base["model/wte"])
    # the session's weights: the merged float32 values rounded once to bfloat16
    for n in (name + "/w", "model/h1/mlp/c_proj/w", "model/wte"):
        rounded = tf.cast(tf.cast(merged[n], tf.bfloat16), tf.float32).numpy()
        np.testing.assert_array_equal(tf.cast(sess.model.weights[n], tf.float32).numpy(),
                                      rounded.reshape(sess.model.weights[n].shape))


def test_lora_runs_refuse_what_cannot_work(work, tiny_model_dir):
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=1, run_name="full", lora_rank=None)
    with pytest.raises(TrainingError, match="trained without LoRA"):
        tune(sess, tiny_model_dir, steps=1, run_name="full")
    tune(sess, tiny_model_dir, steps=1, run_name="ranked")
    with pytest.raises(TrainingError, match="rank 4, alpha 8 .* asks for rank 8"):
        tune(sess, tiny_model_dir, steps=1, run_name="ranked", lora_rank=8)
    with pytest.raises(TrainingError, match="Unknown LoRA target 'qkv'"):
        tune(sess, tiny_model_dir, steps=1, run_name="other", lora_targets=["c_attn", "qkv"])
    with pytest.raises(TrainingError, match="pretrained model"):
        gpt2.finetune(sess, "data.txt", model_name=None, hparams="tiny",
                      vocab_dir=tiny_model_dir, steps=1, lora_rank=4)

    # the base changed under the adapters: said, not trained on silently
    own = str(work / "models" / "tiny")
    helpers.make_model_dir(own)
    tune(sess, own, steps=1, run_name="moved")
    helpers.make_model_dir(own, seed=1)
    with pytest.raises(CheckpointError, match="trained on another base model"):
        tune(sess, own, steps=1, run_name="moved")


# -- gpt-2-simple -------------------------------------------------------------------

@pytest.mark.slow
def test_gpt2_simple_loads_and_samples_a_merged_lora_run(tmp_path, tiny_gpt2_vocab_model_dir,
                                                        monkeypatch):
    """Written in shards (SHARD_BYTES made small), as a big model's merged save is."""
    if not helpers.importlib.util.find_spec("gpt_2_simple"):
        pytest.skip("gpt-2-simple is not installed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(checkpoints, "SHARD_BYTES", 2_000_000)
    (tmp_path / "data.txt").write_text(TEXT)
    sess = gpt2.start_tf_sess()
    gpt2.finetune(sess, "data.txt", model_name="tiny",
                  model_dir=os.path.dirname(tiny_gpt2_vocab_model_dir), steps=2,
                  accumulate_gradients=1, sample_every=0, lora_rank=4, print_every=10)
    run = tmp_path / "checkpoint" / "run1"
    assert len([n for n in os.listdir(run) if n.startswith("model-2.data-")]) > 1
    ours = sess.model([[464, 2068, 7586]]).numpy()
    np.save(tmp_path / "ours.npy", ours)
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        import gpt_2_simple as gpt2
        from gpt_2_simple.src import model
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, run_name="run1")
        texts = gpt2.generate(sess, run_name="run1", length=8, return_as_list=True, seed=0)
        print("SAMPLE", len(texts))
        hparams = model.default_hparams()
        import json
        hparams.override_from_dict(json.load(open("checkpoint/run1/hparams.json")))
        with tf.compat.v1.variable_scope("", reuse=True):
            X = tf.compat.v1.placeholder(tf.int32, [1, None])
            logits = model.model(hparams=hparams, X=X)["logits"]
        theirs = sess.run(logits, {X: [[464, 2068, 7586]]})
        print("DIFF", float(np.abs(theirs - np.load("ours.npy")).max()))
    """)
    proc = helpers.run_python(code, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Loading checkpoint checkpoint/run1/model-2" in proc.stdout
    assert "SAMPLE 1" in proc.stdout
    diff = float(proc.stdout.split("DIFF ")[1].split()[0])
    assert diff < 1e-4, diff


def test_doctests():
    import doctest

    result = doctest.testmod(lora, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 4 and result.failed == 0

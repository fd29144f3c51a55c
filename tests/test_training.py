"""finetune: learning, gpt-2-simple's printing and step counting, resuming, Ctrl-C,
validation, optimizers, precision, devices, and runs shared with gpt-2-simple."""

import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import helpers
import gpt2_simple_plus as gpt2
from gpt2_simple_plus import checkpoints, loading, training
from gpt2_simple_plus import losses as loss_fns
from gpt2_simple_plus.errors import DatasetError, ModelNotFoundError, TrainingError
from gpt2_simple_plus.hparams import HParams, hparams_for
from gpt2_simple_plus.model import GPT2
from gpt2_simple_plus.optimizers import make_optimizer

LINE = re.compile(r"^\[(\d+) \| (\d+\.\d\d)\] loss=(\d+\.\d\d) avg=(\d+\.\d\d)$")
VAL_LINE = re.compile(r"^\[(\d+) \| \d+\.\d\d\] val_loss=(\d+\.\d\d) val_perplexity=(\d+\.\d\d)$")
TEXT = "the cat sat on the mat. " * 40


def needs_gpt2_simple():
    # find it without importing it: importing gpt_2_simple turns eager execution off
    if importlib.util.find_spec("gpt_2_simple") is None:
        pytest.skip("gpt-2-simple is not installed (pip install gpt-2-simple==0.8.1)")


@pytest.fixture
def work(tmp_path, monkeypatch, tiny_model_dir):
    """A working folder holding data.txt; finetune's checkpoint/ and samples/ go here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text(TEXT)
    return tmp_path


def tune(sess, tiny_model_dir, dataset="data.txt", **kwargs):
    args = dict(model_name="tiny", model_dir=os.path.dirname(tiny_model_dir), steps=4,
                accumulate_gradients=1, learning_rate=1e-3, sample_every=0, save_every=0,
                print_every=1, seed=0)
    args.update(kwargs)
    gpt2.finetune(sess, dataset, **args)


def printed(out):
    """``{step: (seconds, loss, avg)}`` of the training lines in ``out``; every line that
    looks like one must match gpt-2-simple's format exactly."""
    found = {}
    for line in out.splitlines():
        if line.startswith("[") and " loss=" in line:
            m = LINE.match(line)
            assert m, f"not gpt-2-simple's format: {line!r}"
            found[int(m.group(1))] = tuple(float(x) for x in m.group(2, 3, 4))
    return found


def saved(out):
    return [line.split("model-")[1] for line in out.splitlines() if line.startswith("Saving ")]


def run_weights(run_dir):
    return dict(loading.read_checkpoint(run_dir).items())


# -- learning, printing, the run folder ------------------------------------------

def test_a_tiny_model_learns_a_repeated_text(work, tiny_model_dir, capsys):
    (work / "abc.txt").write_text("abcdefgh " * 100)
    before = training.trace_counts["train_step"]
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, "abc.txt", steps=120, learning_rate=3e-3, print_every=10,
         sample_every=60, sample_length=20, val_fraction=0.1, val_every=40,
         jit_compile=True)  # the whole step through XLA (the other tests use plain TF)
    out = capsys.readouterr().out
    lines = printed(out)
    assert sorted(lines) == list(range(10, 121, 10))
    times = [lines[s][0] for s in sorted(lines)]
    assert times == sorted(times)
    # gpt-2-simple's running average: avg = sum(0.99^k loss) / sum(0.99^k) over printed steps
    losses = [lines[s][1] for s in sorted(lines)]
    for i in range(len(losses)):
        w = [0.99 ** (i - j) for j in range(i + 1)]
        assert abs(lines[sorted(lines)[i]][2] - np.dot(w, losses[:i + 1]) / sum(w)) < 0.011
    assert losses[0] > 2 and losses[-1] < 0.1, losses

    vals = [VAL_LINE.match(line) for line in out.splitlines() if "val_loss" in line]
    assert [int(m.group(1)) for m in vals] == [40, 80]
    for m in vals:
        assert abs(math.exp(float(m.group(2))) - float(m.group(3))) < 0.06 * float(m.group(3))

    # one trace of the train step for the whole run: nothing retraces per step
    assert training.trace_counts["train_step"] - before == 1

    run = work / "checkpoint" / "run1"
    for name in ("checkpoint", "counter", "hparams.json", "encoder.json", "vocab.bpe",
                 "model-120.index", "model-120.data-00000-of-00001", "train_state-120.index"):
        assert (run / name).is_file(), name
    assert (run / "counter").read_text().strip() == "120"
    assert 'model_checkpoint_path: "model-120"' in (run / "checkpoint").read_text()
    # samples-<counter> at counter 61 (none at the final step, as in gpt-2-simple)
    assert os.listdir(work / "samples" / "run1") == ["samples-61"]
    sample = (work / "samples" / "run1" / "samples-61").read_text()
    assert sample.startswith("======== SAMPLE 1 ========\n") and len(sample) > 30
    assert "Loading checkpoint" in out and "dataset has" in out and "Training..." in out

    # the session holds the trained model, and generate() samples from it
    assert sess.model is not None and sess.run_name == "run1"
    text = gpt2.generate(sess, return_as_list=True, length=12, prefix="abc", seed=1,
                         temperature=0.1)[0]
    assert text.startswith("abcdefgh abcdefg"), text


def test_counting_and_resuming_continue_the_same_trajectory(work, tiny_model_dir, capsys):
    sess = gpt2.start_tf_sess()
    kw = dict(accumulate_gradients=2, learning_rate=3e-3)
    tune(sess, tiny_model_dir, steps=8, run_name="straight", **kw)
    straight = printed(capsys.readouterr().out)

    tune(sess, tiny_model_dir, steps=4, run_name="resumed", save_every=2, max_checkpoints=2, **kw)
    out = capsys.readouterr().out
    assert saved(out) == ["2", "4"] and sorted(printed(out)) == [1, 2, 3, 4]
    tune(sess, tiny_model_dir, steps=4, run_name="resumed", save_every=2, max_checkpoints=2, **kw)
    out = capsys.readouterr().out
    # gpt-2-simple's counter: continue at counter+1; its quirk of saving the resumed step again
    assert saved(out) == ["4", "6", "8"] and sorted(printed(out)) == [5, 6, 7, 8]
    assert "Loading checkpoint checkpoint/resumed/model-4" in out
    assert sorted(n for n in os.listdir("checkpoint/resumed") if n.endswith(".index")) == [
        "model-6.index", "model-8.index", "train_state-6.index", "train_state-8.index"]
    resumed = printed(out)
    assert [resumed[s][1] for s in range(5, 9)] == [straight[s][1] for s in range(5, 9)]
    a, b = run_weights("checkpoint/straight"), run_weights("checkpoint/resumed")
    assert max(np.abs(a[n] - b[n]).max() for n in a) < 1e-5

    # without the saved optimizer state the run goes elsewhere: the check above has teeth
    tune(sess, tiny_model_dir, steps=4, run_name="amnesia", **kw)
    for f in os.listdir("checkpoint/amnesia"):
        if f.startswith("train_state"):
            os.remove(os.path.join("checkpoint/amnesia", f))
    tune(sess, tiny_model_dir, steps=4, run_name="amnesia", **kw)
    assert "No optimizer state saved" in capsys.readouterr().out
    c = run_weights("checkpoint/amnesia")
    assert max(np.abs(a[n] - c[n]).max() for n in a) > 1e-4

    # restore_from="fresh" starts again from the base model, at step 1
    tune(sess, tiny_model_dir, steps=2, run_name="resumed", restore_from="fresh",
         overwrite=False, **kw)
    assert sorted(printed(capsys.readouterr().out)) == [1, 2]


def test_overwrite_replaces_the_old_checkpoints(work, tiny_model_dir, capsys):
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=3, max_checkpoints=None, save_every=1)
    assert saved(capsys.readouterr().out) == ["1", "2", "3"]
    tune(sess, tiny_model_dir, steps=2, overwrite=True, max_checkpoints=None)
    assert saved(capsys.readouterr().out) == ["3", "5"]
    assert sorted(n for n in os.listdir("checkpoint/run1") if n.startswith("model")
                  and n.endswith(".index")) == ["model-3.index", "model-5.index"]


def test_ctrl_c_saves_a_checkpoint_that_loads(work, tiny_model_dir):
    code = textwrap.dedent(f"""
        import gpt2_simple_plus as gpt2
        sess = gpt2.start_tf_sess()
        gpt2.finetune(sess, "data.txt", model_name="tiny", model_dir={os.path.dirname(tiny_model_dir)!r},
                      steps=-1, accumulate_gradients=1, sample_every=0, save_every=0)
        print("RETURNED", sess.model is not None)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([helpers.REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=str(work), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[5 |"):
                proc.send_signal(signal.SIGINT)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "interrupted" in out and "RETURNED True" in out
    step = int(saved(out)[-1])
    assert step >= 4  # SIGINT came after step 5 was printed, maybe before the counter moved
    run = str(work / "checkpoint" / "run1")
    assert checkpoints.read_counter(run) == step
    model = loading.load_model(run)
    assert model.hparams.n_layer == 2
    # (Ctrl-C may land after a step's update, before the counter moves on)
    assert checkpoints.read_train_state(run, step)["optimizer/step"] in (step, step + 1)


# -- validation and early stopping ---------------------------------------------------

def test_early_stopping_keeps_the_best_weights(work, tiny_model_dir, capsys, monkeypatch):
    # Scripted validation losses: best at the 2nd validation (step 4), then two worse ones.
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    monkeypatch.setattr(training, "make_eval_step",
                        lambda model, **kw: lambda tokens: tf.constant(next(scripted)))
    monkeypatch.setattr(training, "VAL_WINDOWS", 1)
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=20, run_name="early", val_fraction=0.2, val_every=2,
         early_stopping_patience=2, learning_rate=3e-3)
    out = capsys.readouterr().out
    vals = [VAL_LINE.match(line).groups() for line in out.splitlines() if "val_loss" in line]
    assert vals == [("2", "3.00", "20.09"), ("4", "2.00", "7.39"), ("6", "2.50", "12.18"),
                    ("8", "2.60", "13.46")]
    assert "stopping early" in out and max(printed(out)) == 8
    assert saved(out) == ["4"] and checkpoints.read_counter("checkpoint/early") == 4

    # the same 4 steps without early stopping give the weights that were kept
    tune(sess, tiny_model_dir, steps=4, run_name="four", val_fraction=0.2, learning_rate=3e-3)
    a, b = run_weights("checkpoint/early"), run_weights("checkpoint/four")
    assert max(np.abs(a[n] - b[n]).max() for n in a) < 1e-6
    c = sess.model.numpy_weights()
    assert max(np.abs(a[n] - c[n]).max() for n in a) < 1e-6


def test_a_separate_validation_dataset(work, tiny_model_dir, capsys):
    (work / "val.txt").write_text("on the mat the cat sat. " * 10)
    tune(gpt2.start_tf_sess(), tiny_model_dir, steps=4, val_dataset="val.txt", val_every=2)
    out = capsys.readouterr().out
    assert "validation set has" in out
    # validation after step 2; like samples, none at the final step
    assert [VAL_LINE.match(line).group(1) for line in out.splitlines() if "val_loss" in line] \
        == ["2"]


# -- the compiled step: optimizers, accumulation, recompute, precision ----------------

@pytest.mark.parametrize("fused", [True, False])
def test_adam_matches_tf_compat_v1_adam(fused):
    grads = [np.array([[0.5, -1.0], [2.0, 0.1]], np.float32) * k for k in (1, -2, 3)]
    ours = {"w": tf.Variable(np.ones((2, 2), np.float32))}
    opt = make_optimizer("adam", ours, fused=fused)
    theirs = tf.Variable(np.ones((2, 2), np.float32))
    v1 = tf.compat.v1.train.AdamOptimizer(learning_rate=0.01)
    for g in grads:
        opt.apply([tf.constant(g)], tf.constant(0.01))
        v1.apply_gradients([(tf.constant(g), theirs)])
    np.testing.assert_allclose(ours["w"].numpy(), theirs.numpy(), rtol=1e-6)


def test_adamw_decays_matrices_only_and_sgd_steps():
    w = {"m": tf.Variable(np.ones((2, 2), np.float32)), "b": tf.Variable(np.ones(2, np.float32))}
    make_optimizer("adamw", w, weight_decay=0.5).apply([tf.zeros((2, 2)), tf.zeros(2)], 0.1)
    assert np.allclose(w["m"].numpy(), 0.95) and np.allclose(w["b"].numpy(), 1.0)
    s = {"x": tf.Variable([1.0])}
    make_optimizer("SGD", s).apply([tf.constant([2.0])], 0.25)
    assert s["x"].numpy().tolist() == [0.5]


def tiny_model(seed=0):
    return GPT2(hparams_for("tiny", n_vocab=50, n_ctx=16), seed=seed)


def one_step(tokens, **kwargs):
    model = tiny_model()
    opt = make_optimizer("sgd", model.weights)
    step = training.make_train_step(model, opt, **kwargs)
    loss = step(tf.constant(tokens), tf.constant(0.1))
    return float(loss), model.numpy_weights()


def test_lm_loss_and_its_gradients_equal_the_plain_formula():
    """lm_loss's hand-written head gradient against autodiff of the textbook loss:
    mean cross-entropy of logits[:, :-1] against tokens[:, 1:]."""
    model = tiny_model()
    tokens = tf.constant(np.random.default_rng(4).integers(0, 50, size=(3, 12)), tf.int32)
    variables = model.trainable_weights()
    with tf.GradientTape(persistent=True) as tape:
        ours = loss_fns.lm_loss(model, tokens)
        logits = model(tokens)
        plain = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tokens[:, 1:], logits=logits[:, :-1]))
    assert float(ours) == pytest.approx(float(plain), abs=1e-6)
    for name, a, b in zip(model.weights, tape.gradient(ours, variables),
                          tape.gradient(plain, variables)):
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        assert np.any(b != 0), name
        assert np.abs(a - b).max() < 1e-6, name


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_fused_cross_entropy_equals_tensorflows_kernel(scale):
    """softmax_cross_entropy against SparseSoftmaxCrossEntropyWithLogits, up to
    logits of 1e4 whose exponentials overflow unless the row's maximum comes off."""
    rng = np.random.default_rng(5)
    logits = tf.constant(rng.standard_normal((7, 300)).astype(np.float32) * scale)
    labels = tf.constant(rng.integers(0, 300, size=7), tf.int32)
    losses, grad = loss_fns.softmax_cross_entropy(logits, labels)
    want_losses, want_grad = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
        features=logits, labels=labels)
    assert np.all(np.isfinite(losses.numpy())) and np.all(np.isfinite(grad.numpy()))
    np.testing.assert_allclose(losses.numpy(), want_losses.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), want_grad.numpy(), atol=1e-6)
    assert np.allclose(grad.numpy().sum(axis=1), 0.0, atol=1e-5)


def test_accumulated_micro_batches_equal_one_big_batch():
    tokens = np.random.default_rng(0).integers(0, 50, size=(2, 1, 16)).astype(np.int32)
    loss_a, a = one_step(tokens)  # 2 micro-batches of 1
    loss_b, b = one_step(tokens.reshape(1, 2, 16))  # 1 batch of 2
    assert abs(loss_a - loss_b) < 1e-5
    assert max(np.abs(a[n] - b[n]).max() for n in a) < 1e-6
    _, untouched = one_step(tokens[:1])
    assert max(np.abs(a[n] - untouched[n]).max() for n in a) > 1e-4


def test_accumulation_traces_the_model_once_and_runs_one_micro_batch_at_a_time(monkeypatch):
    """A first micro-batch traced outside the loop, or loop iterations run side by side,
    each kept another micro-batch's activations alive: GPT-2 124M with the default
    accumulate_gradients=5 peaked at 7.4 GB of memory, against 5.4 GB in one loop."""
    traced = []
    lm_loss = training.lm_loss
    monkeypatch.setattr(training, "lm_loss", lambda *a, **k: traced.append(1) or lm_loss(*a, **k))
    model = tiny_model()
    step = training.make_train_step(model, make_optimizer("sgd", model.weights))
    args = tf.constant(np.zeros((3, 1, 16), np.int32)), tf.constant(0.1)
    step(*args)
    assert len(traced) == 1
    graph = step.get_concrete_function(*args).graph
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    assert [op.get_attr("parallel_iterations") for op in loops] == [1]


def test_memory_saving_gradients_give_the_same_update():
    tokens = np.random.default_rng(1).integers(0, 50, size=(1, 2, 16)).astype(np.int32)
    _, plain = one_step(tokens)
    _, recomputed = one_step(tokens, recompute=True)
    assert max(np.abs(plain[n] - recomputed[n]).max() for n in plain) < 1e-6


def test_max_grad_norm_clips():
    tokens = np.random.default_rng(2).integers(0, 50, size=(1, 1, 16)).astype(np.int32)
    before = tiny_model().numpy_weights()
    _, after = one_step(tokens, max_grad_norm=1e-3)
    moved = np.sqrt(sum(np.sum((after[n] - before[n]) ** 2) for n in before))
    assert abs(moved - 0.1 * 1e-3) < 1e-6  # lr * clipped norm


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_learns_with_float32_weights(work, tiny_model_dir, capsys, precision):
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=30, learning_rate=3e-3, precision=precision,
         run_name=precision)
    losses = [v[1] for _, v in sorted(printed(capsys.readouterr().out).items())]
    assert losses[-1] < losses[0] - 1, losses
    assert sess.model.compute_dtype == tf.as_dtype(precision)
    assert all(v.dtype == tf.float32 for v in sess.model.weights.values())
    state = checkpoints.read_train_state(f"checkpoint/{precision}", 30)
    assert ("train/loss_scale" in state) == (precision == "float16")


def test_warmup_and_decay_schedules():
    cos = training.lr_schedule(1.0, warmup_steps=0, decay="cosine", last_step=4)
    assert [round(cos(s), 3) for s in (1, 2, 3, 4)] == [1.0, 0.854, 0.5, 0.146]
    warm = training.lr_schedule(2.0, warmup_steps=4)
    assert [warm(s) for s in (1, 2, 4, 100)] == [0.5, 1.0, 2.0, 2.0]


# -- two devices: MirroredStrategy equals one device --------------------------------

def test_two_logical_devices_train_like_one(tmp_path, tiny_model_dir):
    (tmp_path / "data.txt").write_text(TEXT)
    code = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import gpt2_simple_plus as gpt2
        from gpt2_simple_plus import loading
        kw = dict(model_name="tiny", model_dir={os.path.dirname(tiny_model_dir)!r}, steps=3,
                  batch_size=2, accumulate_gradients=2, sample_every=0, seed=0,
                  learning_rate=1e-3)
        two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        gpt2.finetune(gpt2.start_tf_sess(), "data.txt", run_name="two", strategy=two, **kw)
        gpt2.finetune(gpt2.start_tf_sess(), "data.txt", run_name="one", **kw)
        a = dict(loading.read_checkpoint("checkpoint/two").items())
        b = dict(loading.read_checkpoint("checkpoint/one").items())
        base = dict(loading.read_checkpoint({tiny_model_dir!r}).items())
        try:
            gpt2.finetune(gpt2.start_tf_sess(), "data.txt", run_name="odd", strategy=two,
                          **dict(kw, batch_size=3))
            odd = "no error"
        except gpt2.TrainingError as err:
            odd = str(err)
        print(json.dumps(dict(diff=max(float(np.abs(a[n] - b[n]).max()) for n in a),
                              moved=max(float(np.abs(a[n] - base[n]).max()) for n in a),
                              odd=odd)))
    """)
    proc = helpers.run_python(code, cwd=str(tmp_path), env={"PYTHONPATH": helpers.REPO})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Training on 2 devices" in proc.stdout
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["moved"] > 1e-4 and result["diff"] < 1e-5, result
    assert "batch_size=3 cannot be split evenly over 2 devices" in result["odd"]


# -- arguments, from scratch, several models in one process --------------------------

def test_bad_arguments_say_what_to_do(work, tiny_model_dir):
    sess = gpt2.start_tf_sess()
    with pytest.raises(TrainingError, match="Unknown optimizer 'adagrad'. Choose one of: "
                                            "adam, adamw, sgd"):
        tune(sess, tiny_model_dir, optimizer="adagrad")
    with pytest.raises(TrainingError, match="Unknown precision"):
        tune(sess, tiny_model_dir, precision="int8")
    with pytest.raises(TrainingError, match="lr_decay needs to know when training ends"):
        tune(sess, tiny_model_dir, steps=-1, lr_decay="cosine")
    with pytest.raises(ModelNotFoundError, match=r"download_gpt2\(model_name='355M'"):
        tune(sess, tiny_model_dir, model_name="355M")
    with pytest.raises(DatasetError, match="No file or folder 'missing.txt'"):
        tune(sess, tiny_model_dir, dataset="missing.txt")
    with pytest.raises(TrainingError, match="needs hparams="):
        tune(sess, tiny_model_dir, model_name=None)
    with pytest.raises(TrainingError, match="needs validation data"):
        tune(sess, tiny_model_dir, early_stopping_patience=3)


def test_a_failure_before_the_first_step_leaves_no_run_behind(work, tiny_model_dir):
    sess = gpt2.start_tf_sess()
    run = work / "checkpoint" / "run1"
    with pytest.raises(TrainingError, match="learning_rate must be a finite number"):
        tune(sess, tiny_model_dir, learning_rate=float("nan"))
    (work / "empty.txt").write_text("")
    with pytest.raises(DatasetError):
        tune(sess, tiny_model_dir, dataset="empty.txt")
    with pytest.raises(DatasetError, match="missing.txt"):  # after data.txt was cached
        tune(sess, tiny_model_dir, val_dataset="missing.txt")
    assert not run.exists()  # no half-made run folder
    # An existing run: a failing call leaves its files exactly as they were.
    tune(sess, tiny_model_dir, steps=2)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(DatasetError):
        tune(sess, tiny_model_dir, dataset="empty.txt")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(work, tiny_model_dir, capsys):
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=2)
    run = str(work / "checkpoint" / "run1")
    good = run_weights(run)
    # A learning rate this large sends the weights to infinity within a step or two.
    with pytest.raises(TrainingError) as err:
        tune(sess, tiny_model_dir, steps=8, learning_rate=1e38, optimizer="sgd")
    assert "learning rate" in str(err.value) and "model-2" in str(err.value)
    assert checkpoints.latest_checkpoint(run).endswith("model-2")
    assert checkpoints.read_counter(run) == 2
    after = run_weights(run)
    assert all(np.array_equal(after[n], good[n]) for n in good)
    # Saving every step: whatever is saved before the loss breaks down is finite, and the
    # error names it as the run's latest.
    with pytest.raises(TrainingError) as err:
        tune(sess, tiny_model_dir, steps=8, learning_rate=1e38, optimizer="sgd", save_every=1)
    latest = checkpoints.latest_checkpoint(run)
    assert os.path.basename(latest) in str(err.value)
    assert all(np.isfinite(v).all() for v in run_weights(run).values())
    out = capsys.readouterr().out
    assert "loss=nan" in out or "loss=inf" in out


def test_from_scratch_then_another_model_in_the_same_process(work, tiny_model_dir, capsys):
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, model_name=None, hparams="tiny", vocab_dir=tiny_model_dir,
         run_name="scratch", steps=3)
    out = capsys.readouterr().out
    assert "Initialising a new model from random weights" in out
    assert loading.load_model("checkpoint/scratch").hparams == hparams_for("tiny", n_vocab=277)
    assert len(gpt2.generate(sess, return_as_list=True, length=5, seed=0)) == 1
    tune(sess, tiny_model_dir, model_name=None, hparams="tiny", vocab_dir=tiny_model_dir,
         run_name="scratch", steps=1)  # continues the run, optimizer state and all
    out = capsys.readouterr().out
    assert "Loading checkpoint checkpoint/scratch/model-3" in out and sorted(printed(out)) == [4]
    assert "optimizer starts afresh" not in out

    custom = HParams(n_vocab=277, n_ctx=32, n_embd=16, n_head=2, n_layer=1)
    tune(sess, tiny_model_dir, model_name=None, hparams=custom, vocab_dir=tiny_model_dir,
         run_name="one_layer", steps=2, sample_length=1023)
    assert sess.model.hparams == custom
    assert len(gpt2.generate(sess, return_as_list=True, length=5, seed=0)) == 1
    tune(sess, tiny_model_dir, steps=2, run_name="finetuned")
    assert sess.model.hparams.n_layer == 2 and sess.run_name == "finetuned"
    gpt2.load_gpt2(sess, run_name="one_layer")
    assert len(gpt2.generate(sess, return_as_list=True, length=5, seed=0)) == 1
    with pytest.raises(TrainingError, match="holds a model of another shape"):
        tune(sess, tiny_model_dir, model_name=None, hparams="mini", vocab_dir=tiny_model_dir,
             run_name="scratch", steps=1)


def test_dataset_kinds_and_a_dataset_shorter_than_the_window(work, tiny_model_dir, capsys):
    (work / "rows.csv").write_text("text\nhi\n")  # about 30 tokens
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, dataset="rows.csv", steps=2, run_name="csv")
    out = capsys.readouterr().out
    assert "training on" in out and "-token windows" in out  # shorter than n_ctx=64
    model_dir, name = os.path.split(tiny_model_dir)
    gpt2.encode_dataset("data.txt", model_dir=model_dir, model_name=name, out_path="d.npz")
    tune(sess, tiny_model_dir, dataset="d.npz", steps=2, run_name="npz",
         only_train_transformer_layers=True)
    out = capsys.readouterr().out
    assert "dataset has" in out and sorted(printed(out)) == [1, 2]
    # only the transformer blocks moved; the embeddings are as downloaded
    base, tuned = run_weights(tiny_model_dir), run_weights("checkpoint/npz")
    assert all(np.array_equal(base[n], tuned[n]) for n in ("model/wte", "model/wpe"))
    assert not np.array_equal(base["model/h0/mlp/c_fc/w"], tuned["model/h0/mlp/c_fc/w"])
    # the encoded dataset is cached beside the run and reused
    tune(sess, tiny_model_dir, dataset="rows.csv", steps=1, run_name="csv")
    assert "Using the dataset encoded before" in capsys.readouterr().out


# -- runs shared with gpt-2-simple (real vocabulary, subprocesses) -------------------

def test_runs_go_both_ways_with_gpt2_simple(tmp_path, gpt2_vocab_dir, monkeypatch, capsys):
    needs_gpt2_simple()
    # gpt-2-simple trains on 1024-token windows, so its model needs n_ctx=1024
    helpers.make_model_dir(str(tmp_path / "models" / "tiny"), vocab_dir=gpt2_vocab_dir,
                           n_ctx=1024)
    words = "the of and to in a is that for it as was with be by on not he this are".split()
    rng = np.random.default_rng(0)
    (tmp_path / "data.txt").write_text(" ".join(rng.choice(words, size=3000)))
    theirs = textwrap.dedent("""
        import gpt_2_simple as gpt2
        sess = gpt2.start_tf_sess()
        gpt2.finetune(sess, "data.txt", model_name="tiny", steps=2, sample_every=1000,
                      sample_length=10, accumulate_gradients=1, run_name="shared")
    """)
    proc = helpers.run_python(theirs, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Saving checkpoint/shared/model-2" in proc.stdout

    # we continue gpt-2-simple's run: counter 3 on, no optimizer state to restore
    monkeypatch.chdir(tmp_path)
    gpt2.finetune(gpt2.start_tf_sess(), "data.txt", model_name="tiny", steps=2,
                  accumulate_gradients=1, sample_every=0, run_name="shared")
    out = capsys.readouterr().out
    assert "Loading checkpoint checkpoint/shared/model-2" in out
    assert "No optimizer state saved" in out and sorted(printed(out)) == [3, 4]
    assert saved(out) == ["4"]

    # gpt-2-simple loads what we wrote, and samples from it
    load = textwrap.dedent("""
        import gpt_2_simple as gpt2
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, run_name="shared")
        texts = gpt2.generate(sess, run_name="shared", length=8, return_as_list=True, seed=0)
        print("SAMPLE", len(texts), repr(texts[0][:40]))
    """)
    proc = helpers.run_python(load, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Loading checkpoint checkpoint/shared/model-4" in proc.stdout
    assert "SAMPLE 1" in proc.stdout


def test_doctests():
    import doctest

    from gpt2_simple_plus import optimizers

    for module in (training, optimizers):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 3 and result.failed == 0, module.__name__

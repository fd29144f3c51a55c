"""Adafactor against a NumPy spelling of Shazeer & Stern's update rule, its saved state,
and the step compiled with XLA (what a TPU runs)."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from gpt2_simple_plus.optimizers import Adafactor, make_optimizer

SHAPES = {"matrix": (4, 6), "vector": (5,), "conv": (1, 3, 7)}


def reference(shapes, grads, lrs, *, beta1=None, relative_step=False, scale_parameter=None,
              factor=True, clip=True, weights=None):
    """Adafactor in NumPy (float64), one variable at a time; returns the weights after each step.

    ``factor=False`` / ``clip=False`` give the rule without factoring / update clipping,
    for checking that the tests notice either being broken."""
    scale_parameter = relative_step if scale_parameter is None else scale_parameter
    x = {n: np.array(weights[n], np.float64) for n in shapes}
    state = {n: {} for n in shapes}
    history = []
    for t, (g_step, lr) in enumerate(zip(grads, lrs), start=1):
        beta2 = 1.0 - t ** -0.8
        for n in shapes:
            g, s = np.asarray(g_step[n], np.float64), state[n]
            g2 = g * g + 1e-30
            if factor and g.ndim >= 2:
                s["vr"] = beta2 * s.get("vr", 0.0) + (1 - beta2) * g2.mean(-1)
                s["vc"] = beta2 * s.get("vc", 0.0) + (1 - beta2) * g2.mean(-2)
                v = s["vr"][..., :, None] * s["vc"][..., None, :] / \
                    s["vr"].mean(-1)[..., None, None]
            else:
                s["v"] = v = beta2 * s.get("v", 0.0) + (1 - beta2) * g2
            u = g / np.sqrt(v)
            if clip:
                u /= max(1.0, np.sqrt(np.mean(u * u)) / 1.0)
            step = min(1e-2, 1 / np.sqrt(t)) if relative_step else lr
            if scale_parameter:
                step *= max(1e-3, np.sqrt(np.mean(x[n] ** 2)))
            u = step * u
            if beta1:
                s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * u
                u = s["m"]
            x[n] = x[n] - u
        history.append({n: x[n].copy() for n in shapes})
    return history


def random_problem(steps, seed=0):
    rng = np.random.default_rng(seed)
    weights = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    # gradients of several scales, so clipping acts on some steps and not on others
    grads = [{n: (rng.normal(size=s) * rng.choice([0.01, 1.0, 30.0], size=s)).astype(np.float32)
              for n, s in SHAPES.items()} for _ in range(steps)]
    lrs = [0.05 * (1 + i % 3) for i in range(steps)]
    return weights, grads, lrs


def run_ours(opt, variables, grads, lrs, step=None):
    history = []
    for g, lr in zip(grads, lrs):
        g = [tf.constant(g[n]) for n in variables]
        if step is None:
            opt.apply(g, tf.constant(lr, tf.float32))
        else:
            step(g, tf.constant(lr, tf.float32))
        history.append({n: v.numpy() for n, v in variables.items()})
    return history


def assert_close(ours, ref):
    for mine, theirs in zip(ours, ref):
        for n in theirs:
            np.testing.assert_allclose(mine[n], theirs[n], rtol=2e-5, atol=1e-6, err_msg=n)


@pytest.mark.parametrize("options", [{}, {"beta1": 0.9}, {"relative_step": True},
                                     {"scale_parameter": True}])
def test_adafactor_follows_the_update_rule(options):
    weights, grads, lrs = random_problem(6)
    variables = {n: tf.Variable(w) for n, w in weights.items()}
    ours = run_ours(Adafactor(variables, **options), variables, grads, lrs)
    assert_close(ours, reference(SHAPES, grads, lrs, weights=weights, **options))


@pytest.mark.parametrize("broken", ["factor", "clip"])
def test_the_reference_tells_factoring_and_clipping_apart(broken):
    """The comparison above fails if the factoring or the clipping were missing."""
    weights, grads, lrs = random_problem(6)
    variables = {n: tf.Variable(w) for n, w in weights.items()}
    ours = run_ours(Adafactor(variables), variables, grads, lrs)
    wrong = reference(SHAPES, grads, lrs, weights=weights, **{broken: False})
    with pytest.raises(AssertionError):
        assert_close(ours, wrong)


def test_state_is_factored_and_small():
    variables = {n: tf.Variable(tf.zeros(s)) for n, s in SHAPES.items()}
    state = Adafactor(variables).state()
    shapes = {k: tuple(v.shape) for k, v in state.items() if k.count("/") == 2}
    assert shapes == {"optimizer/matrix/vr": (4,), "optimizer/matrix/vc": (6,),
                      "optimizer/vector/v": (5,),
                      "optimizer/conv/vr": (1, 3), "optimizer/conv/vc": (1, 7)}
    assert "optimizer/conv/m" in Adafactor(variables, beta1=0.9).state()


def test_a_restored_adafactor_continues_the_same_trajectory():
    weights, grads, lrs = random_problem(6, seed=1)
    straight = {n: tf.Variable(w) for n, w in weights.items()}
    run_ours(Adafactor(straight, beta1=0.9), straight, grads, lrs)

    first = {n: tf.Variable(w) for n, w in weights.items()}
    opt = Adafactor(first, beta1=0.9)
    run_ours(opt, first, grads[:3], lrs[:3])
    saved = {k: np.array(v) for k, v in opt.state().items()}  # as a checkpoint holds them
    resumed = {n: tf.Variable(v.numpy()) for n, v in first.items()}
    again = Adafactor(resumed, beta1=0.9)
    again.load_state(saved)
    run_ours(again, resumed, grads[3:], lrs[3:])
    for n in weights:
        np.testing.assert_array_equal(resumed[n].numpy(), straight[n].numpy())

    # a fresh optimizer (no state) goes elsewhere: the check above has teeth
    fresh = {n: tf.Variable(v.numpy()) for n, v in first.items()}
    run_ours(Adafactor(fresh, beta1=0.9), fresh, grads[3:], lrs[3:])
    assert not np.allclose(fresh["matrix"].numpy(), straight["matrix"].numpy())


def test_state_of_another_optimizer_is_refused():
    from gpt2_simple_plus.errors import CheckpointError

    variables = {"w": tf.Variable(tf.zeros([2, 2]))}
    adam_state = make_optimizer("adam", variables).state()
    with pytest.raises(CheckpointError, match="for 'adam', not 'adafactor'"):
        make_optimizer("adafactor", variables).load_state(adam_state)


def test_adafactor_compiles_with_xla():
    """What a TPUStrategy needs: the whole update inside tf.function(jit_compile=True)."""
    weights, grads, lrs = random_problem(4, seed=2)
    variables = {n: tf.Variable(w) for n, w in weights.items()}
    opt = Adafactor(variables, beta1=0.9, relative_step=True)
    step = tf.function(lambda g, lr: opt.apply(g, lr), jit_compile=True, autograph=False)
    ours = run_ours(opt, variables, grads, lrs, step=step)
    assert step.experimental_get_compiler_ir(
        [tf.constant(grads[0][n]) for n in variables], tf.constant(0.1))(stage="hlo")
    assert_close(ours, reference(SHAPES, grads, lrs, weights=weights, beta1=0.9,
                                 relative_step=True))


def test_adafactor_agrees_with_hugging_face():
    """An independent spelling of the same rule: transformers' PyTorch Adafactor."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers.optimization")
    weights, grads, lrs = random_problem(5, seed=3)
    variables = {n: tf.Variable(w) for n, w in weights.items()}
    ours = run_ours(Adafactor(variables, relative_step=True), variables, grads, lrs)
    params = {n: torch.nn.Parameter(torch.tensor(w)) for n, w in weights.items()}
    hf = transformers.Adafactor(list(params.values()), lr=None, relative_step=True,
                                scale_parameter=True, warmup_init=False)
    for g in grads:
        for n, p in params.items():
            p.grad = torch.tensor(g[n])
        hf.step()
    for n, p in params.items():
        np.testing.assert_allclose(ours[-1][n], p.detach().numpy(), rtol=1e-4, atol=1e-6)


# -- in finetune ----------------------------------------------------------------------

def tune(sess, tiny_model_dir, **kwargs):
    import gpt2_simple_plus as gpt2

    args = dict(model_name="tiny", model_dir=os.path.dirname(tiny_model_dir), steps=4,
                accumulate_gradients=1, learning_rate=3e-3, sample_every=0, save_every=0,
                print_every=1, seed=0, optimizer="adafactor")
    args.update(kwargs)
    gpt2.finetune(sess, "data.txt", **args)


def losses(out):
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\[(\d+) \| [\d.]+\] loss=([\d.]+)",
                                                              out, re.M)}


def test_finetune_with_adafactor_learns_and_resumes_on_the_same_trajectory(
        tmp_path, monkeypatch, tiny_model_dir, capsys):
    import gpt2_simple_plus as gpt2
    from gpt2_simple_plus import checkpoints, loading

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("the cat sat on the mat. " * 40)
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=8, run_name="straight")
    straight = losses(capsys.readouterr().out)
    assert float(straight[8]) < float(straight[1])
    state = checkpoints.read_train_state("checkpoint/straight", 8)
    assert state["optimizer/name"] == b"adafactor" and "optimizer/model/wte/vr" in state

    tune(sess, tiny_model_dir, steps=4, run_name="resumed")
    tune(sess, tiny_model_dir, steps=4, run_name="resumed")
    out = capsys.readouterr().out
    assert "starts afresh" not in out
    resumed = losses(out)
    assert [resumed[s] for s in range(5, 9)] == [straight[s] for s in range(5, 9)]
    a, b = (dict(loading.read_checkpoint(f"checkpoint/{r}").items())
            for r in ("straight", "resumed"))
    assert max(np.abs(a[n] - b[n]).max() for n in a) < 1e-6

    # without the saved state the second half goes elsewhere: the check above has teeth
    tune(sess, tiny_model_dir, steps=4, run_name="amnesia")
    os.remove("checkpoint/amnesia/train_state-4.index")
    tune(sess, tiny_model_dir, steps=4, run_name="amnesia")
    c = dict(loading.read_checkpoint("checkpoint/amnesia").items())
    assert max(np.abs(a[n] - c[n]).max() for n in a) > 1e-4


def test_finetune_learning_rate_none_is_adafactors_relative_step(
        tmp_path, monkeypatch, tiny_model_dir, capsys):
    import gpt2_simple_plus as gpt2
    from gpt2_simple_plus.errors import TrainingError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("the cat sat on the mat. " * 40)
    sess = gpt2.start_tf_sess()
    tune(sess, tiny_model_dir, steps=3, learning_rate=None)
    assert sorted(losses(capsys.readouterr().out)) == [1, 2, 3]
    with pytest.raises(TrainingError, match="learning_rate must be a finite number"):
        tune(sess, tiny_model_dir, steps=3, learning_rate=None, optimizer="adam")


def test_the_whole_train_step_with_adafactor_compiles_with_xla():
    """What a TPUStrategy runs: finetune's step (forward, backward, Adafactor) under XLA,
    equal to the same step without it."""
    from gpt2_simple_plus.hparams import hparams_for
    from gpt2_simple_plus.model import GPT2
    from gpt2_simple_plus.training import make_train_step

    hp = hparams_for("tiny", n_vocab=50)
    tokens = tf.constant(np.random.default_rng(0).integers(0, 50, (1, 2, 16)), tf.int32)
    results = []
    for jit in (False, True):
        model = GPT2(hp, seed=0)
        opt = make_optimizer("adafactor", model.weights, fused=not jit)
        step = make_train_step(model, opt, jit_compile=jit)
        losses = [float(step(tokens, tf.constant(1e-2))) for _ in range(3)]
        results.append((losses, model.numpy_weights()))
    assert step.experimental_get_compiler_ir(tokens, tf.constant(1e-2))(stage="hlo")
    (plain, w0), (xla, w1) = results
    np.testing.assert_allclose(xla, plain, rtol=1e-4)
    assert plain[2] < plain[0]
    # Within 5% of one step (lr 1e-2): XLA orders the sums differently. Not the keys' bias:
    # its gradient is exactly 0 in exact arithmetic (a shift of every key's score), so both
    # runs normalise rounding noise to steps of the full size (epsilon1 is 1e-30).
    for n in w0:
        if n.endswith("attn/c_attn/b"):
            e = hp.n_embd
            w0[n], w1[n] = (np.concatenate([w[:e], w[2 * e:]]) for w in (w0[n], w1[n]))
        np.testing.assert_allclose(w1[n], w0[n], atol=5e-4, err_msg=n)

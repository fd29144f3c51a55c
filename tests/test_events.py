"""TensorBoard events: what finetune and finetune_classifier write, read back and checked
against the lines they print (and against gpt-2-simple's own events file)."""

import contextlib
import glob
import io
import os
import re

import pytest
import tensorflow as tf

import gpt2_simple_plus as gpt2
import helpers
from gpt2_simple_plus.demo import corpus_text
from gpt2_simple_plus.events import EventsWriter, events_files, read_scalars
from gpt2_simple_plus.run import Run
from helpers import keyword_texts, write_jsonl

LINE = re.compile(r"^\[(\d+) \| [\d.]+\] (.*)$")


def printed(text):
    """``{step: {name: value}}`` of the ``[step | secs] name=value ...`` lines in ``text``."""
    found = {}
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            values = dict(pair.split("=") for pair in m.group(2).split())
            found.setdefault(int(m.group(1)), {}).update({k: float(v) for k, v in values.items()})
    return found


def raw_values(folder):
    """``(step, tag, kind)`` of every value in the events files, kind being the proto field."""
    out = []
    for path in events_files(folder):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.append((event.step, value.tag, value.WhichOneof("value")))
    return out


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny model trained from scratch, 6 steps then 3 more on resume, with validation."""
    folder = tmp_path_factory.mktemp("events")
    vocab = folder / "vocab"
    helpers.make_tiny_vocab(str(vocab))
    data = folder / "data.txt"
    data.write_text(corpus_text()[:20_000], encoding="utf-8")
    common = dict(model_name=None, hparams="tiny", vocab_dir=str(vocab), batch_size=2,
                  accumulate_gradients=2, learning_rate=1e-3, print_every=2, val_every=3,
                  val_fraction=0.1, sample_every=0, seed=0,
                  checkpoint_dir=str(folder / "checkpoint"))
    outputs = []
    for steps in (6, 3):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            gpt2.finetune(gpt2.start_tf_sess(), str(data), steps=steps, warmup_steps=4,
                          **common)
        outputs.append(out.getvalue())
    run_dir = str(folder / "checkpoint" / "run1")
    return run_dir, outputs


def test_loss_of_every_step_as_gpt2_simple_writes_it(lm_run):
    run_dir, outputs = lm_run
    scalars = read_scalars(run_dir)
    assert [step for step, _ in scalars["loss"]] == list(range(1, 10))
    lines = printed("\n".join(outputs))
    assert sorted(s for s, v in lines.items() if "avg" in v) == [2, 4, 6, 8]
    loss = dict(scalars["loss"])
    for step, values in lines.items():
        if "loss" in values:
            assert round(loss[step], 2) == values["loss"], step
    # gpt-2-simple's encoding: Summary values with simple_value, one file per process
    assert len(events_files(run_dir)) == 2
    assert {kind for _, _, kind in raw_values(run_dir)} == {"simple_value"}


def test_validation_learning_rate_and_speed(lm_run):
    run_dir, outputs = lm_run
    scalars = read_scalars(run_dir)
    lines = printed("\n".join(outputs))
    val_steps = sorted(s for s, v in lines.items() if "val_loss" in v)
    assert val_steps == [3, 6]  # every 3 steps, before the next step (none after the last)
    for tag in ("val_loss", "val_perplexity"):
        assert [s for s, _ in scalars[tag]] == val_steps
        for step, value in scalars[tag]:
            assert round(value, 2) == lines[step][tag]
    # warm-up over the run's first 4 steps, then 1e-3 (the resumed steps 7-9 too)
    lr = dict(scalars["learning_rate"])
    assert sorted(lr) == list(range(1, 10))
    assert lr[1] == pytest.approx(0.25e-3) and lr[2] == pytest.approx(0.5e-3)
    assert all(lr[n] == pytest.approx(1e-3) for n in range(4, 10))
    speed = scalars["tokens_per_second"]
    assert [s for s, _ in speed] == [2, 4, 6, 8] and all(v > 0 for _, v in speed)


def test_overwrite_starts_the_curve_again(tmp_path):
    helpers.make_tiny_vocab(str(tmp_path / "vocab"))
    (tmp_path / "data.txt").write_text(corpus_text()[:5_000], encoding="utf-8")
    options = dict(model_name=None, hparams="tiny", vocab_dir=str(tmp_path / "vocab"), steps=2,
                   accumulate_gradients=1, print_every=1, sample_every=0,
                   checkpoint_dir=str(tmp_path / "checkpoint"))
    run_dir = str(tmp_path / "checkpoint" / "run1")
    gpt2.finetune(gpt2.start_tf_sess(), str(tmp_path / "data.txt"), **options)
    assert len(events_files(run_dir)) == 1
    gpt2.finetune(gpt2.start_tf_sess(), str(tmp_path / "data.txt"), overwrite=True, **options)
    assert len(events_files(run_dir)) == 1  # the old curve went with the old checkpoints
    assert [s for s, _ in read_scalars(run_dir)["loss"]] == [3, 4]


def test_gpt2_simple_run_continued_here_is_one_curve(tmp_path, gpt2_vocab_dir):
    """gpt-2-simple trains steps 1-2 and writes its events file; we continue with 3-4."""
    from helpers import FINETUNE, TOKENS, run_gpt2_simple

    helpers.make_model_dir(str(tmp_path / "models" / "tiny"), vocab_dir=gpt2_vocab_dir,
                           n_ctx=1024, seed=5)
    (tmp_path / "data.txt").write_text("The cat sat on the mat.\n" * 300, encoding="utf-8")
    _, stdout = run_gpt2_simple(FINETUNE, tmp_path, tokens=TOKENS)
    run_dir = str(tmp_path / "checkpoint" / "run1")
    theirs = raw_values(run_dir)
    assert theirs == [(1, "loss", "simple_value"), (2, "loss", "simple_value")]
    gpt2.finetune(gpt2.start_tf_sess(), str(tmp_path / "data.txt"), model_name="tiny",
                  model_dir=str(tmp_path / "models"), steps=2, accumulate_gradients=1,
                  print_every=1, sample_every=0, checkpoint_dir=str(tmp_path / "checkpoint"))
    assert [v for v in raw_values(run_dir) if v[1] == "loss"] == theirs + [
        (3, "loss", "simple_value"), (4, "loss", "simple_value")]
    assert [s for s, _ in read_scalars(run_dir)["loss"]] == [1, 2, 3, 4]


class FakeSteps:
    """Losses 3.0, 2.9, ... and Ctrl-C at step ``stop``."""

    def __init__(self, stop=None):
        self.stop = stop

    def __call__(self, n):
        if n == self.stop:
            raise KeyboardInterrupt
        return 3.0 - n / 10


def test_ctrl_c_flushes_what_was_written(tmp_path, capsys):
    run = Run(steps=-1, print_every=10, log_dir=str(tmp_path))
    saved = []
    assert run.train(FakeSteps(stop=5), save=saved.append,
                     step_scalars=lambda n: {"learning_rate": 0.1 * n}) == "interrupted"
    assert saved == [4]
    scalars = read_scalars(str(tmp_path))
    assert scalars["loss"] == [(n, pytest.approx(3.0 - n / 10)) for n in range(1, 5)]
    assert scalars["learning_rate"] == [(n, pytest.approx(0.1 * n)) for n in range(1, 5)]


def test_a_worker_that_is_not_the_chief_writes_nothing(tmp_path, capsys):
    run = Run(steps=3, print_every=1, log_dir=str(tmp_path), is_chief=False)
    run.train(FakeSteps(), save=lambda n: None)
    assert os.listdir(tmp_path) == [] and capsys.readouterr().out == ""


def test_each_step_is_on_disk_while_training_runs(tmp_path, capsys):
    """TensorBoard (another process) sees a step as soon as it is done, printed or not."""
    seen = {}

    def step(n):
        if n == 4:  # steps 1-3 are done; only step 2 was printed
            seen.update(read_scalars(str(tmp_path)))
        return 1.0

    Run(steps=4, print_every=2, log_dir=str(tmp_path)).train(step, save=lambda n: None)
    assert [s for s, _ in seen["loss"]] == [1, 2, 3]


def test_a_file_cut_short_reads_up_to_the_cut(tmp_path):
    writer = EventsWriter(str(tmp_path))
    for step in range(1, 6):
        writer.scalars(step, {"loss": float(step)})
    writer.close()
    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-10])  # the last record cut (a killed process)
    assert read_scalars(str(tmp_path))["loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]


def test_classifier_writes_val_acc(tiny_model_dir, tmp_path, capsys):
    path = write_jsonl(tmp_path / "train.jsonl", *keyword_texts(30, seed=4))
    val = write_jsonl(tmp_path / "val.jsonl", *keyword_texts(6, seed=5))
    gpt2.finetune_classifier(gpt2.start_tf_sess(), path, val_dataset=val, model_name="tiny",
                             model_dir=os.path.dirname(tiny_model_dir),
                             checkpoint_dir=str(tmp_path / "ck"), run_name="topics", steps=4,
                             batch_size=4, print_every=1, eval_every=2, learning_rate=1e-3)
    lines = printed(capsys.readouterr().out)
    scalars = read_scalars(str(tmp_path / "ck" / "topics"))
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in scalars["val_acc"]] == [2, 4]
    for tag in ("loss", "val_loss", "val_acc"):
        for step, value in scalars[tag]:
            if tag in lines.get(step, {}):
                assert round(value, 4) == lines[step][tag], (tag, step)
    assert scalars["learning_rate"] == [(n, pytest.approx(1e-3)) for n in range(1, 5)]


def test_doctests():
    import doctest

    from gpt2_simple_plus import events

    result = doctest.testmod(events)
    assert result.attempted >= 3 and result.failed == 0


def test_plot_loss_draws_what_the_events_hold(lm_run):
    import matplotlib

    matplotlib.use("Agg")
    run_dir, _ = lm_run
    scalars = read_scalars(run_dir)
    ax = gpt2.plot_loss(run_name="run1", checkpoint_dir=os.path.dirname(run_dir))
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["loss", "running average", "validation loss"]
    assert list(lines["loss"].get_xdata()) == [s for s, _ in scalars["loss"]]
    assert list(lines["loss"].get_ydata()) == [v for _, v in scalars["loss"]]
    assert list(lines["validation loss"].get_ydata()) == [v for _, v in scalars["val_loss"]]
    ax.figure.savefig(os.path.join(os.path.dirname(run_dir), "loss.png"))


def test_plot_loss_without_matplotlib_or_events(tmp_path, monkeypatch):
    from gpt2_simple_plus import plots

    with pytest.raises(gpt2.ModelNotFoundError, match="finetune"):
        gpt2.plot_loss(checkpoint_dir=str(tmp_path))
    writer = EventsWriter(str(tmp_path / "run1"))
    writer.scalars(1, {"loss": 2.0})
    writer.close()
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.pyplot", None)
    with pytest.raises(gpt2.MissingDependencyError, match="pip install matplotlib"):
        plots.plot_loss(checkpoint_dir=str(tmp_path))
    with pytest.raises(ImportError):  # what a user's `except ImportError` catches
        plots.plot_loss(checkpoint_dir=str(tmp_path))


def test_plots_doctests():
    import doctest

    from gpt2_simple_plus import plots

    result = doctest.testmod(plots)
    assert result.attempted >= 3 and result.failed == 0

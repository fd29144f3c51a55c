"""The one training loop (run.Run) driven by fake steps: its schedule, its printed lines,
early stopping, Ctrl-C and the guard against non-finite losses."""

import re

import pytest

from gpt2_simple_plus.errors import TrainingError
from gpt2_simple_plus.run import NON_FINITE_PATIENCE, Run


class Recorder:
    """Hooks that write down what the loop asked for, in order."""

    def __init__(self, losses=None):
        self.events = []
        self.losses = losses

    def step(self, n):
        self.events.append(("step", n))
        return self.losses(n) if self.losses else 1.0

    def save(self, done, with_optimizer=True):
        self.events.append(("save", done) if with_optimizer else ("save-best", done))
        return f"model-{done}"

    def sample(self, done):
        self.events.append(("sample", done))

    def names(self, kind):
        return [n for k, n in self.events if k == kind]


def test_gpt2_simples_schedule_counts_absolute_steps_and_fires_on_resume():
    rec = Recorder()
    run = Run(done=4, steps=4, print_every=0, save_every=2, sample_every=4)
    assert run.train(rec.step, save=rec.save, sample=rec.sample) == "done"
    # Resumed at 4 (a multiple of both): gpt-2-simple saves and samples before step 5.
    assert rec.events == [("save", 4), ("sample", 4), ("step", 5), ("step", 6), ("save", 6),
                          ("step", 7), ("step", 8), ("save", 8)]
    assert run.last_saved == "model-8"


def test_classifier_schedule_counts_from_the_start_and_reports_the_last_step(capsys):
    rec = Recorder(losses=lambda n: 1.0 / n)
    run = Run(done=10, steps=3, print_every=1, val_every=2, digits=4, origin=10,
              validation_carries_loss=True)
    run.train(rec.step, save=rec.save, validate=lambda done: {"val_loss": 0.5, "val_acc": 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0] for line in lines] == [
        "[11 | " + lines[0].split("| ")[1].split("]")[0],
        "[12 | " + lines[1].split("| ")[1].split("]")[0],
        "[13 | " + lines[2].split("| ")[1].split("]")[0]]
    assert re.fullmatch(r"\[11 \| \d+\.\d\d\] loss=0\.0909 avg=0\.0909", lines[0])
    assert re.fullmatch(r"\[12 \| \d+\.\d\d\] loss=0\.0833 val_loss=0\.5000 val_acc=1\.0000",
                        lines[1])
    assert lines[2].startswith("[13 | ") and "val_acc=" in lines[2]
    assert [h["step"] for h in run.history] == [12, 13]
    assert rec.names("save") == [13]


def test_the_average_is_gpt2_simples_decayed_mean_of_printed_losses(capsys):
    losses = [3.0, 2.0, 1.0]
    run = Run(steps=3, print_every=1)
    run.train(lambda n: losses[n - 1], save=lambda done: None)
    avgs = [float(line.rsplit("avg=", 1)[1]) for line in capsys.readouterr().out.splitlines()]
    expected = []
    num = den = 0.0
    for loss in losses:
        num, den = num * 0.99 + loss, den * 0.99 + 1
        expected.append(round(num / den, 2))
    assert avgs == expected


def test_early_stopping_restores_and_saves_the_best_weights(capsys):
    weights = {"w": 0}
    val = iter([3.0, 1.0, 2.0, 2.5, 2.7])
    rec = Recorder()

    def step(n):
        weights["w"] = n
        return 1.0

    run = Run(steps=20, print_every=0, val_every=1, early_stopping_patience=3)
    reason = run.train(step, save=rec.save, validate=lambda done: {"val_loss": next(val)},
                       snapshot=lambda: dict(weights), restore=weights.update)
    assert reason == "early_stopping"
    assert weights["w"] == 2 and run.done == 2  # validated after step 2: the best
    assert rec.events == [("save-best", 2)]
    assert "stopping early" in capsys.readouterr().out


def test_ctrl_c_saves_what_was_done():
    def step(n):
        if n == 3:
            raise KeyboardInterrupt
        return 1.0

    rec = Recorder()
    run = Run(steps=-1, print_every=0)
    assert run.train(step, save=rec.save) == "interrupted"
    assert rec.names("save") == [2]


def test_a_single_non_finite_loss_is_skipped_silently(capsys):
    losses = {2: float("inf")}
    rec = Recorder(losses=lambda n: losses.get(n, 1.0))
    run = Run(steps=4, print_every=1)
    run.train(rec.step, save=rec.save)
    out = capsys.readouterr().out
    assert rec.names("save") == [4]
    assert "avg=1.00" in out.splitlines()[-1]  # the inf did not poison the average


def test_a_persistent_non_finite_loss_stops_without_saving(capsys):
    rec = Recorder(losses=lambda n: 2.0 if n < 3 else float("nan"))
    run = Run(steps=50, print_every=1, save_every=1)
    with pytest.raises(TrainingError) as err:
        run.train(rec.step, save=rec.save)
    message = str(err.value)
    assert f"{NON_FINITE_PATIENCE} steps in a row" in message and "learning rate" in message
    assert "last finite loss: 2.0000" in message and "model-2" in message
    assert rec.names("save") == [1, 2]  # nothing saved once the loss went NaN
    assert "Not saving step 3" in capsys.readouterr().out


def test_the_final_save_after_a_non_finite_loss_is_refused(capsys):
    rec = Recorder(losses=lambda n: float("nan") if n >= 2 else 1.0)
    run = Run(steps=2, print_every=0, save_every=1)
    with pytest.raises(TrainingError, match="Not saving step 2.*model-1"):
        run.train(rec.step, save=rec.save)
    assert rec.names("save") == [1]


def test_a_periodic_save_waits_for_a_finite_loss(capsys):
    rec = Recorder(losses=lambda n: float("nan") if n == 2 else 1.0)
    run = Run(steps=4, print_every=0, save_every=1)
    run.train(rec.step, save=rec.save)
    assert rec.names("save") == [1, 3, 4]
    assert "Not saving step 2" in capsys.readouterr().out


def test_a_worker_that_is_not_the_chief_prints_nothing(capsys):
    run = Run(steps=2, print_every=1, is_chief=False)
    run.train(lambda n: 1.0, save=lambda done: None)
    assert capsys.readouterr().out == ""


def test_a_negative_every_means_never():
    rec = Recorder()
    run = Run(steps=3, print_every=-1, save_every=-1, sample_every=-5)
    run.train(rec.step, save=rec.save, sample=rec.sample)
    assert rec.names("save") == [3] and rec.names("sample") == []

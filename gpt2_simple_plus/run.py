"""The training loop: one run's step counter and everything that happens between steps.

Both trainers, :func:`~gpt2_simple_plus.training.finetune` and
:func:`~gpt2_simple_plus.classifier.finetune_classifier`, drive one
:class:`Run`. The trainer says how to do one step, how to save, sample and
validate; the run decides when, prints the ``[step | seconds] loss=… avg=…``
lines, stops early, saves on Ctrl-C and refuses to save weights that are no
longer finite. Read :meth:`Run.train` top to bottom: that is the whole loop.

    >>> import math
    >>> run = Run(steps=3, print_every=1)
    >>> losses = iter([2.0, 1.0, 0.5])
    >>> run.train(lambda step: next(losses), save=lambda step: print("save", step))
    ... # doctest: +ELLIPSIS
    [1 | ...] loss=2.00 avg=2.00
    [2 | ...] loss=1.00 avg=1.50
    [3 | ...] loss=0.50 avg=1.16
    save 3
    'done'
"""

import math
import sys
import time

from tqdm import tqdm

from .errors import TrainingError
from .events import EventsWriter

# A non-finite loss this many steps in a row ends training (one such step is skipped silently:
# float16's loss scaler recovers from an overflow by itself).
NON_FINITE_PATIENCE = 3


class Run:
    """One training run's clock, counter and schedule.

    * ``done``: steps finished before this call (gpt-2-simple's ``counter`` minus 1);
      ``steps``: how many to run now (``-1``: until Ctrl-C).
    * ``print_every`` / ``save_every`` / ``sample_every`` / ``val_every``: every how
      many steps to print the loss line, save, write samples, validate (0: never).
      They count from ``origin``: 0 (gpt-2-simple's absolute steps, so a resumed
      run at step 1000 with ``save_every=1000`` saves before its first step, as
      gpt-2-simple does) or ``done`` (steps of this call, as the classifier counts).
    * ``early_stopping_patience``: stop after that many validations without a
      lower first metric (``val_loss``); the final save then holds the best weights.
    * ``digits``: decimals printed (2 for language models, as gpt-2-simple; 4 for
      classifiers).
    * ``validation_carries_loss``: the validation line also shows the step's loss
      and replaces its training line, and the last step is always validated (the
      classifier's report).
    * ``is_chief``: only the chief of a multi-worker run prints and writes files;
      every worker runs the same steps.
    * ``log_dir``: the folder of the run's TensorBoard events file (the chief's
      only; see :mod:`~gpt2_simple_plus.events`): every step's ``loss``, as
      gpt-2-simple wrote it, and every metric of a printed validation line;
      on disk as soon as each step ends, closed when training stops.
    """

    def __init__(self, *, done=0, steps=-1, print_every=1, save_every=0, sample_every=0,
                 val_every=0, early_stopping_patience=None, digits=2, origin=0,
                 validation_carries_loss=False, progress_bar=False, is_chief=True,
                 log_dir=None):
        self.done = self.first = int(done)
        self.steps = int(steps)
        # 0 or a negative number means never, as gpt-2-simple's `every > 0` checks did
        self.print_every, self.save_every = max(print_every or 0, 0), max(save_every or 0, 0)
        self.sample_every, self.val_every = max(sample_every or 0, 0), max(val_every or 0, 0)
        self.patience = early_stopping_patience
        self.digits = digits
        self.origin = origin
        self.validation_carries_loss = validation_carries_loss
        self.progress_bar = progress_bar
        self.is_chief = is_chief
        self.events = EventsWriter(log_dir) if log_dir and is_chief else None
        self.loss = float("nan")  # the last step's loss
        self.avg = (0.0, 0.0)  # gpt-2-simple's running average: decayed sum and weight
        self.history = []  # one dict of metrics per validation, with its "step"
        self.best = {"value": float("inf"), "step": None, "weights": None, "bad": 0}
        self.bad_losses = 0  # non-finite losses in a row
        self.last_saved = None  # the checkpoint this run wrote last
        self.latest = None  # the run's last good checkpoint (set by the trainer when resuming)
        self.start_time = time.time()

    # -- printing ------------------------------------------------------------

    def log(self, *parts):
        """Print a line (the chief only), above the progress bar if there is one."""
        if self.is_chief:
            tqdm.write(" ".join(str(p) for p in parts), file=sys.stdout)
            sys.stdout.flush()

    def line(self, step, **metrics):
        """Print ``[step | seconds] name=value ...`` and record the values."""
        d = self.digits
        values = " ".join(f"{name}={value:2.{d}f}" for name, value in metrics.items())
        self.log(f"[{step} | {time.time() - self.start_time:2.2f}] {values}")
        self.record(step, metrics)

    def record(self, step, metrics):
        """Keep ``metrics`` of ``step`` where a user can look at them later: the events
        file (``loss`` is written at every step already; ``avg`` is TensorBoard's
        smoothing's job)."""
        if self.events is not None:
            self.events.scalars(step, {name: value for name, value in metrics.items()
                                       if name not in ("loss", "avg")})

    # -- when things happen --------------------------------------------------

    def finished(self):
        return self.steps > 0 and self.done >= self.first + self.steps

    def due(self, every):
        """Whether the step just finished (``done``) is one of every ``every``."""
        if not every or self.done <= 0 or (self.done == self.first and self.origin == self.first):
            return False
        return (self.done - self.origin) % every == 0

    def validation_due(self):
        return self.due(self.val_every) or (self.validation_carries_loss and self.finished()
                                            and self.done > self.first)

    # -- the loop ------------------------------------------------------------

    def train(self, step, *, save, sample=None, validate=None, snapshot=None, restore=None,
              step_scalars=None, tokens_per_step=None):
        """Run ``step(n) -> loss`` for steps ``done + 1`` on; returns why it stopped:
        ``"done"``, ``"early_stopping"`` or ``"interrupted"`` (Ctrl-C).

        ``save(done)`` writes a checkpoint (``save(done, with_optimizer=False)`` for
        early stopping's best weights); ``sample(done)`` writes samples;
        ``validate(done)`` returns ``{"val_loss": …, …}``; ``snapshot()``/``restore(w)``
        copy the weights out and back for early stopping. A loss that stays
        non-finite raises :class:`TrainingError` without saving.

        For the events file: ``step_scalars(n)`` returns more ``{tag: value}`` of
        step ``n`` (e.g. its learning rate); with ``tokens_per_step``, each printed
        line also writes ``tokens_per_second`` since the previous one.
        """
        bar = None
        if self.progress_bar and self.steps > 0 and self.is_chief:
            bar = tqdm(total=self.steps, file=sys.stderr, dynamic_ncols=True)
        self.start_time = time.time()
        self._since = (self.start_time, self.done)
        try:
            while True:
                if self.finished():
                    if validate and self.validation_carries_loss and not self._validated_now():
                        self._validate(validate, snapshot)
                    self._final_save(save, restore)
                    return "done"
                if self.due(self.save_every):
                    if self.bad_losses:  # wait for a finite loss; a final save would refuse
                        self.log(f"Not saving step {self.done}: its loss was not finite.")
                    else:
                        self._save(save, self.done)
                if sample and self.due(self.sample_every):
                    sample(self.done)
                if validate and self.due(self.val_every) and not self._validated_now() \
                        and self._validate(validate, snapshot):
                    self.log(f"Validation loss has not improved for {self.patience} "
                             f"validations: stopping early.")
                    self._final_save(save, restore)
                    return "early_stopping"

                loss = float(step(self.done + 1))
                self.done += 1
                if self.events is not None:
                    more = step_scalars(self.done) if step_scalars else {}
                    self.events.scalars(self.done, {"loss": loss, **more})
                self._check_finite(loss)
                if bar is not None:
                    bar.update(1)
                if self.print_every and self.done % self.print_every == 0 and \
                        not (self.validation_carries_loss and self.validation_due()):
                    self._print_loss(loss, tokens_per_step)
        except KeyboardInterrupt:
            self.log("interrupted")
            if self.done == self.first and self.validation_carries_loss:
                raise  # nothing trained yet: nothing worth a report
            if validate and self.validation_carries_loss and not self._validated_now():
                self._validate(validate, snapshot)
            self._save(save, self.done)
            return "interrupted"
        finally:
            if bar is not None:
                bar.close()
            if self.events is not None:
                self.events.close()

    # -- the pieces of the loop ----------------------------------------------

    def _print_loss(self, loss, tokens_per_step=None):
        if math.isfinite(loss):  # a skipped step does not poison the average
            self.avg = (self.avg[0] * 0.99 + loss, self.avg[1] * 0.99 + 1.0)
        avg = self.avg[0] / self.avg[1] if self.avg[1] else loss
        now = time.time()
        if self.events is not None and tokens_per_step:
            since, done = self._since
            rate = (self.done - done) * tokens_per_step / max(now - since, 1e-9)
            self.events.scalars(self.done, {"tokens_per_second": rate})
        self._since = (now, self.done)
        self.line(self.done, loss=loss, avg=avg)

    def _check_finite(self, loss):
        self.loss = loss if math.isfinite(loss) or not math.isfinite(self.loss) else self.loss
        if math.isfinite(loss):
            self.bad_losses = 0
            self.last_finite_loss = loss
            return
        self.bad_losses += 1
        if self.bad_losses >= NON_FINITE_PATIENCE:
            last = getattr(self, "last_finite_loss", None)
            kept = f"; the run's latest checkpoint is still {self.latest}" \
                if self.latest else ""
            raise TrainingError(
                f"The loss was {loss} for {self.bad_losses} steps in a row (step {self.done}; "
                f"last finite loss: {'none' if last is None else f'{last:.4f}'}). Training "
                f"stopped without saving the broken weights{kept}. Usual causes: a learning "
                f"rate too high (try a tenth of it) or a precision too low for this model "
                f"(try precision='float32').")

    def _validated_now(self):
        return bool(self.history) and self.history[-1]["step"] == self.done

    def _validate(self, validate, snapshot):
        """Validate, print, remember the best; True when early stopping says stop."""
        metrics = validate(self.done)
        if self.validation_carries_loss:
            metrics = {"loss": self.loss, **metrics}
        self.line(self.done, **metrics)
        self.history.append({"step": self.done, **metrics})
        if not self.patience:
            return False
        value = metrics["val_loss"]
        if value < self.best["value"]:
            self.best.update(value=value, step=self.done, bad=0,
                             weights=snapshot() if snapshot else None)
            return False
        self.best["bad"] += 1
        return self.best["bad"] >= self.patience

    def _final_save(self, save, restore):
        best = self.best
        if not self.patience or best["weights"] is None or best["step"] == self.done:
            return self._save(save, self.done)
        self.log(f"Keeping the best weights: validation loss {best['value']:.2f} at step "
                 f"{best['step']}.")
        restore(best["weights"])
        self.done = best["step"]
        self._save(save, self.done, with_optimizer=False)  # the optimizer state is for later weights

    def _save(self, save, step, **kwargs):
        if self.bad_losses:
            raise TrainingError(
                f"Not saving step {step}: its loss was not finite, so its weights may not be "
                f"either. The run's latest checkpoint is still {self.latest or 'the last one'}.")
        self.last_saved = save(step, **kwargs) or self.last_saved
        self.latest = self.last_saved or self.latest

"""Fine-tuning: gpt-2-simple's ``finetune``, on TensorFlow 2.

    import gpt2_simple_plus as gpt2
    sess = gpt2.start_tf_sess()
    gpt2.finetune(sess, "shakespeare.txt", model_name="124M", steps=1000)
    gpt2.generate(sess)

The run lives where gpt-2-simple puts it: ``checkpoint/run1/`` holds
``model-<step>.*``, the ``checkpoint`` state file, ``counter`` and copies of
``hparams.json``/``encoder.json``/``vocab.bpe``; samples go to
``samples/run1/samples-<step>``. gpt-2-simple loads these runs and this
package continues gpt-2-simple's. Beside the model we save the optimizer
state (``train_state-<step>.*``), so a resumed run continues the same
trajectory, and the encoded dataset (``dataset-<key>.npy``), so a second
``finetune`` does not encode it again.

How one step works, all in one compiled function (:func:`make_train_step`):
sample ``accumulate_gradients`` micro-batches of ``batch_size`` windows of
``n_ctx`` tokens, average their gradients, clip them if asked, and apply the
optimizer (see ``optimizers.py``); the loss is :func:`~gpt2_simple_plus.losses.lm_loss`.
The loop around it is :class:`~gpt2_simple_plus.run.Run`'s, which prints,
samples, validates and saves with gpt-2-simple's step counting; a loss that
stays NaN stops the run with the last good checkpoint kept.

Training from scratch (no download needed): ``model_name=None`` with
``hparams=`` (a size name such as ``"tiny"``, ``"mini"``, ``"small"``, or an
:class:`~gpt2_simple_plus.hparams.HParams`) and ``vocab_dir=`` (a folder with
``encoder.json`` and ``vocab.bpe``)::

    gpt2.finetune(sess, "notes.txt", model_name=None, hparams="tiny",
                  vocab_dir="models/124M", steps=500, sample_length=60)
"""

import collections
import contextlib
import gc
import inspect
import math
import os
import shutil

import numpy as np
import tensorflow as tf

from . import checkpoints, distributed, lora, memory
from .data import Sampler, load_dataset, remove_stale_caches, split_validation, validation_windows
from .eager import ensure_eager
from .files import copy_file_atomic
from .encoder import get_encoder
from .errors import DatasetError, ModelNotFoundError, TrainingError
from .hparams import HParams, canonical_model_name, hparams_for, load_hparams, save_hparams
from .loading import read_checkpoint
from .losses import lm_loss
from .model import GPT2
from .optimizers import OPTIMIZERS, make_optimizer
from .run import Run

SAMPLE_DIR = "samples"
PRECISIONS = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
              "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}
LR_DECAYS = (None, "cosine", "linear")
VAL_WINDOWS = 16  # windows scored at each validation (fixed, so the losses compare)

# How often each compiled function was traced; a test checks that the train
# step is traced once per finetune call, never per step.
trace_counts = collections.Counter()


def finetune(sess, dataset, steps=-1, model_name="124M", model_dir="models", combine=50000,
             batch_size=1, learning_rate=0.0001, accumulate_gradients=5, restore_from="latest",
             run_name="run1", checkpoint_dir="checkpoint", sample_every=100, sample_length=1023,
             sample_num=1, multi_gpu=False, save_every=1000, print_every=1, max_checkpoints=1,
             use_memory_saving_gradients=False, only_train_transformer_layers=False,
             optimizer="adam", overwrite=False, reuse=False, *,
             hparams=None, vocab_dir=None, seed=None,
             val_dataset=None, val_fraction=0.0, val_every=None, early_stopping_patience=None,
             warmup_steps=0, lr_decay=None, max_grad_norm=None, weight_decay=0.01,
             precision="float32", strategy=None, jit_compile=None, check_memory=True,
             lora_rank=None, lora_alpha=None, lora_targets=lora.LAYERS, lora_base_dtype=None,
             lora_save="merged"):
    """Fine-tune GPT-2 on ``dataset`` (a file, folder or glob of .txt/.csv/.npz).

    gpt-2-simple's arguments keep their meaning and defaults:

    * ``steps``: how many steps to train; ``-1`` trains until Ctrl-C, which saves
      a checkpoint and returns.
    * ``restore_from``: ``"latest"`` continues the run (step count from its
      ``counter``), ``"fresh"`` starts again from ``model_dir/model_name``, or a
      folder holding a checkpoint.
    * ``batch_size`` windows per micro-batch; ``accumulate_gradients``
      micro-batches per step (their gradients averaged; gpt-2-simple summed
      them, which Adam hardly notices but SGD does: multiply an SGD
      ``learning_rate`` by ``accumulate_gradients`` to match such a run);
      ``learning_rate``; ``optimizer`` (``"adam"``, ``"adamw"``, ``"sgd"`` or
      ``"adafactor"``: factored second moments, for models whose Adam state does not
      fit; ``learning_rate`` is its step size as for Adam, and ``learning_rate=None``
      selects the paper's relative step size, see :class:`~.optimizers.Adafactor`).
    * ``print_every`` / ``sample_every`` / ``save_every`` steps: print the
      ``[step | seconds] loss=… avg=…`` line, write ``sample_num`` samples of
      ``sample_length`` tokens (temperature 1, top_k 40) to
      ``samples/<run_name>/``, save ``checkpoint/<run_name>/model-<step>``.
      ``max_checkpoints`` are kept. ``overwrite=True`` deletes the run's old
      checkpoints first.
    * ``use_memory_saving_gradients``: recompute each block in the backward
      pass instead of storing it (less memory, somewhat more time: see the README's
      performance section).
    * ``only_train_transformer_layers``: leave the embeddings unchanged.
    * ``multi_gpu``: data-parallel over every GPU (``tf.distribute.MirroredStrategy``).
    * ``reuse`` is accepted and ignored (there is no global graph to reuse).

    Beyond gpt-2-simple (keyword-only):

    * ``model_name=None`` with ``hparams`` (``"tiny"``, ``"mini"``, ``"small"``,
      ``"124M"`` ... or an ``HParams``) and ``vocab_dir`` trains a new model
      from random weights.
    * ``seed``: fixes the initial weights, the windows sampled and the samples.
    * ``val_dataset`` (a path) or ``val_fraction`` (keep the last fraction of
      every chunk): every ``val_every`` steps (default ``sample_every``) print the
      validation loss and perplexity on a fixed set of windows.
      ``early_stopping_patience=N`` stops after N validations without
      improvement; the run's final checkpoint then holds the best weights
      (kept in memory meanwhile: one more copy of the model).
    * ``warmup_steps`` (linear warm-up), ``lr_decay`` (``"cosine"`` or
      ``"linear"`` to 0 at the last step), ``max_grad_norm`` (clip the global
      gradient norm), ``weight_decay`` (``"adamw"`` only).
    * ``precision``: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (with dynamic
      loss scaling); the weights stay float32 either way.
    * ``strategy``: any ``tf.distribute`` strategy, or ``"multiworker"``
      (``MultiWorkerMirroredStrategy`` over the processes or machines ``TF_CONFIG``
      lists; every worker runs the same ``finetune``, only the chief writes and
      prints) or ``"mirrored"``. ``batch_size`` is the batch of all devices
      together, split across them, so it must be a multiple of their number; with
      the same ``seed`` the run trains on the same windows as one process does
      (see ``distributed.py`` and the README's multi-worker recipe).
    * ``jit_compile``: compile the step with XLA (``None``: what measured faster,
      see :func:`default_jit_compile`).
    * ``check_memory``: before anything slow, estimate the memory the run needs
      (see ``memory.py``), print it (``Memory: about … GB needed, … available``)
      and, when it will not fit, raise :class:`~.errors.OutOfMemoryError` naming
      settings that would, leaving the run folder as it was. ``False`` skips the
      check (the estimate may be pessimistic where the system can swap). An
      out-of-memory during training ends in the same kind of message, the run's
      last checkpoint untouched.
    * ``lora_rank=16`` trains LoRA adapters (Hu et al. 2021; see ``lora.py``)
      instead of the weights: a low-rank update ``(lora_alpha / lora_rank)·A·B``
      beside each projection named in ``lora_targets`` (attention's
      ``attn/c_attn``, ``attn/c_proj`` and the MLP's ``mlp/c_fc``,
      ``mlp/c_proj`` by default), in every block. ``lora_alpha`` defaults to
      ``2 * lora_rank``. The base weights stay frozen: no gradients, no
      optimizer state, hence less memory and faster steps.
      ``lora_base_dtype="bfloat16"`` (or ``"float16"``) holds the frozen base
      in half the memory; with ``use_memory_saving_gradients`` its float32
      copy then lives one block at a time. Each save writes the merged
      weights as ``model-<step>`` (gpt-2-simple loads it; after training
      ``sess`` holds it, its matrices in ``lora_base_dtype``) and the adapters
      as ``lora-<step>``; ``lora_save="adapters"`` keeps the adapters alone
      (small files, loaded by this package only). ``restore_from="latest"``
      continues the adapters on the original base model, never on the merged
      checkpoint. With a multi-worker strategy, each worker reads its own copy
      of the base (it must be the same model: finetune checks) and the workers
      exchange only the adapters' gradients.

    After training, ``sess`` holds the trained model: ``gpt2.generate(sess)``
    samples from it.

    Example (a tiny model trained from scratch on a few lines)::

        >>> import os, tempfile, gpt2_simple_plus as gpt2
        >>> from gpt2_simple_plus._examples import example_vocab
        >>> folder = tempfile.mkdtemp()
        >>> path = os.path.join(folder, "hats.txt")
        >>> _ = open(path, "w").write("the hat " * 200)
        >>> sess = gpt2.start_tf_sess()
        >>> gpt2.finetune(sess, path, model_name=None, hparams="tiny",
        ...               vocab_dir=example_vocab(), steps=2, seed=0, print_every=10,
        ...               checkpoint_dir=os.path.join(folder, "checkpoint"))  # doctest: +ELLIPSIS
        Memory: about ... GB needed, ... available
        Initialising a new model from random weights: 2 layers, 32 wide, 64-token window
        Loading dataset...
        dataset has 613 tokens
        Training...
        Saving .../checkpoint/run1/model-2
        >>> sess.model.hparams.n_layer
        2
    """
    ensure_eager()
    steps = int(steps) if steps else -1
    precision = _check_arguments(
        dataset=dataset, steps=steps, optimizer=optimizer, precision=precision,
        lr_decay=lr_decay, batch_size=batch_size, accumulate_gradients=accumulate_gradients,
        learning_rate=learning_rate, val_dataset=val_dataset, val_fraction=val_fraction,
        early_stopping_patience=early_stopping_patience)
    if lora_rank is not None:  # the sizes are checked too once hparams are known
        lora.check_settings(None, lora_rank, lora_alpha, lora_targets, lora_base_dtype, lora_save)
    run_dir = os.path.join(checkpoint_dir, run_name)
    # a multi-worker strategy must be made before TensorFlow runs anything else
    strategy = distributed.make_strategy(strategy, multi_gpu)
    # Only the chief of a multi-worker run writes (run folder, dataset cache, samples) and
    # prints; the other workers read the base model and take the rest from the chief.
    chief = distributed.is_chief(strategy)
    multi_worker = distributed.worker_count(strategy) > 1
    run = Run(done=0, steps=steps, print_every=print_every, save_every=save_every,
              sample_every=sample_every, progress_bar=True,
              val_every=val_every or (sample_every if sample_every and sample_every > 0 else 100),
              early_stopping_patience=early_stopping_patience, is_chief=chief, log_dir=run_dir)

    # -- everything before the first step; a failure here leaves no trace ----------
    with _removed_on_failure(run_dir, kept=lambda: run.last_saved) if chief else _nothing(), \
            distributed.worker_errors(strategy, run):
        if chief:
            files_before = os.listdir(run_dir) if os.path.isdir(run_dir) else []
            base_dir, hp = _prepare_run_folder(run_dir, model_name, model_dir, hparams, vocab_dir)
            vocab_folder = run_dir
        else:  # the chief's run folder may be on another machine, and is the chief's to write
            base_dir, hp, vocab_folder = _worker_model_files(model_name, model_dir, hparams,
                                                             vocab_dir, run_dir)
        lora_settings = {}
        if lora_rank is not None:
            lora_rank, lora_alpha, lora_layers, lora_base_dtype = lora.check_settings(
                hp, lora_rank, lora_alpha, lora_targets, lora_base_dtype, lora_save)
            lora_settings = dict(lora_rank=lora_rank, lora_base_dtype=lora_base_dtype,
                                 lora_targets=lora_layers, lora_save=lora_save)
        memory_settings = memory.Settings(
            hp, model_name=model_name and canonical_model_name(model_name),
            batch_size=batch_size // (strategy.num_replicas_in_sync if strategy else 1),
            accumulate_gradients=accumulate_gradients, optimizer=str(optimizer).lower(),
            use_memory_saving_gradients=bool(use_memory_saving_gradients),
            only_train_transformer_layers=bool(only_train_transformer_layers),
            precision=precision, dataset_bytes=_file_bytes(dataset), **lora_settings)
        if check_memory:  # before anything slow; each worker checks its own machine
            available, where = memory.available_memory()
            needed = memory.check_fit(memory_settings, available=available, where=where,
                                      lora=_has_lora())
            run.log(memory.summary_line(needed, available))
        enc = get_encoder(vocab_folder)
        sample_length = _fit_sample_length(sample_length, hp, sample_every)
        if model_name and canonical_model_name(model_name) in ("355M", "774M", "1558M"):
            run.log("For larger models, the recommended finetune() parameters are:")
            run.log("\tuse_memory_saving_gradients = True")
            run.log("\tonly_train_transformer_layers = True")
            run.log("\taccumulate_gradients = 1\n")
        if strategy is not None:
            run.log(distributed.describe(strategy))
        distributed.check_batch_split(strategy, batch_size)
        if jit_compile is None:
            jit_compile = strategy is None and default_jit_compile(precision)

        if lora_rank is not None:  # the base is an original model; the run holds the adapters
            # Another worker reads the base from its own models folder; the adapters, and
            # what a resumed run holds, come from the chief (_agree_with_chief).
            lora_base, lora_state, ckpt = lora.starting_point(
                restore_from if chief or restore_from != "latest" else "fresh",
                run_dir, base_dir)
            run.log("Loading checkpoint", lora_base)
            if ckpt is not None:
                run.log("Loading LoRA adapters", ckpt)
        else:
            # The other workers start from random weights: TensorFlow gives every variable
            # made under a multi-worker strategy the chief's value.
            ckpt = _checkpoint_to_restore(restore_from, run_dir, base_dir) if chief else None
            if ckpt is None:
                run.log(f"Initialising a new model from random weights: {hp.n_layer} layers, "
                        f"{hp.n_embd} wide, {hp.n_ctx}-token window")
            else:
                run.log("Loading checkpoint", ckpt)
        if lora_rank is not None:  # every adapter is in a block: only_train_... holds too
            model = lora.build_model(hp, lora_base, rank=lora_rank, alpha=lora_alpha,
                                     layers=lora_layers, base_dtype=lora_base_dtype,
                                     compute_dtype=precision, seed=seed, state=lora_state,
                                     source=ckpt, strategy=strategy, local_base=multi_worker)
            trained = model.lora.variables_by_name()
        with strategy.scope() if strategy else _nothing():
            if lora_rank is None:
                weights = None if ckpt is None else read_checkpoint(
                    os.path.dirname(ckpt), ckpt, hp)
                model = GPT2(hp, weights, seed=seed, compute_dtype=precision)
                del weights
                trained = {n: v for n, v in model.weights.items()
                           if not only_train_transformer_layers or "/h" in n}
            # TensorFlow's fused update kernels; XLA fuses the spelled-out arithmetic better
            opt = make_optimizer(str(optimizer).lower(), trained, weight_decay=weight_decay,
                                 fused=strategy is None and not jit_compile,
                                 relative_step=learning_rate is None)
            scaler = LossScale() if precision == "float16" else None

        run.log("Loading dataset...")
        sampler, window, val_tokens = _load_data(
            enc, dataset, combine, run_dir, hp.n_ctx, val_dataset, val_fraction, seed,
            vocab_folder=vocab_folder, write_cache=chief, log=run.log)
        run.log("Training...")

        # gpt-2-simple's step counting: the run's counter is the number of steps done
        if chief and restore_from == "latest" and \
                os.path.exists(os.path.join(run_dir, "counter")):
            run.done = run.first = checkpoints.read_counter(run_dir)
        from_base = base_dir is not None and \
            os.path.dirname(os.path.abspath(ckpt or "")) == os.path.abspath(base_dir)
        if ckpt is not None and not from_base:  # a run's checkpoint: continue its optimizer too
            _restore_train_state(ckpt, opt, sampler, scaler)
            run.latest = ckpt
        if multi_worker:
            base = {} if lora_rank is None else dict(  # LoRA: each worker read its own base
                lora_alpha=lora_alpha, lora_base_fingerprint=lora.fingerprint(lora_base))
            _agree_with_chief(strategy, run, sampler, opt, scaler, dict(
                hparams=hp.to_dict(), window=window, steps=steps, batch_size=batch_size,
                accumulate_gradients=accumulate_gradients, optimizer=str(optimizer).lower(),
                precision=precision, trained=sorted(trained), validation=val_tokens is not None,
                early_stopping_patience=early_stopping_patience, **lora_settings, **base),
                adapters=list(trained.values()) if lora_rank is not None else [])

        train_step = make_train_step(model, opt, strategy=strategy, scaler=scaler,
                                     recompute=use_memory_saving_gradients,
                                     max_grad_norm=max_grad_norm, jit_compile=jit_compile)
        eval_step = make_eval_step(model, jit_compile=jit_compile) \
            if val_tokens is not None else None
        learning_rate_at = lr_schedule(learning_rate or 0.0, warmup_steps=warmup_steps,
                                       decay=lr_decay, last_step=run.done + steps)

    # -- what the run does at each step and between steps ----------------------------
    micro_batches = accumulate_gradients * batch_size

    def step(n):
        tokens = sampler.sample_many(micro_batches, window)
        tokens = tf.constant(tokens.reshape(accumulate_gradients, batch_size, window))
        try:
            return float(train_step(tokens, tf.constant(learning_rate_at(n), tf.float32)))
        except (tf.errors.ResourceExhaustedError, MemoryError) as err:
            raise memory.out_of_memory(err, memory_settings, lora=_has_lora()) from err

    def save(done, with_optimizer=True):
        if not chief:  # the chief saves; the others know its name, for their messages
            return os.path.join(run_dir, f"model-{done}")
        _check_weights_finite(trained if lora_rank else model.weights, done)
        state = {"train/sampler": np.array(sampler.state.encode())}
        if with_optimizer:
            state.update(opt.state())
        if scaler:
            state.update(scaler.state())
        if lora_rank is not None:  # the merged model-<step> (in pieces) and lora-<step>
            kind = "model" if lora_save == "merged" else checkpoints.LORA_PREFIX
            run.log("Saving", os.path.join(run_dir, f"{kind}-{done}"))
            name = lora.save(run_dir, model, done, lora_base, mode=lora_save, train_state=state,
                             max_checkpoints=max_checkpoints)
        else:
            run.log("Saving", os.path.join(run_dir, "model-{}").format(done))
            name = checkpoints.save_checkpoint(run_dir, model.weights, done,
                                               max_checkpoints=max_checkpoints, train_state=state)
        return os.path.join(run_dir, name)

    def sample(done):
        """gpt-2-simple's samples: ``sample_num`` texts from one window of the dataset."""
        from .generation import sample_tokens

        counter = done + 1  # gpt-2-simple names the file after the step about to run
        context = sampler.sample(1).tolist()  # every worker draws it: their windows stay alike
        if not chief:
            return
        texts = []
        while len(texts) < sample_num:
            n = min(sample_num - len(texts), batch_size)
            rows = sample_tokens(model, [context] * n, sample_length, temperature=1.0, top_k=40,
                                 seed=None if seed is None else seed + counter)
            for row in rows:
                texts.append("======== SAMPLE {} ========\n{}\n".format(
                    len(texts) + 1, enc.decode(context + list(row))))
        run.log(texts[-1])
        os.makedirs(os.path.join(SAMPLE_DIR, run_name), exist_ok=True)
        with open(os.path.join(SAMPLE_DIR, run_name, "samples-{}").format(counter), "w",
                  encoding="utf-8") as fp:
            fp.write("\n".join(texts))

    def validate(done):
        loss = float(np.mean([float(eval_step(tf.constant(w[None]))) for w in val_tokens]))
        if multi_worker:  # the chief's figure, so every worker stops early alike
            loss = distributed.chief_json(strategy, loss)
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 700))}

    if overwrite and restore_from == "latest" and chief:
        for file in files_before:
            if file.startswith(("model", "events", checkpoints.TRAIN_STATE_PREFIX,
                                checkpoints.LORA_PREFIX + "-")):
                os.remove(os.path.join(run_dir, file))
        run.last_saved = run.latest = save(run.done)

    def snapshot():  # early stopping's copy of the best weights (LoRA: the adapters alone)
        return {n: v.numpy() for n, v in trained.items()}

    def restore(weights):
        for n, v in trained.items():
            v.assign(weights[n])

    with distributed.worker_errors(strategy, run):
        ended = run.train(step, save=save, sample=sample,
                          validate=validate if eval_step else None,
                          snapshot=snapshot, restore=restore,
                          step_scalars=lambda n: {"learning_rate": learning_rate_at(n)},
                          tokens_per_step=micro_batches * window)
        if ended != "interrupted":  # (after Ctrl-C the other workers are mid-step)
            distributed.barrier(strategy)  # no worker leaves before the chief's last save

    if lora_rank is not None:  # the session gets the model merged in place: no second copy
        del trained, opt, train_step, eval_step, step, save, sample, validate, snapshot, restore
        gc.collect()  # the step's traced functions and the optimizer sit in reference cycles
        lora.merge_in_place(model, lora_base)
    elif strategy is not None:  # hand the session plain variables, not mirrored ones
        model = GPT2(hp, model.numpy_weights(), compute_dtype=precision)
    sess.set_model(model, enc, run_dir, checkpoint=run.last_saved, run_name=run_name)


def lr_schedule(learning_rate, *, warmup_steps=0, decay=None, last_step=None):
    """The learning rate of each step (counted like the run's counter, from 1):
    linear warm-up over ``warmup_steps``, then constant, or decaying (``"cosine"``
    or ``"linear"``) to 0 just after ``last_step``.

        >>> lr = lr_schedule(1.0, warmup_steps=2, decay="linear", last_step=5)
        >>> [round(lr(step), 2) for step in range(1, 6)]
        [0.5, 1.0, 0.75, 0.5, 0.25]
    """
    first_decay_step = max(int(warmup_steps or 0), 1)

    def at(step):
        lr = learning_rate
        if warmup_steps and step <= warmup_steps:
            lr *= step / warmup_steps
        if decay and step > first_decay_step:
            span = max(last_step + 1 - first_decay_step, 1)
            progress = min((step - first_decay_step) / span, 1.0)
            lr *= 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
        return lr

    return at


# ---------------------------------------------------------------------------
# The compiled step

class LossScale:
    """Dynamic loss scaling for float16: halve on overflow, double after 2000 good steps."""

    def __init__(self, initial=2.0 ** 15, growth_interval=2000):
        self.scale = tf.Variable(initial, dtype=tf.float32, trainable=False, name="loss_scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
        self.growth_interval = growth_interval

    def update(self, finite):
        """Called in the step after each update; ``finite`` says whether the grads were."""
        good = tf.where(finite, self.good_steps + 1, tf.zeros_like(self.good_steps))
        grow = good >= self.growth_interval
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   tf.maximum(self.scale / 2.0, 1.0)))
        self.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))

    def state(self):
        return {"train/loss_scale": self.scale, "train/good_steps": self.good_steps}

    def load_state(self, state):
        if "train/loss_scale" in state:
            self.scale.assign(state["train/loss_scale"])
            self.good_steps.assign(state["train/good_steps"])


def make_train_step(model, opt, *, strategy=None, scaler=None, recompute=False,
                    max_grad_norm=None, jit_compile=False):
    """A compiled ``step(tokens, learning_rate) -> loss``: ``tokens`` is
    ``[micro_batches, batch, seq]`` int32; the gradients of the micro-batches are
    averaged (gpt-2-simple's AccumulatingOptimizer) and applied once; the loss
    returned is the mean over micro-batches."""
    variables = list(opt.variables.values())

    def gradients(tokens):
        with tf.GradientTape() as tape:
            loss = lm_loss(model, tokens, recompute=recompute)
            scaled = loss * scaler.scale if scaler else loss
        grads = tape.gradient(scaled, variables)
        return loss, [tf.convert_to_tensor(g) for g in grads]

    def accumulated(tokens):
        n = tokens.shape[0]
        if n == 1:
            return gradients(tokens[0])

        def add_one(i, loss, grads):
            more_loss, more = gradients(tokens[i])
            return i + 1, loss + more_loss, [a + b for a, b in zip(grads, more)]

        # One loop over the micro-batches, one at a time: the model appears once in the graph
        # (a first micro-batch outside the loop was a second copy, run beside the loop), and
        # TensorFlow does not start the next micro-batch while one runs. Each of those kept
        # another micro-batch's activations alive.
        zeros = [tf.zeros(v.shape, v.dtype) for v in variables]
        _, loss, grads = tf.while_loop(lambda i, *_: i < n, add_one,
                                       (tf.constant(0), tf.constant(0.0), zeros),
                                       parallel_iterations=1)
        return loss / n, [g / n for g in grads]

    def replica_step(tokens):  # the micro-batches' rows are split, axis 1
        return accumulated(distributed.replica_share(tokens, axis=1))

    def step(tokens, learning_rate):
        trace_counts["train_step"] += 1  # runs only while tracing
        if strategy is None:
            loss, grads = accumulated(tokens)
        else:
            loss, grads = strategy.run(replica_step, args=(tokens,))
            loss, *grads = distributed.mean_over_replicas(strategy, [loss, *grads])
        finite = tf.math.is_finite(loss)  # a non-finite loss never reaches the weights
        if scaler:
            grads = [g / scaler.scale for g in grads]
            finite = tf.logical_and(finite, tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(g)) for g in grads]))
        if max_grad_norm:
            grads, _ = tf.clip_by_global_norm(grads, max_grad_norm)

        def apply():
            opt.apply(grads, learning_rate)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        if scaler:  # float16: an overflow halves the scale (and the update was skipped)
            scaler.update(finite)
        return loss

    # autograph off: the step is plain TensorFlow, so tracing is quick
    return tf.function(step, jit_compile=bool(jit_compile), autograph=False)


def make_eval_step(model, *, jit_compile=False):
    """A compiled ``loss(tokens)`` for validation."""

    def evaluate(tokens):
        trace_counts["eval_step"] += 1
        return lm_loss(model, tokens)

    return tf.function(evaluate, jit_compile=bool(jit_compile), autograph=False)


def default_jit_compile(precision):
    """Whether XLA compiles the whole train step by default: no.

    On CPU, TensorFlow's own kernels (oneDNN matmuls, the fused Adam update)
    measured faster than XLA's for the whole step, in float32 and bfloat16
    (``benchmarks/finetune.py``; figures in the README's performance section).
    XLA compiles only the element-wise pieces where it measured faster (GELU's
    gradient, the head's cross-entropy). Pass ``jit_compile=True`` to compile the
    whole step, as a GPU or a TPU wants.
    """
    return False


# ---------------------------------------------------------------------------
# Helpers of finetune

def _check_arguments(*, dataset, steps, optimizer, precision, lr_decay, batch_size,
                     accumulate_gradients, learning_rate, val_dataset, val_fraction,
                     early_stopping_patience):
    """Refuse bad arguments before anything slow (or any file) happens; returns the precision."""
    if str(optimizer).lower() not in OPTIMIZERS:
        raise TrainingError(f"Unknown optimizer {optimizer!r}. Choose one of: "
                            f"{', '.join(OPTIMIZERS)}.")
    if str(precision).lower() not in PRECISIONS:
        raise TrainingError(f"Unknown precision {precision!r}. Choose one of: float32, "
                            f"bfloat16, float16.")
    if lr_decay not in LR_DECAYS:
        raise TrainingError(f"Unknown lr_decay {lr_decay!r}. Choose one of: None, 'cosine', "
                            f"'linear'.")
    if lr_decay and steps <= 0:
        raise TrainingError("lr_decay needs to know when training ends: pass steps=N.")
    for name, value in (("batch_size", batch_size), ("accumulate_gradients", accumulate_gradients)):
        if not isinstance(value, int) or value < 1:
            raise TrainingError(f"{name} must be a whole number of at least 1, got {value!r}.")
    if learning_rate is None and str(optimizer).lower() == "adafactor":
        pass  # Adafactor's relative step size
    elif isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or \
            not math.isfinite(learning_rate) or learning_rate < 0:
        raise TrainingError(f"learning_rate must be a finite number of at least 0, got "
                            f"{learning_rate!r} (gpt-2-simple's default is 0.0001).")
    if dataset is None:
        raise DatasetError("No dataset given: pass a .txt, .csv or .npz file, or a folder.")
    if val_dataset is not None and val_fraction:
        raise TrainingError("Pass val_dataset or val_fraction, not both.")
    if early_stopping_patience and not (val_dataset or val_fraction):
        raise TrainingError("early_stopping_patience needs validation data: pass "
                            "val_fraction=0.1 (or val_dataset=...).")
    return PRECISIONS[str(precision).lower()]


@contextlib.contextmanager
def _removed_on_failure(run_dir, kept):
    """If the block fails before anything was saved (``kept()`` is falsy), remove what it
    added to ``run_dir``: the whole folder if it was new, else the files that were not
    there before. So a bad dataset or argument leaves no half-made run behind."""
    existed = os.path.isdir(run_dir)
    before = set(os.listdir(run_dir)) if existed else set()
    try:
        yield
    except BaseException:
        if not kept():
            if not existed:
                shutil.rmtree(run_dir, ignore_errors=True)
            elif os.path.isdir(run_dir):
                for name in set(os.listdir(run_dir)) - before:
                    path = os.path.join(run_dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        raise


def _file_bytes(dataset):
    """The size of a dataset file (its encoded tokens take about as much memory), else 0."""
    try:
        return os.path.getsize(dataset) if os.path.isfile(dataset) else 0
    except (OSError, TypeError, ValueError):
        return 0


def _has_lora():
    """Whether finetune offers LoRA, so that the memory messages may suggest it."""
    return "lora_rank" in inspect.signature(finetune).parameters


def _fit_sample_length(sample_length, hp, sample_every):
    if sample_length > hp.n_ctx - 1:
        if sample_every and sample_every > 0 and sample_length != 1023:
            print(f"sample_length={sample_length} does not fit in the model's window of "
                  f"{hp.n_ctx} tokens; samples will have {hp.n_ctx - 1} tokens.")
        sample_length = hp.n_ctx - 1
    return sample_length


def _load_data(enc, dataset, combine, run_dir, n_ctx, val_dataset, val_fraction, seed, *,
               vocab_folder=None, write_cache=True, log=print):
    """The training sampler, its window length and the fixed validation windows (or None).

    The encoded dataset is cached in ``run_dir`` (``write_cache=False``: only read from
    there, for the workers of a multi-worker run other than the chief)."""
    cache = dict(cache_dir=run_dir, vocab_folder=vocab_folder or run_dir,
                 write_cache=write_cache, log=log)
    chunks = load_dataset(enc, dataset, combine, **cache)
    val_chunks = None
    if val_dataset is not None:
        val_chunks = load_dataset(enc, val_dataset, combine, **cache)
    elif val_fraction:
        chunks, val_chunks = split_validation(chunks, val_fraction)
    if write_cache:
        remove_stale_caches(run_dir, keep=[chunks, val_chunks or []])
    sampler = Sampler(chunks, seed=seed)
    log("dataset has", sampler.total_size, "tokens")
    window = sampler.window(n_ctx)
    if window < 2:
        raise DatasetError(f"{dataset} has no stretch of 2 tokens or more; training needs at "
                           f"least 2 (one to read, one to predict).")
    if window < n_ctx:
        log(f"(the longest stretch of the dataset has {window} tokens, fewer than the "
            f"model's window of {n_ctx}: training on {window}-token windows)")
    val_tokens = None
    if val_chunks:
        val_tokens = validation_windows(val_chunks, window, VAL_WINDOWS)
        log("validation set has", sum(len(c) for c in val_chunks), "tokens")
    return sampler, window, val_tokens


def _check_weights_finite(weights, step):
    """Never write a checkpoint with a NaN or infinite weight (of ``{name: variable}``)
    over a good one."""
    bad = [n for n, v in weights.items() if not bool(tf.reduce_all(tf.math.is_finite(v)))]
    if bad:
        raise TrainingError(
            f"Not saving step {step}: {len(bad)} weight(s) are no longer finite (e.g. {bad[0]}). "
            f"Training diverged; the run's latest checkpoint is the last good one. Usual "
            f"causes: a learning rate too high (try a tenth of it) or a precision too low "
            f"(try precision='float32').")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _worker_model_files(model_name, model_dir, hparams, vocab_dir, run_dir):
    """(base folder, hparams, vocabulary folder) for a worker other than the chief, read
    from the base model (or ``hparams``/``vocab_dir``) without writing anything."""
    if model_name is None:
        n_vocab = get_encoder(vocab_dir).n_vocab
        if isinstance(hparams, str):
            return None, hparams_for(hparams, n_vocab=n_vocab), vocab_dir
        if isinstance(hparams, dict):
            return None, HParams.from_dict({"n_vocab": n_vocab, **hparams}), vocab_dir
        return None, hparams, vocab_dir
    base_dir = os.path.join(model_dir, model_name)
    for folder in (base_dir, run_dir):  # the run folder when it is shared with the chief
        if all(os.path.isfile(os.path.join(folder, n)) for n in checkpoints.MODEL_FILES):
            return base_dir, load_hparams(folder), folder
    raise ModelNotFoundError(
        f"No model in {base_dir!r}: every worker needs the base model (hparams.json, "
        f"encoder.json, vocab.bpe). Download it on this machine too: "
        f"gpt2.download_gpt2(model_name={model_name!r}, model_dir={model_dir!r}).")


def _agree_with_chief(strategy, run, sampler, opt, scaler, settings, adapters=()):
    """Check that every worker was started alike, then give every worker the chief's step
    counter, sampler state, LoRA ``adapters`` (the chief's may be a resumed run's) and
    (if it resumed a run) optimizer state."""
    distributed.check_agreement(strategy, settings)
    shared = distributed.chief_json(strategy, dict(done=run.done, latest=run.latest,
                                                   sampler=sampler.state))
    run.done = run.first = shared["done"]
    run.latest = shared["latest"]
    sampler.state = shared["sampler"]
    distributed.sync_from_chief(strategy, adapters)
    if run.latest is not None:
        distributed.sync_from_chief(strategy, list(opt.state().values()) +
                                    list(scaler.state().values() if scaler else []))


def _prepare_run_folder(run_dir, model_name, model_dir, hparams, vocab_dir):
    """Copy hparams.json/encoder.json/vocab.bpe into the run; returns (base model folder, hparams).

    The base folder is where "fresh" weights come from; ``None`` when training from scratch.
    """
    os.makedirs(run_dir, exist_ok=True)
    if model_name is None:
        if hparams is None or vocab_dir is None:
            raise TrainingError(
                "model_name=None trains a new model from scratch and needs hparams= (a size "
                "such as 'tiny', 'mini', 'small', '124M', or an HParams) and vocab_dir= (a "
                "folder with encoder.json and vocab.bpe). To fine-tune a downloaded model, "
                "pass model_name='124M'.")
        n_vocab = get_encoder(vocab_dir).n_vocab
        if isinstance(hparams, str):
            hp = hparams_for(hparams, n_vocab=n_vocab)
        elif isinstance(hparams, dict):
            hp = HParams.from_dict({"n_vocab": n_vocab, **hparams}, source="hparams")
        elif isinstance(hparams, HParams):
            hp = hparams
        else:
            raise TrainingError(f"hparams must be a size name or an HParams, got {hparams!r}.")
        if hp.n_vocab < n_vocab:
            raise TrainingError(f"hparams.n_vocab={hp.n_vocab} is smaller than the vocabulary "
                                f"in {vocab_dir} ({n_vocab} tokens).")
        existing = os.path.join(run_dir, "hparams.json")
        if os.path.isfile(existing) and checkpoints.latest_checkpoint(run_dir):
            if load_hparams(run_dir) != hp:
                raise TrainingError(
                    f"{run_dir} holds a model of another shape ({load_hparams(run_dir)}). Pass "
                    f"another run_name, or delete the folder to start over.")
        save_hparams(run_dir, hp)
        for name in ("encoder.json", "vocab.bpe"):
            src, dst = os.path.join(vocab_dir, name), os.path.join(run_dir, name)
            if os.path.abspath(src) != os.path.abspath(dst):
                copy_file_atomic(src, dst)
        return None, hp

    base_dir = os.path.join(model_dir, model_name)
    have_base = all(os.path.isfile(os.path.join(base_dir, n)) for n in checkpoints.MODEL_FILES)
    have_run = all(os.path.isfile(os.path.join(run_dir, n)) for n in checkpoints.MODEL_FILES)
    if have_base:
        checkpoints.copy_model_files(base_dir, run_dir)
    elif not have_run:
        raise ModelNotFoundError(
            f"No model in {base_dir!r} (it needs hparams.json, encoder.json, vocab.bpe and "
            f"model.ckpt.*). Download it first: gpt2.download_gpt2(model_name={model_name!r}, "
            f"model_dir={model_dir!r}).")
    return base_dir, load_hparams(run_dir)


def _checkpoint_to_restore(restore_from, run_dir, base_dir):
    """gpt-2-simple's choice of checkpoint; ``None`` means random weights (from scratch)."""
    if restore_from == "latest":
        ckpt = checkpoints.latest_checkpoint(run_dir)
        if ckpt is None and base_dir is not None:
            ckpt = checkpoints.find_checkpoint(base_dir)
        return ckpt
    if restore_from == "fresh":
        return None if base_dir is None else checkpoints.find_checkpoint(base_dir)
    if not os.path.isdir(restore_from):
        raise ModelNotFoundError(
            f"restore_from={restore_from!r} is neither 'latest', 'fresh' nor a folder holding "
            f"a checkpoint.")
    return checkpoints.find_checkpoint(restore_from)


def _restore_train_state(ckpt, opt, sampler, scaler):
    """Load the optimizer state saved with ``ckpt``, if any, so the run continues seamlessly."""
    state = checkpoints.read_train_state(os.path.dirname(ckpt), checkpoints.step_of(ckpt))
    if state is None:
        print(f"No optimizer state saved with {ckpt} (a gpt-2-simple run?): the optimizer "
              f"starts afresh.")
        return
    if "train/sampler" in state:
        sampler.state = np.asarray(state["train/sampler"]).item().decode()
    if scaler:
        scaler.load_state(state)
    if "optimizer/step" not in state:
        print(f"No optimizer state saved with {ckpt}: the optimizer starts afresh.")
        return
    try:
        opt.load_state(state)
    except Exception as err:  # another optimizer, or only_train_transformer_layers changed
        print(f"The optimizer state saved with {ckpt} does not fit ({err}): the optimizer "
              f"starts afresh.")

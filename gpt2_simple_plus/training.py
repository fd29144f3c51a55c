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
optimizer (see ``optimizers.py``). The loop around it (:func:`finetune`)
prints, samples, validates and saves, with gpt-2-simple's step counting.

Training from scratch (no download needed): ``model_name=None`` with
``hparams=`` (a size name such as ``"tiny"``, ``"mini"``, ``"small"``, or an
:class:`~gpt2_simple_plus.hparams.HParams`) and ``vocab_dir=`` (a folder with
``encoder.json`` and ``vocab.bpe``)::

    gpt2.finetune(sess, "notes.txt", model_name=None, hparams="tiny",
                  vocab_dir="models/124M", steps=500, sample_length=60)
"""

import collections
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from . import checkpoints
from .data import Sampler, load_dataset, remove_stale_caches, split_validation, validation_windows
from .errors import DatasetError, ModelNotFoundError, TrainingError
from .hparams import HParams, canonical_model_name, hparams_for, load_hparams, save_hparams
from .model import GPT2
from .optimizers import OPTIMIZERS, make_optimizer

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
             precision="float32", strategy=None, jit_compile=None):
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
      ``learning_rate``; ``optimizer`` (``"adam"``, ``"adamw"`` or ``"sgd"``).
    * ``print_every`` / ``sample_every`` / ``save_every`` steps: print the
      ``[step | seconds] loss=… avg=…`` line, write ``sample_num`` samples of
      ``sample_length`` tokens (temperature 1, top_k 40) to
      ``samples/<run_name>/``, save ``checkpoint/<run_name>/model-<step>``.
      ``max_checkpoints`` are kept. ``overwrite=True`` deletes the run's old
      checkpoints first.
    * ``use_memory_saving_gradients``: recompute each block in the backward
      pass instead of storing it (less memory, about a fifth more time on 124M).
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
    * ``strategy``: any ``tf.distribute`` strategy; the batch is split across
      its replicas, so ``batch_size`` must be a multiple of their number.
    * ``jit_compile``: compile the step with XLA (``None``: what measured faster,
      see :func:`default_jit_compile`).

    After training, ``sess`` holds the trained model: ``gpt2.generate(sess)``
    samples from it.

    Example (a tiny model trained from scratch on a few lines)::

        >>> import os, tempfile, gpt2_simple_plus as gpt2
        >>> from gpt2_simple_plus.encoder import _example_folder
        >>> folder = tempfile.mkdtemp()
        >>> path = os.path.join(folder, "hats.txt")
        >>> _ = open(path, "w").write("the hat " * 200)
        >>> sess = gpt2.start_tf_sess()
        >>> gpt2.finetune(sess, path, model_name=None, hparams="tiny",
        ...               vocab_dir=_example_folder(), steps=2, seed=0, print_every=10,
        ...               checkpoint_dir=os.path.join(folder, "checkpoint"))  # doctest: +ELLIPSIS
        Initialising a new model from random weights: 2 layers, 32 wide, 64-token window
        Loading dataset...
        dataset has 613 tokens
        Training...
        Saving .../checkpoint/run1/model-2
        >>> sess.model.hparams.n_layer
        2
    """
    # -- check the arguments before anything slow happens -------------------
    steps = int(steps) if steps else -1
    optimizer_name = str(optimizer).lower()
    if optimizer_name not in OPTIMIZERS:
        raise TrainingError(f"Unknown optimizer {optimizer!r}. Choose one of: "
                            f"{', '.join(OPTIMIZERS)}.")
    if str(precision).lower() not in PRECISIONS:
        raise TrainingError(f"Unknown precision {precision!r}. Choose one of: float32, "
                            f"bfloat16, float16.")
    precision = PRECISIONS[str(precision).lower()]
    if lr_decay not in LR_DECAYS:
        raise TrainingError(f"Unknown lr_decay {lr_decay!r}. Choose one of: None, 'cosine', "
                            f"'linear'.")
    if lr_decay and steps <= 0:
        raise TrainingError("lr_decay needs to know when training ends: pass steps=N.")
    for name, value in (("batch_size", batch_size), ("accumulate_gradients", accumulate_gradients)):
        if not isinstance(value, int) or value < 1:
            raise TrainingError(f"{name} must be a whole number of at least 1, got {value!r}.")
    if dataset is None:
        raise DatasetError("No dataset given: pass a .txt, .csv or .npz file, or a folder.")
    if val_dataset is not None and val_fraction:
        raise TrainingError("Pass val_dataset or val_fraction, not both.")
    if early_stopping_patience and not (val_dataset or val_fraction):
        raise TrainingError("early_stopping_patience needs validation data: pass "
                            "val_fraction=0.1 (or val_dataset=...).")

    # -- the run folder and the model ---------------------------------------
    run_dir = os.path.join(checkpoint_dir, run_name)
    os.makedirs(run_dir, exist_ok=True)
    files_before = os.listdir(run_dir)
    base_dir, hp = _prepare_run_folder(run_dir, model_name, model_dir, hparams, vocab_dir)
    from .encoder import get_encoder

    enc = get_encoder(run_dir)
    if sample_length > hp.n_ctx - 1:
        if sample_every and sample_every > 0 and sample_length != 1023:
            print(f"sample_length={sample_length} does not fit in the model's window of "
                  f"{hp.n_ctx} tokens; samples will have {hp.n_ctx - 1} tokens.")
        sample_length = hp.n_ctx - 1
    if model_name and canonical_model_name(model_name) in ("355M", "774M", "1558M"):
        print("For larger models, the recommended finetune() parameters are:")
        print("\tuse_memory_saving_gradients = True")
        print("\tonly_train_transformer_layers = True")
        print("\taccumulate_gradients = 1\n")

    strategy = _pick_strategy(strategy, multi_gpu)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if batch_size % replicas:
        raise TrainingError(f"batch_size={batch_size} cannot be split evenly over {replicas} "
                            f"devices: use a multiple of {replicas}.")
    if jit_compile is None:
        jit_compile = strategy is None and default_jit_compile(precision)

    ckpt = _checkpoint_to_restore(restore_from, run_dir, base_dir)
    if ckpt is None:
        print(f"Initialising a new model from random weights: {hp.n_layer} layers, "
              f"{hp.n_embd} wide, {hp.n_ctx}-token window")
    else:
        print("Loading checkpoint", ckpt)
    with strategy.scope() if strategy else _nothing():
        weights = None if ckpt is None else checkpoints.read_checkpoint(
            os.path.dirname(ckpt), ckpt, hp)
        model = GPT2(hp, weights, seed=seed, compute_dtype=precision)
        del weights
        trained = {n: v for n, v in model.weights.items()
                   if not only_train_transformer_layers or "/h" in n}
        # TensorFlow's fused update kernels; XLA fuses the spelled-out arithmetic better
        opt = make_optimizer(optimizer_name, trained, weight_decay=weight_decay,
                             fused=strategy is None and not jit_compile)
        scaler = LossScale() if precision == "float16" else None

    # -- the data -------------------------------------------------------------
    print("Loading dataset...")
    chunks = load_dataset(enc, dataset, combine, cache_dir=run_dir, vocab_folder=run_dir)
    val_chunks = None
    if val_dataset is not None:
        val_chunks = load_dataset(enc, val_dataset, combine, cache_dir=run_dir,
                                  vocab_folder=run_dir)
    elif val_fraction:
        chunks, val_chunks = split_validation(chunks, val_fraction)
    remove_stale_caches(run_dir, keep=[chunks, val_chunks or []])
    sampler = Sampler(chunks, seed=seed)
    print("dataset has", sampler.total_size, "tokens")
    window = sampler.window(hp.n_ctx)
    if window < 2:
        raise DatasetError(f"{dataset} has no stretch of 2 tokens or more; training needs at "
                           f"least 2 (one to read, one to predict).")
    if window < hp.n_ctx:
        print(f"(the longest stretch of the dataset has {window} tokens, fewer than the "
              f"model's window of {hp.n_ctx}: training on {window}-token windows)")
    val_tokens = None
    if val_chunks:
        val_tokens = validation_windows(val_chunks, window, VAL_WINDOWS)
        print("validation set has", sum(len(c) for c in val_chunks), "tokens")
    print("Training...")

    # -- gpt-2-simple's step counting -----------------------------------------
    counter = 1
    if restore_from == "latest" and os.path.exists(os.path.join(run_dir, "counter")):
        counter = checkpoints.read_counter(run_dir) + 1
    counter_base = counter
    from_base = base_dir is not None and \
        os.path.dirname(os.path.abspath(ckpt or "")) == os.path.abspath(base_dir)
    if ckpt is not None and not from_base:  # a run's checkpoint: continue its optimizer too
        _restore_train_state(ckpt, opt, sampler, scaler)

    train_step = make_train_step(model, opt, strategy=strategy, scaler=scaler,
                                 recompute=use_memory_saving_gradients,
                                 max_grad_norm=max_grad_norm, jit_compile=jit_compile)
    eval_step = make_eval_step(model, jit_compile=jit_compile) if val_tokens is not None else None
    learning_rate_at = lr_schedule(learning_rate, warmup_steps=warmup_steps, decay=lr_decay,
                                   last_step=counter_base + steps - 1)

    last_saved = [None]

    def save(with_optimizer=True):
        state = {"train/sampler": np.array(sampler.state.encode())}
        if with_optimizer:
            state.update(opt.state())
        if scaler:
            state.update(scaler.state())
        _print("Saving", os.path.join(run_dir, "model-{}").format(counter - 1))
        name = checkpoints.save_checkpoint(run_dir, model.weights, counter - 1,
                                           max_checkpoints=max_checkpoints, train_state=state)
        last_saved[0] = os.path.join(run_dir, name)

    def generate_samples():
        from .generation import sample_tokens

        context = sampler.sample(1).tolist()
        all_text = []
        index = 0
        while index < sample_num:
            n = min(sample_num - index, batch_size)
            out = sample_tokens(model, [context] * n, sample_length, temperature=1.0, top_k=40,
                                seed=None if seed is None else seed + counter)
            for row in out:
                text = enc.decode(context + list(row))
                text = "======== SAMPLE {} ========\n{}\n".format(index + 1, text)
                all_text.append(text)
                index += 1
        _print(text)
        os.makedirs(os.path.join(SAMPLE_DIR, run_name), exist_ok=True)
        with open(os.path.join(SAMPLE_DIR, run_name, "samples-{}").format(counter), "w",
                  encoding="utf-8") as fp:
            fp.write("\n".join(all_text))

    best = {"loss": float("inf"), "step": None, "weights": None, "bad": 0}

    def validate():
        """Score the validation windows; returns True when early stopping says stop."""
        losses = [float(eval_step(tf.constant(w[None]))) for w in val_tokens]
        loss = float(np.mean(losses))
        _print("[{counter} | {time:2.2f}] val_loss={loss:2.2f} val_perplexity={ppl:2.2f}".format(
            counter=counter - 1, time=time.time() - start_time, loss=loss,
            ppl=math.exp(min(loss, 700))))
        if not early_stopping_patience:
            return False
        if loss < best["loss"]:
            best.update(loss=loss, step=counter - 1, bad=0, weights=model.numpy_weights())
            return False
        best["bad"] += 1
        return best["bad"] >= early_stopping_patience

    def keep_best():
        """Early stopping: make the best validated weights the run's final checkpoint."""
        nonlocal counter
        if best["weights"] is None or best["step"] == counter - 1:
            return save()
        _print(f"Keeping the best weights: validation loss {best['loss']:.2f} at step "
               f"{best['step']}.")
        model.assign(best["weights"])
        counter = best["step"] + 1
        save(with_optimizer=False)  # the optimizer state belongs to later weights

    if overwrite and restore_from == "latest":
        for file in files_before:
            if file.startswith(("model", "events", checkpoints.TRAIN_STATE_PREFIX)):
                os.remove(os.path.join(run_dir, file))
        save()

    avg_loss = (0.0, 0.0)
    start_time = time.time()
    bar = tqdm(total=steps, file=sys.stderr, dynamic_ncols=True) if steps > 0 else None
    micro_batches = accumulate_gradients * batch_size
    try:
        while True:
            if steps > 0 and counter == counter_base + steps:
                keep_best() if early_stopping_patience else save()
                break
            if save_every and save_every > 0 and (counter - 1) % save_every == 0 and counter > 1:
                save()
            if sample_every and sample_every > 0 and (counter - 1) % sample_every == 0 \
                    and counter > 1:
                generate_samples()
            if eval_step and (counter - 1) % (val_every or sample_every or 100) == 0 \
                    and counter > 1 and validate():
                _print(f"Validation loss has not improved for {early_stopping_patience} "
                       f"validations: stopping early.")
                keep_best()
                break

            tokens = sampler.sample_many(micro_batches, window)
            tokens = tf.constant(tokens.reshape(accumulate_gradients, batch_size, window))
            loss = train_step(tokens, tf.constant(learning_rate_at(counter), tf.float32))

            if print_every and counter % print_every == 0:
                v_loss = float(loss)
                avg_loss = (avg_loss[0] * 0.99 + v_loss, avg_loss[1] * 0.99 + 1.0)
                _print("[{counter} | {time:2.2f}] loss={loss:2.2f} avg={avg:2.2f}".format(
                    counter=counter, time=time.time() - start_time, loss=v_loss,
                    avg=avg_loss[0] / avg_loss[1]))
            counter += 1
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        _print("interrupted")
        save()
    finally:
        if bar is not None:
            bar.close()

    if strategy is not None:  # hand the session plain variables, not mirrored ones
        model = GPT2(hp, model.numpy_weights(), compute_dtype=precision)
    sess.set_model(model, enc, run_dir, checkpoint=last_saved[0], run_name=run_name)


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


def lm_loss(model, tokens, *, recompute=False):
    """Mean next-token cross-entropy of ``tokens`` ``[batch, seq]`` (float32)."""
    h, _ = model.forward(tokens, recompute=recompute)
    batch, seq = tf.shape(tokens)[0], tf.shape(tokens)[1]
    # Every position goes through the head; the last has no next token and weight 0
    # (cheaper than slicing h, whose gradient is a slow copy).
    labels = tf.concat([tokens[:, 1:], tf.zeros_like(tokens[:, :1])], axis=1)
    weights = tf.concat([tf.ones([batch, seq - 1]), tf.zeros([batch, 1])], axis=1)
    return tied_head_cross_entropy(tf.reshape(h, [-1, h.shape[-1]]), model.wte,
                                   tf.reshape(labels, [-1]), tf.reshape(weights, [-1]))


@tf.function(jit_compile=True, autograph=False)
def softmax_cross_entropy(logits, labels):
    """Each row's cross-entropy and its gradient ``softmax - onehot``, from float32
    ``logits`` ``[rows, n_vocab]`` and int ``labels`` ``[rows]`` (each in range).

    The same two outputs as TensorFlow's ``SparseSoftmaxCrossEntropyWithLogits``,
    fused by XLA into passes over the logits: 3.5x faster on a 1024 x 50257 block
    on a 2-core CPU (32 against 118 ms), about 2.4% of a 124M training step.

        >>> import tensorflow as tf
        >>> losses, grad = softmax_cross_entropy(tf.constant([[0.0, 0.0]]), tf.constant([1]))
        >>> [round(float(v), 4) for v in losses], grad.numpy().tolist()
        ([0.6931], [[0.5, -0.5]])
    """
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    e = tf.exp(logits - top)
    total = tf.reduce_sum(e, axis=-1, keepdims=True)
    losses = tf.math.log(total[:, 0]) + top[:, 0] - tf.gather(logits, labels, batch_dims=1)
    return losses, e / total - tf.one_hot(labels, tf.shape(logits)[-1], dtype=logits.dtype)


def tied_head_cross_entropy(h, wte, labels, weights):
    """``sum(weights * cross_entropy(h · wteᵀ, labels)) / sum(weights)`` with a hand-written
    gradient: :func:`softmax_cross_entropy`'s ``softmax - onehot`` is the logits'
    gradient, so backpropagation is just the two matmuls (``h`` is ``[rows, n_embd]``).
    """
    total = tf.reduce_sum(weights)

    @tf.custom_gradient
    def loss_and_grad(h, wte):
        w = tf.cast(wte, h.dtype)
        logits = tf.cast(tf.matmul(h, w, transpose_b=True), tf.float32)
        losses, dlogits = softmax_cross_entropy(logits, labels)

        def grad(dloss):
            # Each row's scale goes on the small side of each matmul, not on [rows, n_vocab].
            scale = tf.cast((weights * (dloss / total))[:, None], h.dtype)
            d = tf.cast(dlogits, h.dtype)
            return (tf.matmul(d, w) * scale,
                    tf.cast(tf.matmul(d, h * scale, transpose_a=True), tf.float32))

        return tf.reduce_sum(losses * weights) / total, grad

    return loss_and_grad(h, tf.convert_to_tensor(wte))


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
        loss, grads = gradients(tokens[0])
        n = tokens.shape[0]
        if n == 1:
            return loss, grads

        def add_one(i, loss, grads):
            more_loss, more = gradients(tokens[i])
            return i + 1, loss + more_loss, [a + b for a, b in zip(grads, more)]

        # a loop in the graph, not n copies of the model
        _, loss, grads = tf.while_loop(lambda i, *_: i < n, add_one, (tf.constant(1), loss, grads))
        return loss / n, [g / n for g in grads]

    def replica_step(tokens):
        ctx = tf.distribute.get_replica_context()
        per = tokens.shape[1] // ctx.num_replicas_in_sync
        start = ctx.replica_id_in_sync_group * per
        return accumulated(tokens[:, start:start + per])

    def step(tokens, learning_rate):
        trace_counts["train_step"] += 1  # runs only while tracing
        if strategy is None:
            loss, grads = accumulated(tokens)
        else:
            loss, grads = strategy.run(replica_step, args=(tokens,))
            mean = tf.distribute.ReduceOp.MEAN
            loss = strategy.reduce(mean, loss, axis=None)
            grads = [strategy.reduce(mean, g, axis=None) for g in grads]
        if scaler:
            grads = [g / scaler.scale for g in grads]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        if max_grad_norm:
            grads, _ = tf.clip_by_global_norm(grads, max_grad_norm)
        if scaler:  # float16: skip the update when the gradients overflowed
            def apply():
                opt.apply(grads, learning_rate)
                return tf.constant(True)

            tf.cond(finite, apply, lambda: tf.constant(False))
            scaler.update(finite)
        else:
            opt.apply(grads, learning_rate)
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
    """Whether XLA compiles the train step by default: where it measured faster.

    Measured on CPU (benchmarks/finetune.py, 124M): TensorFlow's own kernels
    (oneDNN matmuls, fused Adam) beat XLA in float32 (4.6 s/step against 5.1 in
    the latest run; 5.3 in an earlier one with ``XLA_FLAGS=--xla_cpu_use_onednn=true``)
    and in bfloat16 (3.0 against 5.9, an earlier run).
    So the whole step is not compiled, only the element-wise pieces where XLA
    measured faster (GELU's gradient, the head's cross-entropy); pass
    ``jit_compile=True`` to try it on a GPU.
    """
    return False


# ---------------------------------------------------------------------------
# Helpers of finetune

def _print(*args):
    tqdm.write(" ".join(str(a) for a in args), file=sys.stdout)
    sys.stdout.flush()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _pick_strategy(strategy, multi_gpu):
    if strategy is None and multi_gpu:
        strategy = tf.distribute.MirroredStrategy()
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        print(f"Training on {strategy.num_replicas_in_sync} devices")
        return strategy
    return None


def _prepare_run_folder(run_dir, model_name, model_dir, hparams, vocab_dir):
    """Copy hparams.json/encoder.json/vocab.bpe into the run; returns (base model folder, hparams).

    The base folder is where "fresh" weights come from; ``None`` when training from scratch.
    """
    if model_name is None:
        if hparams is None or vocab_dir is None:
            raise TrainingError(
                "model_name=None trains a new model from scratch and needs hparams= (a size "
                "such as 'tiny', 'mini', 'small', '124M', or an HParams) and vocab_dir= (a "
                "folder with encoder.json and vocab.bpe). To fine-tune a downloaded model, "
                "pass model_name='124M'.")
        from .encoder import get_encoder

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
                with open(src, "rb") as f, open(dst + ".tmp", "wb") as g:
                    g.write(f.read())
                os.replace(dst + ".tmp", dst)
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

"""Fine-tune GPT-2 to sort texts into labels (sentiment, topic, stars ...).

The design is Hugging Face's ``GPT2ForSequenceClassification``: GPT-2 reads
the text, and a linear layer without bias (``score``, ``[n_embd, n_labels]``)
turns the hidden state of the text's LAST token into one logit per label.
GPT-2 reads left to right, so the last token is the only one that has seen
the whole text. Texts in a batch are padded on the right with
``<|endoftext|>`` and each row is read at its own last real token
(``length - 1``), so padding changes nothing.

    import gpt2_simple_plus as gpt2
    sess = gpt2.start_tf_sess()
    gpt2.finetune_classifier(sess, "reviews.csv", text_column="text", label_column="stars",
                             model_name="124M", steps=500)
    gpt2.classify(sess, ["Great food, friendly staff!", "Cold fries. Never again."])
    # [{'label': 5, 'probabilities': {1: 0.01, ...}}, {'label': 1, ...}]

A run folder looks like ``finetune``'s, so the body stays a GPT-2 that
``load_gpt2`` (and gpt-2-simple) can load::

    checkpoint/classifier/
        model-500.index, model-500.data-...   GPT-2's weights, as finetune writes them
        train_state-500.index, .data-...      the head: classifier/score [n_embd, n_labels]
                                              and classifier/max_length
        labels.json                           the labels, in the head's column order
        checkpoint, counter, hparams.json, encoder.json, vocab.bpe

``load_classifier`` restores a run; ``classify`` uses the session's classifier.
"""

import contextlib
import json
import os

import numpy as np
import tensorflow as tf

from . import distributed
from .checkpoints import (find_checkpoint, latest_checkpoint, read_counter, read_train_state,
                          save_checkpoint, step_of)
from .eager import ensure_eager
from .encoder import get_encoder
from .data import holdout_rows, read_labelled
from .errors import CheckpointError, DatasetError, ModelNotFoundError, TrainingError
from .files import write_text_atomic
from .folders import model_folder
from .hparams import load_hparams
from .loading import load_model
from .model import GPT2
from .optimizers import make_optimizer
from .padding import length_bucket, pad_right
from .run import Run

LABELS_FILE = "labels.json"
HEAD = "classifier/score"
MAX_LENGTH = "classifier/max_length"


class Classifier:
    """What a session holds after :func:`finetune_classifier` or :func:`load_classifier`:
    the head variable, the labels (in the head's column order), the longest text
    read (``max_length`` tokens) and the run it came from."""

    def __init__(self, head, labels, max_length, run_name=None, run_dir=None):
        self.head = head
        self.labels = list(labels)
        self.max_length = int(max_length)
        self.run_name = run_name
        self.run_dir = run_dir
        self.logits_fn = None
        self.train_traces = 0

    def __repr__(self):
        return (f"<Classifier {self.run_name!r}: {len(self.labels)} labels, "
                f"max_length {self.max_length}>")


def classifier_logits(model, head, tokens, lengths):
    """One logit per label for each right-padded row: ``h[length - 1] · score``."""
    h, _ = model.forward(tokens)
    last = tf.gather(h, lengths - 1, batch_dims=1)  # [batch, n_embd]
    return tf.matmul(tf.cast(last, tf.float32), head)


def _sorted_labels(labels):
    return sorted(set(labels))


# ---------------------------------------------------------------------------
# Batches.

def _encode(encoder, texts, max_length):
    """Token ids of each text, cut to ``max_length``; an empty text is ``<|endoftext|>``."""
    return [encoder.encode(t)[:max_length] or [encoder.eot_token] for t in texts]


def _batches(rows, batch_size, max_length, pad_id):
    """Fixed-size, right-padded batches of ``rows`` in order: ``(tokens, lengths, count)``.
    Heights are powers of two up to ``batch_size``; widths are bucketed lengths."""
    for at in range(0, len(rows), batch_size):
        chunk = rows[at:at + batch_size]
        height = min(length_bucket(len(chunk), batch_size, smallest=1), batch_size)
        width = length_bucket(max(len(r) for r in chunk), max_length)
        tokens, lengths = pad_right(chunk, height, width, pad_id)
        yield tokens, lengths, len(chunk)


def _predict(sess, clf, rows, batch_size):
    """Probabilities ``[len(rows), n_labels]`` for encoded rows."""
    if clf.logits_fn is None:
        model, head = sess.model, clf.head
        clf.logits_fn = tf.function(lambda tokens, lengths: tf.nn.softmax(
            classifier_logits(model, head, tokens, lengths)))
    out = []
    for tokens, lengths, count in _batches(rows, batch_size, clf.max_length,
                                           sess.encoder.eot_token):
        out.append(clf.logits_fn(tokens, lengths).numpy()[:count])
    return np.concatenate(out) if out else np.zeros((0, len(clf.labels)), np.float32)


# ---------------------------------------------------------------------------
# Training.

def finetune_classifier(sess, dataset, text_column="text", label_column="label",
                        model_name="124M", model_dir="models", run_name="classifier",
                        checkpoint_dir="checkpoint", steps=200, batch_size=8,
                        learning_rate=5e-5, max_length=128, val_fraction=0.1, val_dataset=None,
                        eval_every=50, seed=0, labels=None, restore_from="fresh",
                        optimizer="adamw", print_every=10, save_every=None, max_checkpoints=1,
                        strategy=None):
    """Fine-tune GPT-2 with a classification head on labelled texts; returns the last evaluation.

    ``dataset`` is a CSV or JSON-lines file with a ``text_column`` and a
    ``label_column``, a ``(texts, labels)`` pair of lists, a list of dicts or a
    dict of columns. Labels are strings or whole numbers and keep their type.
    A random ``val_fraction`` of the rows is held out for validation (or pass
    ``val_dataset``); every ``eval_every`` steps and at the end a line
    ``[step | secs] loss=… val_loss=… val_acc=…`` is printed, with training
    lines ``[step | secs] loss=… avg=…`` every ``print_every`` steps.

    Training starts from ``model_dir/model_name`` (``restore_from="fresh"``) or
    continues the run's latest checkpoint (``restore_from="latest"``, which
    needs the same labels). Texts are cut to their first ``max_length``
    tokens. The run is saved in ``checkpoint_dir/run_name`` at the end (and
    every ``save_every`` steps), and the session keeps the trained classifier
    for :func:`classify`. ``labels`` fixes the labels and their order
    (default: sorted). ``optimizer`` is ``"adamw"``, ``"adam"`` or ``"sgd"``.
    Interrupting it (Ctrl-C, or stopping the notebook cell) evaluates and
    saves what was trained so far, as gpt-2-simple's ``finetune`` does.

    ``strategy`` trains across processes or machines as :func:`finetune`
    does (``"multiworker"`` over ``TF_CONFIG``, ``"mirrored"``, or a
    ``tf.distribute`` strategy; see ``distributed.py``): every worker runs the
    same call with its own copy of the base model and the dataset, replica
    ``r`` of ``R`` trains on the ``r``-th slice of each batch (so
    ``batch_size`` is the batch of all workers together and must divide
    evenly), the gradients are averaged, and only the chief writes the run
    and prints. A worker needs no copy of the chief's run to continue it
    (``restore_from="latest"``): the weights, head, labels and step come from
    the chief.

    Returns ``{"step", "loss", "val_loss", "val_accuracy", "labels", "history"}``
    (``history``: one dict per evaluation).

        >>> import tempfile
        >>> import gpt2_simple_plus as gpt2
        >>> folder = _example_model_dir()            # normally models/124M
        >>> sess = gpt2.start_tf_sess()
        >>> texts = ["the hat is red", "a red hat", "the hat is blue", "a blue hat"] * 4
        >>> labels = ["red", "red", "blue", "blue"] * 4
        >>> result = finetune_classifier(sess, (texts, labels), model_name="tiny",
        ...     model_dir=os.path.dirname(folder), checkpoint_dir=tempfile.mkdtemp(),
        ...     steps=2, batch_size=4, print_every=0)       # doctest: +ELLIPSIS
        [2 | ...] loss=... val_loss=... val_acc=...
        >>> result["labels"]
        ['blue', 'red']
    """
    ensure_eager()
    if restore_from not in ("fresh", "latest"):
        raise TrainingError(f"restore_from must be 'fresh' or 'latest', got {restore_from!r}.")
    if steps < 1 or batch_size < 1:
        raise TrainingError(f"steps and batch_size must be at least 1, got {steps} and "
                            f"{batch_size}.")
    # a multi-worker strategy must be made before TensorFlow runs anything else
    strategy = distributed.make_strategy(strategy)
    chief = distributed.is_chief(strategy)
    multi_worker = distributed.worker_count(strategy) > 1
    distributed.check_batch_split(strategy, batch_size)

    # Only the chief reads the run it continues; the others learn from the chief that it
    # does, with which labels, step and seed (every worker must split and draw alike).
    run_dir = os.path.join(checkpoint_dir, run_name)
    resume = chief and restore_from == "latest" and latest_checkpoint(run_dir) is not None
    run_labels, prefix, head_value, _ = _read_run(run_dir, "latest") if resume else (None,) * 4
    shared = dict(resume=resume, labels=run_labels, seed=seed,
                  counter=read_counter(run_dir) if resume else 0)
    if multi_worker:
        if seed is None:  # a fresh seed, the same on every worker
            shared["seed"] = int(np.random.default_rng().integers(2 ** 31))
        shared = distributed.chief_json(strategy, shared)
    resume, counter, seed = shared["resume"], shared["counter"], shared["seed"]
    if resume:
        if labels is not None and list(labels) != shared["labels"]:
            raise TrainingError(f"The run {run_dir} was trained with labels "
                                f"{shared['labels']}, not {list(labels)}. Use "
                                f"restore_from='fresh' or another run_name.")
        labels = shared["labels"]

    texts, targets = read_labelled(dataset, text_column, label_column)
    if val_dataset is not None:
        val_texts, val_targets = read_labelled(val_dataset, text_column, label_column)
        train_texts, train_targets = texts, targets
    else:
        train, val = holdout_rows(len(texts), val_fraction, seed)
        train_texts, train_targets = [texts[i] for i in train], [targets[i] for i in train]
        val_texts, val_targets = [texts[i] for i in val], [targets[i] for i in val]
    labels = _sorted_labels(train_targets + val_targets) if labels is None else list(labels)
    unknown = sorted({repr(x) for x in train_targets + val_targets if x not in labels})
    if unknown:
        raise DatasetError(f"Label(s) {', '.join(unknown)} are not among the classifier's "
                           f"labels {labels}.")
    if len(labels) < 2:
        raise DatasetError(f"A classifier needs at least two labels; the data has only "
                           f"{labels}.")

    # The model and head (a worker other than the chief reads its own base model: every
    # variable made under a multi-worker strategy takes the chief's value) and optimizer.
    # prefix: the checkpoint the chief continues (None on the other workers and when fresh)
    source = run_dir if prefix else model_folder(model_name=model_name, model_dir=model_dir)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = load_model(source, prefix or "latest")
        if head_value is None:
            head_value = np.random.default_rng(seed).normal(
                0, 0.02, (model.hparams.n_embd, len(labels))).astype(np.float32)
        head = tf.Variable(head_value, name=HEAD)
        variables = {**model.weights, HEAD: head}
        opt = make_optimizer(optimizer, variables)
    encoder = get_encoder(source)
    max_length = min(int(max_length), model.hparams.n_ctx)
    index = {label: i for i, label in enumerate(labels)}
    train_rows = _encode(encoder, train_texts, max_length)
    val_rows = _encode(encoder, val_texts, max_length)
    train_y = np.array([index[x] for x in train_targets], np.int32)
    val_y = np.array([index[x] for x in val_targets], np.int32)
    distributed.check_agreement(strategy, dict(
        hparams=model.hparams.to_dict(), labels=labels, steps=steps, batch_size=batch_size,
        max_length=max_length, optimizer=str(optimizer).lower(), learning_rate=learning_rate,
        train_rows=[train_rows, train_y.tolist()], validation_rows=[val_rows, val_y.tolist()]))

    clf = Classifier(head, labels, max_length, run_name, run_dir)
    sess.set_model(model, encoder, source, prefix, run_name)
    sess.classifier = clf
    if chief:
        os.makedirs(run_dir, exist_ok=True)
        _write_labels(run_dir, labels)

    train_step = _train_step(model, head, opt, list(variables.values()), strategy)
    pad_id = encoder.eot_token
    rng = np.random.default_rng(None if seed is None else seed + 1)
    epochs = []  # row numbers still to visit: one shuffled pass over the rows after another

    def next_batch():
        while len(epochs) < batch_size:
            epochs.extend(rng.permutation(len(train_rows)).tolist())
        picked = epochs[:batch_size]
        del epochs[:batch_size]
        rows = [train_rows[i] for i in picked]
        width = length_bucket(max(len(r) for r in rows), max_length)
        tokens, lengths = pad_right(rows, batch_size, width, pad_id)
        return tokens, lengths, train_y[picked]

    def evaluate():
        if not val_rows:
            return float("nan"), float("nan")
        probs = _predict(sess, clf, val_rows, max(batch_size, 32))
        p = np.maximum(probs[np.arange(len(val_y)), val_y], 1e-12)
        return float(-np.mean(np.log(p))), float(np.mean(probs.argmax(-1) == val_y))

    def save(step):
        if not chief:  # the chief saves; the others know its name, for their messages
            return os.path.join(run_dir, f"model-{step}")
        save_checkpoint(run_dir, model.numpy_weights(), step, hparams=model.hparams,
                        max_checkpoints=max_checkpoints, model_files_from=source,
                        train_state={HEAD: head.numpy(),
                                     MAX_LENGTH: np.array(max_length, np.int32)})
        sess.checkpoint = os.path.join(run_dir, f"model-{step}")
        return sess.checkpoint

    lr = tf.constant(learning_rate, tf.float32)

    def step(n):
        tokens, lengths, y = next_batch()
        return train_step(tokens, lengths, y, lr)

    def validate(done):
        val_loss, val_acc = evaluate()
        figures = {"val_loss": val_loss, "val_acc": val_acc}
        # every worker reports the chief's figures (they differ by rounding at most)
        return distributed.chief_json(strategy, figures) if multi_worker else figures

    run = Run(done=counter, steps=steps, print_every=print_every, save_every=save_every,
              val_every=eval_every, digits=4, origin=counter, validation_carries_loss=True,
              is_chief=chief, log_dir=run_dir)
    if strategy is not None:
        run.log(distributed.describe(strategy))
    with distributed.worker_errors(strategy, run):
        ended = run.train(step, save=save, validate=validate,
                          step_scalars=lambda n: {"learning_rate": learning_rate})
        if ended != "interrupted":  # (after Ctrl-C the other workers are mid-step)
            distributed.barrier(strategy)  # no worker leaves before the chief's last save
    # How many padded shapes the step was compiled for (a few length buckets, not one per step).
    clf.train_traces = train_step.experimental_get_tracing_count()
    if strategy is not None:  # hand the session plain variables, not mirrored ones
        checkpoint = sess.checkpoint
        sess.set_model(GPT2(model.hparams, model.numpy_weights()), encoder, source,
                       checkpoint, run_name)
        clf.head, clf.logits_fn = tf.Variable(head.numpy(), name=HEAD), None
        sess.classifier = clf
    history = [{"step": h["step"], "loss": h["loss"], "val_loss": h["val_loss"],
                "val_accuracy": h["val_acc"]} for h in run.history]
    return {**history[-1], "labels": list(labels), "history": history}


def _train_step(model, head, opt, variables, strategy=None):
    """One compiled step: forward, cross-entropy on the last token's logits, optimizer
    update. With a ``strategy``, replica ``r`` of ``R`` takes the ``r``-th slice of the
    batch and the gradients are averaged over the replicas before the update.

    Traced once per padded length (a few buckets), never per step."""

    def loss_and_gradients(tokens, lengths, labels):
        with tf.GradientTape() as tape:
            logits = classifier_logits(model, head, tokens, lengths)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        grads = tape.gradient(loss, variables)
        return loss, [tf.convert_to_tensor(g) for g in grads]

    def replica_step(tokens, lengths, labels):
        return loss_and_gradients(*map(distributed.replica_share, (tokens, lengths, labels)))

    @tf.function
    def train_step(tokens, lengths, labels, learning_rate):
        if strategy is None:
            loss, grads = loss_and_gradients(tokens, lengths, labels)
        else:
            loss, grads = strategy.run(replica_step, args=(tokens, lengths, labels))
            loss, *grads = distributed.mean_over_replicas(strategy, [loss, *grads])
        opt.apply(grads, learning_rate)
        return loss

    return train_step


def _write_labels(run_dir, labels):
    write_text_atomic(os.path.join(run_dir, LABELS_FILE),
                      json.dumps(list(labels), ensure_ascii=False, indent=1))


# ---------------------------------------------------------------------------
# Loading and classifying.

def load_classifier(sess, run_name="classifier", checkpoint_dir="checkpoint", checkpoint="latest"):
    """Load a run of :func:`finetune_classifier` into ``sess``: GPT-2, head and labels.

        >>> import tempfile
        >>> import gpt2_simple_plus as gpt2
        >>> sess = gpt2.start_tf_sess()
        >>> runs = tempfile.mkdtemp()
        >>> _ = finetune_classifier(sess, (["yes", "no"] * 4, [1, 0] * 4), model_name="tiny",
        ...     model_dir=os.path.dirname(_example_model_dir()), checkpoint_dir=runs, steps=1,
        ...     batch_size=2, print_every=0)                # doctest: +ELLIPSIS
        [1 | ...] ...
        >>> load_classifier(sess, checkpoint_dir=runs)
        <Classifier 'classifier': 2 labels, max_length 64>
    """
    ensure_eager()
    run_dir = os.path.join(checkpoint_dir, run_name)
    labels, prefix, head, max_length = _read_run(run_dir, checkpoint)
    model = load_model(run_dir, prefix)
    sess.set_model(model, get_encoder(run_dir), run_dir, prefix, run_name)
    clf = Classifier(tf.Variable(head, name=HEAD), labels, max_length, run_name, run_dir)
    sess.classifier = clf
    return clf


def _read_run(run_dir, checkpoint):
    """A classifier run's labels, checkpoint prefix, head (checked against the run's
    ``hparams.json``) and ``max_length``, with a message saying what to do when one is
    missing."""
    run_name = os.path.basename(os.path.normpath(run_dir))
    labels_path = os.path.join(run_dir, LABELS_FILE)
    if not os.path.isfile(labels_path):
        if not os.path.isdir(run_dir):
            raise ModelNotFoundError(f"No classifier run {run_dir!r}: train one with "
                                     f"gpt2.finetune_classifier(sess, ..., "
                                     f"run_name={run_name!r}).")
        raise ModelNotFoundError(f"{run_dir} is not a classifier run: {LABELS_FILE} is missing. "
                                 f"Train one with gpt2.finetune_classifier(sess, ...).")
    with open(labels_path, encoding="utf-8") as f:
        labels = json.load(f)
    prefix = find_checkpoint(run_dir, checkpoint)
    state = read_train_state(run_dir, step_of(prefix)) or {}
    if HEAD not in state:
        raise ModelNotFoundError(f"The classifier head ({HEAD}) of {prefix} is missing: "
                                 f"train_state-{step_of(prefix)}.index/.data hold it. Train the "
                                 f"classifier again with gpt2.finetune_classifier(sess, ...).")
    head = np.asarray(state[HEAD], np.float32)
    hparams = load_hparams(run_dir)
    n_embd = hparams.n_embd
    if head.shape != (n_embd, len(labels)):
        raise CheckpointError(f"The classifier head in {prefix} has shape {head.shape}, but the "
                              f"model is {n_embd} wide and {labels_path} lists "
                              f"{len(labels)} labels. Train the classifier again.")
    return labels, prefix, head, int(state.get(MAX_LENGTH, hparams.n_ctx))


def classify(sess, texts, run_name=None, checkpoint_dir="checkpoint", batch_size=32):
    """The label of each text, with the probability of every label.

    Uses the session's classifier (trained or loaded); with ``run_name`` the
    run ``checkpoint_dir/run_name`` is loaded first unless it is the one in the
    session. One text gives one dict, a list gives a list:
    ``{"label": ..., "probabilities": {label: probability, ...}}``.

        >>> import tempfile
        >>> import gpt2_simple_plus as gpt2
        >>> sess = gpt2.start_tf_sess()
        >>> _ = finetune_classifier(sess, (["yes", "no"] * 4, ["y", "n"] * 4), model_name="tiny",
        ...     model_dir=os.path.dirname(_example_model_dir()), checkpoint_dir=tempfile.mkdtemp(),
        ...     steps=1, batch_size=2, print_every=0)       # doctest: +ELLIPSIS
        [1 | ...] ...
        >>> result = classify(sess, "yes")
        >>> result["label"] in ("y", "n"), sorted(result["probabilities"])
        (True, ['n', 'y'])
    """
    ensure_eager()
    clf = sess.classifier if sess is not None else None
    if run_name is not None and (clf is None or clf.run_dir != os.path.join(checkpoint_dir,
                                                                            run_name)):
        clf = load_classifier(sess, run_name, checkpoint_dir)
    if clf is None:
        raise ModelNotFoundError(
            "This session has no classifier: train one with gpt2.finetune_classifier(sess, "
            "'data.csv') or load one with gpt2.classify(sess, texts, run_name='classifier').")
    single = isinstance(texts, str)
    texts = [texts] if single else list(texts)
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise DatasetError(f"classify takes a string or a list of strings; item {n} is "
                               f"{type(text).__name__} {text!r:.40}.")
    probs = _predict(sess, clf, _encode(sess.encoder, texts, clf.max_length), batch_size)
    results = [{"label": clf.labels[int(p.argmax())],
                "probabilities": {label: float(q) for label, q in zip(clf.labels, p)}}
               for p in probs]
    return results[0] if single else results


def _example_model_dir():
    """The tiny model of the examples here (see ``_examples.example_model_dir``)."""
    from ._examples import example_model_dir

    return example_model_dir()

"""Training on more than one device, process or machine, with ``tf.distribute``.

``finetune(strategy=...)`` takes any ``tf.distribute`` strategy, or a name:

* ``"multiworker"``: ``tf.distribute.MultiWorkerMirroredStrategy`` across the
  processes (on one machine or many) that ``TF_CONFIG`` describes. Every
  worker runs the same ``finetune`` call; ``TF_CONFIG`` tells each which one
  it is. Worker 0 (or the task named ``chief``) is the chief.
* ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over this machine's GPUs
  (what ``multi_gpu=True`` asks for).

What a multi-worker run does differently from one process:

* Only the chief writes: the run folder (checkpoints, ``counter``, the
  encoded-dataset cache, copies of the model files), samples and printed lines.
  The other workers write nowhere a user looks: they read a complete
  dataset cache if they find one, else encode the dataset into memory.
* Each step's ``batch_size`` windows are drawn from one stream of random
  windows that every worker draws alike (the chief's seed and sampler state
  are sent to the others at the start), and replica ``r`` of ``R`` trains on
  the ``r``-th slice of them: the workers see different windows, and together
  exactly the windows a one-process run with the same ``seed`` would see.
* The model's starting weights come from the chief (TensorFlow sends the
  chief's value of every variable created under the strategy), and so do the
  optimizer state, step counter and sampler state of a resumed run: a worker
  needs the base model and the dataset, not the chief's run folder.
* When a worker stops, the others end with a :class:`WorkerError` that names
  it and the run's last checkpoint, instead of waiting for ever.

    >>> make_strategy(None) is None
    True
    >>> is_chief(None)
    True
"""

import contextlib
import hashlib
import json
import os
import re

import numpy as np
import tensorflow as tf

from .errors import TrainingError, WorkerError

STRATEGY_NAMES = ("multiworker", "mirrored")

_multiworker = []  # the one MultiWorkerMirroredStrategy of this process (TensorFlow allows one)


def make_strategy(strategy=None, multi_gpu=False):
    """The strategy ``finetune`` trains with: ``None`` for one device, else a
    ``tf.distribute`` strategy (``strategy`` itself, or the one its name asks for).

        >>> make_strategy("one-gpu")
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.TrainingError: Unknown strategy 'one-gpu'. ...
    """
    if isinstance(strategy, str):
        name = strategy.lower().replace("-", "").replace("_", "")
        if name in ("", "none", "default"):
            strategy = None
        elif name == "multiworker":
            strategy = multiworker_strategy()
        elif name == "mirrored":
            strategy = tf.distribute.MirroredStrategy()
        else:
            raise TrainingError(f"Unknown strategy {strategy!r}. Choose one of: "
                                f"{', '.join(STRATEGY_NAMES)}, or pass a tf.distribute "
                                f"strategy object.")
    if strategy is None and multi_gpu:
        strategy = tf.distribute.MirroredStrategy()
    if strategy is None:
        return None
    workers = worker_count(strategy)
    if workers > 1:
        return strategy
    return strategy if strategy.num_replicas_in_sync > 1 else None


def multiworker_strategy(timeout=None):
    """This process's ``tf.distribute.MultiWorkerMirroredStrategy``, made from
    ``TF_CONFIG`` once (TensorFlow configures its collectives once per process).

    A worker that dies or freezes is noticed by TensorFlow's coordination service,
    which stops hearing its heartbeats (about 10 seconds; measured 5-7 s here), and
    the others end with a :class:`WorkerError`. ``timeout`` (seconds) also bounds
    every exchange between the workers, for a worker that is alive but stuck; it
    must exceed the chief's longest pause alone (saving, sampling), which the others
    wait out at the next step. TensorFlow runs a thread per exchange to time it, so
    it is off by default.
    """
    if _multiworker:
        return _multiworker[0]
    config = os.environ.get("TF_CONFIG", "")
    try:
        cluster = json.loads(config)["cluster"] if config else None
    except (ValueError, KeyError, TypeError):
        raise TrainingError(f"TF_CONFIG is not valid: {config[:200]!r}. It is JSON like "
                            f"{_EXAMPLE_TF_CONFIG}.") from None
    if not cluster:
        raise TrainingError(
            f"strategy='multiworker' needs the environment variable TF_CONFIG, which lists "
            f"every worker and says which one this is, e.g. TF_CONFIG='{_EXAMPLE_TF_CONFIG}' "
            f"on the first machine and index 1 on the second (on the command line: --workers "
            f"10.0.0.1:12345,10.0.0.2:12345 --worker_index 0). See the README's multi-worker "
            f"recipe.")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as err:
        if "program startup" not in str(err):
            raise
        raise TrainingError(
            "strategy='multiworker' must be set up before TensorFlow runs anything in this "
            "process. Create it first thing in your script: strategy = "
            "tf.distribute.MultiWorkerMirroredStrategy(), then finetune(..., "
            "strategy=strategy).") from None
    _multiworker.append(strategy)
    return strategy


def tf_config(workers, index):
    """The ``TF_CONFIG`` text for the worker at ``index`` (0 = the chief) of ``workers``,
    a list of ``"host:port"`` addresses, the same list in the same order on every
    machine; what the command line's ``--workers``/``--worker_index`` set.

        >>> json.loads(tf_config(["10.0.0.1:12345", "10.0.0.2:12345"], 1))["task"]
        {'type': 'worker', 'index': 1}
        >>> tf_config(["10.0.0.1", "10.0.0.2"], 0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.TrainingError: Worker address '10.0.0.1' is not host:port, ...
    """
    workers = [w.strip() for w in workers if w.strip()]
    for address in workers:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TrainingError(f"Worker address {address!r} is not host:port, e.g. "
                                f"10.0.0.1:12345: each worker's address, and a free port on "
                                f"it that the other machines can reach.")
    if len(set(workers)) < len(workers):
        raise TrainingError(f"The workers {', '.join(workers)} list an address twice: give "
                            f"each worker its own host:port.")
    if len(workers) < 2:
        raise TrainingError(f"Training across machines needs at least two workers, got "
                            f"{', '.join(workers) or 'none'}.")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise TrainingError(f"The worker index must be 0 to {len(workers) - 1} (this "
                            f"machine's place in the list of {len(workers)} workers, 0 being "
                            f"the chief), got {index!r}.")
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def multiworker_made():
    """The strategy :func:`multiworker_strategy` made in this process, or ``None``."""
    return _multiworker[0] if _multiworker else None


_EXAMPLE_TF_CONFIG = ('{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, '
                      '"task": {"type": "worker", "index": 0}}')


# ---------------------------------------------------------------------------
# Who is who

def is_chief(strategy):
    """Whether this process writes the run: always, except on the workers of a
    multi-worker strategy other than the chief (worker 0 or the ``chief`` task)."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def _cluster(strategy):
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None:
        return {}, None, None
    try:
        spec = resolver.cluster_spec().as_dict()
    except (ValueError, AttributeError):
        return {}, None, None
    return spec, resolver.task_type, resolver.task_id


def worker_count(strategy):
    """How many processes train together (1 without a multi-worker strategy)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1  # TPUStrategy's resolver lists TPU hosts, which TensorFlow drives itself
    spec, _, _ = _cluster(strategy)
    return max(len(spec.get("chief", [])) + len(spec.get("worker", [])), 1)


def worker_index(strategy):
    """This process's number among the workers, the chief's being 0."""
    spec, task_type, task_id = _cluster(strategy)
    if not spec or task_type not in ("chief", "worker"):
        return 0
    return int(task_id) + (len(spec.get("chief", [])) if task_type == "worker" else 0)


def describe(strategy):
    """The header line of a distributed run, e.g. ``Training on 2 devices in 2 workers``."""
    replicas = strategy.num_replicas_in_sync
    workers = worker_count(strategy)
    if workers > 1:
        return f"Training on {replicas} devices in {workers} workers (this is the chief)"
    return f"Training on {replicas} devices"


# ---------------------------------------------------------------------------
# Averaging the replicas' gradients

# Tensors are exchanged between workers in packs of about this many bytes: one
# all-reduce per pack instead of one per variable, so a step of a model with hundreds of
# variables makes a handful of exchanges, each long enough to keep the network busy.
PACK_BYTES = 32 << 20


def check_batch_split(strategy, batch_size):
    """Raise :class:`TrainingError` unless ``batch_size`` (the batch of all replicas
    together) splits evenly over ``strategy``'s replicas (any size without one).

        >>> check_batch_split(None, 3)
    """
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if batch_size % replicas:
        raise TrainingError(f"batch_size={batch_size} cannot be split evenly over "
                            f"{replicas} devices: use a multiple of {replicas}.")


def replica_share(tensor, axis=0):
    """This replica's equal share of ``tensor`` along ``axis`` (call it inside
    ``strategy.run``): replica ``r`` of ``R`` gets the ``r``-th of ``R`` slices."""
    ctx = tf.distribute.get_replica_context()
    per = tensor.shape[axis] // ctx.num_replicas_in_sync
    start = ctx.replica_id_in_sync_group * per
    return tensor[(slice(None),) * axis + (slice(start, start + per),)]


def mean_over_replicas(strategy, values):
    """The mean over every replica of each per-replica tensor in ``values`` (what
    ``strategy.run`` returned), as plain tensors, exchanged in packs of
    :data:`PACK_BYTES`. Call it inside a ``tf.function`` that runs the step."""
    return _reduce(strategy, tf.distribute.ReduceOp.MEAN, values)


def _reduce(strategy, op, values):
    options = tf.distribute.experimental.CommunicationOptions(bytes_per_pack=PACK_BYTES)
    out = [None] * len(values)
    dtypes = [strategy.experimental_local_results(v)[0].dtype for v in values]
    # a pack is one concatenated tensor, so one dtype; the same order on every worker
    for dtype in sorted(set(dtypes), key=lambda d: d.name):
        where = [i for i, d in enumerate(dtypes) if d == dtype]
        reduced = strategy.extended.batch_reduce_to(
            op, [(values[i], "/device:CPU:0") for i in where], options=options)
        for i, r in zip(where, reduced):
            out[i] = strategy.experimental_local_results(r)[0]
    return out


# ---------------------------------------------------------------------------
# Agreeing with the chief

def broadcast_from_chief(strategy, values):
    """The chief's value of each array in ``values`` (a list), on every worker."""
    values = [tf.convert_to_tensor(v) for v in values]
    if worker_count(strategy) < 2:
        return values
    fn = _broadcasters.get(id(strategy))
    if fn is None:
        fn = _broadcasters[id(strategy)] = _make_broadcaster(strategy)
    return fn(values)


_broadcasters = {}


def _make_broadcaster(strategy):
    def keep_first(values):
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return [tf.where(first, v, tf.zeros_like(v)) for v in values]

    def broadcast(values):
        # The sum over replicas of the first replica's value and zeros elsewhere.
        return _reduce(strategy, tf.distribute.ReduceOp.SUM,
                       strategy.run(keep_first, args=(values,)))

    return tf.function(broadcast, autograph=False)


def sync_from_chief(strategy, variables):
    """Give ``variables`` (e.g. an optimizer's state restored on the chief only) the
    chief's values on every worker."""
    for v in variables:
        if isinstance(v, tf.Variable):
            v.assign(broadcast_from_chief(strategy, [v.value()])[0])


def chief_json(strategy, value, max_bytes=1 << 16):
    """The chief's ``value`` (anything JSON can hold) on every worker."""
    data = json.dumps(value).encode()
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes are too many to broadcast (at most {max_bytes})")
    padded = np.zeros(max_bytes, np.int32)
    padded[:len(data)] = np.frombuffer(data, np.uint8)
    out = broadcast_from_chief(strategy, [padded])[0].numpy().astype(np.uint8)
    return json.loads(bytes(out).rstrip(b"\0").decode())


def check_agreement(strategy, settings):
    """Raise :class:`TrainingError` on every worker if the workers' ``settings`` (a dict
    of what must be equal everywhere: model shape, batch, steps ...) differ. The
    message names each setting that differs, with the chief's value and this worker's
    (a long value, such as a list of variable names, as a digest of it)."""
    if worker_count(strategy) < 2:
        return
    mine = {name: _comparable(value) for name, value in settings.items()}
    chiefs = chief_json(strategy, mine)
    differ = sorted(n for n in set(mine) | set(chiefs) if mine.get(n) != chiefs.get(n))
    # every worker learns whether any worker differs, so they all stop together
    if int(broadcast_sum(strategy, int(bool(differ)))):
        what = "; ".join(f"{n} is {chiefs.get(n)} on the chief and {mine.get(n)} here"
                         for n in differ) or "another worker's settings differ from the chief's"
        raise TrainingError(
            f"The workers were started with different settings ({what}). Start every worker "
            f"with the same arguments, model and dataset.")


def _comparable(value, longest=120):
    """``value`` as JSON text, or a digest of it when that is longer than ``longest``."""
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) <= longest:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def broadcast_sum(strategy, value):
    """The sum over workers of each worker's ``value`` (a number)."""
    fn = _summers.get(id(strategy))
    if fn is None:
        def first_replica(v):
            ctx = tf.distribute.get_replica_context()
            return tf.where(tf.equal(ctx.replica_id_in_sync_group % _local_replicas(strategy),
                                     0), v, tf.zeros_like(v))

        def total(v):
            return strategy.reduce(tf.distribute.ReduceOp.SUM,
                                   strategy.run(first_replica, args=(v,)), axis=None)

        fn = _summers[id(strategy)] = tf.function(total, autograph=False)
    return fn(tf.constant(value, tf.int32)).numpy()


_summers = {}


def _local_replicas(strategy):
    return max(strategy.num_replicas_in_sync // worker_count(strategy), 1)


def barrier(strategy):
    """Wait until every worker gets here (nothing without a multi-worker strategy)."""
    if worker_count(strategy) > 1:
        broadcast_sum(strategy, 0)


# ---------------------------------------------------------------------------
# When a worker stops

@contextlib.contextmanager
def worker_errors(strategy, run):
    """Turn TensorFlow's errors about a lost worker into :class:`WorkerError` (with a
    multi-worker strategy; ``run`` is the :class:`~gpt2_simple_plus.run.Run`, for the
    step and the latest checkpoint)."""
    if worker_count(strategy) < 2:
        yield
        return
    try:
        yield
    except COLLECTIVE_ERRORS as err:
        raise lost_worker_error(err, strategy, run.done + 1, run.latest) from None


COLLECTIVE_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                     tf.errors.CancelledError, tf.errors.AbortedError,
                     tf.errors.FailedPreconditionError, tf.errors.InternalError)


def lost_worker_error(err, strategy, step, last_checkpoint):
    """The :class:`WorkerError` for a TensorFlow error raised while the workers
    exchanged values at ``step`` (``last_checkpoint``: the run's latest, or ``None``)."""
    spec, _, _ = _cluster(strategy)
    text = str(getattr(err, "message", err))
    tasks = re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", text)
    me = worker_index(strategy)
    names = []
    for job, task in dict.fromkeys(tasks):
        addresses = spec.get(job, [])
        index = int(task) + (len(spec.get("chief", [])) if job == "worker" else 0)
        if index == me:
            continue
        where = f" ({addresses[int(task)]})" if int(task) < len(addresses) else ""
        names.append(f"worker {index}{where}")
    who = " and ".join(names) if names else "another worker"
    if isinstance(err, tf.errors.DeadlineExceededError):
        what = f"{who} did not answer within the strategy's timeout"
    else:
        what = f"{who} stopped"
    reason = _reason(text) or type(err).__name__
    saved = (f"The run's last checkpoint is {last_checkpoint}; start every worker again to "
             f"continue from it (restore_from='latest')." if last_checkpoint else
             "No checkpoint was saved in this run yet; start every worker again.")
    return WorkerError(f"Multi-worker training ended at step {step}: {what} (TensorFlow: "
                       f"{reason}). Every worker is needed for every step, so this one stops "
                       f"too. {saved}")


def _reason(text):
    """The line of a TensorFlow collective error that says what happened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for key in ("unhealthy", "heartbeat", "reset by peer", "Connection", "aborted by",
                "deadline", "timed out", "unavailable"):
        for line in lines:
            if key.lower() in line.lower():
                line = re.sub(r"^(Collective ops is aborted by: )?(Error reported from \S+: )?",
                              "", line)
                return line.rstrip(":")[:200]
    lines = [line for line in lines if not line.startswith("Graph execution error")]
    return lines[0][:200] if lines else ""

"""Sessions: what ``start_tf_sess`` returns and every other function takes.

gpt-2-simple's session was a ``tf.compat.v1.Session`` over one global graph,
so a second model needed a restart. Here a session is a plain object holding
what is loaded into it (model, encoder, the compiled decoder, a classifier);
any number can live side by side, and dropping one frees its memory.

    >>> import gpt2_simple_plus as gpt2
    >>> sess = gpt2.start_tf_sess()
    >>> sess.model is None
    True
    >>> sess = gpt2.reset_session(sess)
"""

import warnings

import tensorflow as tf

from .eager import ensure_eager


class Session:
    """What is loaded, one named field each:

    * ``model``: a :class:`~gpt2_simple_plus.model.GPT2` (or ``None``), and its
      ``encoder``; ``model_path``, the folder its ``hparams.json``/``encoder.json``
      came from; ``checkpoint``, the prefix it was read from; ``run_name``.
    * ``decoder``: the model's compiled decode loop
      (:class:`~gpt2_simple_plus.decoding.Decoder`), made by the first ``generate``.
    * ``classifier``: the classifier head trained or loaded into this session.
    * ``scorer``: the compiled functions of ``score``/``next_token_probabilities``.

    Loading another model empties the last three: they belong to the old model.
    """

    def __init__(self, threads=-1, server=None):
        self.threads = threads
        self.server = server
        self.model = None
        self.encoder = None
        self.model_path = None
        self.checkpoint = None
        self.run_name = None
        self.decoder = None
        self.classifier = None
        self.scorer = None

    @property
    def hparams(self):
        return None if self.model is None else self.model.hparams

    def set_model(self, model, encoder, model_path, checkpoint=None, run_name=None):
        """Make ``model`` the session's model; what was compiled for the old one is dropped."""
        self.model = model
        self.encoder = encoder
        self.model_path = model_path
        self.checkpoint = checkpoint
        self.run_name = run_name
        self.decoder = None
        self.classifier = None
        self.scorer = None

    def close(self):
        """Release the model and everything compiled for it."""
        self.set_model(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.model is None:
            return "<gpt2_simple_plus Session: empty>"
        hp = self.model.hparams
        return (f"<gpt2_simple_plus Session: {self.checkpoint or self.model_path} "
                f"({hp.n_layer} layers, {hp.n_embd} wide)>")


def _set_threads(threads):
    if threads is None or threads <= 0:
        return
    cfg = tf.config.threading
    if cfg.get_intra_op_parallelism_threads() == threads:
        return
    try:
        cfg.set_intra_op_parallelism_threads(threads)
        cfg.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        warnings.warn(
            f"threads={threads} ignored: TensorFlow already started in this process and its "
            f"thread pools cannot change now. Call start_tf_sess(threads=...) first thing.",
            stacklevel=3)


def start_tf_sess(threads=-1, server=None):
    """A new, empty session (gpt-2-simple's ``start_tf_sess``).

    ``threads > 0`` limits TensorFlow's CPU thread pools (effective when it is
    the first TensorFlow call of the process). ``server`` is kept for
    compatibility: with TensorFlow 2 use a ``tf.distribute`` strategy instead.

        >>> import gpt2_simple_plus as gpt2
        >>> sess = gpt2.start_tf_sess()
    """
    ensure_eager()
    _set_threads(threads)
    return Session(threads=threads, server=server)


def reset_session(sess, threads=-1, server=None):
    """Close ``sess`` and return a fresh one, e.g. to load another model.

        >>> import gpt2_simple_plus as gpt2
        >>> sess = gpt2.reset_session(gpt2.start_tf_sess())
    """
    if sess is not None:
        sess.close()
    return start_tf_sess(threads, server)

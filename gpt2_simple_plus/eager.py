"""Eager execution, which everything here needs, and the notebook that imported gpt-2-simple.

``import gpt_2_simple`` calls ``tf.compat.v1.disable_eager_execution()`` for
the whole process. Left so, our functions would fail deep inside TensorFlow
(``int() argument must be ... not 'SymbolicTensor'``) or, worse, build
operations that never run (a checkpoint save that writes nothing). The public
entry points call :func:`ensure_eager` first:

* while nothing has been built in TensorFlow's global graph (the usual case:
  gpt-2-simple was imported but not used, or only its ``start_tf_sess``),
  TensorFlow can still switch eager execution back on: we drop the empty
  graph (``tf.compat.v1.reset_default_graph``), switch
  (``tf.compat.v1.enable_eager_execution``) and say so in one line. Models
  loaded before the import keep working: they were built eagerly;
* otherwise (an operation was built in graph mode, e.g. by gpt-2-simple's
  ``load_gpt2`` or ``finetune``) we raise
  :class:`~gpt2_simple_plus.errors.GraphModeError`, which names the cause and
  the fix (remove the import, restart the runtime).

    >>> ensure_eager()          # eager already: nothing happens, nothing is printed
"""

import sys

import tensorflow as tf

from .errors import GraphModeError

SWITCHED = ("gpt2_simple_plus: TensorFlow's eager execution was off ({cause}); switched it "
            "back on. gpt_2_simple's own functions need it off and will fail in this process.")


def _cause():
    if "gpt_2_simple" in sys.modules:
        return "`import gpt_2_simple` turns it off"
    return "something called tf.compat.v1.disable_eager_execution()"


def ensure_eager():
    """Make sure TensorFlow executes eagerly, switching it back on if that is still safe.

    Does nothing inside a ``tf.function`` being traced. Raises
    :class:`~gpt2_simple_plus.errors.GraphModeError` when operations were already
    built in graph mode (switching would strand them).
    """
    if tf.executing_eagerly():
        return
    try:
        # TensorFlow refuses (ValueError) once its global graph exists, even empty: one
        # is made by eager code too (tf.function), so a model loaded before
        # `import gpt_2_simple` leaves one. An empty graph holds nothing to lose.
        if not tf.compat.v1.get_default_graph().get_operations():
            tf.compat.v1.reset_default_graph()  # AssertionError inside a nested graph
        tf.compat.v1.enable_eager_execution()
    except (ValueError, AssertionError):
        pass
    cause = _cause()
    if tf.executing_eagerly():
        print(SWITCHED.format(cause=cause))
        return
    if tf.inside_function():
        return
    raise GraphModeError(
        f"TensorFlow is in graph mode: eager execution is off ({cause}), and operations "
        f"have been built in its graph since, so it cannot be switched back on. "
        f"gpt2_simple_plus needs eager execution. Remove `import gpt_2_simple` "
        f"(gpt2_simple_plus replaces it: `import gpt2_simple_plus as gpt2`) and restart the "
        f"runtime (in Colab or Jupyter: Runtime/Kernel > Restart), then run the cells again.")

"""The optimizers ``finetune`` offers, each a few lines of update rule over named variables.

* ``"adam"``: gpt-2-simple's ``tf.compat.v1.train.AdamOptimizer`` (beta1 0.9,
  beta2 0.999, epsilon 1e-8, the bias correction folded into the step size).
* ``"adamw"``: the same Adam plus decoupled weight decay (``weight_decay``,
  0.01 by default) on the weight matrices, not on biases or LayerNorm gains.
* ``"sgd"``: ``var -= learning_rate * grad``.

Each update is TensorFlow's fused kernel (``ResourceApplyAdam`` ...: one pass
over memory instead of a dozen) unless ``fused=False``, which spells the same
arithmetic out in ``assign`` calls, as ``tf.distribute`` variables need.

The state (moments and step count) lives in ``tf.Variable`` objects named
after the model's variables (``optimizer/model/wte/m`` ...), so it can be saved
with a run and restored exactly.

    >>> import numpy as np, tensorflow as tf
    >>> w = {"x": tf.Variable([1.0, -1.0])}
    >>> opt = make_optimizer("adam", w)
    >>> opt.apply([tf.constant([0.5, -0.5])], learning_rate=0.1)
    >>> np.round(w["x"].numpy(), 3)
    array([ 0.9, -0.9], dtype=float32)
    >>> sorted(opt.state())
    ['optimizer/name', 'optimizer/step', 'optimizer/x/m', 'optimizer/x/v']
"""

import numpy as np
import tensorflow as tf

from .errors import CheckpointError, TrainingError

OPTIMIZERS = ("adam", "adamw", "sgd")


class Optimizer:
    """Holds the variables to train (``{name: tf.Variable}``) and the per-variable slots."""

    name = None
    slot_names = ()

    def __init__(self, variables, fused=True):
        self.variables = dict(variables)
        self.fused = fused  # one TensorFlow kernel per update (not with tf.distribute variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="optimizer/step")
        self.slots = {
            (n, s): tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False,
                                name=f"optimizer/{n}/{s}")
            for n, v in self.variables.items() for s in self.slot_names
        }

    def apply(self, grads, learning_rate):
        """Update the variables with ``grads`` (a list in the order of ``variables``)."""
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        for (n, var), g in zip(self.variables.items(), grads):
            self.update(n, var, tf.cast(g, tf.float32), learning_rate, t)

    def update(self, name, var, g, lr, t):
        raise NotImplementedError

    def state(self):
        """Everything needed to continue, by name: the slot and step variables (saved
        as they are, without a copy) and the optimizer's name."""
        out = {f"optimizer/{n}/{s}": v for (n, s), v in self.slots.items()}
        out["optimizer/step"] = self.step
        out["optimizer/name"] = np.array(self.name.encode())
        return out

    def load_state(self, state):
        """Restore from :meth:`state`'s arrays; raises :class:`CheckpointError` if they do not fit."""
        saved = np.asarray(state.get("optimizer/name", b"")).item()
        saved = saved.decode() if isinstance(saved, bytes) else str(saved)
        if saved != self.name:
            raise CheckpointError(f"the saved optimizer state is for {saved!r}, not {self.name!r}")
        for (n, s), v in self.slots.items():
            key = f"optimizer/{n}/{s}"
            if key not in state or tuple(np.shape(state[key])) != tuple(v.shape):
                raise CheckpointError(f"the saved optimizer state lacks {key} of shape "
                                      f"{tuple(v.shape)}")
        for (n, s), v in self.slots.items():
            v.assign(state[f"optimizer/{n}/{s}"])
        self.step.assign(int(state["optimizer/step"]))


class SGD(Optimizer):
    name = "sgd"

    def update(self, name, var, g, lr, t):
        if self.fused:
            tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=g)
        else:
            var.assign_sub(lr * g)


class Adam(Optimizer):
    """``tf.compat.v1.train.AdamOptimizer``'s update, written out."""

    name = "adam"
    slot_names = ("m", "v")

    def __init__(self, variables, beta1=0.9, beta2=0.999, epsilon=1e-8, fused=True):
        super().__init__(variables, fused)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def update(self, name, var, g, lr, t):
        b1, b2 = self.beta1, self.beta2
        m, v = self.slots[name, "m"], self.slots[name, "v"]
        if self.fused:  # the same arithmetic in one pass over memory
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(b1, t),
                beta2_power=tf.pow(b2, t), lr=lr, beta1=b1, beta2=b2, epsilon=self.epsilon,
                grad=g)
            return
        m.assign(b1 * m + (1.0 - b1) * g)
        v.assign(b2 * v + (1.0 - b2) * tf.square(g))
        step_size = lr * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        var.assign_sub(step_size * m / (tf.sqrt(v) + self.epsilon))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter) on matrices only."""

    name = "adamw"

    def __init__(self, variables, weight_decay=0.01, **kwargs):
        super().__init__(variables, **kwargs)
        self.weight_decay = weight_decay

    def update(self, name, var, g, lr, t):
        if len(var.shape) >= 2 and self.weight_decay:
            var.assign_sub(lr * self.weight_decay * var)
        super().update(name, var, g, lr, t)


def make_optimizer(name, variables, *, weight_decay=0.01, fused=True):
    """The optimizer called ``name`` (``"adam"``, ``"adamw"`` or ``"sgd"``) over ``variables``.

        >>> make_optimizer("adagrad", {})
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.TrainingError: Unknown optimizer 'adagrad'. Choose one of: adam, adamw, sgd.
    """
    key = str(name).lower()
    if key == "adam":
        return Adam(variables, fused=fused)
    if key == "adamw":
        return AdamW(variables, weight_decay=weight_decay, fused=fused)
    if key == "sgd":
        return SGD(variables, fused=fused)
    raise TrainingError(f"Unknown optimizer {name!r}. Choose one of: {', '.join(OPTIMIZERS)}.")

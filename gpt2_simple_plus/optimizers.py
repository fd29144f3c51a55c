"""The optimizers ``finetune`` offers, each a few lines of update rule over named variables.

* ``"adam"``: gpt-2-simple's ``tf.compat.v1.train.AdamOptimizer`` (beta1 0.9,
  beta2 0.999, epsilon 1e-8, the bias correction folded into the step size).
* ``"adamw"``: the same Adam plus decoupled weight decay (``weight_decay``,
  0.01 by default) on the weight matrices, not on biases or LayerNorm gains.
* ``"sgd"``: ``var -= learning_rate * grad``.
* ``"adafactor"``: Shazeer & Stern (2018), made for models whose Adam state does
  not fit: a matrix keeps a row and a column of second moments instead of a
  full slot (for 774M, 3 MB of state instead of Adam's 6.2 GB), no first moment,
  and each update's RMS clipped to 1. See :class:`Adafactor` for how
  ``learning_rate`` maps onto it.

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

OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")


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


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern 2018, "Adaptive Learning Rates with Sublinear
    Memory Cost"), the update rule of their Algorithms 4 and 5 as Hugging Face's
    ``transformers.Adafactor`` and T5's mesh-tensorflow spell it:

    * second moments ``v`` decay with ``beta2_t = 1 - t ** decay_rate``
      (``decay_rate=-0.8``), averaging ``grad**2 + epsilon1``;
    * a matrix keeps only their row means ``vr`` and column means ``vc`` (GPT-2's
      ``[1, nx, nf]`` weights are factored over their last two axes) and uses
      ``vr vc / mean(vr)`` in place of ``v``; a vector keeps a full ``v``;
    * the update ``u = grad / sqrt(v)`` is scaled down so that its root mean square
      is at most ``clip_threshold`` (update clipping, d = 1);
    * no first moment unless ``beta1`` is given (then ``m`` averages the scaled updates).

    The step size: with ``relative_step=False`` (what ``finetune`` uses for a
    given ``learning_rate``) it is the learning rate passed to :meth:`apply`, so
    warm-up and decay schedules work as with Adam, and since both rules' updates
    have a root mean square of about 1, the same ``learning_rate`` moves the
    weights about as far (Hugging Face's advice for fine-tuning: external rate,
    ``scale_parameter=False``; T5 fine-tuned at a constant 1e-3). With
    ``relative_step=True`` (``finetune(learning_rate=None)``) it is the paper's
    ``min(1e-2, 1/sqrt(t))`` and the learning rate passed is ignored.
    ``scale_parameter`` (default: ``relative_step``) multiplies the step by each
    variable's root mean square (at least ``epsilon2``), the paper's relative step.

        >>> import numpy as np, tensorflow as tf
        >>> w = {"w": tf.Variable(tf.ones([1, 2, 3])), "b": tf.Variable(tf.zeros([3]))}
        >>> opt = Adafactor(w)
        >>> sorted(opt.state())  # doctest: +NORMALIZE_WHITESPACE
        ['optimizer/b/v', 'optimizer/name', 'optimizer/step', 'optimizer/w/vc',
         'optimizer/w/vr']
        >>> opt.apply([tf.fill([1, 2, 3], 0.5), tf.constant([1.0, -2.0, 0.0])], 0.1)
        >>> np.round(w["w"].numpy()[0, 0], 3), np.round(w["b"].numpy(), 3)
        (array([0.9, 0.9, 0.9], dtype=float32), array([-0.1,  0.1,  0. ], dtype=float32))
    """

    name = "adafactor"

    def __init__(self, variables, *, beta1=None, decay_rate=-0.8, clip_threshold=1.0,
                 epsilon1=1e-30, epsilon2=1e-3, relative_step=False, scale_parameter=None,
                 fused=True):
        super().__init__(variables, fused)  # nothing to fuse: the update is spelled out
        self.beta1, self.decay_rate, self.clip_threshold = beta1, decay_rate, clip_threshold
        self.epsilon1, self.epsilon2 = epsilon1, epsilon2
        self.relative_step = relative_step
        self.scale_parameter = relative_step if scale_parameter is None else scale_parameter
        for n, v in self.variables.items():
            for s, shape in self.slot_shapes(v.shape).items():
                self.slots[n, s] = tf.Variable(tf.zeros(shape, tf.float32), trainable=False,
                                               name=f"optimizer/{n}/{s}")

    def slot_shapes(self, shape):
        """``{slot: shape}`` for a variable of ``shape``: ``vr``/``vc`` (factored) or ``v``,
        and ``m`` with ``beta1``."""
        shape = tuple(shape)
        if self.factored(shape):
            slots = {"vr": shape[:-1], "vc": shape[:-2] + shape[-1:]}
        else:
            slots = {"v": shape}
        if self.beta1:
            slots["m"] = shape
        return slots

    @staticmethod
    def factored(shape):
        """Matrices (and ``[1, nx, nf]`` weights) are factored; vectors are not."""
        return len(shape) >= 2

    def update(self, name, var, g, lr, t):
        beta2 = 1.0 - tf.pow(t, self.decay_rate)  # 0 at the first step
        g2 = tf.square(g) + self.epsilon1
        if self.factored(var.shape):
            vr, vc = self.slots[name, "vr"], self.slots[name, "vc"]
            vr.assign(beta2 * vr + (1.0 - beta2) * tf.reduce_mean(g2, axis=-1))
            vc.assign(beta2 * vc + (1.0 - beta2) * tf.reduce_mean(g2, axis=-2))
            row = tf.math.rsqrt(vr / tf.reduce_mean(vr, axis=-1, keepdims=True))
            u = g * row[..., :, None] * tf.math.rsqrt(vc)[..., None, :]
        else:
            v = self.slots[name, "v"]
            v.assign(beta2 * v + (1.0 - beta2) * g2)
            u = g * tf.math.rsqrt(v)
        u = u / tf.maximum(1.0, _rms(u) / self.clip_threshold)
        step = tf.minimum(1e-2, tf.math.rsqrt(t)) if self.relative_step else lr
        if self.scale_parameter:
            step = step * tf.maximum(self.epsilon2, _rms(var))
        u = step * u
        if self.beta1:
            m = self.slots[name, "m"]
            m.assign(self.beta1 * m + (1.0 - self.beta1) * u)
            u = m
        var.assign_sub(u)


def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x)))


def make_optimizer(name, variables, *, weight_decay=0.01, fused=True, relative_step=False):
    """The optimizer called ``name`` (``"adam"``, ``"adamw"``, ``"sgd"`` or ``"adafactor"``)
    over ``variables``. ``relative_step`` is Adafactor's (see :class:`Adafactor`).

        >>> make_optimizer("adagrad", {})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.TrainingError: Unknown optimizer 'adagrad'. Choose one of: ...
    """
    key = str(name).lower()
    if key == "adam":
        return Adam(variables, fused=fused)
    if key == "adamw":
        return AdamW(variables, weight_decay=weight_decay, fused=fused)
    if key == "sgd":
        return SGD(variables, fused=fused)
    if key == "adafactor":
        return Adafactor(variables, relative_step=relative_step, fused=fused)
    raise TrainingError(f"Unknown optimizer {name!r}. Choose one of: {', '.join(OPTIMIZERS)}.")

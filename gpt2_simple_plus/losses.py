"""The losses training minimises, apart from the loop that drives them.

* :func:`lm_loss`: GPT-2's language-model loss, the mean next-token
  cross-entropy of a batch of windows.
* :func:`tied_head_cross_entropy`: that cross-entropy through the tied output
  head (``h · wteᵀ``), with a hand-written gradient: backpropagation is just two
  matmuls.
* :func:`softmax_cross_entropy`: each row's cross-entropy and its gradient
  ``softmax - onehot`` in one XLA-fused function.

    >>> import tensorflow as tf
    >>> from gpt2_simple_plus.hparams import hparams_for
    >>> from gpt2_simple_plus.model import GPT2
    >>> model = GPT2(hparams_for("tiny", n_vocab=10), seed=0)
    >>> loss = lm_loss(model, tf.constant([[1, 2, 3, 4]]))
    >>> 2.0 < float(loss) < 2.6      # about log(10) for a random model
    True
"""

import tensorflow as tf


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
    fused by XLA into a few passes over the logits instead of the several slow
    passes of TensorFlow's kernel (see the README's performance section).

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

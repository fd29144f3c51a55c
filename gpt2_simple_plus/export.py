"""Export a model as a TensorFlow SavedModel that serves without this package.

    import gpt2_simple_plus as gpt2
    gpt2.export_model(sess, "exported/gpt2/1", run_name="run1")

The SavedModel holds GPT-2's variables and three signatures, each with fixed
dtypes and dynamic batch and sequence sizes, so TensorFlow Serving can host it
(``tensorflow_model_server --model_base_path=$PWD/exported/gpt2``, the ``1``
being the version folder it expects):

* ``serving_default`` and ``logits``: ``tokens`` (int32 ``[batch, seq]``) ->
  ``logits`` (float32 ``[batch, n_vocab]``), the next-token logits after each row.
* ``generate``: ``tokens`` (int32 ``[batch, seq]``, the prompts, all of one
  length), ``length`` (int32: how many tokens to add), ``temperature``
  (float32; 0 is greedy), ``top_k`` (int32; 0 is off), ``top_p`` (float32;
  0 is off, otherwise it overrides ``top_k``) and ``seed`` (int32) ->
  ``tokens`` (int32 ``[batch, length]``). The loop is ``generate()``'s own
  (:func:`~gpt2_simple_plus.decoding.decode_loop`, a ``tf.while_loop`` over a
  key/value cache) with the same sampling rules and the same seeded draws, so
  the same prompt, settings and seed give the same tokens as
  ``gpt2.generate(sess, ..., seed=seed)``.

The vocabulary (``encoder.json``, ``vocab.bpe``), ``hparams.json`` and an
``export.json`` (vocabulary size, context, ``<|endoftext|>`` id, signatures)
are copied into the SavedModel's ``assets/`` folder, so a server can encode
and decode text. Loading needs TensorFlow only::

    import tensorflow as tf
    gpt2 = tf.saved_model.load("exported/gpt2/1")
    out = gpt2.signatures["generate"](tokens=tf.constant([[464, 3290]]), length=tf.constant(20),
                                      temperature=tf.constant(0.7), top_k=tf.constant(40),
                                      top_p=tf.constant(0.0), seed=tf.constant(1))
    out["tokens"]   # int32 [1, 20]
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from .loading import load_model
from .decoding import batch_seed, decode_loop
from .eager import ensure_eager
from .errors import GenerationError, ModelNotFoundError
from .folders import model_folder
from .hparams import save_hparams
from .sampling import SamplingConfig

VOCAB_FILES = ("encoder.json", "vocab.bpe")
EXPORT_FORMATS = ("saved_model", "transformers")
# The sampling rule of the generate signature: chosen in the graph from its inputs.
RUNTIME_RULE = SamplingConfig(runtime=True)


class ServingGPT2(tf.Module):
    """GPT-2's variables and the serving functions, as saved in the SavedModel."""

    def __init__(self, model, max_length):
        super().__init__(name="gpt2")
        self.model = model
        self.max_length = int(max_length)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="tokens")],
                 autograph=False)
    def logits(self, tokens):
        """Next-token logits after each row (its last ``max_length`` tokens): ``[batch, vocab]``."""
        tokens = tokens[:, -self.max_length:]
        h, _ = self.model.forward(tokens)
        return {"logits": self.model.logits(h[:, -1:])[:, 0]}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.int32, name="tokens"),
        tf.TensorSpec([], tf.int32, name="length"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([], tf.int32, name="top_k"),
        tf.TensorSpec([], tf.float32, name="top_p"),
        tf.TensorSpec([], tf.int32, name="seed"),
    ], autograph=False)
    def generate(self, tokens, length, temperature, top_k, top_p, seed):
        """``length`` new tokens after each prompt: ``[batch, length]``, as ``generate()``
        draws them for ``seed``."""
        model = self.model
        batch, prompt = tf.shape(tokens)[0], tf.shape(tokens)[1]
        checks = [
            tf.debugging.assert_positive(prompt, message="generate: every prompt needs at least "
                                         "one token (e.g. <|endoftext|>)"),
            tf.debugging.assert_non_negative(length, message="generate: length must be >= 0"),
            tf.debugging.assert_less_equal(
                prompt + length, self.max_length,
                message=f"generate: prompt + length must be at most {self.max_length} tokens"),
        ]
        with tf.control_dependencies(checks):
            total = prompt + length
        hp = model.hparams
        shape = tf.TensorShape([None, None, hp.head_size])  # [batch * heads, length, head]
        cache = tf.nest.map_structure(lambda c: tf.ensure_shape(c, shape),
                                      model.empty_cache(batch, total))
        h, cache = model.forward(tokens, cache=cache, pos=0, portable=True)
        logits = model.logits(h[:, -1:])[:, 0]
        loop = decode_loop(model, length, RUNTIME_RULE, portable=True)
        seed = tf.cast(batch_seed(tf.cast(seed, tf.int64), 0), tf.int32)
        _, _, out, _, _, _ = loop(
            cache, logits, pos=prompt, pad=tf.zeros([batch], tf.int32),
            seen=tf.zeros([batch, 1], tf.bool), steps=length, seed=tf.stack([seed, 0]),
            step0=tf.constant(0), temperature=temperature, top_k=top_k, top_p=top_p,
            penalty=tf.constant(1.0), stops=tf.zeros([0, 1], tf.int32),
            done=tf.zeros([batch], tf.bool))
        return {"tokens": out}


def export_model(sess, path, run_name=None, checkpoint_dir="checkpoint", model_name=None,
                 model_dir="models", max_length=None, tflite=False, format="saved_model"):
    """Write a TensorFlow SavedModel of a GPT-2 to ``path``; returns ``path``.

    The model is ``model_dir/model_name`` if given (as in ``load_gpt2``),
    else the run ``checkpoint_dir/run_name`` if given, else the model loaded
    in ``sess``.
    ``max_length`` (default: the model's context, ``n_ctx``) bounds prompt +
    generated tokens in ``generate``; ``logits`` reads the last ``max_length``
    tokens of longer inputs. See the module notes for the signatures.

    ``tflite=True`` also writes ``model.tflite`` with both signatures, for
    phones and other small devices. ``logits`` converts to TFLite's
    built-in ops; ``generate`` needs a few TensorFlow ops TFLite's built-ins
    lack (in the sampling rules and the loop), so the file is converted with
    ``SELECT_TF_OPS`` and runs where the Flex delegate is linked (the
    ``tensorflow`` pip package's interpreter has it; a bare LiteRT runtime
    needs the ``tensorflow-lite-select-tf-ops`` library). The 774M and 1558M
    models exceed TFLite's 2 GB file limit.

        >>> import tempfile
        >>> from gpt2_simple_plus._examples import example_session
        >>> sess = example_session()                      # normally load_gpt2(sess, ...)
        >>> path = export_model(sess, tempfile.mkdtemp() + "/gpt2/1")
        >>> sorted(os.listdir(os.path.join(path, "assets")))
        ['encoder.json', 'export.json', 'hparams.json', 'vocab.bpe']
        >>> served = tf.saved_model.load(path)
        >>> served.signatures["generate"](tokens=tf.constant([[1, 2]]), length=tf.constant(3),
        ...     temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(0.0),
        ...     seed=tf.constant(0))["tokens"].shape
        TensorShape([1, 3])

    ``format="transformers"`` writes a Hugging Face folder instead
    (``config.json``, ``model.safetensors``, ``vocab.json``, ``merges.txt``,
    ``generation_config.json`` and the tokenizer's two files) that
    ``GPT2LMHeadModel.from_pretrained(path)`` and
    ``pipeline("text-generation", model=path)`` load as they are; see
    :func:`~gpt2_simple_plus.huggingface.save_transformers`. ``max_length``
    and ``tflite`` do not apply to it.

        >>> out = export_model(sess, tempfile.mkdtemp(), format="transformers")
        >>> "model.safetensors" in os.listdir(out)
        True
    """
    ensure_eager()
    if format not in EXPORT_FORMATS:
        raise GenerationError(f"format={format!r} is not one of {', '.join(EXPORT_FORMATS)}: "
                              f"'saved_model' for TensorFlow Serving and TFLite, "
                              f"'transformers' for Hugging Face.")
    if format == "transformers" and (max_length is not None or tflite):
        raise GenerationError("max_length and tflite apply to format='saved_model' only; leave "
                              "them out with format='transformers'.")
    model, folder = _pick_model(sess, run_name, checkpoint_dir, model_name, model_dir)
    n_ctx = model.hparams.n_ctx
    max_length = n_ctx if max_length is None else int(max_length)
    if not 1 <= max_length <= n_ctx:
        raise GenerationError(f"max_length must be between 1 and the model's n_ctx ({n_ctx}), "
                              f"got {max_length}.")
    missing = [n for n in VOCAB_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise ModelNotFoundError(f"{os.path.join(folder, missing[0])} is missing: the export "
                                 f"ships the vocabulary in assets/. Copy {', '.join(missing)} "
                                 f"from the model's folder (e.g. models/124M).")
    if format == "transformers":
        from .huggingface import save_transformers

        return save_transformers(path, model.numpy_weights(), model.hparams, folder)
    module = ServingGPT2(model, max_length)
    staging = tempfile.mkdtemp(prefix="gpt2-export-")
    try:
        for name in VOCAB_FILES:
            shutil.copyfile(os.path.join(folder, name), os.path.join(staging, name))
        save_hparams(staging, model.hparams)
        with open(os.path.join(folder, "encoder.json"), encoding="utf-8") as f:
            eot = json.load(f).get("<|endoftext|>")
        info = {"n_vocab": model.hparams.n_vocab, "n_ctx": n_ctx, "max_length": max_length,
                "eot_token": eot, "source": os.path.abspath(folder),
                "signatures": {
                    "serving_default": "tokens int32 [batch, seq] -> logits float32 [batch, vocab]",
                    "logits": "same as serving_default",
                    "generate": "tokens int32 [batch, seq], length int32, temperature float32, "
                                "top_k int32, top_p float32, seed int32 -> tokens int32 "
                                "[batch, length]"}}
        with open(os.path.join(staging, "export.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1)
        module.assets = {name: tf.saved_model.Asset(os.path.join(staging, name))
                         for name in VOCAB_FILES + ("hparams.json", "export.json")}
        logits = module.logits.get_concrete_function()
        tf.saved_model.save(module, path, signatures={
            "serving_default": logits, "logits": logits,
            "generate": module.generate.get_concrete_function()})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if tflite:
        _write_tflite(path)
    return path


def _pick_model(sess, run_name, checkpoint_dir, model_name, model_dir):
    """The model to export and the folder holding its vocabulary."""
    if run_name is None and model_name is None:
        if sess is None or getattr(sess, "model", None) is None:
            raise ModelNotFoundError(
                "Nothing to export: the session has no model. Load one first: "
                "gpt2.load_gpt2(sess, model_name='124M'), or pass run_name=... or model_name=....")
        if not sess.model_path:
            raise ModelNotFoundError("The session's model has no folder (model_path) to take "
                                     "its vocabulary from; pass run_name=... or model_name=....")
        return sess.model, sess.model_path
    folder = model_folder(run_name, checkpoint_dir, model_name, model_dir)
    return load_model(folder), folder


def _write_tflite(path):
    converter = tf.lite.TFLiteConverter.from_saved_model(path,
                                                         signature_keys=["logits", "generate"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    with open(os.path.join(path, "model.tflite"), "wb") as f:
        f.write(converter.convert())

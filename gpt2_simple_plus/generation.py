"""``load_gpt2``, ``generate`` and ``generate_to_file``: gpt-2-simple's generation API.

Same names, defaults, printed output and files as gpt-2-simple 0.8.1, over a
compiled decode loop (:mod:`gpt2_simple_plus.decoding`). What differs is
what gpt-2-simple got wrong: ``include_prefix=False`` always removes the
prefix, ``batch_size`` need not divide ``nsamples``, ``seed`` gives the same
text on every call and in every process, prefixes and lengths longer than the
context slide a window, ``truncate`` / ``stop`` stop each row as soon as they
appear, and calling ``generate`` again never grows the graph.

    >>> import gpt2_simple_plus as gpt2
    >>> sess = gpt2.start_tf_sess()
    >>> gpt2.load_gpt2(sess, model_name="124M")            # doctest: +SKIP
    >>> gpt2.generate(sess, prefix="Hello", length=20)     # doctest: +SKIP
"""

import os
import sys

from . import lite
from .checkpoints import find_checkpoint
from .loading import load_model
from .decoding import Decoder, batch_seed
from .eager import ensure_eager
from .encoder import get_encoder
from .errors import GenerationError
from .folders import model_folder
from .sampling import SamplingConfig


def decoder_for(model, *, jit_compile=True):
    """The :class:`~gpt2_simple_plus.decoding.Decoder` of ``model``, compiled once and kept
    with the model (so ``finetune``'s samples and ``generate`` share it, and it goes
    when the model goes).

    ``jit_compile=False`` (decided on first use) skips XLA: slower decoding,
    faster compiling, for tiny models.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> from gpt2_simple_plus.model import GPT2
        >>> model = GPT2(hparams_for("tiny", n_vocab=50))
        >>> decoder_for(model) is decoder_for(model)
        True
    """
    decoder = getattr(model, "_decoder", None)
    if decoder is None:
        decoder = Decoder(model, jit_compile=jit_compile)
        model._decoder = decoder
    return decoder


def _session_decoder(sess):
    """``sess.decoder``, made for the session's model on first use."""
    if sess.decoder is None or sess.decoder.model is not sess.model:
        sess.decoder = decoder_for(sess.model)
    return sess.decoder


def load_gpt2(sess, checkpoint="latest", run_name="run1", checkpoint_dir="checkpoint",
              model_name=None, model_dir="models", multi_gpu=False, reuse=False,
              compute_dtype="float32", quantize=None, runtime=None):
    """Load a model into ``sess`` for repeated generation (gpt-2-simple's ``load_gpt2``).

    With ``model_name`` the pretrained model in ``models/<model_name>``;
    otherwise the fine-tuned run in ``checkpoint/<run_name>``.
    ``checkpoint="model-1000"`` picks one checkpoint of the run. Loading into
    a session that already holds a model replaces it; any number of sessions
    can hold models side by side. ``multi_gpu`` and ``reuse`` are accepted for
    compatibility (generation runs on one device). ``compute_dtype`` may be
    ``"bfloat16"``/``"float16"`` on hardware with fast units for them.

    ``quantize="int8"`` makes :func:`generate` read each weight matrix as 8-bit
    integers with a scale per output channel, on LiteRT's kernels (see
    :mod:`~gpt2_simple_plus.lite`): a quarter of the bytes per token, which is what
    sets decoding speed on a CPU, for a small loss of accuracy.
    ``runtime="litert"`` runs the same LiteRT step with the float32 weights: the
    text is float32's, made faster than TensorFlow's XLA makes it, for the price of
    a second copy of the weights in memory and on disk. (``runtime`` is
    ``"tensorflow"`` by default and ``"litert"`` with ``quantize``.) The first load of
    a checkpoint converts it and keeps ``<checkpoint>.int8-v2.tflite`` (or
    ``.float32-v2.tflite``) beside it; later loads read that. Converting takes memory
    for a minute or two (for int8 about as much again as the float32 weights, for
    float32 about seven times them): when less is available, an ``OutOfMemoryError``
    says so before it starts. Everything else
    (scoring, fine-tuning, export) keeps the float32 weights, which stay loaded too.

        >>> import gpt2_simple_plus as gpt2
        >>> sess = gpt2.start_tf_sess()
        >>> gpt2.load_gpt2(sess, run_name="run1")          # doctest: +SKIP
        Loading checkpoint checkpoint/run1/model-1000
    """
    ensure_eager()
    if quantize is not None and quantize not in lite.QUANTIZE_MODES:
        raise GenerationError(f"quantize must be None or one of {lite.QUANTIZE_MODES}, "
                              f"got {quantize!r}.")
    if runtime is not None and runtime not in lite.RUNTIMES:
        raise GenerationError(f"runtime must be None or one of {lite.RUNTIMES}, got "
                              f"{runtime!r}.")
    if quantize is not None and runtime == "tensorflow":
        raise GenerationError(f"quantize={quantize!r} runs on LiteRT: leave runtime at None "
                              "(or 'litert').")
    on_lite = quantize is not None or runtime == "litert"
    if on_lite and compute_dtype != "float32":
        setting = f"quantize={quantize!r}" if quantize else "runtime='litert'"
        raise GenerationError(f"{setting} computes in float32: leave compute_dtype at "
                              "'float32'.")
    folder = model_folder(run_name, checkpoint_dir, model_name, model_dir)
    prefix = find_checkpoint(folder, checkpoint)
    print("Loading pretrained model" if model_name else "Loading checkpoint", prefix)
    model = load_model(folder, prefix, compute_dtype=compute_dtype)
    if on_lite:
        engine = lite.LiteModel(model, lite.cached_step(model, prefix,
                                                        quantize=quantize is not None))
        # what generate() will use: the step runs Python, so only the choice of token
        # is compiled
        model._decoder = Decoder(engine, jit_compile=False, compile_choice=True)
    sess.set_model(model, get_encoder(folder), folder, prefix, None if model_name else run_name)


def _ensure_loaded(sess, run_name, checkpoint_dir, model_name, model_dir):
    if sess.model is None:
        load_gpt2(sess, run_name=run_name, checkpoint_dir=checkpoint_dir, model_name=model_name,
                  model_dir=model_dir)
    return sess.model, sess.encoder


def _stop_list(stop, truncate):
    """``stop`` (a string, a token id, or a list of them) plus ``truncate``, as two lists."""
    items = [] if stop is None else (list(stop) if isinstance(stop, (list, tuple, set)) else [stop])
    if truncate:
        items.append(truncate)
    strings = [s for s in items if isinstance(s, str) and s]
    ids = [int(s) for s in items if not isinstance(s, str)]
    return strings, ids


def _cut_at_stop(text, strings):
    """``text`` up to (not including) the earliest of ``strings``."""
    cut = len(text)
    for s in strings:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def _prompts(encoder, prefix, nsamples):
    """The token ids each sample starts from, and the prefix text of each."""
    if prefix is None or prefix == "" or prefix == []:
        if encoder.eot_token is None:
            raise GenerationError(
                "This vocabulary has no <|endoftext|> token to start from: pass a prefix.")
        return [[encoder.eot_token]] * nsamples, [None] * nsamples
    if isinstance(prefix, str):
        prefixes = [prefix]
    elif isinstance(prefix, (list, tuple)):
        prefixes = list(prefix)
    else:
        prefixes = [None]  # a number, bytes...: refused just below
    if not all(isinstance(p, str) and p for p in prefixes):
        raise GenerationError("prefix must be a non-empty string or a list of non-empty strings.")
    texts = [prefixes[i % len(prefixes)] for i in range(nsamples)]
    encoded = {p: encoder.encode(p) for p in set(texts)}
    return [encoded[t] for t in texts], texts


def _sampling_config(temperature, top_k, top_p, repetition_penalty):
    try:
        return SamplingConfig(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                              repetition_penalty=float(repetition_penalty))
    except ValueError as err:
        raise GenerationError(str(err)) from None


def _batch_seed(seed, index):
    return batch_seed(int(seed), index)


def _text_of(encoder, context, new, prefix_text, include_prefix, stops):
    """gpt-2-simple's text for one sample: prefix (decoded from its tokens) + continuation,
    cut at the first stop string, leading newlines stripped."""
    if prefix_text is None:
        head, tail = "", encoder.decode(new)
    else:
        head = encoder.decode(context)
        full = encoder.decode(list(context) + list(new))
        tail = full[len(head):] if full.startswith(head) else encoder.decode(new)
    tail = _cut_at_stop(tail, stops)
    text = head + tail if include_prefix else tail
    return text.lstrip("\n")


def generate(sess, run_name="run1", checkpoint_dir="checkpoint", model_name=None,
             model_dir="models", sample_dir="samples", return_as_list=False, truncate=None,
             destination_path=None, sample_delim="=" * 20 + "\n", prefix=None, seed=None,
             nsamples=1, batch_size=1, length=1023, temperature=0.7, top_k=0, top_p=0.0,
             include_prefix=True, *, stop=None, repetition_penalty=1.0, stream=False,
             callback=None):
    """Generate text from the model in ``sess`` (gpt-2-simple's ``generate``).

    ``length`` new tokens after ``prefix`` (or after ``<|endoftext|>``);
    ``temperature`` (0 = greedy), ``top_k`` (0 = off), ``top_p`` (0.0 = off,
    overrides ``top_k``), ``repetition_penalty`` (Hugging Face's, 1.0 = off).
    ``nsamples`` texts are made ``batch_size`` at a time and printed with
    ``sample_delim`` between them, returned as a list (``return_as_list``),
    or written to ``destination_path``. ``prefix`` may be a list of
    prompts, one per sample (``nsamples`` grows to at least its length).
    ``truncate`` and ``stop`` (strings or token ids) end each sample at their
    first appearance, which is left out of the text. ``seed`` makes the
    output reproducible. ``stream=True`` returns an iterator of text pieces
    as they are produced (one sample); ``callback(piece)`` receives them too.
    If ``sess`` holds no model yet, the run (or ``model_name``) is loaded.

        >>> import gpt2_simple_plus as gpt2
        >>> sess = gpt2.start_tf_sess()
        >>> gpt2.load_gpt2(sess, model_name="124M")                        # doctest: +SKIP
        >>> texts = gpt2.generate(sess, prefix="The", length=20, nsamples=2,
        ...                       return_as_list=True, seed=1)              # doctest: +SKIP
    """
    ensure_eager()
    model, encoder = _ensure_loaded(sess, run_name, checkpoint_dir, model_name, model_dir)
    length, nsamples, batch_size = int(length), int(nsamples), int(batch_size or 1)
    if length < 1 or nsamples < 1 or batch_size < 1:
        raise GenerationError("length, nsamples and batch_size must all be at least 1.")
    if isinstance(prefix, (list, tuple)) and prefix:
        nsamples = max(nsamples, len(prefix))
    config = _sampling_config(temperature, top_k, top_p, repetition_penalty)
    contexts, prefix_texts = _prompts(encoder, prefix, nsamples)
    stop_strings, stop_ids = _stop_list(stop, truncate)
    stop_sequences = [encoder.encode(s) for s in stop_strings] + [[i] for i in stop_ids]
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    decoder = _session_decoder(sess)

    if stream or callback is not None:
        if nsamples > 1 or destination_path:
            raise GenerationError(
                "stream=True and callback= make one sample, shown as it grows: leave nsamples=1 "
                "and destination_path=None (or call generate without them for several samples).")
        pieces = _lstrip_newlines(_stream_text(
            decoder, encoder, contexts[0], prefix_texts[0], length, config, _batch_seed(seed, 0),
            stop_sequences, stop_strings, include_prefix, stop_ids))
        if stream:
            return _with_callback(pieces, callback)
        texts = ["".join(_with_callback(pieces, callback))]
        if not return_as_list:
            print(texts[0])
        return texts if return_as_list else None

    if nsamples == 1:
        sample_delim = ""
    texts = []
    out = open(destination_path, "w", encoding="utf-8") if destination_path else None
    try:
        for b, start in enumerate(range(0, nsamples, batch_size)):
            rows = list(range(start, min(start + batch_size, nsamples)))
            batch_contexts = [contexts[i] for i in rows]
            # The last batch is padded to batch_size so it reuses the compiled loop.
            batch_contexts += [batch_contexts[-1]] * (batch_size - len(rows))
            new = decoder.generate(batch_contexts, length, config, seed=_batch_seed(seed, b),
                                   stop_sequences=stop_sequences)
            for i, tokens in zip(rows, new):
                tokens = _without_stop_id(tokens, stop_ids)
                text = _text_of(encoder, contexts[i], tokens, prefix_texts[i], include_prefix,
                                stop_strings)
                if out is not None:
                    out.write(f"{text}\n{sample_delim}")
                elif not return_as_list:
                    print(f"{text}\n{sample_delim}", end="")
                texts.append(text)
    finally:
        if out is not None:
            out.close()
    return texts if return_as_list else None


def _without_stop_id(tokens, stop_ids):
    """``tokens`` without the stop token id the decoder cut them after (the
    first appearance of any stop id, since the decoder stops there)."""
    return tokens[:-1] if tokens and tokens[-1] in stop_ids else tokens


def _with_callback(pieces, callback):
    for piece in pieces:
        if callback is not None:
            callback(piece)
        yield piece


def _lstrip_newlines(pieces):
    """The pieces of a text without its leading newlines (the text's ``lstrip("\\n")``,
    which may span several pieces)."""
    started = False
    for piece in pieces:
        if not started:
            piece = piece.lstrip("\n")
            started = bool(piece)
        if piece:
            yield piece


def _stream_text(decoder, encoder, context, prefix_text, length, config, seed, stop_sequences,
                 stop_strings, include_prefix, stop_ids=()):
    """Yield the text of one sample as it grows, holding back what may still
    change: an unfinished UTF-8 character, or the start of a stop string."""
    if include_prefix and prefix_text is not None:
        yield encoder.decode(context)
    head = encoder.decode(context) if prefix_text is not None else ""
    tokens, sent = [], 0
    hold = max((len(s) for s in stop_strings), default=1) - 1
    for piece in decoder.stream([context], length, config, seed=seed,
                                stop_sequences=stop_sequences, chunk=1):
        tokens.extend(piece[0])
        if tokens and tokens[-1] in stop_ids:  # a stop token id: left out, and finished
            tokens.pop()
            break
        tail = _tail(encoder, context, tokens, head, prefix_text)
        cut = _cut_at_stop(tail, stop_strings)
        if len(cut) < len(tail):  # a stop string appeared: finish here
            break
        safe = len(tail) - hold
        if tail.endswith("\ufffd"):
            safe = min(safe, len(tail) - 1)
        if safe > sent:
            text = tail[sent:safe]
            yield text
            sent = safe
    tail = _cut_at_stop(_tail(encoder, context, tokens, head, prefix_text), stop_strings)
    if len(tail) > sent:
        yield tail[sent:]


def _tail(encoder, context, tokens, head, prefix_text):
    if prefix_text is None:
        return encoder.decode(tokens)
    full = encoder.decode(list(context) + tokens)
    return full[len(head):] if full.startswith(head) else encoder.decode(tokens)


def generate_to_file(sess, run_name="run1", checkpoint_dir="checkpoint", model_name=None,
                     model_dir="models", truncate=None, destination_path="gpt_2_gen_texts.txt",
                     sample_delim="=" * 20 + "\n", prefix=None, seed=None, nsamples=1,
                     batch_size=1, length=1023, temperature=0.7, top_k=0, top_p=0.0,
                     include_prefix=True, **extras):
    """Generate texts into ``destination_path`` (gpt-2-simple's ``generate_to_file``).

        >>> import gpt2_simple_plus as gpt2
        >>> sess = gpt2.start_tf_sess()
        >>> gpt2.load_gpt2(sess)                                          # doctest: +SKIP
        >>> gpt2.generate_to_file(sess, nsamples=10, batch_size=5)        # doctest: +SKIP
    """
    generate(sess, run_name=run_name, checkpoint_dir=checkpoint_dir, model_name=model_name,
             model_dir=model_dir, return_as_list=False, truncate=truncate,
             destination_path=destination_path, sample_delim=sample_delim, prefix=prefix,
             seed=seed, nsamples=nsamples, batch_size=batch_size, length=length,
             temperature=temperature, top_k=top_k, top_p=top_p, include_prefix=include_prefix,
             **extras)


def sample_tokens(model, contexts, length, *, temperature=1.0, top_k=0, top_p=0.0, seed=None):
    """New token ids after each context (a list of id lists): the sampler
    ``finetune`` uses for its periodic samples.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> from gpt2_simple_plus.model import GPT2
        >>> rows = sample_tokens(GPT2(hparams_for("tiny", n_vocab=50)), [[1, 2]], 4, seed=0)
        >>> len(rows[0])
        4
    """
    config = _sampling_config(temperature, top_k, top_p, 1.0)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    return decoder_for(model).generate([list(c) for c in contexts], int(length), config, seed=seed)


__all__ = ["load_gpt2", "generate", "generate_to_file"]
_ = sys  # printing goes through print(); kept for doctest runners that patch sys.stdout

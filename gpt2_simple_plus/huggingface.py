"""GPT-2 models from Hugging Face, converted once into OpenAI's layout.

:func:`~gpt2_simple_plus.download.download_gpt2` calls :func:`download_repo`
for ``"distilgpt2"``, ``"hf:<org>/<repo>"`` and ``source="huggingface"``. It
fetches ``config.json``, ``model.safetensors`` (or
``model.safetensors.index.json`` and its shards), ``vocab.json`` and
``merges.txt`` from ``{endpoint}/{repo}/resolve/{revision}/{file}`` into
``models/<name>/hf/`` with the same resume, retry and verification as OpenAI's
files, then writes ``hparams.json``, ``encoder.json``, ``vocab.bpe``,
``model.ckpt.*`` and ``checkpoint`` into ``models/<name>/``. The ``hf/``
folder is deleted once the conversion is written; the manifest
``.download.json`` records the converted files (and the repository, revision
and endpoint they came from), so a second call neither downloads nor converts.

Hugging Face's tensor names map one to one onto OpenAI's; its ``Conv1D``
weights are already ``[in, out]`` and only gain OpenAI's leading axis of 1:

    >>> openai_name("transformer.h.3.attn.c_attn.weight")
    'model/h3/attn/c_attn/w'
    >>> openai_name("ln_f.bias")
    'model/ln_f/b'
    >>> openai_name("h.0.attn.bias") is None  # the causal-mask buffer is skipped
    True
"""

import json
import os
import re
import shutil
import struct
from urllib.parse import quote

import numpy as np

from .errors import DownloadError, ModelNotFoundError
from .fetch import Fetcher, Invalid, check_json, check_not_html, check_text
from .files import write_bytes_atomic
# repo_for and folder_name_for_repo are also read from here by older code.
from .folders import (CONVERTED_FILES, folder_name_for_repo, model_folder_name,  # noqa: F401
                      repo_for)
from .hparams import HParams

HF_ENDPOINT = "https://huggingface.co"
HF_ENDPOINT_ENV = "HF_ENDPOINT"
HF_FOLDER = "hf"  # raw Hugging Face files while downloading, inside the model folder
# GELU variants that are GPT-2's tanh approximation (what model.gelu computes).
TANH_GELUS = (None, "gelu_new", "gelu_pytorch_tanh", "gelu_fast")

_LAYER = re.compile(r"h\.(\d+)\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                    r"\.(weight|bias)")
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_MAX_HEADER = 100 * 1024 * 1024


# ---------------------------------------------------------------------------
# Addresses

def hf_url(endpoint, repo, revision, filename):
    """``{endpoint}/{repo}/resolve/{revision}/{filename}``.

        >>> hf_url("https://huggingface.co", "distilbert/distilgpt2", "main", "config.json")
        'https://huggingface.co/distilbert/distilgpt2/resolve/main/config.json'
    """
    return f"{endpoint.rstrip('/')}/{repo}/resolve/{quote(revision, safe='')}/{filename}"


# ---------------------------------------------------------------------------
# config.json -> hparams

def hparams_from_config(config):
    """:class:`HParams` from a Hugging Face GPT-2 ``config.json`` (a dict).

    Raises :class:`~gpt2_simple_plus.errors.DownloadError` for another
    architecture, or for a GPT-2 variant whose arithmetic differs from OpenAI's
    (another activation, LayerNorm epsilon, attention scaling, cross-attention
    or MLP width).

        >>> hparams_from_config({"model_type": "gpt2", "vocab_size": 10, "n_positions": 8,
        ...                      "n_embd": 4, "n_head": 2, "n_layer": 1}).n_ctx
        8
    """
    architectures = config.get("architectures") or []
    if config.get("model_type") != "gpt2" and "GPT2LMHeadModel" not in architectures:
        raise DownloadError(f"config.json says model_type {config.get('model_type')!r}, "
                      f"architectures {architectures!r}, not GPT-2")
    values = {"n_vocab": config.get("vocab_size"),
              "n_ctx": config.get("n_positions", config.get("n_ctx")),
              "n_embd": config.get("n_embd"), "n_head": config.get("n_head"),
              "n_layer": config.get("n_layer")}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise DownloadError(f"config.json lacks {', '.join(missing)} (vocab_size, n_positions, "
                            f"n_embd, n_head and n_layer are needed)")
    try:
        hparams = HParams(**values)
    except ValueError as err:
        raise DownloadError(str(err)) from None
    differences = []
    if config.get("activation_function") not in TANH_GELUS:
        differences.append(f"activation_function {config['activation_function']!r}")
    if abs(float(config.get("layer_norm_epsilon", 1e-5)) - 1e-5) > 1e-12:
        differences.append(f"layer_norm_epsilon {config['layer_norm_epsilon']}")
    if config.get("n_inner") not in (None, 4 * hparams.n_embd):
        differences.append(f"n_inner {config['n_inner']}")
    if config.get("scale_attn_weights") is False or config.get("scale_attn_by_inverse_layer_idx"):
        differences.append("a different attention scaling")
    if config.get("add_cross_attention"):
        differences.append("cross-attention")
    if differences:
        raise DownloadError(f"it is a GPT-2 variant with {', '.join(differences)}, which OpenAI's "
                      f"GPT-2 (and this package) does not compute")
    return hparams


# ---------------------------------------------------------------------------
# safetensors -> OpenAI's checkpoint names

def openai_name(hf_name):
    """OpenAI's checkpoint name for a Hugging Face GPT-2 tensor, or ``None`` if it has none."""
    name = hf_name[len("transformer."):] if hf_name.startswith("transformer.") else hf_name
    if name in ("wte.weight", "wpe.weight"):
        return "model/" + name.split(".")[0]
    if name in ("ln_f.weight", "ln_f.bias"):
        return "model/ln_f/" + ("g" if name.endswith("weight") else "b")
    m = _LAYER.fullmatch(name)
    if not m:
        return None
    layer, module, kind = m.groups()
    if module.startswith("ln_"):
        leaf = "g" if kind == "weight" else "b"
    else:
        leaf = "w" if kind == "weight" else "b"
    return f"model/h{layer}/{module.replace('.', '/')}/{leaf}"


def _is_skipped(hf_name):
    name = hf_name[len("transformer."):] if hf_name.startswith("transformer.") else hf_name
    return bool(_BUFFER.fullmatch(name))


def read_safetensors(paths):
    """``{Hugging Face name: float32 array}`` from safetensors files (mask buffers left out).

    Uses the ``safetensors`` NumPy API; float16 and bfloat16 become float32.
    """
    from safetensors import safe_open

    tensors = {}
    for path in paths:
        with safe_open(path, framework="np") as f:
            for key in f.keys():
                if _is_skipped(key):
                    continue
                if key in tensors:
                    raise DownloadError(f"the tensor {key!r} appears in two weight files")
                tensors[key] = np.asarray(f.get_tensor(key)).astype(np.float32, copy=False)
    return tensors


def hf_weights_to_openai(tensors, hparams):
    """Map ``{Hugging Face name: array}`` onto OpenAI's ``{name: array}`` for ``hparams``.

    Accepts names with or without the ``transformer.`` prefix; ignores the
    ``attn.bias``/``attn.masked_bias`` buffers; ``lm_head.weight``, if present,
    must equal ``wte`` (GPT-2's head is tied to it). Conv1D weights
    ``[in, out]`` become ``[1, in, out]``.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> hp = hparams_for("tiny", n_vocab=10)
        >>> hf_weights_to_openai({"transformer.wte.weight": np.zeros((10, 32))}, hp)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.DownloadError: the weights lack 27 tensor(s) GPT-2 needs, ...
    """
    from .model import variable_shapes

    shapes = variable_shapes(hparams)
    weights, head, unknown = {}, None, []
    for hf_name, value in tensors.items():
        if _is_skipped(hf_name):
            continue
        if hf_name in ("lm_head.weight", "transformer.lm_head.weight"):
            head = value
            continue
        name = openai_name(hf_name)
        if name is None or name not in shapes:
            unknown.append(hf_name)
            continue
        if name in weights:
            raise DownloadError(f"two tensors map to {name!r} (with and without 'transformer.')")
        value = np.asarray(value, np.float32)
        if value.size != int(np.prod(shapes[name])) or value.shape[-1] != shapes[name][-1]:
            raise DownloadError(f"{hf_name!r} has shape {tuple(value.shape)}, but config.json asks "
                          f"for {shapes[name][-len(value.shape):]}")
        weights[name] = value.reshape(shapes[name])
    if unknown:
        raise DownloadError(f"the weights hold tensors GPT-2 does not have, first {unknown[0]!r}")
    missing = [n for n in shapes if n not in weights]
    if missing:
        raise DownloadError(f"the weights lack {len(missing)} tensor(s) GPT-2 needs, first "
                      f"{missing[0]!r}")
    if head is not None and not np.array_equal(np.asarray(head, np.float32), weights["model/wte"]):
        raise DownloadError("lm_head.weight differs from wte.weight: the output head is not tied "
                            "to the embeddings, which GPT-2 requires")
    return weights


def check_safetensors(path):
    """A safetensors file whose size matches its header (so it is neither truncated nor padded)."""
    check_not_html(path, text=False)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise Invalid("the file is too short to be safetensors")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise Invalid("the file does not start with a safetensors header")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise Invalid("the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise Invalid("the safetensors header is not a JSON object")
    try:
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"],
                  default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        raise Invalid("the safetensors header lacks data_offsets") from None
    if size != 8 + n + end:
        raise Invalid(f"the file has {size} bytes but its header describes {8 + n + end}")


def _check_config(path):
    check_json(path)


# ---------------------------------------------------------------------------
# Conversion

def convert_vocab(hf_dir, model_dir, n_vocab):
    """``vocab.json`` -> ``encoder.json`` and ``merges.txt`` -> ``vocab.bpe`` (same formats;
    a ``#version: 0.2`` header is added when absent, as OpenAI's reader skips line one)."""
    with open(os.path.join(hf_dir, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    ids = [v for v in vocab.values() if isinstance(v, int)]
    if len(ids) != len(vocab) or (ids and (min(ids) < 0 or max(ids) >= n_vocab)):
        raise DownloadError(f"vocab.json should map tokens to ids below vocab_size ({n_vocab})")
    with open(os.path.join(hf_dir, "merges.txt"), encoding="utf-8") as f:
        merges = f.read()
    if not merges.startswith("#version"):
        merges = "#version: 0.2\n" + merges
    if not merges.endswith("\n"):
        merges += "\n"
    write_bytes_atomic(os.path.join(model_dir, "encoder.json"),
                  json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    write_bytes_atomic(os.path.join(model_dir, "vocab.bpe"), merges.encode("utf-8"))


def convert_to_openai_layout(hf_dir, model_dir, weight_files=None):
    """Convert a Hugging Face GPT-2 folder (``config.json``, safetensors, ``vocab.json``,
    ``merges.txt``) into OpenAI's layout in ``model_dir``; returns its :class:`HParams`.

    ``weight_files`` defaults to ``model.safetensors`` or the shards listed in
    ``model.safetensors.index.json``. Raises
    :class:`~gpt2_simple_plus.errors.DownloadError` when the files do not
    describe a GPT-2.
    """
    from .checkpoints import save_pretrained_layout

    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        hparams = hparams_from_config(json.load(f))
    if weight_files is None:
        weight_files = _local_weight_files(hf_dir)
    weights = hf_weights_to_openai(read_safetensors(weight_files), hparams)
    os.makedirs(model_dir, exist_ok=True)
    convert_vocab(hf_dir, model_dir, hparams.n_vocab)
    save_pretrained_layout(model_dir, weights, hparams)
    return hparams


def _local_weight_files(hf_dir):
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    with open(os.path.join(hf_dir, "model.safetensors.index.json"), encoding="utf-8") as f:
        shards = _shard_names(json.load(f))
    return [os.path.join(hf_dir, s) for s in shards]


def _shard_names(index):
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise Invalid("model.safetensors.index.json has no weight_map")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard.startswith("."):
            raise Invalid(f"model.safetensors.index.json names an odd shard {shard!r}")
    return shards


# ---------------------------------------------------------------------------
# Download

def _fetch_weights(fetcher, url):
    """Fetch ``model.safetensors``, or the index and its shards when there is no single file."""
    index_rel = f"{HF_FOLDER}/model.safetensors.index.json"
    if not fetcher.is_recorded(index_rel):
        try:
            return [fetcher.fetch(url("model.safetensors"), f"{HF_FOLDER}/model.safetensors",
                                  check_safetensors)]
        except DownloadError as err:
            if err.status != 404:
                raise
    try:
        index_path = fetcher.fetch(url("model.safetensors.index.json"), index_rel, check_json)
    except DownloadError as err:
        if err.status != 404:
            raise
        raise fetcher.error(
            "the repository has no safetensors weights (neither model.safetensors nor "
            "model.safetensors.index.json); only safetensors can be converted. Choose a "
            "repository that has them, or save the model with safetensors first",
            url("model.safetensors"), 404) from None
    with open(index_path, encoding="utf-8") as f:
        try:
            shards = _shard_names(json.load(f))
        except Invalid as why:
            fetcher.forget(index_rel)
            raise fetcher.error(str(why), url("model.safetensors.index.json")) from None
    return [fetcher.fetch(url(s), f"{HF_FOLDER}/{s}", check_safetensors) for s in shards]


def _advice(model_dir, name, repo, endpoint):
    folder = os.path.join(model_dir, name)
    return (f"Check your internet connection and that the repository {repo} exists and is public "
            f"({endpoint}/{repo}), then call download_gpt2 again (it resumes where it stopped). "
            f"To use a mirror, set the environment variable {HF_ENDPOINT_ENV} (or pass "
            f"hf_endpoint=...); or place a converted model by hand in {folder}/ "
            f"({', '.join(CONVERTED_FILES)}).")


def download_repo(model_dir, folder_name, repo, *, endpoint=None, revision="main", timeout=30.0,
                  retries=5, backoff=1.0, progress=True):
    """Fetch a Hugging Face GPT-2 and convert it into ``model_dir/folder_name``; returns the folder.

    Called by :func:`~gpt2_simple_plus.download.download_gpt2`, which documents
    the arguments.
    """
    endpoint = (endpoint or os.environ.get(HF_ENDPOINT_ENV) or HF_ENDPOINT).rstrip("/")
    folder = os.path.join(model_dir, folder_name)
    hf_dir = os.path.join(folder, HF_FOLDER)
    created = not os.path.isdir(folder)
    label = f"model {folder_name!r} (Hugging Face repository {repo})"
    try:
        os.makedirs(hf_dir, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"Could not create {hf_dir} for {label}: {err}. Choose a writable "
                            f"model_dir.") from None
    fetcher = Fetcher(folder, label=label, advice=_advice(model_dir, folder_name, repo, endpoint),
                      timeout=timeout, retries=retries, backoff=backoff, progress=progress,
                      manifest_info={"source": "huggingface", "model": folder_name, "repo": repo,
                                     "revision": revision, "endpoint": endpoint})

    def url(filename):
        return hf_url(endpoint, repo, revision, filename)

    try:
        config_path = fetcher.fetch(url("config.json"), f"{HF_FOLDER}/config.json", _check_config)
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        try:
            hparams_from_config(config)
        except DownloadError as why:
            fetcher.close()
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise DownloadError(
                f"The Hugging Face repository {repo} ({url('config.json')}) is not a GPT-2 this "
                f"package can load: {why}. Choose a repository whose config.json has model_type "
                f"'gpt2' (architectures GPT2LMHeadModel), e.g. model_name='distilgpt2' or "
                f"'hf:openai-community/gpt2'.") from None
        weight_files = _fetch_weights(fetcher, url)
        fetcher.fetch(url("vocab.json"), f"{HF_FOLDER}/vocab.json", check_json)
        fetcher.fetch(url("merges.txt"), f"{HF_FOLDER}/merges.txt", check_text)
        if progress:
            print(f"Converting {repo} into OpenAI's layout in {folder} ...")
        try:
            convert_to_openai_layout(hf_dir, folder, weight_files)
        except DownloadError as why:
            raise DownloadError(
                f"Could not convert {label}: {why}. The repository at {url('')} does not hold a "
                f"standard GPT-2; choose another repository.") from None
        except OSError as err:
            raise fetcher.disk_error(err, folder, url("model.safetensors")) from None
        fetcher.manifest["files"] = {
            name: {"size": os.path.getsize(os.path.join(folder, name)), "etag": None}
            for name in CONVERTED_FILES}
        fetcher.manifest["partial"] = {}
        fetcher.save_manifest()
    finally:
        fetcher.close()
    shutil.rmtree(hf_dir, ignore_errors=True)
    return folder



# ---------------------------------------------------------------------------
# Export: OpenAI's layout -> a folder transformers loads (the inverse of the above)

# What GPT2Config writes for a plain GPT-2, less the sizes (filled in from hparams).
_HF_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1, "dtype": "float32", "embd_pdrop": 0.1, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_inner": None,
    "reorder_and_upcast_attn": False, "resid_pdrop": 0.1,
    "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
    "tie_word_embeddings": True, "use_cache": True,
}
EOT = "<|endoftext|>"


_OPENAI_NAME = re.compile(r"model/(?:(wte|wpe)|ln_f/([gb])|h(\d+)/"
                          r"(ln_1|ln_2|attn/c_attn|attn/c_proj|mlp/c_fc|mlp/c_proj)/([wgb]))")


def hf_name(name):
    """Hugging Face's name for an OpenAI checkpoint tensor (:func:`openai_name` reversed).

        >>> hf_name("model/h3/attn/c_attn/w")
        'transformer.h.3.attn.c_attn.weight'
        >>> hf_name("model/ln_f/g")
        'transformer.ln_f.weight'
        >>> all(openai_name(hf_name(n)) == n for n in ("model/wte", "model/h0/ln_2/b"))
        True
    """
    m = _OPENAI_NAME.fullmatch(name)
    if not m:
        raise ValueError(f"{name!r} is not a GPT-2 checkpoint name")
    embedding, ln_f, layer, module, leaf = m.groups()
    if embedding:
        return f"transformer.{embedding}.weight"
    kind = "bias" if (ln_f or leaf) == "b" else "weight"
    if ln_f:
        return f"transformer.ln_f.{kind}"
    return f"transformer.h.{layer}.{module.replace('/', '.')}.{kind}"


def openai_weights_to_hf(weights):
    """``{OpenAI name: array}`` -> ``{Hugging Face name: float32 array}``: Conv1D weights
    lose OpenAI's leading axis of 1 (``[1, in, out]`` -> ``[in, out]``). No ``lm_head``:
    transformers ties it to ``wte``, as it saves GPT-2 itself.

        >>> from gpt2_simple_plus.model import random_weights
        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> hf = openai_weights_to_hf(random_weights(hparams_for("tiny", n_vocab=10), 0))
        >>> hf["transformer.h.0.mlp.c_fc.weight"].shape
        (32, 128)
    """
    out = {}
    for name, value in weights.items():
        value = np.asarray(value, np.float32)
        if name.endswith("/w") and value.ndim == 3:
            value = value[0]
        out[hf_name(name)] = np.ascontiguousarray(value)
    return out


def hf_config(hparams, eot_id=None):
    """The ``config.json`` (a dict) of a ``GPT2LMHeadModel`` with ``hparams``.

        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> config = hf_config(hparams_for("tiny", n_vocab=10), eot_id=9)
        >>> config["n_positions"], config["eos_token_id"], hparams_from_config(config).n_embd
        (64, 9, 32)
    """
    config = dict(_HF_CONFIG, vocab_size=hparams.n_vocab, n_positions=hparams.n_ctx,
                  n_ctx=hparams.n_ctx, n_embd=hparams.n_embd, n_head=hparams.n_head,
                  n_layer=hparams.n_layer, bos_token_id=eot_id, eos_token_id=eot_id)
    return dict(sorted(config.items()))


def save_transformers(path, weights, hparams, vocab_folder):
    """Write a folder that ``GPT2LMHeadModel.from_pretrained(path)`` and
    ``pipeline("text-generation", model=path)`` load: ``config.json``,
    ``generation_config.json``, ``model.safetensors`` (float32), ``vocab.json``,
    ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json``
    (vocabulary from ``vocab_folder``'s ``encoder.json``/``vocab.bpe``). Returns ``path``.

    Each file is written beside its final name and moved into place, so an
    interrupted export leaves whole files. transformers is not needed here.

        >>> import os, tempfile
        >>> from gpt2_simple_plus._examples import example_vocab
        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> from gpt2_simple_plus.model import random_weights
        >>> hp = hparams_for("tiny", n_vocab=262)
        >>> out = save_transformers(tempfile.mkdtemp(), random_weights(hp, 0), hp,
        ...                         example_vocab())
        >>> sorted(os.listdir(out))  # doctest: +NORMALIZE_WHITESPACE
        ['config.json', 'generation_config.json', 'merges.txt', 'model.safetensors',
         'special_tokens_map.json', 'tokenizer_config.json', 'vocab.json']
    """
    from safetensors.numpy import save

    with open(os.path.join(vocab_folder, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(vocab_folder, "vocab.bpe"), encoding="utf-8") as f:
        merges = f.read()
    if not merges.startswith("#version"):  # both readers skip the first line
        merges = "#version: 0.2\n" + merges
    eot_id = vocab.get(EOT)
    special = {} if eot_id is None else {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    tokenizer_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": hparams.n_ctx,
                        "add_prefix_space": False, "clean_up_tokenization_spaces": False,
                        "errors": "replace", **special}
    generation = {"bos_token_id": eot_id, "eos_token_id": eot_id}

    def as_json(value):
        return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    os.makedirs(path, exist_ok=True)
    tensors = save(openai_weights_to_hf(weights), metadata={"format": "pt"})
    for name, data in (("model.safetensors", tensors),
                       ("config.json", as_json(hf_config(hparams, eot_id))),
                       ("generation_config.json", as_json(generation)),
                       ("vocab.json", json.dumps(vocab, ensure_ascii=False).encode("utf-8")),
                       ("merges.txt", merges.encode("utf-8")),
                       ("tokenizer_config.json", as_json(tokenizer_config)),
                       ("special_tokens_map.json", as_json(special))):
        write_bytes_atomic(os.path.join(path, name), data)
    return path


def import_transformers(path, model_name, model_dir="models"):
    """Convert a GPT-2 folder that transformers saved (``save_pretrained``, or
    ``export_model(..., format="transformers")``) into ``model_dir/model_name``,
    in OpenAI's layout; returns that folder. Then ``load_gpt2(sess,
    model_name=...)``, ``finetune(..., model_name=...)`` and gpt-2-simple use it.

    The folder needs ``config.json``, ``model.safetensors`` (or its shards and
    index), ``vocab.json`` and ``merges.txt`` (``tokenizer.save_pretrained(path)``
    writes the last two). Raises
    :class:`~gpt2_simple_plus.errors.ModelNotFoundError` for a missing file and
    :class:`~gpt2_simple_plus.errors.CheckpointError` for a model that is not a
    GPT-2 this package computes.

        >>> import tempfile
        >>> from gpt2_simple_plus._examples import example_vocab
        >>> from gpt2_simple_plus.hparams import hparams_for
        >>> from gpt2_simple_plus.model import random_weights
        >>> hp = hparams_for("tiny", n_vocab=262)
        >>> hf = save_transformers(tempfile.mkdtemp(), random_weights(hp, 0), hp,
        ...                        example_vocab())
        >>> folder = import_transformers(hf, "my-gpt2", model_dir=tempfile.mkdtemp())
        >>> sorted(os.listdir(folder))  # doctest: +NORMALIZE_WHITESPACE
        ['checkpoint', 'encoder.json', 'hparams.json', 'model.ckpt.data-00000-of-00001',
         'model.ckpt.index', 'vocab.bpe']
    """
    from .errors import CheckpointError

    folder = os.path.join(model_dir, model_folder_name(model_name))
    has_weights = any(os.path.isfile(os.path.join(path, name)) for name in
                      ("model.safetensors", "model.safetensors.index.json"))
    missing = [name for name in ("config.json", "vocab.json", "merges.txt")
               if not os.path.isfile(os.path.join(path, name))]
    if not has_weights:
        missing.append("model.safetensors")
    if missing:
        raise ModelNotFoundError(
            f"{path!r} lacks {', '.join(missing)}. Save the model with "
            f"model.save_pretrained({path!r}) (safetensors, the default) and the tokenizer with "
            f"tokenizer.save_pretrained({path!r}).")
    try:
        convert_to_openai_layout(path, folder)
    except (DownloadError, Invalid) as why:
        raise CheckpointError(f"Cannot convert {path!r}: {why}.") from None
    return folder

"""Which folder holds model X or run Y: names, aliases and the files a model folder holds.

Every other module asks here; none works a folder name out by itself.

Which name means what, inside ``model_dir`` (``"models"``):

* ``"124M"`` (aliases ``"117M"``, ``"gpt2"``), ``"355M"`` (``"345M"``,
  ``"gpt2-medium"``), ``"774M"`` (``"gpt2-large"``), ``"1558M"``
  (``"gpt2-xl"``): OpenAI's release, in ``models/124M`` ... ``models/1558M``.
* The same names with ``source="huggingface"``: Hugging Face's
  ``openai-community/gpt2`` ... ``openai-community/gpt2-xl``, converted, in
  ``models/hf-openai-community--gpt2`` ... ``models/hf-openai-community--gpt2-xl``.
* ``"distilgpt2"``: Hugging Face's ``distilbert/distilgpt2``, in ``models/distilgpt2``.
* ``"hf:<org>/<repo>"``: any GPT-2 repository on Hugging Face, in
  ``models/hf-<org>--<repo>`` (``models/distilgpt2`` for ``hf:distilbert/distilgpt2``).

``--`` separates organisation and repository in folder names because Hugging
Face forbids ``--`` inside a repository id, so two repositories never share a
folder. A fine-tuned run lives in ``checkpoint_dir/run_name``.

    >>> model_folder_name("117M")
    '124M'
    >>> model_folder_name("gpt2", source="huggingface")
    'hf-openai-community--gpt2'
"""

import os
import re

from .errors import ModelNotFoundError
from .hparams import canonical_model_name

# gpt-2-simple's list and order: hparams.json comes before the weights, and the
# weights before their index, so the index can be checked against both.
OPENAI_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
                "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
# What a converted Hugging Face model holds: OpenAI's files minus model.ckpt.meta,
# which no loader reads.
CONVERTED_FILES = tuple(f for f in OPENAI_FILES if f != "model.ckpt.meta")
# Models that exist only on Hugging Face, by the short name people use (also their folder).
HF_MODELS = {"distilgpt2": "distilbert/distilgpt2"}
# OpenAI's four sizes as published on Hugging Face (used with source="huggingface").
OPENAI_ON_HF = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")


def _check_repo_id(repo, model_name):
    if not _REPO_ID.fullmatch(repo) or ".." in repo or "--" in repo:
        raise ModelNotFoundError(
            f"{model_name!r} does not name a Hugging Face repository: write 'hf:<org>/<repo>', "
            f"e.g. 'hf:distilbert/distilgpt2'.")
    return repo


def repo_for(model_name, source=None):
    """The Hugging Face repository for ``model_name``, or ``None`` for an OpenAI-layout model.

        >>> repo_for("distilgpt2")
        'distilbert/distilgpt2'
        >>> repo_for("gpt2") is None  # plain "gpt2" is OpenAI's 124M
        True
        >>> repo_for("gpt2-medium", source="huggingface")
        'openai-community/gpt2-medium'
    """
    if model_name.startswith("hf:"):
        return _check_repo_id(model_name[3:], model_name)
    if source == "openai":
        return None
    if model_name in HF_MODELS:
        return HF_MODELS[model_name]
    if source != "huggingface":
        return None
    name = canonical_model_name(model_name)
    if name in OPENAI_ON_HF:
        return OPENAI_ON_HF[name]
    if "/" in model_name:
        return _check_repo_id(model_name, model_name)
    raise ModelNotFoundError(
        f"No Hugging Face GPT-2 is called {model_name!r}. With source='huggingface' use "
        f"{', '.join(['gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', *HF_MODELS])} or "
        f"'<org>/<repo>'.")


def folder_name_for_repo(repo):
    """The model folder for a repository: its short name if it has one, else ``hf-<org>--<repo>``.

        >>> folder_name_for_repo("openai-community/gpt2")
        'hf-openai-community--gpt2'
        >>> folder_name_for_repo("distilbert/distilgpt2")
        'distilgpt2'
    """
    for short, known in HF_MODELS.items():
        if known == repo:
            return short
    return "hf-" + repo.replace("/", "--")


def resolve(model_name, source=None):
    """``(kind, folder name, Hugging Face repo or None)`` for a model name;
    ``kind`` is ``"openai"`` or ``"huggingface"``.

        >>> resolve("hf:distilbert/distilgpt2")
        ('huggingface', 'distilgpt2', 'distilbert/distilgpt2')
    """
    if source not in (None, "openai", "huggingface"):
        raise ModelNotFoundError(f"source must be 'openai' or 'huggingface' (or left out), "
                                 f"got {source!r}.")
    if not isinstance(model_name, str) or not model_name:
        raise ModelNotFoundError(f"model_name must be a non-empty string, got {model_name!r}.")
    repo = repo_for(model_name, source)
    if repo is not None:
        return "huggingface", folder_name_for_repo(repo), repo
    name = canonical_model_name(model_name)
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ModelNotFoundError(
            f"{model_name!r} is not a model name: use a plain folder name such as '124M' "
            f"(no slashes), or 'hf:<org>/<repo>' for a Hugging Face repository.")
    return "openai", name, None


def model_folder_name(model_name, source=None):
    """The folder inside ``model_dir`` that holds ``model_name``.

        >>> model_folder_name("117M")
        '124M'
        >>> model_folder_name("gpt2", source="huggingface")
        'hf-openai-community--gpt2'
        >>> model_folder_name("hf:distilbert/distilgpt2")
        'distilgpt2'
    """
    return resolve(model_name, source)[1]


def required_files(model_name, source=None):
    """The files a complete folder of ``model_name`` holds.

        >>> "model.ckpt.meta" in required_files("124M"), "model.ckpt.meta" in required_files(
        ...     "distilgpt2")
        (True, False)
    """
    return OPENAI_FILES if resolve(model_name, source)[0] == "openai" else CONVERTED_FILES


def model_folder(run_name="run1", checkpoint_dir="checkpoint", model_name=None, model_dir="models"):
    """Where a model lives: ``models/<model_name>`` if given, else ``checkpoint/<run_name>``.

    Raises :class:`~gpt2_simple_plus.errors.ModelNotFoundError` with the command that fixes it.

        >>> model_folder(run_name="run1", checkpoint_dir="no/such/folder")
        Traceback (most recent call last):
        ...
        gpt2_simple_plus.errors.ModelNotFoundError: No run named 'run1' in 'no/such/folder'; \
'no/such/folder' holds no runs: train one with gpt2.finetune(...), or load the pretrained \
model with load_gpt2(sess, model_name='124M').
    """
    if model_name:
        name = model_folder_name(model_name)
        folder = os.path.join(model_dir, name)
        if not os.path.isdir(folder):
            raise ModelNotFoundError(
                f"No model {name!r} in {model_dir!r}. Run gpt2.download_gpt2(model_name={name!r}"
                f"{'' if model_dir == 'models' else f', model_dir={model_dir!r}'}) first.")
        return folder
    folder = os.path.join(checkpoint_dir, run_name)
    if not os.path.isdir(folder):
        runs = sorted(d for d in os.listdir(checkpoint_dir)
                      if os.path.isdir(os.path.join(checkpoint_dir, d))) \
            if os.path.isdir(checkpoint_dir) else []
        hint = (f"runs found: {', '.join(runs)}" if runs else
                f"{checkpoint_dir!r} holds no runs: train one with gpt2.finetune(...), or load the "
                f"pretrained model with load_gpt2(sess, model_name='124M')")
        raise ModelNotFoundError(f"No run named {run_name!r} in {checkpoint_dir!r}; {hint}.")
    return folder

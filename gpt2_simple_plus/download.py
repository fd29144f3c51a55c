"""Download GPT-2 into ``models/<name>/``: OpenAI's release, or a Hugging Face GPT-2.

    >>> import gpt2_simple_plus as gpt2
    >>> # needs the internet:
    >>> gpt2.download_gpt2(model_name="124M")  # doctest: +SKIP
    'models/124M'
    >>> gpt2.is_gpt2_downloaded(model_dir="no/such/folder")
    False

Which name fetches what, into which folder of ``model_dir`` (``"models"``;
:mod:`~gpt2_simple_plus.folders` answers it for every module):

* ``"124M"`` (aliases ``"117M"``, ``"gpt2"``), ``"355M"`` (``"345M"``,
  ``"gpt2-medium"``), ``"774M"`` (``"gpt2-large"``), ``"1558M"``
  (``"gpt2-xl"``): OpenAI's release from OpenAI's bucket (or ``base_url``),
  into ``models/124M`` ... ``models/1558M``.
* The same names with ``source="huggingface"``: Hugging Face's
  ``openai-community/gpt2`` ... ``openai-community/gpt2-xl``, converted, into
  ``models/hf-openai-community--gpt2`` ... ``models/hf-openai-community--gpt2-xl``.
* ``"distilgpt2"``: Hugging Face's ``distilbert/distilgpt2``, converted, into
  ``models/distilgpt2``.
* ``"hf:<org>/<repo>"``: any GPT-2 repository on Hugging Face, converted, into
  ``models/hf-<org>--<repo>`` (``models/distilgpt2`` for ``hf:distilbert/distilgpt2``).

So the plain names ``"gpt2"``, ``"gpt2-medium"``, ``"gpt2-large"`` and
``"gpt2-xl"`` are aliases of OpenAI's four releases, exactly as in
gpt-2-simple; Hugging Face is used only when asked for (``source=
"huggingface"`` or an ``"hf:"`` name) or for models that exist only there
(``"distilgpt2"``). ``--`` separates organisation and repository in folder
names because Hugging Face forbids ``--`` inside a repository id, so two
repositories never share a folder.
:func:`~gpt2_simple_plus.folders.model_folder_name` gives the folder for any name.

A Hugging Face model is converted once into OpenAI's layout (see
:mod:`gpt2_simple_plus.huggingface`), so every other function treats
``models/distilgpt2`` exactly like ``models/124M``.

How a download behaves (:mod:`~gpt2_simple_plus.fetch` does the fetching):

* Each file is streamed into ``<file>.part`` with a progress bar, and renamed
  into place only once it is complete and verified (sizes against
  ``Content-Length``; JSON files parse; text files are not an HTML page; the
  checkpoint index is readable by TensorFlow and matches ``hparams.json`` and
  the size of the weights file).
* A dropped connection is retried with back-off and resumed with an HTTP
  ``Range`` request; a server that ignores ``Range`` restarts that file.
* ``models/<name>/.download.json`` (the manifest) records each finished
  file's size and ETag. A second call finds every file recorded and fetches
  nothing. A file that is present but not recorded (placed by hand, or by
  gpt-2-simple) is kept when a ``HEAD`` request reports the same size.
* Every failure is a :class:`~gpt2_simple_plus.errors.DownloadError` naming the
  model, the URL and what to do next; it carries ``.url`` and ``.status``
  (the HTTP status, or ``None``).
"""

import os
import shutil
import tempfile
import warnings

from .errors import DownloadError, ModelNotFoundError
from .fetch import (Fetcher, Invalid, check_binary, check_json, check_not_html, check_text,
                    is_complete, read_manifest, short_error)
# OPENAI_FILES and model_folder_name are also read from here by older code.
from .folders import OPENAI_FILES, model_folder_name, required_files, resolve
from .hparams import MODEL_ALIASES, MODEL_SIZES, HParams

OPENAI_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2"
BASE_URL_ENV = "GPT2_SIMPLE_PLUS_BASE_URL"


def _base_url(base_url):
    url = base_url or os.environ.get(BASE_URL_ENV) or OPENAI_BASE_URL
    return url.rstrip("/")


def is_gpt2_downloaded(model_dir="models", model_name="124M", *, source=None):
    """True when ``model_dir/<model_name>`` holds a complete model (no network access).

    Complete means, for OpenAI's models, all seven release files (``checkpoint``,
    ``encoder.json``, ``hparams.json``, ``model.ckpt.data-00000-of-00001``,
    ``model.ckpt.index``, ``model.ckpt.meta``, ``vocab.bpe``); for a converted
    Hugging Face model the same minus ``model.ckpt.meta``. No ``*.part`` file may
    be left, and when the folder has a ``.download.json`` manifest every file's
    size must match it. A folder without a manifest (placed by hand) counts as
    complete when every file is there and non-empty.

        >>> import tempfile
        >>> is_gpt2_downloaded(tempfile.mkdtemp(), "124M")
        False
    """
    return is_complete(os.path.join(model_dir, model_folder_name(model_name, source)),
                       required_files(model_name, source))



# ---------------------------------------------------------------------------
# Checks of OpenAI's release files: each takes a fetched file's path and raises Invalid.

def _check_state_file(path):
    check_text(path)
    with open(path, encoding="utf-8") as f:
        if "model_checkpoint_path" not in f.read():
            raise Invalid("the file does not name a checkpoint (no model_checkpoint_path line)")


def _check_hparams(path):
    values = check_json(path)
    try:
        HParams.from_dict(values, source="hparams.json")
    except ValueError as err:
        raise Invalid(str(err)) from None



def check_checkpoint_index(index_path, folder, prefix="model.ckpt"):
    """Open ``index_path`` as the index of ``folder/<prefix>``'s weights with TensorFlow.

    Checks that the index parses, that the weights file is as long as the index
    says, and (when ``folder/hparams.json`` exists) that every GPT-2 variable is
    there with the right shape. TensorFlow is imported here, not before.
    """
    check_not_html(index_path, text=False)
    import numpy as np
    import tensorflow as tf

    data = os.path.join(folder, prefix + ".data-00000-of-00001")
    if not os.path.isfile(data):
        raise Invalid(f"the weights file {data} is missing")
    tmp = tempfile.mkdtemp(dir=folder, prefix=".verify-")
    try:
        shutil.copyfile(index_path, os.path.join(tmp, prefix + ".index"))
        linked = os.path.join(tmp, os.path.basename(data))
        try:
            os.link(data, linked)
        except OSError:
            os.symlink(os.path.abspath(data), linked)
        try:
            reader = tf.train.load_checkpoint(os.path.join(tmp, prefix))
            shapes = reader.get_variable_to_shape_map()
            dtypes = reader.get_variable_to_dtype_map()
        except (tf.errors.OpError, ValueError) as err:
            text = str(getattr(err, "message", err)).strip().splitlines()
            raise Invalid(f"TensorFlow cannot read the checkpoint index "
                           f"({text[0][:200] if text else type(err).__name__})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    needed = sum(int(np.prod(shapes[n], dtype=np.int64)) * dtypes[n].size
                 for n in shapes if dtypes[n] != tf.string)
    have = os.path.getsize(data)
    if have < needed:
        raise Invalid(f"the weights file holds {have} bytes but its index describes {needed}; "
                       f"it is truncated", weights_bad=True)
    hparams_path = os.path.join(folder, "hparams.json")
    if os.path.isfile(hparams_path):
        from .hparams import load_hparams
        from .model import variable_shapes

        for name, shape in variable_shapes(load_hparams(folder)).items():
            if name not in shapes:
                raise Invalid(f"the checkpoint lacks the variable {name!r} that hparams.json "
                               f"asks for")
            if tuple(shapes[name]) != tuple(shape):
                raise Invalid(f"{name!r} has shape {tuple(shapes[name])} but hparams.json asks "
                               f"for {tuple(shape)}")


def _openai_checks(fetcher):
    data = "model.ckpt.data-00000-of-00001"

    def check_index(path):
        try:
            check_checkpoint_index(path, fetcher.folder)
        except Invalid as why:
            if why.weights_bad:  # fetch the weights again too, not just the index
                fetcher.forget(data)
            raise

    return {
        "checkpoint": _check_state_file,
        "encoder.json": check_json,
        "hparams.json": _check_hparams,
        data: check_binary,
        "model.ckpt.index": check_index,
        "model.ckpt.meta": check_binary,
        "vocab.bpe": check_text,
    }



# ---------------------------------------------------------------------------

def _openai_advice(model_dir, name, base):
    folder = os.path.join(model_dir, name)
    known = "" if base != OPENAI_BASE_URL else (
        f" OpenAI publishes {', '.join(MODEL_SIZES)}.")
    return (f"Check your internet connection and call download_gpt2 again (it resumes where it "
            f"stopped).{known} To use a mirror, set the environment variable {BASE_URL_ENV} to "
            f"its address (or pass base_url=...); or place the files by hand in {folder}/ "
            f"({', '.join(OPENAI_FILES)}).")


def download_gpt2(model_dir="models", model_name="124M", base_url=None, *, source=None,
                  hf_endpoint=None, revision="main", timeout=30.0, retries=5, backoff=1.0,
                  progress=True):
    """Download GPT-2 into ``model_dir/<model_name>/`` and return that folder.

    The first two arguments are gpt-2-simple's. ``model_name`` is one of OpenAI's
    ``"124M"``, ``"355M"``, ``"774M"``, ``"1558M"`` (or an alias such as
    ``"117M"`` or ``"gpt2-medium"``), ``"distilgpt2"``, or ``"hf:<org>/<repo>"``
    for any GPT-2 on Hugging Face; see the table in this module's docstring.

    * ``base_url``: where OpenAI-layout files live, as
      ``{base_url}/models/{model_name}/{file}``. Default: the environment
      variable ``GPT2_SIMPLE_PLUS_BASE_URL``, else OpenAI's bucket. With a
      custom address any model name is accepted.
    * ``source``: ``"huggingface"`` fetches OpenAI's sizes from Hugging Face's
      ``openai-community`` repositories instead (folder ``hf-openai-community--gpt2``
      ...); ``"openai"`` forces OpenAI's layout even for a name known on Hugging Face.
    * ``hf_endpoint`` (default ``$HF_ENDPOINT``, else ``https://huggingface.co``)
      and ``revision`` (a branch, tag or commit; default ``"main"``). A folder
      holds one revision: delete it to switch (a warning says so).
    * ``timeout`` in seconds per connect/read; ``retries`` per file without
      progress; ``backoff`` seconds before the first retry, doubling each time.
    * ``progress``: show a byte progress bar per file.

    Calling it again is cheap: finished files are skipped without fetching them,
    an interrupted file resumes. Raises :class:`DownloadError` (with the model,
    the URL and the next step) when a file cannot be fetched or verified, and
    :class:`ModelNotFoundError` for a name no source publishes.

        >>> import gpt2_simple_plus as gpt2
        >>> # needs the internet:
        >>> gpt2.download_gpt2(model_name="124M")  # doctest: +SKIP
        'models/124M'
    """
    kind, folder_name, repo = resolve(model_name, source)
    folder = os.path.join(model_dir, folder_name)
    if is_complete(folder, required_files(model_name, source)):
        had = (read_manifest(folder) or {}).get("revision")
        if kind == "huggingface" and had and had != revision:
            warnings.warn(f"{folder} already holds revision {had!r} of {repo}, not {revision!r}; "
                          f"it is used as it is. Delete the folder to download {revision!r}.",
                          stacklevel=2)
        if progress:
            print(f"{folder} is already downloaded.")
        return folder
    if kind == "huggingface":
        from . import huggingface

        return huggingface.download_repo(
            model_dir, folder_name, repo, endpoint=hf_endpoint, revision=revision,
            timeout=timeout, retries=retries, backoff=backoff, progress=progress)

    base = _base_url(base_url)
    if base == OPENAI_BASE_URL and folder_name not in MODEL_SIZES:
        raise ModelNotFoundError(
            f"OpenAI publishes no GPT-2 model called {model_name!r}. Choose one of "
            f"{', '.join(MODEL_SIZES)} (aliases: {', '.join(sorted(MODEL_ALIASES))}), "
            f"'distilgpt2', or 'hf:<org>/<repo>' for a GPT-2 on Hugging Face. A model on "
            f"another server needs base_url=... or the environment variable {BASE_URL_ENV}.")
    label = f"model {folder_name!r}"
    advice = _openai_advice(model_dir, folder_name, base)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"Could not create {folder} for {label}: {short_error(err)}. Choose a "
                            f"writable model_dir.") from None
    fetcher = Fetcher(folder, label=label, advice=advice, timeout=timeout, retries=retries,
                      backoff=backoff, progress=progress,
                      manifest_info={"source": "openai", "model": folder_name, "base_url": base})
    checks = _openai_checks(fetcher)
    try:
        for name in OPENAI_FILES:
            fetcher.fetch(f"{base}/models/{folder_name}/{name}", name, checks[name])
    finally:
        fetcher.close()
    return folder

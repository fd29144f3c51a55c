"""Download GPT-2 into ``models/<name>/``: OpenAI's release, or a Hugging Face GPT-2.

    >>> import gpt2_simple_plus as gpt2
    >>> # needs the internet:
    >>> gpt2.download_gpt2(model_name="124M")  # doctest: +SKIP
    'models/124M'
    >>> gpt2.is_gpt2_downloaded(model_dir="no/such/folder")
    False

Which name fetches what, into which folder of ``model_dir`` (``"models"``):

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
repositories never share a folder. :func:`model_folder_name` gives the folder
for any name.

A Hugging Face model is converted once into OpenAI's layout (see
:mod:`gpt2_simple_plus.huggingface`), so every other function treats
``models/distilgpt2`` exactly like ``models/124M``.

How a download behaves:

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

import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings

import requests
from tqdm import tqdm

from .errors import DownloadError, ModelNotFoundError
from .hparams import MODEL_ALIASES, MODEL_SIZES, HParams, canonical_model_name

OPENAI_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2"
BASE_URL_ENV = "GPT2_SIMPLE_PLUS_BASE_URL"
# gpt-2-simple's list and order: hparams.json comes before the weights, and the
# weights before their index, so the index can be checked against both.
OPENAI_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
                "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
# What a converted Hugging Face model holds: OpenAI's files minus model.ckpt.meta,
# which no loader reads.
CONVERTED_FILES = tuple(f for f in OPENAI_FILES if f != "model.ckpt.meta")
MANIFEST = ".download.json"
PART_SUFFIX = ".part"
CHUNK_SIZE = 1024 * 1024
MAX_BACKOFF = 30.0

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


# ---------------------------------------------------------------------------
# Names and folders

def _resolve(model_name, source=None):
    """``(kind, folder name, Hugging Face repo or None)`` for a model name."""
    from . import huggingface

    if source not in (None, "openai", "huggingface"):
        raise ModelNotFoundError(f"source must be 'openai' or 'huggingface' (or left out), "
                                 f"got {source!r}.")
    if not isinstance(model_name, str) or not model_name:
        raise ModelNotFoundError(f"model_name must be a non-empty string, got {model_name!r}.")
    repo = huggingface.repo_for(model_name, source)
    if repo is not None:
        return "huggingface", huggingface.folder_name_for_repo(repo), repo
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
    return _resolve(model_name, source)[1]


def _base_url(base_url):
    url = base_url or os.environ.get(BASE_URL_ENV) or OPENAI_BASE_URL
    return url.rstrip("/")


# ---------------------------------------------------------------------------
# Completeness

def _read_manifest(folder):
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def _has_part_files(folder):
    for _, _, names in os.walk(folder):
        if any(n.endswith(PART_SUFFIX) for n in names):
            return True
    return False


def _is_complete(folder, required):
    if not os.path.isdir(folder) or _has_part_files(folder):
        return False
    if os.path.exists(os.path.join(folder, MANIFEST)):
        manifest = _read_manifest(folder)
        if manifest is None:
            return False
        for name in required:
            entry = manifest["files"].get(name)
            path = os.path.join(folder, name)
            if not isinstance(entry, dict) or not os.path.isfile(path) \
                    or os.path.getsize(path) != entry.get("size"):
                return False
        return True
    # No manifest: placed by hand or by gpt-2-simple. Trust present, non-empty files.
    return all(os.path.isfile(os.path.join(folder, n)) and os.path.getsize(os.path.join(folder, n))
               for n in required)


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
    kind, folder_name, _ = _resolve(model_name, source)
    required = OPENAI_FILES if kind == "openai" else CONVERTED_FILES
    return _is_complete(os.path.join(model_dir, folder_name), required)


# ---------------------------------------------------------------------------
# Errors

def _causes(err, depth=0):
    """``err`` and everything it wraps (requests -> urllib3 -> socket)."""
    if err is None or depth > 8:
        return
    yield err
    for inner in (getattr(err, "reason", None), err.__cause__, err.__context__,
                  *[a for a in getattr(err, "args", ()) if isinstance(a, BaseException)]):
        if inner is not None and inner is not err:
            yield from _causes(inner, depth + 1)


def _network_problem(err, timeout):
    """``(text, retry?)`` describing a requests exception for a beginner."""
    import urllib3

    causes = list(_causes(err))
    dns = (urllib3.exceptions.NameResolutionError, socket.gaierror)
    if any(isinstance(c, dns) for c in causes):
        return ("the server's name could not be resolved (DNS failure): you may be offline, "
                "or the address is misspelt"), False
    if isinstance(err, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return "the URL is not valid (it must start with http:// or https://)", False
    if isinstance(err, requests.exceptions.SSLError):
        return f"the secure connection failed ({_short(err)})", False
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        # Not retried: an offline machine or a wrong mirror address will not change in
        # the 30 s that backing off would make a beginner wait.
        return "the connection was refused (no server is listening at that address)", False
    # urllib3's NewConnectionError derives from its TimeoutError: refused is checked first.
    timeouts = (socket.timeout, urllib3.exceptions.ReadTimeoutError,
                urllib3.exceptions.ConnectTimeoutError, requests.exceptions.Timeout)
    if any(isinstance(c, timeouts) and not isinstance(c, urllib3.exceptions.NewConnectionError)
           for c in causes):
        return f"the server did not answer within {timeout} s (timed out)", True
    return f"the connection broke ({_short(err)})", True


def _short(err):
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _http_problem(status, reason):
    """``(text, retry?)`` for a status code that is not 200/206."""
    code = f"HTTP {status} {reason or ''}".strip()
    if status in (404, 410):
        return f"the server has no such file ({code})", False
    if status in (401, 403):
        return f"the server refused access ({code})", False
    if status in (408, 425, 429) or 500 <= status < 600:
        return f"the server had a temporary problem ({code})", True
    return f"the server answered {code}", False


class _Retry(Exception):
    """A transient failure: wait, then resume the file."""


class _Invalid(Exception):
    """A fetched file failed verification; ``weights_bad`` blames the weights file it checked."""

    def __init__(self, text, *, weights_bad=False):
        super().__init__(text)
        self.weights_bad = weights_bad


# ---------------------------------------------------------------------------
# File checks: each takes the path of a fetched file and raises _Invalid.

_MARKUP = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<error", b"<!--")


def _head_bytes(path, n=512):
    with open(path, "rb") as f:
        return f.read(n)


def check_not_html(path, *, text=True):
    """Reject an HTML/XML page saved in place of a file (a proxy, login or error page).

    For a text or JSON file any leading ``<`` is wrong; for a binary file only
    typical markup openings are (a float could start with byte ``0x3C``).
    """
    head = _head_bytes(path).lstrip().lower()
    if (text and head.startswith(b"<")) or head.startswith(_MARKUP):
        raise _Invalid("the server sent an HTML page instead of the file "
                       "(a proxy, login or error page)")


def check_json(path, *, kind=dict):
    check_not_html(path)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise _Invalid(f"the file is not valid JSON ({_short(err)}); it is truncated or corrupt")
    if not isinstance(value, kind):
        raise _Invalid(f"the file should hold a JSON {kind.__name__}, not {type(value).__name__}")
    return value


def check_text(path):
    check_not_html(path)
    try:
        with open(path, encoding="utf-8") as f:
            f.read()
    except UnicodeDecodeError:
        raise _Invalid("the file is not UTF-8 text; it is corrupt") from None


def _check_state_file(path):
    check_text(path)
    with open(path, encoding="utf-8") as f:
        if "model_checkpoint_path" not in f.read():
            raise _Invalid("the file does not name a checkpoint (no model_checkpoint_path line)")


def _check_hparams(path):
    values = check_json(path)
    try:
        HParams.from_dict(values, source="hparams.json")
    except ValueError as err:
        raise _Invalid(str(err)) from None


def _check_binary(path):
    check_not_html(path, text=False)


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
        raise _Invalid(f"the weights file {data} is missing")
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
            raise _Invalid(f"TensorFlow cannot read the checkpoint index "
                           f"({text[0][:200] if text else type(err).__name__})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    needed = sum(int(np.prod(shapes[n], dtype=np.int64)) * dtypes[n].size
                 for n in shapes if dtypes[n] != tf.string)
    have = os.path.getsize(data)
    if have < needed:
        raise _Invalid(f"the weights file holds {have} bytes but its index describes {needed}; "
                       f"it is truncated", weights_bad=True)
    hparams_path = os.path.join(folder, "hparams.json")
    if os.path.isfile(hparams_path):
        from .hparams import load_hparams
        from .model import variable_shapes

        for name, shape in variable_shapes(load_hparams(folder)).items():
            if name not in shapes:
                raise _Invalid(f"the checkpoint lacks the variable {name!r} that hparams.json "
                               f"asks for")
            if tuple(shapes[name]) != tuple(shape):
                raise _Invalid(f"{name!r} has shape {tuple(shapes[name])} but hparams.json asks "
                               f"for {tuple(shape)}")


def _openai_checks(fetcher):
    data = "model.ckpt.data-00000-of-00001"

    def check_index(path):
        try:
            check_checkpoint_index(path, fetcher.folder)
        except _Invalid as why:
            if why.weights_bad:  # fetch the weights again too, not just the index
                fetcher.forget(data)
            raise

    return {
        "checkpoint": _check_state_file,
        "encoder.json": check_json,
        "hparams.json": _check_hparams,
        data: _check_binary,
        "model.ckpt.index": check_index,
        "model.ckpt.meta": _check_binary,
        "vocab.bpe": check_text,
    }


# ---------------------------------------------------------------------------
# HTTP machinery

def _write(f, data):
    """Write one chunk (a seam the tests use to simulate a full disk)."""
    f.write(data)


def _int_header(headers, name):
    try:
        value = int(headers.get(name, ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _content_range(header):
    """``(start, total)`` from ``bytes 10-99/100`` or ``bytes */100`` (``None`` if absent)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _chunks(r):
    """The body of a streamed response, chunk by chunk, as it arrives.

    ``read1`` hands over whatever the socket delivered, so when the connection
    drops every byte received so far is written and the resume starts there
    (``iter_content`` would lose a partly filled chunk).
    """
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from r.iter_content(chunk_size=CHUNK_SIZE)
        return
    while True:
        chunk = read1(CHUNK_SIZE, decode_content=True)
        if not chunk:
            return
        yield chunk


class Fetcher:
    """Fetches files into one model folder: resume, retry, verify, manifest.

    ``label`` names the model in errors (``"model '124M'"``) and ``advice`` is
    the next step they suggest. Used by :func:`download_gpt2` and by
    :mod:`gpt2_simple_plus.huggingface`.
    """

    def __init__(self, folder, *, label, advice, timeout=30.0, retries=5, backoff=1.0,
                 progress=True, manifest_info=None):
        self.folder = folder
        self.label = label
        self.advice = advice
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.progress = progress
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": "gpt2_simple_plus",
                                     "Accept-Encoding": "identity"})
        self.manifest = _read_manifest(folder) or {}
        self.manifest.setdefault("files", {})
        self.manifest.setdefault("partial", {})
        self.manifest.update(manifest_info or {})

    def close(self):
        self.session.close()

    # -- errors -------------------------------------------------------------

    def error(self, what, url, status=None):
        err = DownloadError(f"Could not download {self.label} from {url}: {what}. {self.advice}")
        err.url, err.status = url, status
        return err

    def disk_error(self, err, path, url):
        if getattr(err, "errno", None) == errno.ENOSPC:
            what = (f"the disk is full (no space left on device) while writing {path}. Free some "
                    f"space and call download_gpt2 again: the part already fetched is kept and "
                    f"resumed")
        else:
            what = f"writing {path} failed ({_short(err)}). Check that the folder is writable"
        err = DownloadError(f"Could not download {self.label} from {url}: {what}.")
        err.url, err.status = url, None
        return err

    # -- manifest -----------------------------------------------------------

    def save_manifest(self, url=None):
        path = os.path.join(self.folder, MANIFEST)
        tmp = path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.manifest, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as err:
            raise self.disk_error(err, path, url or self.folder) from None

    def record(self, rel, etag=None, url=None):
        path = os.path.join(self.folder, rel)
        self.manifest["files"][rel] = {"size": os.path.getsize(path), "etag": etag}
        self.manifest["partial"].pop(rel, None)
        self.save_manifest(url)

    def forget(self, rel):
        """Delete ``folder/rel`` and its manifest entry, so the next call fetches it again."""
        path = os.path.join(self.folder, rel)
        for p in (path, path + PART_SUFFIX):
            if os.path.exists(p):
                os.remove(p)
        self.manifest["files"].pop(rel, None)
        self.manifest["partial"].pop(rel, None)
        self.save_manifest()

    def is_recorded(self, rel):
        entry = self.manifest["files"].get(rel)
        path = os.path.join(self.folder, rel)
        return isinstance(entry, dict) and os.path.isfile(path) \
            and os.path.getsize(path) == entry.get("size")

    # -- fetching -----------------------------------------------------------

    def fetch(self, url, rel, check=None):
        """Make ``folder/rel`` a complete, verified copy of ``url``; returns its path."""
        path = os.path.join(self.folder, rel)
        if self.is_recorded(rel):
            return path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError as err:
            raise self.disk_error(err, os.path.dirname(path), url) from None
        if os.path.isfile(path) and self._adopt(url, rel, path, check):
            return path
        failures = 0
        while True:
            part = path + PART_SUFFIX
            before = os.path.getsize(part) if os.path.isfile(part) else 0
            try:
                return self._attempt(url, rel, path, check)
            except _Retry as why:
                after = os.path.getsize(part) if os.path.isfile(part) else 0
                failures = 0 if after > before else failures + 1  # progress resets the count
                if failures > self.retries:
                    tries = f"{self.retries + 1} attempts" if self.retries else "1 attempt"
                    raise self.error(f"{why} (gave up after {tries} in a row without progress)",
                                     url) from None
                if self.backoff:
                    time.sleep(min(self.backoff * 2 ** max(failures - 1, 0), MAX_BACKOFF))

    def _adopt(self, url, rel, path, check):
        """Keep a file present but unrecorded if the server reports the same size."""
        try:
            r = self.session.head(url, allow_redirects=True, timeout=self.timeout)
        except requests.RequestException:
            return False
        size = _int_header(r.headers, "Content-Length")
        if r.status_code != 200 or size is None or size != os.path.getsize(path):
            return False
        try:
            if check:
                check(path)
        except _Invalid:
            return False
        self.record(rel, r.headers.get("ETag"), url)
        return True

    def _attempt(self, url, rel, path, check):
        part = path + PART_SUFFIX
        offset = os.path.getsize(part) if os.path.isfile(part) else 0
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            etag = self.manifest["partial"].get(rel)
            if etag and not etag.startswith("W/"):
                headers["If-Range"] = etag
        try:
            r = self.session.get(url, headers=headers, stream=True, timeout=self.timeout)
        except requests.RequestException as err:
            what, retry = _network_problem(err, self.timeout)
            if retry:
                raise _Retry(what) from None
            raise self.error(what, url) from None
        with r:
            status = r.status_code
            if status == 416 and offset:
                _, total = _content_range(r.headers.get("Content-Range"))
                if total == offset:  # the part was already whole
                    return self._finish(url, rel, path, check, self.manifest["partial"].get(rel))
                os.remove(part)
                raise _Retry("the partial file did not match the server's; starting it again")
            if status not in (200, 206):
                what, retry = _http_problem(status, r.reason)
                if retry:
                    raise _Retry(what)
                raise self.error(what, url, status)
            ctype = r.headers.get("Content-Type", "").lower()
            if "text/html" in ctype:
                raise self.error("the server sent an HTML page (Content-Type text/html) instead "
                                 "of the file, such as a proxy, login or error page", url, status)
            length = _int_header(r.headers, "Content-Length")
            if status == 206:
                start, total = _content_range(r.headers.get("Content-Range"))
                if start != offset:
                    os.remove(part)
                    raise _Retry("the server resumed at the wrong place; starting the file again")
                mode = "ab"
            else:  # 200: the whole file, even if we asked for a range
                offset, total, mode = 0, length, "wb"
            etag = r.headers.get("ETag")
            if self.manifest["partial"].get(rel) != etag:
                self.manifest["partial"][rel] = etag
                self.save_manifest(url)
            self._stream(r, part, mode, offset, total, rel, url)
        received = os.path.getsize(part)
        if total is not None and received < total:
            raise _Retry(f"the connection closed after {received} of {total} bytes")
        if total is not None and received > total:
            os.remove(part)
            raise self.error(f"the server sent {received} bytes but announced {total}", url,
                             status)
        return self._finish(url, rel, path, check, etag)

    def _stream(self, r, part, mode, offset, total, rel, url):
        try:
            f = open(part, mode)
        except OSError as err:
            raise self.disk_error(err, part, url) from None
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   ncols=100, desc=f"Fetching {rel}", disable=not self.progress, leave=True)
        try:
            with f:
                for chunk in _chunks(r):
                    try:
                        _write(f, chunk)
                    except OSError as err:
                        raise self.disk_error(err, part, url) from None
                    bar.update(len(chunk))
        except (requests.RequestException, OSError) as err:
            if isinstance(err, DownloadError):
                raise
            what, _ = _network_problem(err, self.timeout)
            raise _Retry(what) from None
        except Exception as err:  # urllib3 errors that requests did not wrap
            import urllib3

            if isinstance(err, urllib3.exceptions.HTTPError):
                raise _Retry(_network_problem(err, self.timeout)[0]) from None
            raise
        finally:
            bar.close()

    def _finish(self, url, rel, path, check, etag):
        part = path + PART_SUFFIX
        try:
            if check:
                check(part)
        except _Invalid as why:
            os.remove(part)
            self.manifest["partial"].pop(rel, None)
            self.save_manifest(url)
            raise self.error(f"{rel} did not verify: {why}", url) from None
        os.replace(part, path)
        self.record(rel, etag, url)
        return path


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
    kind, folder_name, repo = _resolve(model_name, source)
    folder = os.path.join(model_dir, folder_name)
    required = OPENAI_FILES if kind == "openai" else CONVERTED_FILES
    if _is_complete(folder, required):
        had = (_read_manifest(folder) or {}).get("revision")
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
        raise DownloadError(f"Could not create {folder} for {label}: {_short(err)}. Choose a "
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

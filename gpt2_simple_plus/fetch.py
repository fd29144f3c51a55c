"""Fetching files over HTTP into a model folder: resume, retry, verify, manifest.

:class:`Fetcher` streams each file into ``<file>.part`` and renames it into
place once it is complete and its check passed; :mod:`~gpt2_simple_plus.download`
(OpenAI's release) and :mod:`~gpt2_simple_plus.huggingface` (Hugging Face
repositories) both fetch through it. The checks (``check_json``,
``check_text`` ...) take the path of a fetched file and raise :class:`Invalid`.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "page.json")
    >>> _ = open(path, "w").write("<html>login</html>")
    >>> check_json(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gpt2_simple_plus.fetch.Invalid: the server sent an HTML page instead of the file (a proxy, ...)
"""

import errno
import json
import os
import re
import socket
import time

import requests
from tqdm import tqdm

from .errors import DownloadError
from .files import write_text_atomic

MANIFEST = ".download.json"
PART_SUFFIX = ".part"
CHUNK_SIZE = 1024 * 1024
MAX_BACKOFF = 30.0

# ---------------------------------------------------------------------------
# Completeness

def read_manifest(folder):
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


def is_complete(folder, required):
    if not os.path.isdir(folder) or _has_part_files(folder):
        return False
    if os.path.exists(os.path.join(folder, MANIFEST)):
        manifest = read_manifest(folder)
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
        return f"the secure connection failed ({short_error(err)})", False
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
    return f"the connection broke ({short_error(err)})", True


def short_error(err):
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


class Invalid(Exception):
    """A fetched file failed verification; ``weights_bad`` blames the weights file it checked."""

    def __init__(self, text, *, weights_bad=False):
        super().__init__(text)
        self.weights_bad = weights_bad


# ---------------------------------------------------------------------------
# File checks: each takes the path of a fetched file and raises Invalid.

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
        raise Invalid("the server sent an HTML page instead of the file "
                       "(a proxy, login or error page)")


def check_json(path, *, kind=dict):
    check_not_html(path)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise Invalid(f"the file is not valid JSON ({short_error(err)}); it is truncated or "
                      f"corrupt")
    if not isinstance(value, kind):
        raise Invalid(f"the file should hold a JSON {kind.__name__}, not {type(value).__name__}")
    return value


def check_text(path):
    check_not_html(path)
    try:
        with open(path, encoding="utf-8") as f:
            f.read()
    except UnicodeDecodeError:
        raise Invalid("the file is not UTF-8 text; it is corrupt") from None


def check_binary(path):
    check_not_html(path, text=False)


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
    the next step they suggest. Used by
    :func:`~gpt2_simple_plus.download.download_gpt2` and by
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
        self.manifest = read_manifest(folder) or {}
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
            what = f"writing {path} failed ({short_error(err)}). Check that the folder is writable"
        err = DownloadError(f"Could not download {self.label} from {url}: {what}.")
        err.url, err.status = url, None
        return err

    # -- manifest -----------------------------------------------------------

    def save_manifest(self, url=None):
        path = os.path.join(self.folder, MANIFEST)
        try:
            write_text_atomic(path, json.dumps(self.manifest, indent=1, sort_keys=True))
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
        except Invalid:
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
        except Invalid as why:
            os.remove(part)
            self.manifest["partial"].pop(rel, None)
            self.save_manifest(url)
            raise self.error(f"{rel} did not verify: {why}", url) from None
        os.replace(part, path)
        self.record(rel, etag, url)
        return path


"""Atomic file writes: every module that writes a file a reader may open goes through here.

A file is written to a temporary name in its own folder and renamed over the
real name only once it is complete, so a reader (or a second process, or the
next run after a crash) sees the old file or the new one, never half of one.
A failed write leaves no temporary file behind.
"""

import contextlib
import os
import secrets
import shutil


@contextlib.contextmanager
def atomic_path(path, *, prefix=".tmp-", suffix=""):
    """A temporary path beside ``path`` to write by any means; it replaces ``path``
    when the block ends without an exception, and is removed when it does not. The
    temporary file is not created here, so it gets the usual permissions when written.

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "table.txt")
        >>> with atomic_path(path) as tmp:
        ...     _ = open(tmp, "w").write("a\\n")
        >>> open(path).read(), os.listdir(os.path.dirname(path))
        ('a\\n', ['table.txt'])
    """
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f"{prefix}{os.getpid()}-{secrets.token_hex(4)}-{name}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path, mode="w", *, encoding="utf-8", errors=None, newline=None, fsync=True,
                prefix=".tmp-", suffix=""):
    """``open(path, mode)`` that writes a temporary file and renames it into place at the
    end of the block (``mode`` ``"w"`` or ``"wb"``). ``fsync`` flushes it to the disk
    first, so a power cut cannot leave an empty file under the new name.

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "labels.json")
        >>> with atomic_open(path) as f:
        ...     _ = f.write("[1, 2]")
        >>> open(path).read()
        '[1, 2]'
    """
    with atomic_path(path, prefix=prefix, suffix=suffix) as tmp:
        binary = "b" in mode
        with open(tmp, mode, encoding=None if binary else encoding,
                  errors=None if binary else errors, newline=None if binary else newline) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())


def write_text_atomic(path, text, *, newline=None):
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half.

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "counter")
        >>> write_text_atomic(path, "5\\n")
        >>> open(path).read()
        '5\\n'
    """
    with atomic_open(path, "w", newline=newline) as f:
        f.write(text)


def write_bytes_atomic(path, data):
    """Write ``data`` (bytes) to ``path`` atomically, as :func:`write_text_atomic` does text.

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "blob")
        >>> write_bytes_atomic(path, b"\\x00\\x01")
        >>> open(path, "rb").read()
        b'\\x00\\x01'
    """
    with atomic_open(path, "wb") as f:
        f.write(data)


def copy_file_atomic(src, dst, *, prefix=".tmp-", suffix=""):
    """Copy ``src`` to ``dst`` (contents and permission bits), atomically.

        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> write_text_atomic(os.path.join(d, "a"), "x")
        >>> copy_file_atomic(os.path.join(d, "a"), os.path.join(d, "b"))
        >>> open(os.path.join(d, "b")).read()
        'x'
    """
    with atomic_path(dst, prefix=prefix, suffix=suffix) as tmp:
        shutil.copyfile(src, tmp)
        shutil.copymode(src, tmp)

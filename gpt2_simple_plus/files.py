"""Small file helpers shared by the modules that write model and run files."""

import os
import tempfile


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never half.

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "counter")
        >>> write_text_atomic(path, "5\\n")
        >>> open(path).read()
        '5\\n'
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

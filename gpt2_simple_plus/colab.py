"""Google Colab and Google Drive: keep runs and files when the Colab machine goes away.

A Colab machine forgets everything when it stops; your Google Drive does not.
Mount the Drive once per session, copy a run there after training, and copy it
back at the start of the next session.

In Colab::

    import gpt2_simple_plus as gpt2
    gpt2.mount_gdrive()                                # asks for permission
    gpt2.copy_checkpoint_to_gdrive(run_name="run1")    # -> MyDrive/checkpoint_run1.tar

    # a new session, days later
    gpt2.mount_gdrive()
    gpt2.copy_checkpoint_from_gdrive(run_name="run1")  # -> checkpoint/run1

The names, defaults and archive layout are gpt-2-simple's: an archive made by
gpt-2-simple restores here, and one made here restores in gpt-2-simple.

Where things go on the Drive:

* Everything lives under ``/content/drive/MyDrive``. (gpt-2-simple 0.8.1 used
  ``My Drive``, which Colab no longer creates; it is still used when it is the
  only one there.) ``drive_folder="gpt2/runs"`` means ``MyDrive/gpt2/runs``,
  created when copying to the Drive; an absolute ``drive_folder`` (a shared
  drive, say) is used as it is.
* A run is copied as one tar archive named like gpt-2-simple's,
  ``<checkpoint_dir>_<run_name>.tar`` (``checkpoint_run1.tar``), holding
  ``checkpoint/run1/...``. With ``copy_folder=True`` it is copied as a folder,
  ``MyDrive/checkpoint/run1``. Copies merge into what is already there.
* ``copy_file_to_gdrive("data/shakespeare.txt")`` writes
  ``MyDrive/data/shakespeare.txt`` (sub-folders are created);
  ``copy_file_from_gdrive`` copies it back to the same path. A file given by
  an absolute path, or one above the current folder, keeps only its name on
  the Drive.

Archives are written to a temporary name and renamed when complete, so an
interrupted copy never leaves a half archive under the real name. Restoring
checks every member first: an archive holding an absolute path, a ``..``, a
member outside ``<checkpoint_dir>/<run_name>/``, a link pointing outside the
run, or a device file is refused with :class:`CheckpointError` and nothing is
written. (Python 3.11.4 and later also extract with tarfile's ``"data"``
filter.)

Outside Colab, point the environment variable ``GPT2_SIMPLE_PLUS_DRIVE_ROOT``
(default ``/content/drive``) at any folder holding ``MyDrive/``; the copy
functions then work there, which is how the tests and the example below run:

    >>> import os, tempfile
    >>> import gpt2_simple_plus as gpt2
    >>> work = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(work, "drive", "MyDrive"))
    >>> os.environ["GPT2_SIMPLE_PLUS_DRIVE_ROOT"] = os.path.join(work, "drive")
    >>> gpt2.is_mounted()
    True
    >>> checkpoints = os.path.join(work, "checkpoint")
    >>> os.makedirs(os.path.join(checkpoints, "run1"))
    >>> _ = open(os.path.join(checkpoints, "run1", "counter"), "w").write("1000")
    >>> saved = gpt2.copy_checkpoint_to_gdrive("run1", checkpoint_dir=checkpoints)
    >>> os.path.relpath(saved, work)
    'drive/MyDrive/checkpoint_run1.tar'
    >>> import shutil; shutil.rmtree(checkpoints)          # the Colab machine is gone
    >>> restored = gpt2.copy_checkpoint_from_gdrive("run1", checkpoint_dir=checkpoints)
    >>> open(os.path.join(restored, "counter")).read()
    '1000'
    >>> del os.environ["GPT2_SIMPLE_PLUS_DRIVE_ROOT"]
"""

import importlib.util
import os
import posixpath
import re
import shutil
import tarfile
import tempfile

from .errors import CheckpointError, ColabError, ModelNotFoundError
from .files import atomic_open, copy_file_atomic

DRIVE_ROOT_ENV = "GPT2_SIMPLE_PLUS_DRIVE_ROOT"
DEFAULT_DRIVE_ROOT = "/content/drive"
# Colab mounts the Drive with "MyDrive"; older mounts (and gpt-2-simple 0.8.1) used "My Drive".
MY_DRIVE_NAMES = ("MyDrive", "My Drive")
# Bookkeeping files of a run, copied last: until they change, the old checkpoint stays in charge.
_COPY_LAST = ("checkpoint", "counter")
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")  # Python 3.11.4+, 3.10.12+, 3.12+


def drive_root():
    """Where the Drive is mounted: ``$GPT2_SIMPLE_PLUS_DRIVE_ROOT``, else ``/content/drive``.

        >>> drive_root()          # when GPT2_SIMPLE_PLUS_DRIVE_ROOT is not set
        '/content/drive'
    """
    return os.environ.get(DRIVE_ROOT_ENV) or DEFAULT_DRIVE_ROOT


def _in_colab():
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def mount_gdrive():
    """Mount your Google Drive at ``/content/drive`` (Colab asks for permission).

    Works only in Google Colab; elsewhere it raises :class:`ColabError`.

    In Colab::

        import gpt2_simple_plus as gpt2
        gpt2.mount_gdrive()
        gpt2.is_mounted()        # True

    Outside Colab:

        >>> import gpt2_simple_plus as gpt2
        >>> try:
        ...     gpt2.mount_gdrive()
        ... except gpt2.ColabError as err:
        ...     print(str(err).split(":")[0])
        mount_gdrive() works only in Google Colab
    """
    try:
        from google.colab import drive
    except ImportError:
        raise ColabError(
            f"mount_gdrive() works only in Google Colab: there is no google.colab module here. "
            f"On your own machine copy files with your usual tools, or set the environment "
            f"variable {DRIVE_ROOT_ENV} to a folder holding MyDrive/ (a synced Drive folder) "
            f"and use the copy functions without mounting."
        ) from None
    drive.mount(drive_root())


def is_mounted():
    """``True`` when the Drive is mounted (``/content/drive/MyDrive`` exists).

    gpt-2-simple's ``is_mounted`` raised ``AssertionError`` instead of returning
    ``False``; the copy functions here raise :class:`ColabError` when it is ``False``.

        >>> import gpt2_simple_plus as gpt2
        >>> isinstance(gpt2.is_mounted(), bool)
        True
    """
    return _my_drive(drive_root()) is not None


def _my_drive(root):
    for name in MY_DRIVE_NAMES:
        folder = os.path.join(root, name)
        if os.path.isdir(folder):
            return folder
    return None


def _drive_folder(drive_folder=None, *, create=False):
    """The Drive folder to copy to or from: ``MyDrive`` or ``MyDrive/<drive_folder>``."""
    root = drive_root()
    my_drive = _my_drive(root)
    if my_drive is None:
        message = f"Google Drive is not mounted at {root}: run gpt2.mount_gdrive() first."
        if os.path.isdir(root):
            message += f" ({root} exists but holds no MyDrive folder.)"
        if not _in_colab():
            message += (f" This is not Google Colab; to use another folder as the Drive, set "
                        f"the environment variable {DRIVE_ROOT_ENV} to a folder holding MyDrive/.")
        raise ColabError(message)
    folder = my_drive
    if drive_folder:
        # os.path.join keeps an absolute drive_folder as it is.
        folder = os.path.join(my_drive, os.path.normpath(os.fspath(drive_folder)))
    if create:
        os.makedirs(folder, exist_ok=True)
    return folder


def get_tarfile_name(checkpoint_folder):
    """The archive name for a run folder, as gpt-2-simple names it: separators become ``_``.

        >>> get_tarfile_name("checkpoint/run1")
        'checkpoint_run1.tar'
    """
    return re.sub(r"[\\/]", "_", os.fspath(checkpoint_folder).replace(os.path.sep, "/")) + ".tar"


def _run_parts(run_name):
    name = os.fspath(run_name).replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or ".." in parts:
        raise ColabError(f"run_name={run_name!r} should name a run folder inside checkpoint_dir, "
                         f"e.g. run_name='run1'.")
    return parts


def _archive_prefix(checkpoint_dir, run_name):
    """The run's path inside archives and on the Drive: ``checkpoint/run1``.

    The last folder name of ``checkpoint_dir`` stands for it, so a custom
    ``checkpoint_dir="/data/ckpt"`` gives ``ckpt/run1`` and ``ckpt_run1.tar``.
    """
    base = os.path.basename(os.path.abspath(os.fspath(checkpoint_dir))) or "checkpoint"
    return "/".join([base] + _run_parts(run_name))


def _listing(names, limit=12):
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _subfolders(folder):
    try:
        return [n for n in os.listdir(folder)
                if not n.startswith(".") and os.path.isdir(os.path.join(folder, n))]
    except OSError:
        return []


def _local_run(checkpoint_dir, run_name):
    """``checkpoint_dir/run_name``, which must exist."""
    run_dir = os.path.join(os.fspath(checkpoint_dir), *_run_parts(run_name))
    if os.path.isdir(run_dir):
        return run_dir
    runs = _subfolders(checkpoint_dir)
    found = (f"Runs found in {checkpoint_dir!r}: {_listing(runs)}." if runs else
             f"No runs found in {checkpoint_dir!r}; train one first with "
             f"gpt2.finetune(sess, dataset, run_name={run_name!r}).")
    raise ModelNotFoundError(f"No run folder {run_dir!r} to copy to Google Drive. {found}")


def _missing_on_drive(source, prefix, run_name, copy_folder, what):
    try:
        archives = [n for n in os.listdir(source) if n.endswith(".tar") and not n.startswith(".")]
    except OSError:
        return f"No checkpoint {what} on Google Drive: the folder {source} does not exist."
    base = prefix.split("/")[0]
    folders = [f"{base}/{n}/" for n in _subfolders(os.path.join(source, base))]
    found = archives + folders
    message = f"No checkpoint {what} on Google Drive."
    if copy_folder and get_tarfile_name(prefix) in archives:
        message += " The run is there as an archive: drop copy_folder=True."
    elif not copy_folder and f"{prefix}/" in found:
        message += " The run is there as a folder: pass copy_folder=True."
    elif found:
        message += f" Checkpoints found in {source}: {_listing(found)}."
    else:
        message += (f" Nothing there yet: copy a run first with "
                    f"gpt2.copy_checkpoint_to_gdrive(run_name={run_name!r}).")
    return message


def copy_checkpoint_to_gdrive(run_name="run1", copy_folder=False, checkpoint_dir="checkpoint",
                              drive_folder=None):
    """Copy ``checkpoint_dir/run_name`` to the Drive; returns where it went.

    By default the run becomes one archive, ``MyDrive/checkpoint_run1.tar``
    (written under a temporary name, renamed when complete); with
    ``copy_folder=True`` it is copied as the folder ``MyDrive/checkpoint/run1``.
    ``drive_folder="gpt2/runs"`` puts it in ``MyDrive/gpt2/runs`` instead.

    In Colab::

        gpt2.mount_gdrive()
        gpt2.copy_checkpoint_to_gdrive(run_name="run1")
        gpt2.copy_checkpoint_to_gdrive(run_name="run1", drive_folder="gpt2/runs")

    Anywhere, with a folder standing in for the Drive (see the module help):

        >>> import os
        >>> from gpt2_simple_plus._examples import example_drive
        >>> work = example_drive()
        >>> checkpoints = os.path.join(work, "checkpoint")
        >>> path = copy_checkpoint_to_gdrive("run1", checkpoint_dir=checkpoints)
        >>> os.path.relpath(path, work)
        'drive/MyDrive/checkpoint_run1.tar'
        >>> path = copy_checkpoint_to_gdrive("run1", copy_folder=True, drive_folder="gpt2",
        ...                                  checkpoint_dir=checkpoints)
        >>> os.path.relpath(path, work)
        'drive/MyDrive/gpt2/checkpoint/run1'
        >>> del os.environ["GPT2_SIMPLE_PLUS_DRIVE_ROOT"]
    """
    target = _drive_folder(drive_folder, create=True)
    run_dir = _local_run(checkpoint_dir, run_name)
    prefix = _archive_prefix(checkpoint_dir, run_name)
    if copy_folder:
        dest = os.path.join(target, *prefix.split("/"))
        _copy_tree(run_dir, dest)
        return dest
    dest = os.path.join(target, get_tarfile_name(prefix))
    _write_archive(run_dir, prefix, dest)
    return dest


def copy_checkpoint_from_gdrive(run_name="run1", copy_folder=False, checkpoint_dir="checkpoint",
                                drive_folder=None):
    """Copy a run back from the Drive into ``checkpoint_dir/run_name``; returns that folder.

    Reads ``MyDrive/checkpoint_run1.tar`` (gpt-2-simple's archives too), or with
    ``copy_folder=True`` the folder ``MyDrive/checkpoint/run1``. Files merge
    into a run folder that already exists; files of the same name are replaced.
    An archive with anything unsafe in it is refused before anything is written.

    In Colab::

        gpt2.mount_gdrive()
        gpt2.copy_checkpoint_from_gdrive(run_name="run1")
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, run_name="run1")

    Anywhere, with a folder standing in for the Drive (see the module help):

        >>> import os, shutil
        >>> from gpt2_simple_plus._examples import example_drive
        >>> work = example_drive()
        >>> checkpoints = os.path.join(work, "checkpoint")
        >>> _ = copy_checkpoint_to_gdrive("run1", checkpoint_dir=checkpoints)
        >>> shutil.rmtree(checkpoints)
        >>> run = copy_checkpoint_from_gdrive("run1", checkpoint_dir=checkpoints)
        >>> sorted(os.listdir(run))
        ['checkpoint', 'counter']
        >>> del os.environ["GPT2_SIMPLE_PLUS_DRIVE_ROOT"]
    """
    source = _drive_folder(drive_folder)
    prefix = _archive_prefix(checkpoint_dir, run_name)
    run_dir = os.path.join(os.fspath(checkpoint_dir), *_run_parts(run_name))
    if copy_folder:
        src = os.path.join(source, *prefix.split("/"))
        if not os.path.isdir(src):
            raise ModelNotFoundError(_missing_on_drive(source, prefix, run_name, True,
                                                       f"folder {src}"))
        _copy_tree(src, run_dir)
        return run_dir
    archive = os.path.join(source, get_tarfile_name(prefix))
    if not os.path.isfile(archive):
        raise ModelNotFoundError(_missing_on_drive(source, prefix, run_name, False,
                                                   f"archive {archive}"))
    _extract_run(archive, prefix, run_dir)
    return run_dir


def _drive_relpath(file_path):
    """Where a local file goes under the Drive folder: its relative path, else its name."""
    path = os.path.normpath(os.fspath(file_path))
    if os.path.isabs(path) or path == os.pardir or path.startswith(os.pardir + os.sep):
        return os.path.basename(path)
    return path


def copy_file_to_gdrive(file_path, drive_folder=None):
    """Copy one file to the Drive, keeping its sub-folders; returns where it went.

    ``copy_file_to_gdrive("data/shakespeare.txt")`` writes
    ``MyDrive/data/shakespeare.txt``, creating ``data`` there.

    In Colab::

        gpt2.mount_gdrive()
        gpt2.copy_file_to_gdrive("shakespeare.txt")
        gpt2.copy_file_to_gdrive("samples/gen.txt", drive_folder="gpt2")

    Anywhere, with a folder standing in for the Drive (see the module help):

        >>> import os
        >>> from gpt2_simple_plus._examples import example_drive
        >>> work = example_drive()
        >>> here = os.getcwd(); os.chdir(work)
        >>> os.makedirs("data"); _ = open("data/poem.txt", "w").write("roses")
        >>> os.path.relpath(copy_file_to_gdrive("data/poem.txt"), work)
        'drive/MyDrive/data/poem.txt'
        >>> os.chdir(here); del os.environ["GPT2_SIMPLE_PLUS_DRIVE_ROOT"]
    """
    folder = _drive_folder(drive_folder, create=True)
    file_path = os.fspath(file_path)
    if os.path.isdir(file_path):
        raise ColabError(f"{file_path!r} is a folder; copy_file_to_gdrive copies one file. For a "
                         f"run use gpt2.copy_checkpoint_to_gdrive(run_name=...).")
    if not os.path.isfile(file_path):
        raise ModelNotFoundError(f"No file {file_path!r} to copy to Google Drive "
                                 f"(looked at {os.path.abspath(file_path)}).")
    dest = os.path.join(folder, _drive_relpath(file_path))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    _atomic_copy(file_path, dest)
    return dest


def copy_file_from_gdrive(file_path, drive_folder=None):
    """Copy one file from the Drive to ``file_path``, creating its folders; returns ``file_path``.

    The file is looked up where :func:`copy_file_to_gdrive` puts it.

    In Colab::

        gpt2.mount_gdrive()
        gpt2.copy_file_from_gdrive("shakespeare.txt")

    Anywhere, with a folder standing in for the Drive (see the module help):

        >>> import os
        >>> from gpt2_simple_plus._examples import example_drive
        >>> work = example_drive()
        >>> _ = open(os.path.join(work, "drive", "MyDrive", "poem.txt"), "w").write("roses")
        >>> path = copy_file_from_gdrive(os.path.join(work, "here", "poem.txt"))
        >>> open(path).read()
        'roses'
        >>> del os.environ["GPT2_SIMPLE_PLUS_DRIVE_ROOT"]
    """
    folder = _drive_folder(drive_folder)
    file_path = os.fspath(file_path)
    src = os.path.join(folder, _drive_relpath(file_path))
    if not os.path.isfile(src):
        parent = os.path.dirname(src)
        try:
            there = sorted(n for n in os.listdir(parent) if not n.startswith("."))
        except OSError:
            there = []
        found = (f"{parent} holds: {_listing(there)}." if there else
                 f"{parent} is empty or missing.")
        raise ModelNotFoundError(f"No file {src} on Google Drive. {found} Copy it there first "
                                 f"with gpt2.copy_file_to_gdrive({file_path!r}).")
    parent = os.path.dirname(file_path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    _atomic_copy(src, file_path)
    return file_path


# --- copying --------------------------------------------------------------------------------


def _atomic_copy(src, dst):
    copy_file_atomic(src, dst, prefix=".", suffix=".partial")


def _copy_tree(src, dst):
    """Copy the folder ``src`` into ``dst`` file by file, each file atomically.

    The run's ``checkpoint`` and ``counter`` files go last, so an interrupted
    copy leaves them naming a checkpoint whose files are complete.
    """
    last = []
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        out = os.path.normpath(os.path.join(dst, os.path.relpath(folder, src)))
        os.makedirs(out, exist_ok=True)
        for name in sorted(files):
            pair = (os.path.join(folder, name), os.path.join(out, name))
            if folder == src and name in _COPY_LAST:
                last.append(pair)
            else:
                _atomic_copy(*pair)
    for pair in last:
        _atomic_copy(*pair)


def _write_archive(run_dir, prefix, dest):
    """Tar ``run_dir`` as ``prefix/...`` into ``dest``, atomically."""
    with atomic_open(dest, "wb", prefix=".", suffix=".partial") as f:
        # dereference: links are stored as the files they point to, so the archive stands alone.
        with tarfile.open(fileobj=f, mode="w", dereference=True) as tar:
            tar.add(run_dir, arcname=prefix)


# --- restoring archives safely --------------------------------------------------------------


def _unsafe(archive, member, why):
    return CheckpointError(
        f"Refusing to extract {archive}: its member {member.name!r} is {why}. Nothing was "
        f"written. A checkpoint archive holds only the files of one run folder; make it "
        f"again with gpt2.copy_checkpoint_to_gdrive(...) from a trusted copy of the run.")


def _clean_name(name):
    """Archive path with ``\\`` read as ``/`` and ``.``/empty parts dropped, or None if absolute."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return None
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _inside(path, prefix):
    return path == prefix or path.startswith(prefix + "/")


def _checked_members(tar, archive, prefix, size=None):
    """The members of ``tar`` to extract, renamed to clean paths; raises on anything unsafe.

    Rules: no absolute paths, no ``..``, only files, folders and links; every
    path inside ``prefix`` (folders above it are skipped); no member reached
    through a symbolic link; links resolve inside ``prefix``; a hard link
    names a regular file of the archive; with the archive's ``size`` (uncompressed
    archives), no file's data runs past its end.
    """
    members, symlinks, files = [], set(), set()
    for member in tar:
        if size is not None and member.isreg() and member.offset_data + member.size > size:
            raise CheckpointError(
                f"{archive} is truncated: {member.name!r} needs {member.size} bytes but the file "
                f"ends first. Nothing was written. The archive was not copied to the Drive "
                f"completely; copy the run again with gpt2.copy_checkpoint_to_gdrive(...).")
        name = _clean_name(member.name)
        if name is None:
            raise _unsafe(archive, member, "an absolute path")
        if ".." in name.split("/"):
            raise _unsafe(archive, member, "a path with '..'")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise _unsafe(archive, member, "a device, pipe or other special file")
        if not _inside(name, prefix):
            if member.isdir() and (name == "" or prefix.startswith(name + "/")):
                continue  # a folder above the run, e.g. "checkpoint"
            raise CheckpointError(
                f"{archive} is not an archive of the run {prefix!r}: it holds {member.name!r}. "
                f"Nothing was written. Check run_name and checkpoint_dir (the archive's folder "
                f"is named after them).")
        parts = name.split("/")
        if any("/".join(parts[:i]) in symlinks for i in range(1, len(parts))):
            raise _unsafe(archive, member, "reached through a symbolic link")
        if member.issym():
            target = _clean_name(member.linkname)
            if target is None:
                raise _unsafe(archive, member, f"a link to the absolute path {member.linkname!r}")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if not _inside(resolved, prefix) or any(
                    "/".join(resolved.split("/")[:i]) in symlinks
                    for i in range(1, resolved.count("/") + 1)):
                raise _unsafe(archive, member, f"a link pointing outside the run "
                                               f"({member.linkname!r})")
            symlinks.add(name)
        elif member.islnk():
            target = _clean_name(member.linkname)
            if target not in files:
                raise _unsafe(archive, member, f"a hard link to {member.linkname!r}, which is "
                                               f"not a file of the run")
            member.linkname = target
        elif member.isreg():
            files.add(name)
        member.name = name
        members.append(member)
    return members


def _sanitize(member):
    """What tarfile's "data" filter does, for Pythons without it: plain permissions, no owner."""
    if member.isreg() or member.islnk():
        member.mode = (member.mode & 0o755) | 0o600
    elif member.isdir():
        member.mode = (member.mode & 0o755) | 0o700
    member.uid = member.gid = None
    member.uname = member.gname = None
    return member


def _extract_run(archive, prefix, run_dir):
    """Extract the ``prefix/`` folder of ``archive`` into ``run_dir``, checking every member."""
    parent = os.path.dirname(os.path.abspath(run_dir))
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
            # Data offsets can be checked against the file's size unless it is compressed.
            size = os.fstat(raw.fileno()).st_size if tar.fileobj is raw else None
            members = _checked_members(tar, archive, prefix, size)
            if not members:
                raise CheckpointError(f"{archive} holds no files of the run {prefix!r}.")
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=parent, prefix=".restore-")
            try:
                if _HAS_DATA_FILTER:
                    tar.extractall(tmp, members=members, filter="data")
                else:
                    tar.extractall(tmp, members=[_sanitize(m) for m in members])
                _move_into(os.path.join(tmp, *prefix.split("/")), run_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError) as err:
        raise CheckpointError(
            f"Cannot read {archive}: {err}. The archive is damaged or was not copied to the "
            f"Drive completely; copy the run again with gpt2.copy_checkpoint_to_gdrive(...).")


def _move_into(src, dst):
    """Move the folder ``src`` to ``dst``: a rename if ``dst`` is new, else a file-by-file merge."""
    if not os.path.isdir(src):
        os.makedirs(src)
    if not os.path.lexists(dst):
        os.replace(src, dst)
        return
    last = []
    for folder, dirs, files in os.walk(src):
        out = os.path.normpath(os.path.join(dst, os.path.relpath(folder, src)))
        os.makedirs(out, exist_ok=True)
        names = files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in names:
            pair = (os.path.join(folder, name), os.path.join(out, name))
            if folder == src and name in _COPY_LAST:
                last.append(pair)
            else:
                os.replace(*pair)
    for pair in last:
        os.replace(*pair)

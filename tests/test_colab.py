"""Google Drive helpers against a temporary folder standing in for Colab's /content/drive."""

import io
import os
import sys
import tarfile
import types

import pytest

import gpt2_simple_plus as gpt2
from gpt2_simple_plus import colab
from gpt2_simple_plus.errors import CheckpointError, ColabError, ModelNotFoundError

RUN_FILES = {
    "checkpoint": b'model_checkpoint_path: "model-7"\nall_model_checkpoint_paths: "model-7"\n',
    "counter": b"7",
    "model-7.index": bytes(range(256)),
    "model-7.data-00000-of-00001": os.urandom(4096),
    "samples/sample-7.txt": "caf\u00e9 \U0001F600\n".encode("utf-8"),
}


@pytest.fixture
def drive(tmp_path, monkeypatch):
    """``tmp/drive/MyDrive`` as the mounted Drive; the current folder is ``tmp/work``."""
    root = tmp_path / "drive"
    (root / "MyDrive").mkdir(parents=True)
    monkeypatch.setenv(colab.DRIVE_ROOT_ENV, str(root))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return root / "MyDrive"


def make_run(folder, files=RUN_FILES):
    for name, data in files.items():
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def read_tree(folder):
    tree = {}
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                tree[os.path.relpath(path, folder).replace(os.sep, "/")] = f.read()
    return tree


def all_paths(folder):
    return {os.path.join(p, n) for p, ds, fs in os.walk(folder) for n in ds + fs}


# --- mounting -------------------------------------------------------------------------------


def test_mount_gdrive_outside_colab_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", None)  # makes the import fail
    with pytest.raises(ColabError, match=r"^mount_gdrive\(\) works only in Google Colab"):
        gpt2.mount_gdrive()


def test_mount_gdrive_in_colab_mounts_the_drive_root(monkeypatch):
    calls = []
    fake_drive = types.SimpleNamespace(mount=calls.append)
    fake_colab = types.ModuleType("google.colab")
    fake_colab.drive = fake_drive
    monkeypatch.setitem(sys.modules, "google.colab", fake_colab)
    monkeypatch.delenv(colab.DRIVE_ROOT_ENV, raising=False)
    gpt2.mount_gdrive()
    monkeypatch.setenv(colab.DRIVE_ROOT_ENV, "/elsewhere")
    gpt2.mount_gdrive()
    assert calls == ["/content/drive", "/elsewhere"]


def test_not_mounted_every_copy_raises_colab_error(tmp_path, monkeypatch):
    monkeypatch.setenv(colab.DRIVE_ROOT_ENV, str(tmp_path / "drive"))
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "checkpoint" / "run1")
    (tmp_path / "x.txt").write_text("x")
    assert gpt2.is_mounted() is False
    calls = [lambda: gpt2.copy_checkpoint_to_gdrive(),
             lambda: gpt2.copy_checkpoint_from_gdrive(),
             lambda: gpt2.copy_checkpoint_to_gdrive(copy_folder=True),
             lambda: gpt2.copy_file_to_gdrive("x.txt"),
             lambda: gpt2.copy_file_from_gdrive("x.txt")]
    for call in calls:
        with pytest.raises(ColabError, match=r"Google Drive is not mounted at .*drive: run "
                                             r"gpt2\.mount_gdrive\(\) first"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "x.txt"]  # nothing created


def test_not_mounted_message_explains_the_variable_outside_colab(tmp_path, monkeypatch):
    monkeypatch.setenv(colab.DRIVE_ROOT_ENV, str(tmp_path))  # exists, but no MyDrive inside
    with pytest.raises(ColabError) as info:
        gpt2.copy_file_from_gdrive("x.txt")
    assert "holds no MyDrive folder" in str(info.value)
    assert colab.DRIVE_ROOT_ENV in str(info.value)


def test_default_root_is_content_drive(monkeypatch):
    monkeypatch.delenv(colab.DRIVE_ROOT_ENV, raising=False)
    assert colab.drive_root() == "/content/drive"


def test_old_my_drive_name_is_used_only_when_alone(tmp_path, monkeypatch):
    monkeypatch.setenv(colab.DRIVE_ROOT_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "My Drive").mkdir()
    (tmp_path / "a.txt").write_text("a")
    assert gpt2.is_mounted()
    assert gpt2.copy_file_to_gdrive("a.txt") == str(tmp_path / "My Drive" / "a.txt")
    (tmp_path / "MyDrive").mkdir()
    assert gpt2.copy_file_to_gdrive("a.txt") == str(tmp_path / "MyDrive" / "a.txt")


# --- checkpoints ----------------------------------------------------------------------------


def test_tar_round_trip(drive):
    make_run("checkpoint/run1")
    path = gpt2.copy_checkpoint_to_gdrive("run1")
    assert path == str(drive / "checkpoint_run1.tar")
    assert os.listdir(drive) == ["checkpoint_run1.tar"]  # no temporary file left behind
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert "checkpoint/run1/model-7.index" in names
    assert all(n == "checkpoint/run1" or n.startswith("checkpoint/run1/") for n in names)
    os.rename("checkpoint", "old")
    assert gpt2.copy_checkpoint_from_gdrive("run1") == os.path.join("checkpoint", "run1")
    assert read_tree("checkpoint/run1") == RUN_FILES
    assert os.listdir("checkpoint") == ["run1"]  # the temporary extraction folder is gone


def test_folder_round_trip(drive):
    make_run("checkpoint/run1")
    path = gpt2.copy_checkpoint_to_gdrive("run1", copy_folder=True)
    assert path == str(drive / "checkpoint" / "run1")
    assert read_tree(path) == RUN_FILES
    os.rename("checkpoint", "old")
    gpt2.copy_checkpoint_from_gdrive("run1", copy_folder=True)
    assert read_tree("checkpoint/run1") == RUN_FILES


def test_copying_again_replaces_and_merges(drive):
    make_run("checkpoint/run1")
    gpt2.copy_checkpoint_to_gdrive("run1")
    gpt2.copy_checkpoint_to_gdrive("run1", copy_folder=True)
    make_run("checkpoint/run1", {"counter": b"9", "model-9.index": b"new"})
    gpt2.copy_checkpoint_to_gdrive("run1")  # gpt-2-simple's copytree failed the second time
    gpt2.copy_checkpoint_to_gdrive("run1", copy_folder=True)
    # Restoring over a local run replaces files of the same name, keeps the others.
    make_run("checkpoint/run1", {"counter": b"1", "local-only.txt": b"mine"})
    for copy_folder in (False, True):
        gpt2.copy_checkpoint_from_gdrive("run1", copy_folder=copy_folder)
        tree = read_tree("checkpoint/run1")
        assert tree["counter"] == b"9" and tree["model-9.index"] == b"new"
        assert tree["local-only.txt"] == b"mine"
        assert not [n for n in os.listdir("checkpoint") if n.startswith(".")]


def test_drive_sub_folders(drive):
    make_run("checkpoint/run1")
    tar_path = gpt2.copy_checkpoint_to_gdrive("run1", drive_folder="gpt2/runs")
    folder = gpt2.copy_checkpoint_to_gdrive("run1", copy_folder=True, drive_folder="gpt2/runs")
    assert tar_path == str(drive / "gpt2" / "runs" / "checkpoint_run1.tar")
    assert folder == str(drive / "gpt2" / "runs" / "checkpoint" / "run1")
    os.rename("checkpoint", "old")
    gpt2.copy_checkpoint_from_gdrive("run1", drive_folder="gpt2/runs")
    assert read_tree("checkpoint/run1") == RUN_FILES
    os.rename("checkpoint", "old2")
    gpt2.copy_checkpoint_from_gdrive("run1", copy_folder=True, drive_folder="gpt2/runs")
    assert read_tree("checkpoint/run1") == RUN_FILES
    with pytest.raises(ModelNotFoundError):
        gpt2.copy_checkpoint_from_gdrive("run1", drive_folder="elsewhere")


def test_run_name_with_sub_folder_is_named_like_gpt2_simple(drive):
    make_run("checkpoint/exp/run1")
    path = gpt2.copy_checkpoint_to_gdrive("exp/run1")
    assert os.path.basename(path) == "checkpoint_exp_run1.tar"
    os.rename("checkpoint", "old")
    gpt2.copy_checkpoint_from_gdrive("exp/run1")
    assert read_tree("checkpoint/exp/run1") == RUN_FILES


def test_custom_checkpoint_dir(drive, tmp_path):
    ckpt = tmp_path / "elsewhere" / "my_ckpts"
    make_run(ckpt / "run1")
    path = gpt2.copy_checkpoint_to_gdrive("run1", checkpoint_dir=str(ckpt))
    assert path == str(drive / "my_ckpts_run1.tar")
    folder = gpt2.copy_checkpoint_to_gdrive("run1", copy_folder=True, checkpoint_dir=ckpt)
    assert folder == str(drive / "my_ckpts" / "run1")
    restored = tmp_path / "restored" / "my_ckpts"
    for copy_folder in (False, True):
        run = gpt2.copy_checkpoint_from_gdrive("run1", copy_folder, checkpoint_dir=str(restored))
        assert run == str(restored / "run1")
        assert read_tree(run) == RUN_FILES
        assert not os.path.exists("checkpoint")


def test_gpt2_simple_archive_restores_and_ours_restores_in_gpt2_simple(drive, tmp_path):
    # gpt-2-simple 0.8.1's copy_checkpoint_to_gdrive, verbatim (run beside checkpoint/).
    make_run("checkpoint/run1")
    checkpoint_folder = os.path.join("checkpoint", "run1")
    file_path = colab.get_tarfile_name(checkpoint_folder)
    with tarfile.open(file_path, "w") as tar:
        tar.add(checkpoint_folder)
    os.replace(file_path, drive / "checkpoint_run1.tar")
    os.rename("checkpoint", "old")
    gpt2.copy_checkpoint_from_gdrive("run1")
    assert read_tree("checkpoint/run1") == RUN_FILES

    # ... and its copy_checkpoint_from_gdrive on an archive written here.
    os.remove(drive / "checkpoint_run1.tar")
    gpt2.copy_checkpoint_to_gdrive("run1")
    elsewhere = tmp_path / "gpt2_simple_session"
    elsewhere.mkdir()
    with tarfile.open(drive / "checkpoint_run1.tar", "r") as tar:
        tar.extractall(elsewhere, **({"filter": "data"} if colab._HAS_DATA_FILTER else {}))
    assert read_tree(elsewhere / "checkpoint" / "run1") == RUN_FILES


def test_missing_local_run_names_folder_and_lists_runs(drive):
    make_run("checkpoint/run1")
    make_run("checkpoint/shakespeare")
    with pytest.raises(ModelNotFoundError) as info:
        gpt2.copy_checkpoint_to_gdrive("run2")
    message = str(info.value)
    assert os.path.join("checkpoint", "run2") in message
    assert "run1, shakespeare" in message
    with pytest.raises(ModelNotFoundError, match=r"No runs found in 'nothing'.*finetune"):
        gpt2.copy_checkpoint_to_gdrive("run1", checkpoint_dir="nothing")


def test_missing_on_drive_lists_what_is_there(drive):
    with pytest.raises(ModelNotFoundError, match="Nothing there yet.*copy_checkpoint_to_gdrive"):
        gpt2.copy_checkpoint_from_gdrive("run1")
    make_run("checkpoint/run1")
    gpt2.copy_checkpoint_to_gdrive("run1")
    with pytest.raises(ModelNotFoundError, match="checkpoint_run2.tar.*found.*checkpoint_run1.tar"):
        gpt2.copy_checkpoint_from_gdrive("run2")
    with pytest.raises(ModelNotFoundError, match="there as an archive: drop copy_folder=True"):
        gpt2.copy_checkpoint_from_gdrive("run1", copy_folder=True)
    os.remove(drive / "checkpoint_run1.tar")
    gpt2.copy_checkpoint_to_gdrive("run1", copy_folder=True)
    with pytest.raises(ModelNotFoundError, match="there as a folder: pass copy_folder=True"):
        gpt2.copy_checkpoint_from_gdrive("run1")


def test_bad_run_name(drive):
    for name in ("", "../run1", "/abs"):
        with pytest.raises(ColabError, match="should name a run folder"):
            gpt2.copy_checkpoint_to_gdrive(name)


def test_interrupted_archive_keeps_the_previous_one(drive, monkeypatch):
    make_run("checkpoint/run1")
    gpt2.copy_checkpoint_to_gdrive("run1")
    before = (drive / "checkpoint_run1.tar").read_bytes()
    make_run("checkpoint/run1", {"big.bin": os.urandom(1 << 16)})

    def add_then_fail(self, name, arcname=None, **kwargs):
        self.fileobj.write(b"\0" * 1000)
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "add", add_then_fail)
    with pytest.raises(KeyboardInterrupt):
        gpt2.copy_checkpoint_to_gdrive("run1")
    assert os.listdir(drive) == ["checkpoint_run1.tar"]
    assert (drive / "checkpoint_run1.tar").read_bytes() == before


# --- malicious and damaged archives ---------------------------------------------------------


def _member(name, data=b"x", **fields):
    info = tarfile.TarInfo(name)
    info.size = len(data) if fields.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def write_archive(path, members, **kwargs):
    with tarfile.open(path, "w", **kwargs) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.size else None)


EVIL_ARCHIVES = {
    "absolute path": [_member("checkpoint/run1/counter"), _member("/tmp/evil_abs_gpt2sp")],
    "dot-dot": [_member("checkpoint/run1/counter"), _member("checkpoint/run1/../../evil")],
    "plain dot-dot": [_member("../evil")],
    "symlink outside": [_member("checkpoint/run1/link", type=tarfile.SYMTYPE, linkname="../../.."),
                        _member("checkpoint/run1/link/evil")],
    "absolute symlink": [_member("checkpoint/run1/link", type=tarfile.SYMTYPE, linkname="/etc")],
    "symlink chain": [_member("checkpoint/run1/a", type=tarfile.SYMTYPE, linkname="."),
                      _member("checkpoint/run1/a/b", type=tarfile.SYMTYPE, linkname=".."),
                      _member("checkpoint/run1/a/b/evil")],
    "hard link outside": [_member("checkpoint/run1/hard", type=tarfile.LNKTYPE,
                                  linkname="../../outside.txt")],
    "device file": [_member("checkpoint/run1/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "fifo": [_member("checkpoint/run1/fifo", type=tarfile.FIFOTYPE)],
    "other folder": [_member("checkpoint/run1/counter"), _member("checkpoint/run2/counter")],
    "wrong top folder": [_member("evil/run1/counter")],
}


@pytest.mark.parametrize("data_filter", [True, False], ids=["data_filter", "own_checks"])
@pytest.mark.parametrize("kind", sorted(EVIL_ARCHIVES))
def test_malicious_archive_is_refused_and_nothing_written(drive, tmp_path, monkeypatch, kind,
                                                          data_filter):
    monkeypatch.setattr(colab, "_HAS_DATA_FILTER", data_filter and colab._HAS_DATA_FILTER)
    (tmp_path / "outside.txt").write_text("precious")
    archive = drive / "checkpoint_run1.tar"
    write_archive(archive, EVIL_ARCHIVES[kind], format=tarfile.GNU_FORMAT)
    before = all_paths(tmp_path)
    with pytest.raises(CheckpointError, match="Nothing was written"):
        gpt2.copy_checkpoint_from_gdrive("run1")
    assert all_paths(tmp_path) == before
    assert (tmp_path / "outside.txt").read_text() == "precious"
    assert not os.path.exists("/tmp/evil_abs_gpt2sp")


def test_in_run_symlinks_and_parent_folder_entries_are_fine(drive):
    archive = drive / "checkpoint_run1.tar"
    write_archive(archive, [_member("./checkpoint", type=tarfile.DIRTYPE),
                            _member("./checkpoint/run1", type=tarfile.DIRTYPE),
                            _member("./checkpoint/run1/counter", b"3"),
                            _member("./checkpoint/run1/latest", type=tarfile.SYMTYPE,
                                    linkname="counter")])
    gpt2.copy_checkpoint_from_gdrive("run1")
    assert os.readlink("checkpoint/run1/latest") == "counter"
    assert open("checkpoint/run1/latest").read() == "3"


def test_damaged_archive(drive):
    make_run("checkpoint/run1")
    gpt2.copy_checkpoint_to_gdrive("run1")
    data = (drive / "checkpoint_run1.tar").read_bytes()
    with tarfile.open(drive / "checkpoint_run1.tar") as tar:
        cut = tar.getmember("checkpoint/run1/model-7.data-00000-of-00001").offset_data + 100
    os.rename("checkpoint", "old")
    (drive / "checkpoint_run1.tar").write_bytes(data[:3000])  # truncated upload
    with pytest.raises(CheckpointError, match="damaged or was not copied"):
        gpt2.copy_checkpoint_from_gdrive("run1")
    (drive / "checkpoint_run1.tar").write_bytes(data[:cut])  # cut inside a file's data
    with pytest.raises(CheckpointError, match="is truncated: 'checkpoint/run1/model-7.data"):
        gpt2.copy_checkpoint_from_gdrive("run1")
    (drive / "checkpoint_run1.tar").write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(CheckpointError, match="damaged or was not copied"):
        gpt2.copy_checkpoint_from_gdrive("run1")
    assert not os.path.exists("checkpoint/run1")


def test_compressed_archive_under_the_tar_name_restores(drive):
    make_run("checkpoint/run1")
    with tarfile.open(drive / "checkpoint_run1.tar", "w:gz") as tar:
        tar.add("checkpoint/run1")
    data = (drive / "checkpoint_run1.tar").read_bytes()
    os.rename("checkpoint", "old")
    gpt2.copy_checkpoint_from_gdrive("run1")
    assert read_tree("checkpoint/run1") == RUN_FILES
    os.rename("checkpoint", "old2")
    (drive / "checkpoint_run1.tar").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or was not copied"):
        gpt2.copy_checkpoint_from_gdrive("run1")
    assert not os.path.exists("checkpoint/run1")


def test_absolute_drive_folder_is_used_as_it_is(drive, tmp_path):
    shared = tmp_path / "drive" / "Shareddrives" / "Team"
    make_run("checkpoint/run1")
    path = gpt2.copy_checkpoint_to_gdrive("run1", drive_folder=str(shared))
    assert path == str(shared / "checkpoint_run1.tar")
    os.rename("checkpoint", "old")
    gpt2.copy_checkpoint_from_gdrive("run1", drive_folder=str(shared))
    assert read_tree("checkpoint/run1") == RUN_FILES


# --- single files ---------------------------------------------------------------------------


def test_file_round_trip_with_sub_folders(drive):
    os.makedirs("data/poems")
    with open("data/poems/roses.txt", "w", encoding="utf-8") as f:
        f.write("roses are red\n")
    path = gpt2.copy_file_to_gdrive("data/poems/roses.txt")
    assert path == str(drive / "data" / "poems" / "roses.txt")
    assert gpt2.copy_file_to_gdrive("data/poems/roses.txt", drive_folder="gpt2/files") == \
        str(drive / "gpt2" / "files" / "data" / "poems" / "roses.txt")
    os.remove("data/poems/roses.txt")
    os.rmdir("data/poems")
    assert gpt2.copy_file_from_gdrive("data/poems/roses.txt") == "data/poems/roses.txt"
    assert open("data/poems/roses.txt", encoding="utf-8").read() == "roses are red\n"
    assert not [n for n in os.listdir(drive / "data" / "poems") if n.startswith(".")]


def test_absolute_file_path_keeps_only_its_name_on_the_drive(drive, tmp_path):
    source = tmp_path / "somewhere" / "notes.txt"
    source.parent.mkdir()
    source.write_text("n")
    assert gpt2.copy_file_to_gdrive(str(source)) == str(drive / "notes.txt")
    target = tmp_path / "back" / "notes.txt"
    assert gpt2.copy_file_from_gdrive(str(target)) == str(target)
    assert target.read_text() == "n"


def test_file_errors(drive):
    with pytest.raises(ModelNotFoundError, match="No file 'nope.txt' to copy"):
        gpt2.copy_file_to_gdrive("nope.txt")
    (drive / "other.txt").write_text("o")
    with pytest.raises(ModelNotFoundError, match=r"nope\.txt on Google Drive.*holds: other\.txt"):
        gpt2.copy_file_from_gdrive("nope.txt")
    os.makedirs("checkpoint/run1")
    with pytest.raises(ColabError, match="is a folder"):
        gpt2.copy_file_to_gdrive("checkpoint/run1")

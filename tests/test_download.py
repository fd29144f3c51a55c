"""download_gpt2 / is_gpt2_downloaded against a real HTTP server on 127.0.0.1, with faults."""

import errno
import json
import os
import socket
import time

import pytest

import helpers
from helpers import HTML, FileServer
from gpt2_simple_plus import download
from gpt2_simple_plus import fetch as fetcher_module
from gpt2_simple_plus.download import BASE_URL_ENV, OPENAI_FILES, download_gpt2, is_gpt2_downloaded
from gpt2_simple_plus.errors import DownloadError, ModelNotFoundError

DATA = "model.ckpt.data-00000-of-00001"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """``{file name: bytes}`` of a tiny random GPT-2 in OpenAI's layout, plus a fake .meta."""
    folder = tmp_path_factory.mktemp("release")
    helpers.make_model_dir(str(folder))
    with open(folder / "model.ckpt.meta", "wb") as f:
        f.write(b"fake meta graph")
    return {name: (folder / name).read_bytes() for name in OPENAI_FILES}


@pytest.fixture
def server(release):
    files = {f"/models/tiny/{name}": data for name, data in release.items()}
    files.update({f"/models/124M/{name}": data for name, data in release.items()})
    with FileServer(files) as s:
        yield s


def fetch(tmp_path, server, model_name="tiny", **kw):
    options = dict(model_dir=str(tmp_path / "models"), model_name=model_name, base_url=server.url,
                   progress=False, backoff=0, retries=2, timeout=5)
    options.update(kw)
    return download_gpt2(**options)


def assert_identical(folder, release, names=OPENAI_FILES):
    for name in names:
        with open(os.path.join(folder, name), "rb") as f:
            assert f.read() == release[name], name


def part_files(tmp_path):
    return [n for _, _, names in os.walk(tmp_path) for n in names if n.endswith(".part")]


# ---------------------------------------------------------------------------
# Happy paths

def test_downloads_every_file_verified_with_progress_bars(tmp_path, server, release, capsys):
    folder = fetch(tmp_path, server, progress=True)
    assert folder == str(tmp_path / "models" / "tiny")
    assert_identical(folder, release)
    assert not part_files(tmp_path)
    assert is_gpt2_downloaded(str(tmp_path / "models"), "tiny")
    manifest = json.loads((tmp_path / "models" / "tiny" / ".download.json").read_text())
    assert manifest["files"][DATA]["size"] == len(release[DATA])
    assert manifest["files"][DATA]["etag"].startswith('"')
    assert "Fetching model.ckpt.index" in capsys.readouterr().err

    from gpt2_simple_plus.loading import load_model
    assert load_model(folder).hparams.n_layer == 2


def test_second_call_fetches_no_body(tmp_path, server):
    fetch(tmp_path, server)
    assert len(server.bodies()) == len(OPENAI_FILES)
    before = len(server.log)
    fetch(tmp_path, server)
    assert len(server.log) == before  # not even a HEAD request


def test_aliases_download_into_the_canonical_folder(tmp_path, server, release):
    folder = fetch(tmp_path, server, model_name="117M")
    assert folder.endswith(os.path.join("models", "124M"))
    assert all(e[1].startswith("/models/124M/") for e in server.log)
    assert is_gpt2_downloaded(str(tmp_path / "models"), "gpt2")
    assert_identical(folder, release)


def test_environment_variable_sets_the_base_url(tmp_path, server, monkeypatch):
    monkeypatch.setenv(BASE_URL_ENV, server.url + "/")
    folder = download_gpt2(str(tmp_path / "models"), "tiny", progress=False, backoff=0)
    assert is_gpt2_downloaded(str(tmp_path / "models"), "tiny") and os.path.isdir(folder)


def test_files_placed_by_hand_are_adopted_after_a_head_request(tmp_path, server, release):
    folder = tmp_path / "models" / "tiny"
    folder.mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe", DATA):
        (folder / name).write_bytes(release[name])
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")
    fetch(tmp_path, server)
    assert {e[1].rsplit("/", 1)[1] for e in server.bodies()} == \
        {"checkpoint", "hparams.json", "model.ckpt.index", "model.ckpt.meta"}
    assert sum(e[0] == "HEAD" for e in server.log) == 3
    assert is_gpt2_downloaded(str(tmp_path / "models"), "tiny")


# ---------------------------------------------------------------------------
# Resume and retry

def test_dropped_connection_resumes_with_range(tmp_path, server, release):
    path = f"/models/tiny/{DATA}"
    half = len(release[DATA]) // 2
    server.inject(path, ("drop", half))
    folder = fetch(tmp_path, server)
    assert_identical(folder, release)
    requests_for_data = [e for e in server.log if e[1] == path]
    assert requests_for_data[0][2] is None
    assert requests_for_data[1][2] == f"bytes={half}-" and requests_for_data[1][3] == 206


def test_server_ignoring_range_restarts_the_file(tmp_path, server, release):
    path = f"/models/tiny/{DATA}"
    server.inject(path, ("drop", 1000), ("ignore_range",))
    folder = fetch(tmp_path, server)
    assert_identical(folder, release)
    assert [e[3] for e in server.log if e[1] == path] == [200, 200]


def test_server_error_then_success(tmp_path, server, release):
    server.inject("/models/tiny/hparams.json", ("status", 500))
    folder = fetch(tmp_path, server)
    assert_identical(folder, release)
    assert [e[3] for e in server.log if e[1].endswith("hparams.json")] == [500, 200]


def test_persistent_server_errors_give_up_with_a_clear_message(tmp_path, server):
    server.inject("/models/tiny/hparams.json", *[("status", 503)] * 3)
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server, retries=2)
    text = str(info.value)
    assert "'tiny'" in text and f"{server.url}/models/tiny/hparams.json" in text
    assert "HTTP 503" in text and "3 attempts in a row" in text and "download_gpt2 again" in text
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")


def test_longer_content_length_resumes_and_completes(tmp_path, server, release):
    # The server announces 100 bytes more than it sends: the client resumes and gets 416.
    server.inject("/models/tiny/encoder.json", ("length", len(release["encoder.json"]) + 100))
    folder = fetch(tmp_path, server)
    assert_identical(folder, release)
    assert [e[3] for e in server.log if e[1].endswith("encoder.json")] == [200, 416]


# ---------------------------------------------------------------------------
# Failures: each a DownloadError naming model, URL and next step; never a model that looks complete

def assert_clear(err, model, url):
    text = str(err)
    assert f"'{model}'" in text and url in text, text
    assert BASE_URL_ENV in text and "by hand" in text, text


def test_404_says_what_to_do(tmp_path, server):
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server, model_name="nope")
    assert info.value.status == 404 and "no such file" in str(info.value)
    assert_clear(info.value, "nope", f"{server.url}/models/nope/checkpoint")
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "nope")


def test_403_is_not_retried(tmp_path, server):
    server.inject("/models/tiny/encoder.json", ("status", 403))
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server)
    assert info.value.status == 403 and "refused access" in str(info.value)
    assert_clear(info.value, "tiny", f"{server.url}/models/tiny/encoder.json")
    assert len([e for e in server.log if e[1].endswith("encoder.json")]) == 1
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")
    assert not (tmp_path / "models" / "tiny" / "encoder.json").exists()


def test_shorter_content_length_fails_verification_then_recovers(tmp_path, server, release):
    short = len(release["model.ckpt.index"]) - 50
    server.inject("/models/tiny/model.ckpt.index", ("length", short))
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server)
    assert "model.ckpt.index did not verify" in str(info.value)
    assert_clear(info.value, "tiny", f"{server.url}/models/tiny/model.ckpt.index")
    assert not (tmp_path / "models" / "tiny" / "model.ckpt.index").exists()
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")
    fetched = len(server.bodies())
    fetch(tmp_path, server)  # only the index and what follows it are fetched again
    assert {e[1].rsplit("/", 1)[1] for e in server.bodies()[fetched:]} == \
        {"model.ckpt.index", "model.ckpt.meta", "vocab.bpe"}
    assert is_gpt2_downloaded(str(tmp_path / "models"), "tiny")


def test_html_page_with_status_200_is_caught(tmp_path, server):
    server.inject(f"/models/tiny/{DATA}", ("html",))
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server)
    assert "HTML page" in str(info.value)
    assert_clear(info.value, "tiny", f"{server.url}/models/tiny/{DATA}")
    assert not (tmp_path / "models" / "tiny" / DATA).exists()
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")


def test_html_body_sent_as_json_is_caught(tmp_path, server):
    server.files["/models/tiny/hparams.json"] = HTML  # served as application/octet-stream
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server)
    assert "hparams.json did not verify" in str(info.value) and "HTML page" in str(info.value)
    assert not (tmp_path / "models" / "tiny" / "hparams.json").exists()
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")


def test_truncated_weights_are_caught_by_the_index(tmp_path, server, release):
    server.files[f"/models/tiny/{DATA}"] = release[DATA][:-64]
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server)
    assert "index describes" in str(info.value) and "it is truncated" in str(info.value)
    # The weights are fetched again next time, not trusted.
    assert not (tmp_path / "models" / "tiny" / DATA).exists()
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")
    server.files[f"/models/tiny/{DATA}"] = release[DATA]
    assert_identical(fetch(tmp_path, server), release)


def test_read_timeout(tmp_path, server):
    server.inject("/models/tiny/checkpoint", ("sleep", 1.0), ("sleep", 1.0))
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server, timeout=0.2, retries=1)
    assert time.monotonic() - started < 1.5
    assert "did not answer within 0.2 s (timed out)" in str(info.value)
    assert_clear(info.value, "tiny", f"{server.url}/models/tiny/checkpoint")
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")


def test_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download_gpt2(str(tmp_path / "models"), "124M", base_url=url, progress=False)
    assert time.monotonic() - started < 5  # no back-off: nothing listens there
    assert "the connection was refused" in str(info.value)
    assert_clear(info.value, "124M", f"{url}/models/124M/checkpoint")
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "124M")


def test_dns_failure_is_not_retried(tmp_path, monkeypatch):
    calls = []

    def no_dns(host, *args, **kwargs):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError) as info:
        download_gpt2(str(tmp_path / "models"), "124M", progress=False, backoff=0)
    assert "could not be resolved (DNS failure)" in str(info.value) and len(calls) == 1
    assert_clear(info.value, "124M", download.OPENAI_BASE_URL + "/models/124M/checkpoint")


def test_disk_full(tmp_path, server, release, monkeypatch):
    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write = fetcher_module._write
    monkeypatch.setattr(fetcher_module, "_write", full)
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, server)
    text = str(info.value)
    assert "disk is full" in text and "'tiny'" in text
    assert f"{server.url}/models/tiny/checkpoint" in text
    assert "Free some space" in text
    assert not is_gpt2_downloaded(str(tmp_path / "models"), "tiny")
    monkeypatch.setattr(fetcher_module, "_write", real_write)
    assert_identical(fetch(tmp_path, server), release)


# ---------------------------------------------------------------------------
# Names and completeness

def test_unknown_openai_model_name_is_refused_before_any_network():
    with pytest.raises(ModelNotFoundError, match="'999M'.*124M, 355M, 774M, 1558M"):
        download_gpt2("unused", "999M")
    with pytest.raises(ModelNotFoundError, match="plain folder name"):
        download_gpt2("unused", "../evil", base_url="http://127.0.0.1:9")


def test_is_gpt2_downloaded_tells_the_truth(tmp_path, release):
    models = tmp_path / "models"
    folder = models / "124M"
    folder.mkdir(parents=True)
    for name, data in release.items():  # placed by hand: no manifest
        (folder / name).write_bytes(data)
    assert is_gpt2_downloaded(str(models), "124M") and is_gpt2_downloaded(str(models), "117M")
    (folder / "model.ckpt.meta").unlink()
    assert not is_gpt2_downloaded(str(models), "124M")
    (folder / "model.ckpt.meta").write_bytes(release["model.ckpt.meta"])
    (folder / "vocab.bpe.part").write_bytes(b"half")
    assert not is_gpt2_downloaded(str(models), "124M")
    (folder / "vocab.bpe.part").unlink()
    manifest = {"files": {n: {"size": len(d)} for n, d in release.items()}}
    manifest["files"][DATA]["size"] += 1
    (folder / ".download.json").write_text(json.dumps(manifest))
    assert not is_gpt2_downloaded(str(models), "124M")
    manifest["files"][DATA]["size"] -= 1
    (folder / ".download.json").write_text(json.dumps(manifest))
    assert is_gpt2_downloaded(str(models), "124M")
    assert not is_gpt2_downloaded(str(models), "124M", source="huggingface")


def test_download_module_does_not_import_tensorflow(tmp_path):
    result = helpers.run_python(
        "import sys, gpt2_simple_plus.download, gpt2_simple_plus.huggingface;"
        "print('tensorflow' in sys.modules)", cwd=helpers.REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

"""Every script in examples/ runs, as a user runs it, on tiny settings.

The scripts that need GPT-2 124M get a tiny random GPT-2 in its place:
served from a loopback HTTP server (finetune_124m.py downloads it) or put in
models/124M beforehand (the others find it already downloaded).
"""

import os
import re
import subprocess
import sys

import pytest

import helpers
from gpt2_simple_plus.download import OPENAI_FILES

EXAMPLES = os.path.join(helpers.REPO, "examples")


def run_example(name, *args, cwd, env=None, timeout=300):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                    NO_PROXY="127.0.0.1,localhost")
    full_env.pop("GPT2_SIMPLE_PLUS_BASE_URL", None)
    full_env.update(env or {})
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)] + list(args),
                            cwd=cwd, env=full_env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``models/124M``: a tiny random GPT-2 in OpenAI's release layout, all seven files."""
    folder = tmp_path_factory.mktemp("release") / "models"
    helpers.make_model_dir(str(folder / "124M"))
    (folder / "124M" / "model.ckpt.meta").write_bytes(b"not read by anyone")
    return folder


def test_every_example_is_tested():
    tested = {"quickstart_offline.py", "finetune_124m.py", "csv_dataset.py",
              "resume_training.py", "batch_generate_to_file.py",
              "teaching_tokens_temperature.py",
              "classify_reviews.py"}  # tested in test_classifier.py
    assert set(n for n in os.listdir(EXAMPLES) if n.endswith(".py")) <= tested


def test_quickstart_offline(tmp_path):
    out = run_example("quickstart_offline.py", "--tiny", cwd=tmp_path)
    assert "Trained a byte-level BPE vocabulary of 512 tokens" in out
    losses = [float(x) for x in re.findall(r"\] loss=([\d.]+)", out)]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert out.count("=" * 20) == 2 and 'The "for" statement' in out
    assert (tmp_path / "checkpoint" / "quickstart" / "model-20.index").exists()


def test_finetune_124m_downloads_from_a_mirror(tmp_path, models):
    """GPT2_SIMPLE_PLUS_BASE_URL points the download at a loopback server holding
    /models/124M/* (the tiny model), as a mirror would."""
    (tmp_path / "tiny.txt").write_text("the hat and the cat. " * 200)
    with helpers.serve_folder(models.parent) as mirror:
        out = run_example("finetune_124m.py", "--tiny", "--dataset", "tiny.txt", cwd=tmp_path,
                          env={"GPT2_SIMPLE_PLUS_BASE_URL": mirror})
    for name in OPENAI_FILES:
        assert (tmp_path / "models" / "124M" / name).read_bytes() == \
            (models / "124M" / name).read_bytes()
    assert "[3 |" in out and out.count("=" * 20) == 2
    assert (tmp_path / "checkpoint" / "run1" / "model-3.index").exists()
    assert len(os.listdir(tmp_path / "samples" / "run1")) == 1


def test_csv_dataset(tmp_path, models):
    out = run_example("csv_dataset.py", "--tiny", "--model-dir", str(models), cwd=tmp_path)
    assert "<|startoftext|>" in (tmp_path / "csv_encoded.txt").read_text()
    assert (tmp_path / "checkpoint" / "tips" / "model-3.index").exists()
    samples = [line for line in out.splitlines() if line.startswith("- ")]
    assert len(samples) == 5
    # include_prefix=False and truncate: no start or end token in what is printed
    assert not any("<|startoftext|>" in s or "<|endoftext|>" in s for s in samples)


def test_resume_training_continues_the_count(tmp_path, models):
    out = run_example("resume_training.py", "--tiny", "--model-dir", str(models), cwd=tmp_path)
    assert "counter after session 1: 3" in out and "counter after session 2: 6" in out
    assert "[6 |" in out and "Loading checkpoint checkpoint/resumed/model-6" in out


def test_batch_generate_to_file(tmp_path, models):
    out = run_example("batch_generate_to_file.py", "--tiny", "--model-name", "124M",
                      "--model-dir", str(models), cwd=tmp_path)
    texts = (tmp_path / "generated.txt").read_text(encoding="utf-8").split("=" * 20 + "\n")
    assert len(texts) == 9 and texts[-1] == ""
    for i, prompt in enumerate(["Once upon a time", "The weather today", "In the year 2050",
                                "My favourite recipe"] * 2):
        assert texts[i].startswith(prompt)
    assert "Wrote 8 texts to generated.txt" in out


def test_teaching_tokens_temperature(tmp_path, models):
    out = run_example("teaching_tokens_temperature.py", "--tiny", "--model-name", "124M",
                      "--model-dir", str(models), "--prompt", "the hat", cwd=tmp_path)
    assert "ids: [" in out
    assert "temperature 0.5" in out and "temperature 2.0" in out
    rows = re.findall(r"([\d.]+)%", out)
    assert len(rows) == 15  # five tokens at three temperatures
    for t in ("0.0", "0.7", "1.0", "1.5"):
        assert f"temperature {t}: 'the hat" in out

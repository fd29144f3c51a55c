"""``gpt2_simple_plus demo``: the offline quick start, end to end on its --quick settings."""

import json
import re

import pytest

from gpt2_simple_plus import demo
from helpers import assert_one_error_line, run_cli, serve_folder


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """``gpt2_simple_plus demo --quick --out <tmp>/my_demo`` run once, as a user runs it."""
    cwd = tmp_path_factory.mktemp("demo")
    result = run_cli("demo", "--quick", "--out", "my_demo", cwd=cwd, module=False)
    return cwd, result


def test_demo_trains_saves_a_run_and_prints_samples(quick_demo):
    cwd, result = quick_demo
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("[1/4] Corpus: pydoc_data.topics", "[2/4] Vocabulary", "[3/4] Training",
                 "[4/4] Samples"):
        assert step in out
    # samples: one per prompt, each continuing its prompt
    for i, prompt in enumerate(demo.PROMPTS, 1):
        assert f"======== SAMPLE {i} ========\n{prompt}" in out
    # the loss was printed and fell
    losses = [float(x) for x in re.findall(r"\] loss=([\d.]+)", out)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert "100%" in result.stderr  # the progress bar
    assert "Traceback" not in result.stderr

    folder = cwd / "my_demo"
    run = folder / "checkpoint" / "demo-quick"
    assert (run / "model-30.index").exists() and (run / "counter").read_text().strip() == "30"
    hparams = json.loads((run / "hparams.json").read_text())
    assert hparams == {"n_vocab": 512, "n_ctx": 32, "n_embd": 32, "n_head": 2, "n_layer": 2}
    assert len(json.loads((run / "encoder.json").read_text(encoding="utf-8"))) == 512
    assert (folder / "corpus.txt").stat().st_size > 400_000
    assert (folder / "vocab" / "vocab.bpe").exists()
    assert (folder / "samples.txt").read_text(encoding="utf-8").count("======== SAMPLE") == 3
    # where the files went, and the command to use them
    assert str(run.relative_to(cwd)) in out
    assert "gpt2_simple_plus generate --checkpoint_dir my_demo/checkpoint --run_name demo-quick" \
        in out


def test_demo_run_folder_is_an_ordinary_run(quick_demo):
    import gpt2_simple_plus as gpt2

    cwd, result = quick_demo
    assert result.returncode == 0, result.stderr
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, run_name="demo-quick", checkpoint_dir=str(cwd / "my_demo" / "checkpoint"))
    assert sess.model.hparams.n_layer == 2 and sess.encoder.n_vocab == 512
    assert sess.checkpoint.endswith("model-30")


def test_demo_with_a_model_that_cannot_be_downloaded(tmp_path):
    """``demo --model 124M`` downloads first; a server without the files gives the download's
    one-line message and exit 2 (as on a machine without the internet)."""
    empty = tmp_path / "mirror"
    empty.mkdir()
    with serve_folder(empty) as mirror:
        result = run_cli("demo", "--model", "124M", "--out", "d", cwd=tmp_path,
                         env={"GPT2_SIMPLE_PLUS_BASE_URL": mirror})
    assert "[2/4] Model: GPT-2 124M" in result.stdout
    assert_one_error_line(result, "Could not download model '124M'", "HTTP 404",
                          "GPT2_SIMPLE_PLUS_BASE_URL")


def test_bad_steps_is_a_one_line_error(tmp_path):
    assert_one_error_line(run_cli("demo", "--steps", "-5", cwd=tmp_path), "argument --steps")


def test_corpus_is_the_standard_library_help():
    text = demo.corpus_text()
    assert 400_000 < len(text) < 2_000_000
    assert 'The "for" statement' in text and "class definition" in text

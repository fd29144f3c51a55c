"""The command line, run as a user runs it: in subprocesses, reading exit codes and output.

Mistakes must print exactly one ``error: ...`` line (no traceback, no TensorFlow
start-up noise) and exit with 2; gpt-2-simple's command lines must work.
"""

import doctest
import json
import os
import subprocess
import sys

import pytest

import helpers
from gpt2_simple_plus import cli

BIN = os.path.dirname(sys.executable)


def run_cli(*args, cwd, env=None, module=True, timeout=300):
    """``python -m gpt2_simple_plus args`` (or the console script) with the user's environment:
    no TF_CPP_MIN_LOG_LEVEL, so the command line's own quieting is what is tested."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("TF_CPP_MIN_LOG_LEVEL", "GPT2_SIMPLE_PLUS_BASE_URL")}
    full_env.update(PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost", **(env or {}))
    command = [sys.executable, "-m", "gpt2_simple_plus"] if module else [console_script()]
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def console_script():
    path = os.path.join(BIN, "gpt2_simple_plus")
    if not os.path.exists(path):
        pytest.skip(f"the console script is not installed next to {sys.executable} "
                    f"(pip install -e . installs it)")
    return path


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with models/tiny (a random 2-layer GPT-2) and a small text dataset."""
    folder = tmp_path_factory.mktemp("cli")
    helpers.make_model_dir(str(folder / "models" / "tiny"))
    (folder / "data.txt").write_text("the hat and the cat sat on the mat. " * 300)
    return folder


# ---------------------------------------------------------------------------
# Help and the command names

def test_help_lists_commands_and_examples(tmp_path):
    result = run_cli("--help", cwd=tmp_path, module=False)
    assert result.returncode == 0, result.stderr
    for command in cli.COMMANDS:
        assert command in result.stdout
    assert "examples:" in result.stdout
    assert "--mode finetune --dataset" in result.stdout  # gpt-2-simple's spelling shown
    assert result.stderr == ""


@pytest.mark.parametrize("command", ["finetune", "generate", "download", "encode", "demo"])
def test_each_command_has_help_with_examples(tmp_path, command):
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout
    assert f"gpt2_simple_plus {command}" in result.stdout


def test_no_command_prints_help(tmp_path):
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0
    assert "usage: gpt2_simple_plus" in result.stdout


# ---------------------------------------------------------------------------
# Mistakes: one line, exit 2

def test_unknown_command(tmp_path):
    assert_one_error_line(run_cli("finetuen", "data.txt", cwd=tmp_path),
                          "invalid choice: 'finetuen'", "finetune")


@pytest.mark.parametrize("flag,value,expected", [
    ("--steps", "abc", "expected a whole number of steps"),
    ("--steps", "0", "or -1 (until Ctrl-C)"),
    ("--batch_size", "1.5", "expected a whole number of at least 1"),
    ("--learning_rate", "fast", "expected a number of at least 0"),
    ("--overwrite", "maybe", "expected true or false"),
])
def test_bad_numbers_and_booleans(workdir, flag, value, expected):
    result = run_cli("finetune", "data.txt", flag, value, cwd=workdir)
    assert_one_error_line(result, f"argument {flag}", expected, repr(value))


def test_missing_dataset(tmp_path):
    assert_one_error_line(run_cli("finetune", "no_such_file.txt", cwd=tmp_path),
                          "No file or folder 'no_such_file.txt'")
    # gpt-2-simple's --mode with no dataset at all
    assert_one_error_line(run_cli("--mode", "finetune", cwd=tmp_path),
                          "finetune needs a dataset")


def test_missing_run_without_tensorflow_noise(tmp_path):
    result = run_cli("generate", "--run_name", "nope", "--length", "5", cwd=tmp_path)
    assert_one_error_line(result, "No run named 'nope'")


def test_download_from_a_refused_address(tmp_path):
    result = run_cli("download", "124M", "--retries", "0", cwd=tmp_path,
                     env={"GPT2_SIMPLE_PLUS_BASE_URL": "http://127.0.0.1:9"})
    assert_one_error_line(result, "Could not download model '124M'", "http://127.0.0.1:9",
                          "GPT2_SIMPLE_PLUS_BASE_URL")


def test_unknown_model(tmp_path):
    assert_one_error_line(run_cli("download", "999M", cwd=tmp_path),
                          "OpenAI publishes no GPT-2 model called '999M'")


def test_mistakes_in_process_return_2(capsys):
    assert cli.main(["generate", "--top_p", "2"]) == 2
    assert cli.main(["--mode", "generate", "finetune"]) == 2
    err = capsys.readouterr().err
    assert "expected a number between 0 and 1, got '2'" in err
    assert "--mode generate and the command finetune disagree" in err


# ---------------------------------------------------------------------------
# gpt-2-simple's command lines, end to end

@pytest.fixture(scope="module")
def legacy_run(workdir):
    """gpt-2-simple's finetune command line, renamed: 3 steps on models/tiny."""
    return run_cli("--mode", "finetune", "--dataset", "data.txt", "--run_name", "legacy",
                   "--model_name", "tiny", "--steps", "3", "--print_every", "1",
                   "--accumulate_gradients", "1", "--overwrite", "false", cwd=workdir)


def test_gpt2_simple_finetune(workdir, legacy_run):
    assert legacy_run.returncode == 0, legacy_run.stderr
    assert "[3 |" in legacy_run.stdout and "loss=" in legacy_run.stdout
    assert "100%" in legacy_run.stderr  # the progress bar
    run = workdir / "checkpoint" / "legacy"
    assert (run / "model-3.index").exists()
    assert (run / "counter").read_text().strip() == "3"  # --steps is a number


def test_gpt2_simple_generate_adds_files_to_a_kept_folder(workdir, legacy_run):
    assert legacy_run.returncode == 0, legacy_run.stderr
    gen = workdir / "gen"
    gen.mkdir()
    (gen / "keep.txt").write_text("made before")
    result = run_cli("--mode", "generate", "--run_name", "legacy", "--nfiles", "2",
                     "--nsamples", "2", "--length", "6", "--prefix", "the",
                     "--include_prefix", "false", "--seed", "1", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (gen / "keep.txt").read_text() == "made before"  # gpt-2-simple deleted the folder
    made = sorted(p for p in gen.iterdir() if p.name.startswith("gpt2_gentext_"))
    assert len(made) == 2
    for path in made:
        texts = path.read_text(encoding="utf-8").split("=" * 20 + "\n")
        assert len(texts) == 3 and texts[-1] == ""  # two texts, a delimiter after each
    assert made[0].read_text(encoding="utf-8") != made[1].read_text(encoding="utf-8")


def test_generate_streams_to_the_screen(workdir, legacy_run):
    assert legacy_run.returncode == 0, legacy_run.stderr
    result = run_cli("generate", "--run-name", "legacy", "--length", "8", "--prefix", "the hat",
                     "--seed", "0", "--stream", cwd=workdir)
    assert result.returncode == 0, result.stderr
    loading, text = result.stdout.split("\n", 1)
    assert loading.startswith("Loading checkpoint") and text.startswith("the hat")
    assert not (workdir / "gen").exists() or "keep.txt" in os.listdir(workdir / "gen")


def test_encode_then_its_output_is_a_dataset(workdir):
    result = run_cli("encode", "data.txt", "--model_dir", "models", "--model_name", "tiny",
                     "--out_path", "data.npz", cwd=workdir)
    assert result.returncode == 0, result.stderr
    import numpy as np

    tokens = np.load(workdir / "data.npz")["arr_0"]
    vocab = json.loads((workdir / "models" / "tiny" / "encoder.json").read_text())
    assert len(tokens) > 100 and tokens.max() < len(vocab)


# ---------------------------------------------------------------------------
# The parser itself (in-process, no TensorFlow)

def test_cmd_is_main():
    import gpt2_simple_plus as gpt2

    assert gpt2.cmd is cli.main


@pytest.mark.parametrize("argv,expected", [
    (["--mode", "finetune", "--dataset", "a.txt"], ["finetune", "--dataset", "a.txt"]),
    (["--mode=generate", "--run_name", "r"], ["generate", "--run_name", "r"]),
    (["generate", "--mode", "generate"], ["generate"]),
    (["--run_name", "r", "finetune", "a.txt"], ["finetune", "--run_name", "r", "a.txt"]),
    (["--run-name=r", "generate"], ["generate", "--run_name=r"]),
    (["generate", "--prefix=--not-a-flag"], ["generate", "--prefix=--not-a-flag"]),
])
def test_translate_gpt2_simple_spellings(argv, expected):
    assert cli.translate(argv)[0] == expected


def test_parse_types_and_defaults():
    args = cli.parse(["--mode", "finetune", "--dataset", "a.txt", "--steps", "7",
                      "--overwrite", "true", "--multi_gpu", "--learning-rate", "1e-3"])
    assert (args.command, args.dataset, args.steps) == ("finetune", "a.txt", 7)
    assert args.overwrite is True and args.multi_gpu is True and args.learning_rate == 1e-3
    assert args.legacy is True
    args = cli.parse(["generate"])
    assert (args.length, args.temperature, args.include_prefix, args.nfiles) == \
        (1023, 0.7, True, None)
    assert args.legacy is False



def test_lora_targets_is_a_comma_separated_flag():
    """finetune's default is a constant of lora.py (not a literal): read, not skipped."""
    from gpt2_simple_plus import lora

    assert "lora_targets" in [p.name for p in cli.finetune_parameters()]  # passed on
    args = cli.parse(["finetune", "a.txt", "--lora_targets", "attn, mlp/c_fc"])
    assert args.lora_targets == ("attn", "mlp/c_fc")
    assert cli.parse(["finetune", "a.txt"]).lora_targets == lora.LAYERS
    with pytest.raises(SystemExit):
        cli.parse(["finetune", "a.txt", "--lora_targets", ","])

def test_doctests():
    result = doctest.testmod(cli, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

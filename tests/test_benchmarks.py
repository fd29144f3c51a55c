"""The benchmarks run on demand, not here (their figures come from a quiet machine), but
every script must still start: each one's ``--help`` runs in a fresh process, and the
helpers they share (``benchmarks/machine.py``) run their docstring examples."""

import doctest
import importlib.util
import os
import subprocess
import sys

import pytest

import helpers

BENCHMARKS = os.path.join(helpers.REPO, "benchmarks")


def _scripts():
    """The benchmark scripts (``machine.py`` is the helpers they share)."""
    for name in sorted(os.listdir(BENCHMARKS)):
        if name.endswith(".py"):
            with open(os.path.join(BENCHMARKS, name), encoding="utf-8") as f:
                if 'if __name__ == "__main__":' in f.read():
                    yield name


SCRIPTS = list(_scripts())


def test_the_benchmarks_are_found():
    assert {"generate.py", "finetune.py", "memory.py", "profile_generate.py"} <= set(SCRIPTS)
    assert "machine.py" not in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_starts(script):
    proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), "--help"],
                          cwd=BENCHMARKS, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[-500:]


def test_the_shared_helpers_examples_run():
    spec = importlib.util.spec_from_file_location("machine", os.path.join(BENCHMARKS,
                                                                          "machine.py"))
    machine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(machine)
    result = doctest.testmod(machine)
    assert result.attempted > 0 and result.failed == 0
    model, _ = machine._cpuinfo()
    assert model and model in machine.cpu_description()


def test_the_generation_prompt_is_what_gpt2_encodes(gpt2_vocab_dir, monkeypatch):
    """Every peer reads the prompt as token ids from ``benchmarks/generate.py``; they must be
    GPT-2's encoding of the text our package reads, however often it is repeated."""
    from gpt2_simple_plus.encoder import get_encoder

    monkeypatch.syspath_prepend(BENCHMARKS)
    spec = importlib.util.spec_from_file_location("generate", os.path.join(BENCHMARKS,
                                                                           "generate.py"))
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert doctest.testmod(generate).failed == 0
    encoder = get_encoder(gpt2_vocab_dir)
    for repeat in (1, 2, 5):
        text, ids = generate.prompt(repeat)
        assert encoder.encode(text) == ids

"""The docstring examples of every module in the package run, and say what they show.

Fixtures the examples need (a tiny vocabulary, a tiny model, a fake Google
Drive) come from ``gpt2_simple_plus._examples``; whatever environment they
change is put back after each module.
"""

import doctest
import importlib
import os
import pkgutil

import pytest

import gpt2_simple_plus
from gpt2_simple_plus import _examples

MODULES = ["__init__"] + sorted(m.name for m in pkgutil.iter_modules(gpt2_simple_plus.__path__))
# Modules with nothing to show by example: the entry point only calls cli.main.
WITHOUT_EXAMPLES = {"__main__"}


def test_every_module_is_listed():
    names = {n[:-3] for n in os.listdir(os.path.dirname(gpt2_simple_plus.__file__))
             if n.endswith(".py")}
    assert names == set(MODULES) and len(MODULES) > 20


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write relative paths write here
    environment = _ours(os.environ)
    module = importlib.import_module("gpt2_simple_plus" + ("" if name == "__init__" else
                                                           f".{name}"))
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS
                                 | doctest.NORMALIZE_WHITESPACE)
    finally:
        _examples.restore_environment()
    assert result.failed == 0
    assert (result.attempted > 0) == (name not in WITHOUT_EXAMPLES)
    assert _ours(os.environ) == environment  # the fixtures put back what they changed


def _ours(environ):
    """The package's variables (importing TensorFlow sets some of its own)."""
    return {k: v for k, v in environ.items() if k.startswith(("GPT2_SIMPLE_PLUS", "HF_"))}

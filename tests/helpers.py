"""Builders shared by the tests: tiny vocabularies, tiny random models, subprocess runs."""

import importlib.util
import os
import subprocess
import sys

from gpt2_simple_plus import _examples

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2_VOCAB_DIR = os.environ.get(
    "GPT2_VOCAB_DIR", os.path.join(REPO, "..", "shared", "gpt2-vocab"))


def real_vocab_dir():
    """The real GPT-2 vocabulary folder, or None when ../shared is absent."""
    ok = all(os.path.isfile(os.path.join(GPT2_VOCAB_DIR, f)) for f in ("encoder.json", "vocab.bpe"))
    return GPT2_VOCAB_DIR if ok else None


# The tiny vocabulary and the random model folders come from the package's own
# example fixtures, so the docstring examples and the tests build them one way.
TINY_MERGES = _examples.TINY_MERGES
make_tiny_vocab = _examples.make_tiny_vocab
make_model_dir = _examples.make_model_dir


def run_python(code, *, cwd, timeout=600, env=None):
    """Run ``code`` in a fresh Python process; returns CompletedProcess (text)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def openai_encoder_module():
    """OpenAI's original encoder.py from gpt-2-simple's files, loaded by path only
    (``import gpt_2_simple`` would switch TensorFlow out of eager mode)."""
    import pytest

    spec = importlib.util.find_spec("gpt_2_simple")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gpt-2-simple is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "src", "encoder.py")
    module_spec = importlib.util.spec_from_file_location("_openai_gpt2_encoder", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def decisive_weights(hparams, seed, scale=8.0):
    """GPT-2's random init made sharper: matrices scaled by ``scale`` and random
    LayerNorm parameters, so logits spread over several units and greedy picks
    are clear (the plain init makes greedy decoding repeat one token)."""
    import numpy as np

    from gpt2_simple_plus.model import random_weights

    rng = np.random.default_rng(seed)
    weights = random_weights(hparams, seed)
    for name, value in weights.items():
        if name.endswith("/g"):
            weights[name] = (1 + 0.1 * rng.standard_normal(value.shape)).astype(np.float32)
        elif name.endswith("/b"):
            weights[name] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
        else:
            weights[name] = value * np.float32(scale)
    return weights

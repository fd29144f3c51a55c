"""What every benchmark shares: the CPU it ran on, printed first (a figure from one CPU
kind does not carry to another) with the instruction-set flags that decide which kernels
run, the order in which it runs its systems round after round, and the random GPT-2 124M
they measure."""

import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VOCAB_DIR = os.environ.get("GPT2_VOCAB_DIR", os.path.join(REPO, "..", "shared", "gpt2-vocab"))
# where random checkpoints are kept between runs ($GPT2_BENCH_CACHE): random_124m's, and
# memory.py's of every size
CACHE = os.environ.get("GPT2_BENCH_CACHE",
                       os.path.join(os.path.expanduser("~"), ".cache", "gpt2_simple_plus_bench"))

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpuinfo():
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def cpu_model():
    """The CPU's model name."""
    return _cpuinfo()[0]


def cpu_description():
    """``"<model>; <n> cores; flags: avx512f avx512_bf16 ..."`` (the flags that matter)."""
    model, flags = _cpuinfo()
    found = " ".join(f for f in FLAGS if f in flags) or "none of " + ", ".join(FLAGS)
    return f"{model}; {os.cpu_count()} cores; flags: {found}"


def rotated_rounds(names, count):
    """``(round, name)`` for each of ``names`` in each of ``count`` rounds, round ``r``
    starting at the ``r``-th name: on a machine whose speed drifts, no system always runs
    first or last, and keeping each one's fastest round evens the drift out.

        >>> list(rotated_rounds(["a", "b"], 2))
        [(0, 'a'), (0, 'b'), (1, 'b'), (1, 'a')]
    """
    for r in range(count):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            yield r, name


def random_124m(root=CACHE):
    """``root``, holding ``root/124M``: a random GPT-2 124M in OpenAI's layout (about 500
    MB; random weights run as fast as real ones), made on first use and kept. Needs the
    real GPT-2 vocabulary (``$GPT2_VOCAB_DIR``, default ``../shared/gpt2-vocab``)."""
    folder = os.path.join(root, "124M")
    if os.path.isfile(os.path.join(folder, "model.ckpt.index")):
        return root
    if not os.path.isfile(os.path.join(VOCAB_DIR, "encoder.json")):
        sys.exit(f"GPT-2 vocabulary not found in {VOCAB_DIR}: set GPT2_VOCAB_DIR.")
    print(f"making a random 124M checkpoint in {folder} ...", flush=True)
    sys.path.append(REPO)  # after $PYTHONPATH: a checkout named there is the one measured
    from gpt2_simple_plus.checkpoints import save_pretrained_layout
    from gpt2_simple_plus.hparams import hparams_for
    from gpt2_simple_plus.model import random_weights

    hparams = hparams_for("124M")
    save_pretrained_layout(folder, random_weights(hparams, seed=0), hparams, vocab_from=VOCAB_DIR)
    with open(os.path.join(folder, "model.ckpt.meta"), "wb"):
        pass  # OpenAI ships one; neither package reads it
    return root

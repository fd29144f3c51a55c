"""What every benchmark shares: the CPU it ran on, printed first (a figure from one CPU
kind does not carry to another) with the instruction-set flags that decide which kernels
run, and the order in which it runs its systems round after round."""

import os
import platform

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

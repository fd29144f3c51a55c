"""What every benchmark prints first: the CPU it ran on (a figure from one CPU kind does
not carry to another) and the instruction-set flags that decide which kernels run."""

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

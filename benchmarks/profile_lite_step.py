"""Where the LiteRT step's time goes (``load_gpt2(quantize="int8")`` and
``load_gpt2(runtime="litert")``): one converted decoding step of a random 124M
model, timed on its own (no sampling, no Python around it) at a few batch sizes and
key/value cache lengths.

    python benchmarks/profile_lite_step.py                  # int8, batch 1 and 8
    python benchmarks/profile_lite_step.py --mode float32 --batch 8
    python benchmarks/profile_lite_step.py --model 355M --mode float32 --batch 1 --lengths 32
    perf record -g python benchmarks/profile_lite_step.py --batch 8 --runs 300
    perf report --no-children --sort symbol                 # XNNPACK's kernels by name

The step's attention reads the whole cache allocated for a window (see
``gpt2_simple_plus/lite.py``), so its time grows with the allocated length whatever
the text's: the growth per position, printed at the end of each batch's row, is that
attention's cost, and the shortest length's time is roughly the matrix products
alone. Under ``perf``, the products are XNNPACK's ``gemm`` kernels and the attention
its ``vmul``/``vmulc`` (the broadcast multiplies) and ``rsum``/``rdsum`` kernels.

It also prints what the one-off conversion took: seconds, and its peak resident memory
above the process's just before, as a multiple of the float32 weights' bytes (what
``lite.CONVERSION_MEMORY`` holds ``load_gpt2`` to). ``--model`` picks a bigger shape
(random weights; 355M needs about 12 GB to convert to float32, 1558M about 14 GB to
make its random weights and convert them to int8).
"""

import argparse
import gc
import statistics
import sys
import time

from machine import REPO
from machine import cpu_description


def step_times(lite, batch, length, runs):
    """Seconds of ``runs`` invocations of ``lite``'s step at ``batch`` rows and
    ``length`` cache positions, every position before the last one seen."""
    import numpy as np

    lite._allocate(batch, length)  # the interpreter the decode loop would run
    it = lite._interpreter
    it.set_tensor(lite._tokens, np.ones((batch, 1), np.int32))
    it.set_tensor(lite._pos, np.asarray(length - 1, np.int32))
    it.set_tensor(lite._pad, np.zeros(batch, np.int32))
    it.invoke()
    it.invoke()  # a new shape's first call plans its memory
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - start)
    return times


def resident_bytes(field="VmRSS"):
    """This process's resident memory now, or with ``field="VmHWM"`` its peak (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def reset_peak():
    """Starts this process's peak resident memory afresh (Linux): making random weights
    takes more memory for a moment than converting them may."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="int8", choices=("int8", "float32"),
                        help='int8 weights (quantize="int8", the default) or float32 ones '
                             '(runtime="litert")')
    parser.add_argument("--model", default="124M", choices=("124M", "355M", "774M", "1558M"),
                        help="GPT-2 shape, random weights (default %(default)s)")
    parser.add_argument("--batch", type=int, action="append",
                        help="batch size (repeatable; default 1 and 8)")
    parser.add_argument("--lengths", default="32,160,512",
                        help="cache lengths allocated, comma-separated (default %(default)s; "
                             "160 is what benchmarks/generate.py's 128 tokens allocate)")
    parser.add_argument("--runs", type=int, default=30, help="timed steps per shape")
    args = parser.parse_args(argv)
    lengths = sorted(int(n) for n in args.lengths.split(","))
    sys.path.insert(0, REPO)
    from gpt2_simple_plus.hparams import hparams_for
    from gpt2_simple_plus.lite import LiteModel, convert_step, float32_bytes
    from gpt2_simple_plus.model import GPT2

    model = GPT2(hparams_for(args.model), seed=0)
    print(f"{cpu_description()}\n{args.model} step on LiteRT with {args.mode} weights; "
          "converting ...", flush=True)
    weights = float32_bytes(model)
    gc.collect()
    reset_peak()
    before, start = resident_bytes(), time.perf_counter()
    step = convert_step(model, quantize=args.mode == "int8")
    peak = resident_bytes("VmHWM")
    print(f"conversion: {time.perf_counter() - start:.0f} s, a {len(step) / 1e9:.2f} GB file; "
          f"peak {peak / 2**30:.1f} GiB, {(peak - before) / weights:.1f} times the "
          f"{weights / 2**30:.2f} GiB of float32 weights above the {before / 2**30:.1f} GiB "
          "before", flush=True)
    lite = LiteModel(model, step)
    print(f"ms per step (median of {args.runs}; best in brackets)")
    for batch in args.batch or [1, 8]:
        medians, cells = [], []
        for length in lengths:
            times = step_times(lite, batch, length, args.runs)
            medians.append(statistics.median(times) * 1e3)
            cells.append(f"{length} positions {medians[-1]:6.2f} ({min(times) * 1e3:.2f})")
        slope = ""
        if len(lengths) > 1:
            per = (medians[-1] - medians[0]) / (lengths[-1] - lengths[0])
            slope = f"; attention over the cache: {per * 1e3:.1f} us per allocated position"
        print(f"batch {batch}: " + ", ".join(cells) + slope, flush=True)


if __name__ == "__main__":
    main()

"""Which model can I generate with, and how fast? Each GPT-2 size loaded from a checkpoint
and generating, float32 (the default) against ``quantize="int8"``, with each process's
peak memory.

    python benchmarks/generate_sizes.py                      # 1558M, both modes
    python benchmarks/generate_sizes.py --sizes 355M,774M --length 64

Random checkpoints are made once into ~/.cache/gpt2_simple_plus_bench/<size>
($GPT2_BENCH_CACHE; see ``benchmarks/memory.py``). Every mode runs in its own process:
``load_gpt2`` (for int8 the first load converts the checkpoint for LiteRT and keeps the
file beside it, so the first int8 run of a size is timed with its conversion and a
second one without), then two ``generate`` calls of ``--length`` tokens per batch size
after a 2-token prompt, the first of which compiles. Tokens per second come from the
second call; the peak is the process's ``ru_maxrss``, read by the parent with ``wait4``.
``benchmarks/generate.py`` measures 124M against the other packages; this shows the
sizes they cannot hold.
"""

import argparse
import json
import os
import sys
import time

from machine import cpu_description
from memory import GB, REPO, make_checkpoint, run_python

SCRIPT = """
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, {repo!r})
import gpt2_simple_plus as gpt2
sess = gpt2.start_tf_sess()
gpt2.load_gpt2(sess, model_name={size!r}, model_dir={root!r}, **{options!r})
result = {{"load_s": time.perf_counter() - start, "tokens_per_s": {{}}}}
for batch in {batches!r}:
    for call in range(2):
        t = time.perf_counter()
        gpt2.generate(sess, prefix="Hello world", length={length}, nsamples=batch,
                      batch_size=batch, temperature=0.7, return_as_list=True)
    result["tokens_per_s"][batch] = batch * {length} / (time.perf_counter() - t)
print("RESULT " + json.dumps(result))
"""

MODES = {"float32": {}, "int8": {"quantize": "int8"}}


def run(size, mode, batches, length):
    """One process: ``{"load_s", "tokens_per_s": {batch: ...}, "converted", "peak_gb"}``,
    or None when it failed."""
    folder = make_checkpoint(size)
    code = SCRIPT.format(repo=REPO, size=size, root=os.path.dirname(folder),
                         options=MODES[mode], batches=batches, length=length)
    returncode, stdout, stderr, peak = run_python(code)
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if returncode or not lines:
        sys.stderr.write(f"{size} {mode} failed:\n{stdout[-1000:]}\n{stderr[-3000:]}\n")
        return None
    result = json.loads(lines[-1][len("RESULT "):])
    result["converted"] = "Converting" in stdout
    result["peak_gb"] = peak / GB
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1558M", help="comma-separated (default %(default)s)")
    parser.add_argument("--modes", default="float32,int8",
                        help="comma-separated, of float32 and int8 (default %(default)s)")
    parser.add_argument("--batch", type=int, action="append",
                        help="batch size (repeatable; default 1 and 8)")
    parser.add_argument("--length", type=int, default=32, help="new tokens per call")
    args = parser.parse_args(argv)
    batches = args.batch or [1, 8]
    print(cpu_description(), flush=True)
    print(f"{args.length} new tokens after a 2-token prompt; tokens/s of the second call")
    print(f"| size | mode | load (s) | {' | '.join(f'batch {b} tokens/s' for b in batches)} "
          "| peak memory (GB) |")
    for size in args.sizes.split(","):
        rows = {}
        for mode in args.modes.split(","):
            start = time.perf_counter()
            result = run(size, mode, batches, args.length)
            if result is None:
                continue
            rows[mode] = result
            note = " (converted)" if result["converted"] else ""
            speeds = " | ".join(f"{result['tokens_per_s'][str(b)]:.1f}" for b in batches)
            print(f"| {size} | {mode}{note} | {result['load_s']:.0f} | {speeds} | "
                  f"{result['peak_gb']:.1f} |  ({time.perf_counter() - start:.0f} s)", flush=True)
        if {"float32", "int8"} <= set(rows):
            speed = {mode: rows[mode]["tokens_per_s"] for mode in ("float32", "int8")}
            ratios = ", ".join(f"batch {b} {speed['int8'][str(b)] / speed['float32'][str(b)]:.2f}x"
                               for b in batches)
            print(f"{size}: int8 against float32: {ratios}")


if __name__ == "__main__":
    main()

"""Where a generation step's time goes: TensorFlow's profiler over one ``generate``
call of the random 124M checkpoint, per batch size, split into the matrix products
(the largest one on its own: the head, ``h · wteᵀ``) and everything else.

    python benchmarks/profile_generate.py                 # batch 1 and 8, float32
    python benchmarks/profile_generate.py --batch 8 --compute_dtype bfloat16

``benchmarks/generate.py`` says how fast; this says why. The products' read rate
(the weights' bytes over the products' time) is the figure to hold against the
machine's memory bandwidth at batch 1, and the products' GFLOP/s at batch 8.
The times are XLA's own per-kernel events, summed over the threads that ran them,
so on a busy machine they may add up to a little more than the step's wall time.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

from generate import NEW_TOKENS, PROMPT, TEMPERATURE
from machine import VOCAB_DIR, cpu_description, random_124m

# Events that wrap others (the executor, waiting on the pool) or mark an async op's end.
WRAPPERS = ("ThunkExecutor::Execute", "SlinkyThreadPool::Await")
PRODUCT = re.compile(r"^(dot|MatMul|BatchMatMul|einsum|ynn_fusion|xnn_fusion)", re.I)


def kernel_times(logdir):
    """``{name: total ms}`` of XLA's per-kernel events in the profile under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if "Eigen" not in line.name:  # XLA's kernels run on the intra-op pool's threads
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name not in WRAPPERS and not name.startswith("end: "):
                    totals[name] += event.duration_ps / 1e9
    return totals


def profile(sess, batch, length):
    """Wall seconds of one profiled ``generate`` call and its kernels' ``{name: ms}``."""
    import tensorflow as tf

    import gpt2_simple_plus as gpt2

    def run():
        gpt2.generate(sess, prefix=PROMPT, length=length, temperature=TEMPERATURE,
                      nsamples=batch, batch_size=batch, return_as_list=True)

    run()  # compiles this batch size's loop
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        return wall, kernel_times(logdir)


def report(batch, length, wall, totals, weight_bytes, params):
    steps = length  # one model step per new token
    products = {n: t for n, t in totals.items() if PRODUCT.match(n)}
    largest = max(products, key=products.get)
    in_products = sum(products.values())
    rest = sum(totals.values()) - in_products
    per = lambda ms: ms / steps  # noqa: E731
    print(f"batch {batch}: {wall / steps * 1e3:.1f} ms per step (wall), "
          f"{per(sum(totals.values())):.1f} ms in XLA's kernels")
    print(f"  matrix products   {per(in_products):6.1f} ms  "
          f"weights read at {weight_bytes / 1e9 / (per(in_products) / 1e3):.1f} GB/s, "
          f"{2 * params * batch / 1e9 / (per(in_products) / 1e3):.0f} GFLOP/s")
    print(f"    of which {largest:14} {per(products[largest]):6.1f} ms  (the largest: the head)")
    print(f"  everything else   {per(rest):6.1f} ms  (attention over the cache, LayerNorm, "
          f"sampling, cache writes)")
    others = collections.Counter({n: t for n, t in totals.items() if n not in products})
    for name, ms in others.most_common(3):
        print(f"    {name:30} {per(ms):6.2f} ms")
    print(f"  outside XLA's kernels {wall / steps * 1e3 - per(sum(totals.values())):4.1f} ms  "
          f"(the prompt's pass, Python, the profiler itself)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, action="append",
                        help="batch size to profile (repeatable; default 1 and 8)")
    parser.add_argument("--length", type=int, default=NEW_TOKENS,
                        help="new tokens per generation (default %(default)s)")
    parser.add_argument("--compute_dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(VOCAB_DIR, "encoder.json")):
        sys.exit(f"GPT-2 vocabulary not found in {VOCAB_DIR}: set GPT2_VOCAB_DIR.")
    import gpt2_simple_plus as gpt2

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_124m(tmp)
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, model_name="124M", model_dir=model_dir,
                       compute_dtype=args.compute_dtype)
        weights = [*sess.model.layer_matrices().values(), sess.model.weights["model/wte"]]
        params = sum(v.shape.num_elements() for v in weights)
        weight_bytes = sum(v.shape.num_elements() * v.dtype.size for v in weights)
        print(f"{cpu_description()}\n124M, compute_dtype={args.compute_dtype}, {args.length} new "
              f"tokens after a 2-token prompt; {weight_bytes / 1e9:.2f} GB of weight matrices "
              f"read per step\n")
        for batch in args.batch or [1, 8]:
            wall, totals = profile(sess, batch, args.length)
            report(batch, args.length, wall, totals, weight_bytes, params)


if __name__ == "__main__":
    main()

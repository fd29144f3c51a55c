r"""Process start to the first text: what a new user's first script does (import, ``load_gpt2``
on GPT-2 124M, 128 new tokens after "Hello world" at batch 1), timed from outside, so that
importing TensorFlow and every compilation count.

    farm-bench -n 8 --timeout 900 \
        --vs "env PYTHONPATH=<other checkout> python benchmarks/first_text.py" \
        -- python benchmarks/first_text.py

runs it alternating with another checkout of the package (the pairs cancel this machine's
drift; quote the median ratio). Alone, it prints the seconds since it started. The model
is a random GPT-2 124M kept in ``~/.cache/gpt2_simple_plus_bench`` (``$GPT2_BENCH_CACHE``;
made on first use: let ``farm-bench``'s warm-up run make it). ``benchmarks/generate.py``
measures the same time for this package and its peers, one run each.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402 -- after START: the script's own start counts
import os  # noqa: E402

from machine import random_124m  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=128, help="new tokens (default %(default)s)")
    parser.add_argument("--prefix", default="Hello world", help="the prompt (default %(default)r)")
    args = parser.parse_args(argv)
    model_dir = random_124m()

    import gpt2_simple_plus as gpt2

    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name="124M", model_dir=model_dir)
    text = gpt2.generate(sess, prefix=args.prefix, length=args.length, temperature=0.7,
                         return_as_list=True)[0]
    print(f"{time.perf_counter() - START:.2f} s to {len(text)} characters of text "
          f"({gpt2.__file__})", flush=True)
    os._exit(0)  # the text is out; TensorFlow's teardown after it is not its time


if __name__ == "__main__":
    main()

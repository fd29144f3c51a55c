"""Which model fits my machine? Peak memory of fine-tuning 124M to 1558M, against gpt-2-simple.

    GPT2_VOCAB_DIR=../shared/gpt2-vocab python benchmarks/memory.py
    python benchmarks/memory.py --only adafactor-774M --steps 2
    python benchmarks/memory.py --sizes 124M,355M      # only the configurations of these sizes
    python benchmarks/memory.py --only full-124M,lora-124M --steps 4 --rounds 3  # speed, shared CPU

Random checkpoints of each size (GPT-2's initialisation, the real vocabulary, OpenAI's
layout) are made once into ~/.cache/gpt2_simple_plus_bench/<size> ($GPT2_BENCH_CACHE),
one tensor at a time in TensorFlow, so making 1558M (6.2 GB) needs about its own size in
RAM. Every configuration trains batch 1 x 1,024 tokens for a few steps (no gradient
accumulation, no samples) in its own subprocess, so each peak resident memory
(``ru_maxrss`` of that process, read by the parent with ``wait4``) is that
configuration's alone. Seconds per step come from the ``[step | seconds]`` lines both
packages print, the first step (tracing) excluded.

Peak RSS stands in for accelerator memory on a CPU machine (Colab's free machine has
12.7 GB of RAM and a 15 GB T4). Before each configuration its estimate
(``gpt2_simple_plus.memory``) is compared with the RAM available; one that would not fit
with ``--margin`` GB to spare (2 by default) is skipped, not run into the kernel's
out-of-memory killer.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time

from machine import CACHE, REPO, cpu_description, rotated_rounds
from machine import VOCAB_DIR as VOCAB

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
LINE = re.compile(r"^\[(\d+) \| ([\d.]+)\] loss=([\d.]+|nan) avg=")
GB = 2 ** 30

PLUS = """
import sys
sys.path.insert(0, {repo!r})
import gpt2_simple_plus as gpt2
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "data.txt", model_name={size!r}, model_dir={cache!r}, steps={steps},
              batch_size=1, accumulate_gradients=1, sample_every=0, save_every=0, print_every=1,
              run_name={name!r}, seed=0, {extra})
"""

GPT2_SIMPLE = """
import gpt_2_simple as gpt2
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "data.txt", model_name={size!r}, model_dir={cache!r}, steps={steps},
              batch_size=1, accumulate_gradients=1, sample_every=10**9, save_every=10**9,
              print_every=1, run_name={name!r}, {extra})
"""

LORA = "lora_rank=16, use_memory_saving_gradients=True, lora_base_dtype='bfloat16'"

# name -> (size, description, template, finetune's extra arguments, needs LoRA,
#          settings for the memory estimate)
CONFIGS = {
    "lora-1558M": ("1558M", "gpt2_simple_plus LoRA r=16 (attn+MLP), msg, bf16 base", PLUS,
                   LORA, True, dict(lora_rank=16, use_memory_saving_gradients=True,
                                    lora_base_dtype="bfloat16")),
    "adafactor-774M": ("774M", "gpt2_simple_plus Adafactor, msg", PLUS,
                       "optimizer='adafactor', use_memory_saving_gradients=True", False,
                       dict(optimizer="adafactor", use_memory_saving_gradients=True)),
    "adam-msg-774M": ("774M", "gpt2_simple_plus Adam, msg", PLUS,
                      "use_memory_saving_gradients=True", False,
                      dict(use_memory_saving_gradients=True)),
    "simple-774M": ("774M", "gpt-2-simple 0.8.1 Adam", GPT2_SIMPLE, "", False, {}),
    "simple-msg-774M": ("774M", "gpt-2-simple 0.8.1 Adam, msg", GPT2_SIMPLE,
                        "use_memory_saving_gradients=True", False,
                        dict(use_memory_saving_gradients=True)),
    "adam-355M": ("355M", "gpt2_simple_plus Adam (defaults)", PLUS, "", False, {}),
    "simple-355M": ("355M", "gpt-2-simple 0.8.1 Adam", GPT2_SIMPLE, "", False, {}),
    "simple-msg-355M": ("355M", "gpt-2-simple 0.8.1 Adam, msg", GPT2_SIMPLE,
                        "use_memory_saving_gradients=True", False,
                        dict(use_memory_saving_gradients=True)),
    "full-124M": ("124M", "gpt2_simple_plus Adam, float32", PLUS, "", False, {}),
    "lora-124M": ("124M", "gpt2_simple_plus LoRA r=16 (attn+MLP), float32", PLUS,
                  "lora_rank=16", True, dict(lora_rank=16)),
}
DEFAULT = ["full-124M", "lora-124M", "adam-355M", "simple-355M", "simple-msg-355M",
           "adafactor-774M", "simple-msg-774M", "simple-774M", "lora-1558M"]


def lora_available():
    """Whether this package's finetune takes lora_rank= yet."""
    sys.path.insert(0, REPO)
    import inspect

    from gpt2_simple_plus.training import finetune

    return "lora_rank" in inspect.signature(finetune).parameters


def make_checkpoint(size):
    """``CACHE/<size>``: a random GPT-2 of ``size`` in OpenAI's layout, made once.

    Each tensor is drawn by TensorFlow (no NumPy copy), so the peak is about the model's size."""
    folder = os.path.join(CACHE, size)
    if os.path.isfile(os.path.join(folder, "model.ckpt.index")):
        return folder
    print(f"making a random {size} checkpoint in {folder} (once) ...", file=sys.stderr, flush=True)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {REPO!r})
        import tensorflow as tf
        from gpt2_simple_plus.checkpoints import save_pretrained_layout
        from gpt2_simple_plus.encoder import get_encoder
        from gpt2_simple_plus.hparams import hparams_for
        from gpt2_simple_plus.model import variable_shapes
        hp = hparams_for({size!r}, n_vocab=get_encoder({VOCAB!r}).n_vocab)
        weights = {{}}
        for i, (name, shape) in enumerate(variable_shapes(hp).items()):
            leaf = name.rsplit("/", 1)[1]
            if leaf in ("g", "b"):
                weights[name] = tf.fill(shape, 1.0 if leaf == "g" else 0.0)
            else:
                std = 0.01 if name == "model/wpe" else 0.02
                weights[name] = tf.random.stateless_normal(shape, seed=[0, i], stddev=std)
        save_pretrained_layout({folder!r}, weights, hp, vocab_from={VOCAB!r})
    """)
    subprocess.run([sys.executable, "-c", code], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return folder


def write_data(folder):
    import random

    words = ("the of and to in a is that for it as was with be by on not he I this are or his "
             "from at which but have an had they you were their one all we can her has there "
             "been if more when will would who so no time people year way day man thing woman "
             "life child world school state family student group country problem hand part "
             "place case week company system program question work government number night "
             "point home water room mother area money story fact month lot right study book"
             ).split()
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(words) for _ in range(80)) + "." for _ in range(600))
    with open(os.path.join(folder, "data.txt"), "w") as f:
        f.write(text)


def available_bytes():
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


# gpt-2-simple's peak against this package's at 124M (README's fine-tuning table: 7.7 GB
# against 4.4), to guess whether a gpt-2-simple configuration fits before running it.
SIMPLE_FACTOR = 1.75


def estimated_bytes(name):
    """A configuration's expected peak RSS: the package's estimate plus TensorFlow itself."""
    sys.path.insert(0, REPO)
    from gpt2_simple_plus.hparams import hparams_for
    from gpt2_simple_plus.memory import Settings, estimate

    size, _, template, _, _, settings = CONFIGS[name]
    need = estimate(Settings(hparams_for(size), model_name=size, **settings)).total + 0.7 * GB
    return need * (SIMPLE_FACTOR if template is GPT2_SIMPLE else 1.0)


def run_python(code, *, cwd=None, logs=None):
    """Runs ``code`` in a Python process of its own, TensorFlow's logs quiet: its exit
    code, standard output and error, and peak resident memory in bytes (its
    ``ru_maxrss``, read with ``wait4``, so the figure is that process's alone). The
    output goes to ``logs`` + ``.out`` and ``.err`` when given (kept to read later),
    else to temporary files."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")

    def log(suffix):
        return open(logs + suffix, "w+") if logs else tempfile.TemporaryFile("w+")

    with log(".out") as out, log(".err") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=env, stdout=out,
                                stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return os.waitstatus_to_exitcode(status), stdout, stderr, usage.ru_maxrss * 1024  # KB on Linux


def run(name, folder, steps):
    size, title, template, extra, _, _ = CONFIGS[name]
    code = textwrap.dedent(template).format(repo=REPO, size=size, cache=CACHE, steps=steps,
                                            name=name, extra=extra)
    start = time.time()
    returncode, stdout, stderr, peak = run_python(code, cwd=folder,
                                                  logs=os.path.join(folder, name))
    times = {int(m.group(1)): float(m.group(2))
             for m in map(LINE.match, stdout.splitlines()) if m}
    result = {"name": name, "size": size, "title": title, "peak_gb": peak / GB,
              "sec_per_step": None, "wall_s": time.time() - start, "status": "ok"}
    if "not implemented for Tensorflow 2" in stdout:  # gpt-2-simple's own message
        result["status"] = "not available (gpt-2-simple: not on TF 2)"
        return result
    if returncode or len(times) < 2:
        sys.stderr.write(f"{name} failed (exit {returncode}):\n{stdout[-1500:]}\n"
                         f"{stderr[-3000:]}\n")
        result["status"] = f"failed (exit {returncode})"
        return result
    first, last = min(times), max(times)
    result["sec_per_step"] = (times[last] - times[first]) / (last - first)
    return result


def best_of(runs):
    """One configuration's result over its rounds: the fastest seconds per step, the
    highest peak; a failed or skipped round's status if no round ran."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return runs[-1]
    best = dict(min(ok, key=lambda r: r["sec_per_step"]))
    best["peak_gb"] = max(r["peak_gb"] for r in ok)
    best["rounds"] = [round(r["sec_per_step"], 2) for r in ok]
    return best


def verdicts(results):
    """Each target of issue 13: (target, figure, met?)."""
    r = {x["name"]: x for x in results if x["status"] == "ok"}
    out = []

    def peak_at_most(name, limit):
        if name in r:
            out.append((f"{name}: peak <= {limit} GB", f"{r[name]['peak_gb']:.2f} GB",
                        r[name]["peak_gb"] <= limit))
        else:
            out.append((f"{name}: peak <= {limit} GB", "not measured", None))

    peak_at_most("lora-1558M", 8)
    peak_at_most("adafactor-774M", 8)
    if "adam-355M" in r and "simple-355M" in r:
        ratio = r["adam-355M"]["peak_gb"] / r["simple-355M"]["peak_gb"]
        out.append(("adam-355M peak <= 0.6x simple-355M", f"{ratio:.2f}x", ratio <= 0.6))
    else:
        out.append(("adam-355M peak <= 0.6x simple-355M", "not measured", None))
    if "lora-124M" in r and "full-124M" in r:
        speed = r["full-124M"]["sec_per_step"] / r["lora-124M"]["sec_per_step"]
        out.append(("lora-124M >= 1.3x faster than full-124M", f"{speed:.2f}x", speed >= 1.3))
    else:
        out.append(("lora-124M >= 1.3x faster than full-124M", "not measured", None))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated configurations: " + ", ".join(CONFIGS))
    parser.add_argument("--sizes", help="comma-separated sizes (124M,355M,774M,1558M)")
    parser.add_argument("--steps", type=int, default=3,
                        help="training steps per configuration (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the configurations this many times, taking turns, and keep "
                             "each one's fastest round (and its highest peak): on a shared "
                             "machine, a burst of other work then slows only one round")
    parser.add_argument("--margin", type=float, default=2.0,
                        help="GB of RAM to leave free: a configuration whose estimate does not "
                             "fit with this much to spare is skipped")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else DEFAULT
    for n in names:
        if n not in CONFIGS:
            parser.error(f"unknown configuration {n!r}; choose from {', '.join(CONFIGS)}")
    if args.sizes:
        names = [n for n in names if CONFIGS[n][0] in args.sizes.split(",")]
    if not os.path.isfile(os.path.join(VOCAB, "encoder.json")):
        sys.exit(f"The GPT-2 vocabulary is not at {VOCAB}: set GPT2_VOCAB_DIR.")
    has_lora = lora_available()

    rounds = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        write_data(folder)
        for i, n in rotated_rounds(names, args.rounds):
            size, title, _, _, needs_lora, settings = CONFIGS[n]
            if needs_lora and not has_lora:
                rounds[n].append({"name": n, "size": size, "title": title, "status":
                                  "not available yet (finetune has no lora_rank)"})
                continue
            make_checkpoint(size)
            need, have = estimated_bytes(n), available_bytes()
            if have is not None and need + args.margin * GB > have:
                rounds[n].append({"name": n, "size": size, "title": title, "status":
                                  f"skipped: needs about {need / GB:.0f} GB, "
                                  f"{have / GB:.0f} GB available"})
                continue
            print(f"running {n} (round {i + 1} of {args.rounds}) ...", file=sys.stderr,
                  flush=True)
            r = run(n, folder, args.steps + 1)
            print(f"  {r['status']}, {r['sec_per_step'] and round(r['sec_per_step'], 2)} "
                  f"s/step, peak {r['peak_gb']:.2f} GB", file=sys.stderr, flush=True)
            rounds[n].append(r)
    results = [best_of(rounds[n]) for n in names]

    print(f"\nCPU: {cpu_description()}; batch 1 x 1024 tokens, "
          f"accumulate 1; {args.steps} timed steps after 1 untimed"
          f"{f', best of {args.rounds} rounds (the highest peak)' if args.rounds > 1 else ''}; "
          f"peak RSS of each process (GB = 2**30 bytes)\n")
    print(f"| {'configuration':16} | {'what':52} | peak RSS GB | s/step |")
    print(f"|{'-' * 18}|{'-' * 54}|------------:|-------:|")
    for r in results:
        if r["status"] == "ok":
            peak, speed = f"{r['peak_gb']:.2f}", f"{r['sec_per_step']:.1f}"
        else:
            peak, speed = r["status"], "-"
        print(f"| {r['name']:16} | {r['title']:52} | {peak:>11} | {speed:>6} |")
    for r in results:
        if len(r.get("rounds", ())) > 1:
            print(f"{r['name']}: seconds per step in each round {r['rounds']}")
    ok = {r["name"]: r for r in results if r["status"] == "ok"}
    pairs = [("adam-355M", "simple-355M"), ("adam-355M", "simple-msg-355M"),
             ("adafactor-774M", "simple-msg-774M"), ("adafactor-774M", "simple-774M")]
    print()
    for a, b in pairs:
        if a in ok and b in ok:
            print(f"{a} / {b}: memory {ok[a]['peak_gb'] / ok[b]['peak_gb']:.2f}x, "
                  f"speed {ok[b]['sec_per_step'] / ok[a]['sec_per_step']:.2f}x")
    print()
    for target, figure, met in verdicts(results):
        mark = {True: "PASS", False: "NOT met", None: "-"}[met]
        print(f"{mark:8} {target}: {figure}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

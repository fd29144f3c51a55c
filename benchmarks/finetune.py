"""Fine-tuning speed and memory: gpt2_simple_plus against gpt-2-simple and Hugging Face.

    GPT2_VOCAB_DIR=../shared/gpt2-vocab python benchmarks/finetune.py
    python benchmarks/finetune.py --only plus-fp32,plus-bf16 --steps 5
    python benchmarks/finetune.py --rounds 2   # each system twice, its faster round kept

Every system trains the same random 124M-shaped GPT-2 (built with
``random_weights(hparams_for("124M"))`` into a temporary ``models/124M``) on the
same text, batch 1 of 1024 tokens, no gradient accumulation, Adam. Each runs in
its own subprocess, so each peak RSS (``ru_maxrss``) is that system's alone.
Seconds per step come from the ``[step | seconds]`` lines that gpt-2-simple and
this package both print (the Hugging Face loop prints the same line); the first
``--warmup`` steps (tracing, compiling, first touches of memory) are excluded.

The machine should be otherwise idle: the figures are CPU-bound.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap

from machine import cpu_description, rotated_rounds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.environ.get("GPT2_VOCAB_DIR", os.path.join(REPO, "..", "shared", "gpt2-vocab"))
LINE = re.compile(r"^\[(\d+) \| ([\d.]+)\] loss=([\d.]+|nan) avg=")

# Run first in every subprocess: notes the process's CPU time (all threads) when each
# step line is printed, so a busy machine can be told from a slow system.
PRELUDE = """
import json, sys, time
class _Stamps:
    def __init__(self, out):
        self.out, self.cpu = out, []
    def write(self, s):
        if "] loss=" in s:
            self.cpu.append(time.process_time())
        return self.out.write(s)
    def __getattr__(self, name):
        return getattr(self.out, name)
sys.stdout = _Stamps(sys.stdout)
"""
EPILOGUE = """
print("CPU_TIMES", json.dumps(sys.stdout.cpu))
"""

# name -> (description, code run in the subprocess). {steps} is warm-up + measured.
PLUS = """
import resource, sys
sys.path.insert(0, {repo!r})
import gpt2_simple_plus as gpt2
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "data.txt", model_name="124M", steps={steps}, batch_size=1,
              accumulate_gradients=1, sample_every=0, save_every=0, print_every=1,
              optimizer="adam", run_name="plus", seed=0, {extra})
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

GPT2_SIMPLE = """
import resource
import gpt_2_simple as gpt2
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "data.txt", model_name="124M", steps={steps}, batch_size=1,
              accumulate_gradients=1, sample_every=10**9, save_every=10**9, print_every=1,
              optimizer="adam", run_name="simple")
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

HUGGING_FACE = """
import resource, time
import numpy as np, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_positions=1024, n_embd=768, n_layer=12, n_head=12))
model.train()
opt = torch.optim.{optimizer}(model.parameters(), lr=1e-4)
tokens = np.load("tokens.npy")
rng = np.random.default_rng(0)
start = time.time()
for step in range(1, {steps} + 1):
    i = rng.integers(0, len(tokens) - 1024)
    x = torch.from_numpy(tokens[None, i:i + 1024].astype(np.int64))
    loss = model(x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    print("[%d | %.2f] loss=%.2f avg=0" % (step, time.time() - start, loss.item()), flush=True)
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

SYSTEMS = {
    "plus-fp32": ("gpt2_simple_plus float32", PLUS, {"extra": "precision='float32'"}),
    "plus-fp32-xla": ("gpt2_simple_plus float32, XLA", PLUS,
                      {"extra": "precision='float32', jit_compile=True"}),
    "plus-fp32-noxla": ("gpt2_simple_plus float32, no XLA", PLUS,
                        {"extra": "precision='float32', jit_compile=False"}),
    "plus-bf16": ("gpt2_simple_plus bfloat16", PLUS, {"extra": "precision='bfloat16'"}),
    "plus-bf16-xla": ("gpt2_simple_plus bfloat16, XLA", PLUS,
                      {"extra": "precision='bfloat16', jit_compile=True"}),
    "plus-bf16-noxla": ("gpt2_simple_plus bfloat16, no XLA", PLUS,
                        {"extra": "precision='bfloat16', jit_compile=False"}),
    "plus-fp32-msg": ("gpt2_simple_plus float32, memory-saving gradients", PLUS,
                      {"extra": "precision='float32', use_memory_saving_gradients=True"}),
    "gpt-2-simple": ("gpt-2-simple 0.8.1 (TF graph mode)", GPT2_SIMPLE, {}),
    "hf-adamw": ("transformers GPT2LMHeadModel, PyTorch CPU, AdamW", HUGGING_FACE,
                 {"optimizer": "AdamW"}),
}
DEFAULT = ["plus-fp32", "plus-bf16", "plus-fp32-msg", "plus-fp32-xla", "gpt-2-simple", "hf-adamw"]


def make_workspace(folder):
    """models/124M (random weights, real vocabulary), data.txt, and its tokens for the HF loop."""
    sys.path.insert(0, REPO)
    import numpy as np

    from gpt2_simple_plus.checkpoints import save_pretrained_layout
    from gpt2_simple_plus.encoder import get_encoder
    from gpt2_simple_plus.hparams import hparams_for
    from gpt2_simple_plus.model import random_weights

    hp = hparams_for("124M")
    save_pretrained_layout(os.path.join(folder, "models", "124M"), random_weights(hp, seed=0),
                           hp, vocab_from=VOCAB)
    words = ("the of and to in a is that for it as was with be by on not he I this are or his "
             "from at which but have an had they you were their one all we can her has there "
             "been if more when will would who so no time people year way day man thing woman "
             "life child world school state family student group country problem hand part "
             "place case week company system program question work government number night "
             "point home water room mother area money story fact month lot right study book "
             "eye job word business issue side kind head house service friend father power").split()
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(words, size=80)) + "." for _ in range(1500))
    with open(os.path.join(folder, "data.txt"), "w") as f:
        f.write(text)
    np.save(os.path.join(folder, "tokens.npy"),
            np.array(get_encoder(VOCAB).encode(text), np.int32))


def run(name, folder, steps, warmup, threads):
    title, template, fmt = SYSTEMS[name]
    code = PRELUDE + textwrap.dedent(template).format(repo=REPO, steps=steps, **fmt) + EPILOGUE
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env,
                          capture_output=True, text=True)
    times, order, cpu = {}, [], []
    peak = None
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m:
            times[int(m.group(1))] = float(m.group(2))
            order.append(int(m.group(1)))
        elif line.startswith("PEAK_RSS_KB"):
            peak = int(line.split()[1]) / 1024
        elif line.startswith("CPU_TIMES"):
            cpu = json.loads(line.split(" ", 1)[1])
    cpu_at = dict(zip(order, cpu))
    first = min(times) if times else 0
    if proc.returncode or len(times) <= warmup + 1:
        sys.stderr.write(f"{name} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}\n")
        return {"name": name, "title": title, "sec_per_step": None, "cpu_sec_per_step": None,
                "peak_mb": peak}
    a, b = first + warmup, max(times)
    cpu_per_step = (cpu_at[b] - cpu_at[a]) / (b - a) if a in cpu_at and b in cpu_at else None
    return {"name": name, "title": title, "sec_per_step": (times[b] - times[a]) / (b - a),
            "cpu_sec_per_step": cpu_per_step, "peak_mb": peak, "steps_measured": b - a}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated systems: " + ", ".join(SYSTEMS))
    parser.add_argument("--steps", type=int, default=6, help="measured steps per system")
    parser.add_argument("--warmup", type=int, default=3, help="steps excluded at the start")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every system this many times, in a rotated order each round, "
                             "and keep each one's fastest round (evens out a machine whose "
                             "speed drifts); peak memory is the largest of the rounds")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else DEFAULT
    for n in names:
        if n not in SYSTEMS:
            parser.error(f"unknown system {n!r}; choose from {', '.join(SYSTEMS)}")
    if not os.path.isfile(os.path.join(VOCAB, "encoder.json")):
        sys.exit(f"The GPT-2 vocabulary is not at {VOCAB}: set GPT2_VOCAB_DIR.")

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as folder:
        make_workspace(folder)
        best, peaks = {}, {}
        for round_, n in rotated_rounds(names, args.rounds):
            print(f"running {n} (round {round_ + 1}/{args.rounds}) ...", file=sys.stderr,
                  flush=True)
            r = run(n, folder, args.warmup + args.steps + 1, args.warmup, args.threads)
            print(f"  {r['sec_per_step'] and round(r['sec_per_step'], 2)} s/step, "
                  f"peak {r['peak_mb'] and round(r['peak_mb'])} MB", file=sys.stderr,
                  flush=True)
            speed = r["sec_per_step"] or float("inf")
            if n not in best or speed < (best[n]["sec_per_step"] or float("inf")):
                best[n] = r
            peaks.setdefault(n, []).append(r["peak_mb"] or 0)
        results = [dict(best[n], peak_mb=max(peaks[n]) or None) for n in names]

    base = next((r for r in results if r["name"] == "gpt-2-simple" and r["sec_per_step"]), None)
    print(f"\n{cpu_description()}\n124M, batch 1 x 1024 tokens, Adam, accumulate 1; "
          f"seconds per step over {args.steps} steps after {args.warmup} warm-up steps"
          f"{f', fastest of {args.rounds} rounds' if args.rounds > 1 else ''}; "
          f"CPU s/step is the process's CPU time (all threads) per step\n")
    print(f"| {'system':52} | s/step | speed vs gpt-2-simple | CPU s/step | peak RSS MB "
          f"| memory vs gpt-2-simple |")
    print(f"|{'-' * 54}|-------:|----------------------:|-----------:|------------:"
          f"|-----------------------:|")

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    for r in results:
        s, c, m = r["sec_per_step"], r["cpu_sec_per_step"], r["peak_mb"]
        speed = f"{base['sec_per_step'] / s:.2f}x" if base and s else "-"
        mem = f"{m / base['peak_mb']:.2f}x" if base and m and base["peak_mb"] else "-"
        print(f"| {r['title']:52} | {fmt(s, '6.2f'):>6} | {speed:>21} | {fmt(c, '10.2f'):>10} "
              f"| {fmt(m, '11.0f'):>11} | {mem:>22} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

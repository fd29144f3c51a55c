"""Serving under load: 32 concurrent clients x 4 requests of 64 new tokens against one
``gpt2_simple_plus serve`` on 127.0.0.1, against the same 128 requests sent one at a time.

    python benchmarks/serve.py                       # ~10 minutes on 2 cores
    python benchmarks/serve.py --clients 8 --requests 2 --sequential 8   # a quick look

The server runs in its own process (the command line, as a user starts it) on a random
GPT-2 124M-shaped checkpoint kept in ``~/.cache/gpt2_simple_plus_bench/124M`` (made on
first use, about 500 MB; needs the real GPT-2 vocabulary, ``$GPT2_VOCAB_DIR``, default
``../shared/gpt2-vocab``). Clients speak plain HTTP from threads of this process.

Every response is checked: HTTP 200, an OpenAI completion object with one choice, a
``finish_reason`` of ``length`` (64 tokens) or ``stop`` (``<|endoftext|>``), usage that
adds up. Printed: throughput (new tokens per second of wall time), p50/p95 latency per
request, the batch sizes the server ran (from ``/health``), the ratio of concurrent to
one-at-a-time throughput (the target is 3x: batching is real) and the CPU model.
Nothing leaves the machine; the run is bounded by the counts above and ``--timeout``.
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from machine import cpu_description, random_124m

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROMPTS = ["The history of the city begins", "Once upon a time, in a small village",
           "The results of the experiment show", "In the morning the market was",
           "She opened the letter and read", "The committee met on Tuesday to",
           "Scientists have long wondered why", "The recipe calls for two cups of"]
TARGET = 3.0


def start_server(model_dir, max_batch, timeout):
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("GPT2_SIMPLE_PLUS_API_KEY", None)
    log = tempfile.TemporaryFile(mode="w+")  # TensorFlow's start-up notes, shown on failure
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2_simple_plus", "serve", "--model_name", "124M",
         "--model_dir", model_dir, "--port", "0", "--max_batch", str(max_batch),
         "--max_queue", "256"], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + timeout
    for line in proc.stdout:
        if line.startswith("Serving"):
            return proc, line.split(" at ")[1].split(" ")[0]
        if time.time() > deadline:
            break
    proc.kill()
    log.seek(0)
    sys.exit(f"the server did not start (exit status {proc.wait()}):\n{log.read()[-2000:]}")


def complete(url, prompt, tokens, timeout):
    """One request; returns (seconds, new tokens), after checking the answer is whole."""
    body = json.dumps({"model": "124M", "prompt": prompt, "max_tokens": tokens,
                       "temperature": 0.7}).encode()
    request = urllib.request.Request(url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status, answer = response.status, json.load(response)
    seconds = time.perf_counter() - start
    assert status == 200, answer
    assert answer["object"] == "text_completion" and answer["model"] == "124M", answer
    [choice] = answer["choices"]
    usage = answer["usage"]
    assert isinstance(choice["text"], str) and choice["index"] == 0, answer
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], answer
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == tokens, answer
    else:
        assert choice["finish_reason"] == "stop" and usage["completion_tokens"] <= tokens, answer
    return seconds, usage["completion_tokens"]


def run(url, jobs, clients, timeout):
    """``jobs`` (prompt, tokens) sent by ``clients`` threads; (wall seconds, latencies, tokens)."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda job: complete(url, *job, timeout), jobs))
    wall = time.perf_counter() - start
    return wall, [r[0] for r in results], sum(r[1] for r in results)


def health(url):
    with urllib.request.urlopen(url + "/health", timeout=30) as response:
        return json.load(response)


def report(name, wall, latencies, tokens):
    latencies = sorted(latencies)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    print(f"{name:28} {len(latencies):5d} {tokens:7d} {wall:9.1f} {tokens / wall:9.1f} "
          f"{statistics.median(latencies):8.2f} {p95:8.2f}")
    return tokens / wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--sequential", type=int,
                        help="requests sent one at a time (default: all of them)")
    parser.add_argument("--timeout", type=float, default=1200,
                        help="seconds any one request may take (it fails beyond)")
    args = parser.parse_args(argv)
    total = args.clients * args.requests
    jobs = [(PROMPTS[i % len(PROMPTS)] + f" (request {i})", args.tokens) for i in range(total)]
    model_dir = random_124m()
    proc, url = start_server(model_dir, max_batch=args.clients, timeout=args.timeout)
    try:
        print(f"server at {url}; warming up (compiling each batch size once) ...", flush=True)
        start = time.perf_counter()
        size = 1
        while size <= args.clients:  # a burst per power of two, so each batch shape exists
            run(url, jobs[:size], size, args.timeout)
            size *= 2
        if size // 2 != args.clients:
            run(url, jobs[:args.clients], args.clients, args.timeout)
        print(f"warm-up took {time.perf_counter() - start:.0f} s; compiled batches: "
              f"{health(url)['batches']}", flush=True)
        before = health(url)["batches"]
        concurrent_run = run(url, jobs, args.clients, args.timeout)
        after = health(url)["batches"]
        batches = {int(k): v - before.get(k, 0) for k, v in after.items()
                   if v - before.get(k, 0)}
        sequential_jobs = jobs[:args.sequential] if args.sequential else jobs
        sequential_run = run(url, sequential_jobs, 1, args.timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"\n{cpu_description()}; random GPT-2 124M; {args.tokens} new "
          f"tokens per request, temperature 0.7; every response checked complete\n")
    print(f"{'how':28} {'reqs':>5} {'tokens':>7} {'wall s':>9} {'tok/s':>9} {'p50 s':>8} "
          f"{'p95 s':>8}")
    ours = report(f"{args.clients} clients x {args.requests}", *concurrent_run)
    alone = report("one at a time", *sequential_run)
    print(f"\nbatch sizes the server ran under load (rows: batches): "
          f"{dict(sorted(batches.items()))}")
    ratio = ours / alone
    print(f"concurrent throughput is {ratio:.2f}x one at a time; target {TARGET}x: "
          f"{'met' if ratio >= TARGET else 'NOT met'}")


if __name__ == "__main__":
    main()

"""How fast gpt2_simple_plus encodes text, next to its peers, in one run.

    python benchmarks/encode.py [--mb 5] [--stream-mb 64] [--vocab DIR]

The corpus is built offline and deterministically: the text of Python's
``pydoc_data/topics.py`` then the standard library's ``.py`` files in sorted
order, up to ``--mb`` megabytes of UTF-8. Every peer encodes the same text with
GPT-2's vocabulary (``$GPT2_VOCAB_DIR``, default ``../shared/gpt2-vocab``) and
must produce the same ids. Peers:

* gpt2_simple_plus ``encode`` with the default backend (tiktoken when it may)
* tiktoken's own "gpt2" Encoding, built from the same two files
* Hugging Face ``tokenizers`` ByteLevel BPE from the same files (if installed)
* gpt2_simple_plus with ``backend="python"`` (a fresh encoder, cold cache)
* OpenAI's original ``encoder.py``, as shipped by gpt-2-simple (fresh, cold cache)

The package and tiktoken are timed in turns, best of 5; the others once. Last, ``encode_file``
streams a ``--stream-mb`` file (the corpus repeated) in a child process, which
reports its peak resident memory (Linux: VmHWM): it stays near the encoder's own size however
large the file.
"""

import argparse
import glob
import importlib.util
import json
import os
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time
from unittest import mock

from machine import cpu_description

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from gpt2_simple_plus.encoder import Encoder, get_encoder  # noqa: E402

DEFAULT_VOCAB = os.environ.get("GPT2_VOCAB_DIR", os.path.join(REPO, "..", "shared", "gpt2-vocab"))


def build_corpus(megabytes):
    """pydoc topics, then stdlib sources in sorted order, cut at ``megabytes`` of UTF-8."""
    import pydoc_data.topics

    limit = int(megabytes * 1e6)
    parts = ["\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))]
    size = len(parts[0].encode("utf-8"))
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if size >= limit:
            break
        if "site-packages" in path:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        parts.append(text)
        size += len(text.encode("utf-8"))
    return "".join(parts).encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def tiktoken_gpt2(vocab_dir):
    """tiktoken's own gpt2 Encoding, from local files (tiktoken_ext.openai_public.gpt2)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext import openai_public

    with mock.patch.dict(os.environ, {"TIKTOKEN_CACHE_DIR": ""}):
        ranks = data_gym_to_mergeable_bpe_ranks(os.path.join(vocab_dir, "vocab.bpe"),
                                                os.path.join(vocab_dir, "encoder.json"))
    return tiktoken.Encoding(name="gpt2", pat_str=openai_public.r50k_pat_str,
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256},
                             explicit_n_vocab=50257)


def hf_tokenizer(vocab_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    with open(os.path.join(vocab_dir, "encoder.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(vocab_dir, "vocab.bpe"), encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:] if line]
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def openai_encoder(vocab_dir):
    """OpenAI's encoder.py from gpt-2-simple's files, loaded by path (no TensorFlow)."""
    spec = importlib.util.find_spec("gpt_2_simple")
    path = os.path.join(spec.submodule_search_locations[0], "src", "encoder.py")
    module_spec = importlib.util.spec_from_file_location("_openai_gpt2_encoder", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_encoder(vocab_dir)


def measure(peers, text):
    """Best time and ids per peer. Peers with several repeats are timed in turns
    (a, b, a, b ...) so a neighbour's load on a shared machine hits them alike."""
    best, ids = {}, {}
    rounds = max(repeats for _, _, repeats in peers)
    for round_ in range(rounds):
        for name, encode, repeats in peers:
            if round_ >= repeats:
                continue
            start = time.perf_counter()
            result = encode(text)
            seconds = time.perf_counter() - start
            best[name] = min(best.get(name, float("inf")), seconds)
            ids[name] = list(result)
    return best, ids


STREAM_CHILD = r"""
import sys, time
sys.path.insert(0, {repo!r})
from gpt2_simple_plus.encoder import get_encoder

def memory(field):  # MB; VmHWM is the peak of this process since it started
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024

enc = get_encoder({vocab!r})
enc.encode("warm up " * 1000)
baseline = memory("VmHWM:")
start, tokens, chunks = time.perf_counter(), 0, 0
with open({out!r}, "wb") as out:
    for ids in enc.encode_file({path!r}):
        out.write(ids.tobytes())
        tokens += len(ids)
        chunks += 1
seconds = time.perf_counter() - start
print(tokens, chunks, seconds, baseline, memory("VmHWM:"))
"""


def stream_benchmark(corpus, megabytes, vocab_dir):
    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "big.txt"), os.path.join(tmp, "big.tokens")
        data = corpus.encode("utf-8")
        with open(path, "wb") as f:
            written = 0
            while written < megabytes * 1e6:
                f.write(data)
                written += len(data)
        code = STREAM_CHILD.format(repo=REPO, vocab=vocab_dir, path=path, out=out)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True)
        tokens, chunks, seconds, baseline, peak = result.stdout.split()
        return written, int(tokens), int(chunks), float(seconds), float(baseline), float(peak)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=5.0, help="corpus size in MB (default 5)")
    parser.add_argument("--stream-mb", type=float, default=64.0,
                        help="size of the file streamed by encode_file (default 64; 0 skips)")
    parser.add_argument("--vocab", default=DEFAULT_VOCAB,
                        help="folder with encoder.json and vocab.bpe (default $GPT2_VOCAB_DIR "
                             "or ../shared/gpt2-vocab)")
    args = parser.parse_args()
    if not all(os.path.isfile(os.path.join(args.vocab, f)) for f in ("encoder.json", "vocab.bpe")):
        sys.exit(f"No GPT-2 vocabulary in {args.vocab}: pass --vocab or set GPT2_VOCAB_DIR.")

    corpus = build_corpus(args.mb)
    mb = len(corpus.encode("utf-8")) / 1e6
    print(f"machine: {cpu_description()}; Python {platform.python_version()}")
    print(f"corpus: {mb:.2f} MB ({len(corpus):,} characters) of pydoc topics and stdlib sources")

    package = get_encoder(args.vocab)
    merges = list(package.bpe_ranks)
    peers = [(f"gpt2_simple_plus encode (auto: {package.backend})", package.encode, 5)]
    peers.append(("tiktoken gpt2, built from the files", tiktoken_gpt2(args.vocab).encode_ordinary, 5))
    try:
        hf = hf_tokenizer(args.vocab)
        peers.append(("HF tokenizers ByteLevel BPE",
                      lambda text: hf.encode(text, add_special_tokens=False).ids, 1))
    except ImportError:
        pass
    python = Encoder(package.encoder, merges, backend="python")
    peers.append(("gpt2_simple_plus backend='python'", python.encode, 1))
    try:
        peers.append(("OpenAI encoder.py (gpt-2-simple)", openai_encoder(args.vocab).encode, 1))
    except (AttributeError, TypeError, FileNotFoundError):
        print("(gpt-2-simple not installed: OpenAI's encoder.py skipped)")

    print(f"\n{'peer':<42} {'runs':>4} {'seconds':>8} {'MB/s':>8} {'tokens':>10}  same ids")
    best, ids = measure(peers, corpus)
    reference = ids[peers[0][0]]
    speeds = {}
    for name, _, repeats in peers:
        speeds[name] = mb / best[name]
        print(f"{name:<42} {repeats:>4} {best[name]:>8.3f} {speeds[name]:>8.2f} "
              f"{len(ids[name]):>10,}  {'yes' if ids[name] == reference else 'NO'}")

    names = list(speeds)
    package_speed, tiktoken_speed = speeds[names[0]], speeds[names[1]]
    print(f"\npackage/tiktoken = {package_speed / tiktoken_speed:.2f} (target >= 0.9)")
    openai = [n for n in names if n.startswith("OpenAI")]
    if openai:
        ratio = speeds["gpt2_simple_plus backend='python'"] / speeds[openai[0]]
        print(f"python backend/OpenAI original = {ratio:.2f} (target >= 2.0)")

    if args.stream_mb > 0:
        size, tokens, chunks, seconds, baseline, peak = stream_benchmark(
            corpus, args.stream_mb, args.vocab)
        print(f"\nencode_file on a {size / 1e6:.0f} MB file: {tokens:,} tokens in {chunks} chunks, "
              f"{seconds:.1f} s ({size / 1e6 / seconds:.1f} MB/s); peak RSS {peak:.0f} MB "
              f"(after loading the encoder: {baseline:.0f} MB)")


if __name__ == "__main__":
    main()

"""What the tests share: tiny vocabularies and models, fake models, loopback servers,
subprocess runners. No test file imports another; they all import this."""

import contextlib
import csv
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
import types

import numpy as np
import tensorflow as tf

from gpt2_simple_plus import _examples
from gpt2_simple_plus.encoder import bytes_to_unicode  # noqa: F401 (the interop tests use it)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2_VOCAB_DIR = os.environ.get(
    "GPT2_VOCAB_DIR", os.path.join(REPO, "..", "shared", "gpt2-vocab"))


def real_vocab_dir():
    """The real GPT-2 vocabulary folder, or None when ../shared is absent."""
    ok = all(os.path.isfile(os.path.join(GPT2_VOCAB_DIR, f)) for f in ("encoder.json", "vocab.bpe"))
    return GPT2_VOCAB_DIR if ok else None


# The tiny vocabulary and the random model folders come from the package's own
# example fixtures, so the docstring examples and the tests build them one way.
TINY_MERGES = _examples.TINY_MERGES
make_tiny_vocab = _examples.make_tiny_vocab
make_model_dir = _examples.make_model_dir


def run_python(code, *, cwd, timeout=600, env=None):
    """Run ``code`` in a fresh Python process; returns CompletedProcess (text)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def openai_encoder_module():
    """OpenAI's original encoder.py from gpt-2-simple's files, loaded by path only
    (``import gpt_2_simple`` would switch TensorFlow out of eager mode)."""
    import pytest

    spec = importlib.util.find_spec("gpt_2_simple")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gpt-2-simple is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "src", "encoder.py")
    module_spec = importlib.util.spec_from_file_location("_openai_gpt2_encoder", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def decisive_weights(hparams, seed, scale=8.0):
    """GPT-2's random init made sharper: matrices scaled by ``scale`` and random
    LayerNorm parameters, so logits spread over several units and greedy picks
    are clear (the plain init makes greedy decoding repeat one token)."""
    import numpy as np

    from gpt2_simple_plus.model import random_weights

    rng = np.random.default_rng(seed)
    weights = random_weights(hparams, seed)
    for name, value in weights.items():
        if name.endswith("/g"):
            weights[name] = (1 + 0.1 * rng.standard_normal(value.shape)).astype(np.float32)
        elif name.endswith("/b"):
            weights[name] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
        else:
            weights[name] = value * np.float32(scale)
    return weights


# ---------------------------------------------------------------------------
# Subprocess runners

def run_cli(*args, cwd, env=None, module=True, timeout=300):
    """``python -m gpt2_simple_plus args`` (or the console script) with the user's environment:
    no TF_CPP_MIN_LOG_LEVEL, so the command line's own quieting is what is tested."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("TF_CPP_MIN_LOG_LEVEL", "GPT2_SIMPLE_PLUS_BASE_URL")}
    full_env.update(PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost", **(env or {}))
    command = [sys.executable, "-m", "gpt2_simple_plus"] if module else [
        os.path.join(os.path.dirname(sys.executable), "gpt2_simple_plus")]
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(result, *fragments):
    """The command failed with exit status 2 and exactly one ``error: ...`` line
    holding every fragment."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------
# Loopback HTTP servers

HTML = b"<!DOCTYPE html><html><body>Please sign in</body></html>"  # a login page


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(folder):
    """A static file server on 127.0.0.1 for ``folder``; yields its address."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class FileServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``files`` (``{url path: bytes}``) with
    ``Range``/``If-Range`` support, ETags and HEAD.

    ``inject(path, *faults)`` queues faults, each used up by one request to ``path``:
    ``("status", code)``, ``("drop", n)`` (send n body bytes then hang up),
    ``("length", n)`` (announce Content-Length n, send the real body), ``("html",)``
    (200 with an HTML page), ``("sleep", s)`` (wait before answering),
    ``("ignore_range",)`` (answer 200 with the whole file).
    ``log`` holds ``[method, path, Range header, status]`` per request, in arrival order.
    """

    def __init__(self, files):
        self.files = dict(files)
        self.faults = {}
        self.log = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server._handle(self, body=True)

            def do_HEAD(self):
                server._handle(self, body=False)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def inject(self, path, *faults):
        with self.lock:
            self.faults.setdefault(path, []).extend(faults)

    def bodies(self, path=None):
        """GET requests answered with a body (200/206), optionally for one path."""
        return [e for e in self.log
                if e[0] == "GET" and e[3] in (200, 206) and (path is None or e[1] == path)]

    def _handle(self, h, body):
        with self.lock:
            queue = self.faults.get(h.path)
            fault = queue.pop(0) if queue else ("none",)
        entry = [h.command, h.path, h.headers.get("Range"), None]  # status filled in below
        with self.lock:
            self.log.append(entry)
        try:
            entry[3] = self._respond(h, fault, body)
        except (BrokenPipeError, ConnectionResetError):
            entry[3] = "hung up"

    def _send_simple(self, h, status, data, ctype, body, extra=()):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            h.send_header(k, v)
        h.end_headers()
        if body:
            h.wfile.write(data)
        return status

    def _respond(self, h, fault, body):
        kind = fault[0]
        if kind == "sleep":
            time.sleep(fault[1])
        if kind == "status":
            return self._send_simple(h, fault[1], b"error", "text/plain", body)
        data = self.files.get(h.path)
        if data is None:
            return self._send_simple(h, 404, b"no such file", "text/plain", body)
        if kind == "html":
            return self._send_simple(h, 200, HTML, "text/html; charset=utf-8", body)
        etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
        start, status = 0, 200
        rng = h.headers.get("Range")
        if rng and kind != "ignore_range" and h.headers.get("If-Range") in (None, etag):
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                return self._send_simple(h, 416, b"", "text/plain", body,
                                         [("Content-Range", f"bytes */{len(data)}")])
            status = 206
        chunk = data[start:]
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(fault[1] if kind == "length" else len(chunk)))
        h.send_header("ETag", etag)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if body:
            h.wfile.write(chunk[:fault[1]] if kind == "drop" else chunk)
            h.wfile.flush()
        return status


# ---------------------------------------------------------------------------
# A fake model for the decode loop, and gpt-2-simple's sampling rules in NumPy
# (gpt_2_simple/src/sample.py)

from gpt2_simple_plus.sampling import NEG_INF  # noqa: E402 (gpt-2-simple's masked logit)


class FakeModel(tf.Module):
    """A "model" whose next token is ``ids[(p + 1) % len(ids)]`` for a token at
    position ``p`` (counted from the first real token of the row, as GPT-2's
    positions are): its logits are ``base + score * one_hot(that token)``.

    With a large ``score`` it spells ``ids`` at any temperature; with
    ``score=0`` it draws from ``softmax(base)`` at every step. ``calls``
    counts the forward passes that really ran (one per prefill, one per
    decode step), also inside compiled loops.
    """

    def __init__(self, ids, n_vocab, *, n_ctx=64, score=1e4, base=None):
        super().__init__()
        self.hparams = types.SimpleNamespace(n_ctx=n_ctx, n_vocab=n_vocab, n_layer=0, n_embd=0)
        self.ids = tf.constant(ids, tf.int32)
        self.score = float(score)
        self.base = tf.constant(np.zeros(n_vocab) if base is None else base, tf.float32)
        self.calls = tf.Variable(0, dtype=tf.int32, trainable=False)

    def empty_cache(self, batch, length):
        return tf.zeros([batch, length], tf.int32)  # carried through the loop, never read

    def forward(self, tokens, *, cache=None, pos=0, pad=None):
        self.calls.assign_add(1)
        tokens = tf.convert_to_tensor(tokens, tf.int32)
        p = tf.range(tf.shape(tokens)[1])[None, :] + tf.cast(pos, tf.int32)
        if pad is not None:
            p = tf.maximum(p - tf.cast(pad, tf.int32)[:, None], 0)
        following = tf.gather(self.ids, (p + 1) % self.ids.shape[0])
        depth = self.base.shape[0]
        return self.base + self.score * tf.one_hot(following, depth), cache

    def logits(self, h):
        return h


def calls_during(model, fn):
    before = int(model.calls.numpy())
    result = fn()
    return result, int(model.calls.numpy()) - before


def np_top_k(logits, k):
    if k == 0:
        return logits
    kth = -np.sort(-logits, axis=-1)[:, k - 1:k]
    return np.where(logits < kth, NEG_INF, logits)


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_exclusive_cumsum_sorted(logits):
    probs = np_softmax(-np.sort(-logits.astype(np.float64), axis=-1))
    return np.cumsum(probs, axis=-1) - probs


def np_top_p(logits, p):
    logits_sort = -np.sort(-logits, axis=-1)
    probs_sums = np_exclusive_cumsum_sorted(logits)
    logits_masked = np.where(probs_sums < p, logits_sort, 1000.0)
    min_logits = logits_masked.min(axis=-1, keepdims=True)
    return np.where(logits < min_logits, NEG_INF, logits)


def assert_same_nucleus(ours, theirs, logits, p):
    """Two top-p results agree, except on a row whose cut falls at a token
    whose cumulative sum is within rounding (1e-6) of ``p``."""
    cums = np_exclusive_cumsum_sorted(logits)
    for row in np.nonzero((ours != theirs).any(axis=-1))[0]:
        for result in (ours, theirs):
            cutoff = logits[row][result[row] > NEG_INF].min()
            rank = int((logits[row] > cutoff).sum())
            near = [abs(cums[row, r] - p) < 1e-6 for r in (rank, rank + 1) if r < cums.shape[1]]
            assert any(near), f"row {row}: nuclei differ away from p={p}"
    if p <= 0.99:  # near 1 the long tail puts many tokens within rounding of p
        assert (ours != theirs).any(axis=-1).sum() <= 1


def np_repetition_penalty(logits, seen, penalty):
    """Hugging Face's RepetitionPenaltyLogitsProcessor."""
    return np.where(seen, np.where(logits < 0, logits * penalty, logits / penalty), logits)


def assert_frequencies(draws, probs, n_vocab):
    """Empirical frequencies within 5 standard errors of ``probs`` (plus 0.002)."""
    freq = np.bincount(np.asarray(draws).ravel(), minlength=n_vocab) / np.size(draws)
    tolerance = 5 * np.sqrt(probs * (1 - probs) / np.size(draws)) + 2e-3
    assert (np.abs(freq - probs) <= tolerance).all(), (freq.round(4), probs.round(4))
    return freq


# ---------------------------------------------------------------------------
# Hugging Face repositories, written by hand

def hf_tensors(hp, *, prefix="transformer.", seed=0):
    """Random GPT-2 tensors under Hugging Face's names (written out by hand, independently of
    the converter), with the mask buffers and the tied lm_head that real checkpoints carry."""
    rng = np.random.default_rng(seed)
    e = hp.n_embd

    def rand(*shape, mean=0.0):
        return (mean + 0.1 * rng.standard_normal(shape)).astype(np.float32)

    t = {prefix + "wte.weight": rand(hp.n_vocab, e), prefix + "wpe.weight": rand(hp.n_ctx, e)}
    for i in range(hp.n_layer):
        p = f"{prefix}h.{i}."
        t.update({
            p + "ln_1.weight": rand(e, mean=1.0), p + "ln_1.bias": rand(e),
            p + "attn.c_attn.weight": rand(e, 3 * e), p + "attn.c_attn.bias": rand(3 * e),
            p + "attn.c_proj.weight": rand(e, e), p + "attn.c_proj.bias": rand(e),
            p + "ln_2.weight": rand(e, mean=1.0), p + "ln_2.bias": rand(e),
            p + "mlp.c_fc.weight": rand(e, 4 * e), p + "mlp.c_fc.bias": rand(4 * e),
            p + "mlp.c_proj.weight": rand(4 * e, e), p + "mlp.c_proj.bias": rand(e),
            p + "attn.bias": np.tril(np.ones((hp.n_ctx, hp.n_ctx), np.float32))[None, None],
            p + "attn.masked_bias": np.array(-1e4, np.float32),
        })
    t.update({prefix + "ln_f.weight": rand(e, mean=1.0), prefix + "ln_f.bias": rand(e)})
    t["lm_head.weight"] = t[prefix + "wte.weight"].copy()
    return t


def config_for(hp, **extra):
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
              "vocab_size": hp.n_vocab, "n_positions": hp.n_ctx, "n_ctx": hp.n_ctx,
              "n_embd": hp.n_embd, "n_head": hp.n_head, "n_layer": hp.n_layer,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    config.update(extra)
    return json.dumps(config).encode()


def repo_files(repo, files, revision="main"):
    return {f"/{repo}/resolve/{revision}/{name}": data for name, data in files.items()}


# ---------------------------------------------------------------------------
# Labelled texts for the classifier

FILLER = ("the a big small day was and we saw it very good old new red blue on in at of to my"
          .split())
KEYWORDS = {"apple": "fruit", "river": "water", "guitar": "music"}  # chance is 1 in 3


def keyword_texts(n, seed):
    """Texts of 4-9 words, one of which is a keyword; the label is the keyword's topic."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        keyword = rng.choice(sorted(KEYWORDS))
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), keyword)
        texts.append(" ".join(words))
        labels.append(KEYWORDS[keyword])
    return texts, labels


def write_csv(path, texts, labels, columns=("text", "label")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(texts, labels))
    return str(path)


def write_jsonl(path, texts, labels, columns=("text", "label")):
    with open(path, "w", encoding="utf-8") as f:
        for text, label in zip(texts, labels):
            f.write(json.dumps({columns[0]: text, columns[1]: label}) + "\n")
    return str(path)


# ---------------------------------------------------------------------------
# gpt-2-simple in a child process (importing it switches off eager execution)

PROMPT = [464, 2068, 7586, 21831, 18045, 625, 262]  # "The quick brown fox jumps over the"


TOKENS = PROMPT + [16931, 3290, 13, 50256, 0, 50255, 1212, 318, 257, 1332, 11, 290, 340, 2499]


def run_gpt2_simple(code, cwd, **args):
    """Run ``code`` with gpt-2-simple in a child process; ``ARGS`` holds ``args``.
    Returns the child's RESULT (parsed) and its stdout."""
    prelude = f"import json\nARGS = json.loads({json.dumps(args)!r})\n"
    proc = run_python(prelude + textwrap.dedent(code), cwd=str(cwd), timeout=300)
    assert proc.returncode == 0, (
        f"gpt-2-simple child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
        f"{proc.stderr[-4000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), proc.stdout
    raise AssertionError(f"no RESULT line in the child's output:\n{proc.stdout[-2000:]}")


FINETUNE = """
import numpy as np
import tensorflow as tf
import gpt_2_simple as gpt2
from gpt_2_simple.src import model

sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "data.txt", model_name="tiny", model_dir="models", steps=2, run_name="run1",
              checkpoint_dir="checkpoint", sample_every=1000, save_every=1000, print_every=1,
              accumulate_gradients=1, batch_size=1)
hparams = model.default_hparams()
with open("checkpoint/run1/hparams.json") as f:
    hparams.override_from_dict(json.load(f))
X = tf.compat.v1.placeholder(tf.int32, [1, None])
logits = model.model(hparams=hparams, X=X, reuse=True)["logits"]  # the trained variables
np.save("logits.npy", sess.run(logits, {X: [ARGS["tokens"]]}))
print("RESULT {}")
"""

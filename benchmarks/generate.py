"""Generation speed: gpt2_simple_plus against gpt-2-simple, Hugging Face transformers
(PyTorch, float32 and bfloat16 weights), CTranslate2 (float32 and int8 weights) and
keras-hub (TensorFlow, XLA), in one run on the same random 124M checkpoint.

    python benchmarks/generate.py            # all systems, ~15 minutes on 2 cores
    python benchmarks/generate.py --only gpt2_simple_plus --runs 2
    python benchmarks/generate.py --rounds 2   # each system twice, rotated, best kept
    python benchmarks/generate.py --length 1000 --only gpt2_simple_plus --only CTranslate2
    python benchmarks/generate.py --prompt_repeat 256 --only gpt2_simple_plus --only CTranslate2

The header names the CPU and the flags that decide which kernels run
(avx512f, avx512_bf16, amx_bf16, amx_int8): a figure from one CPU kind does
not carry to another. Two verdicts are printed: our float32 modes (the
default, XLA, and ``load_gpt2(runtime="litert")``) against the best float32
peer, and our fastest mode (``load_gpt2(quantize="int8")`` or
``compute_dtype="bfloat16"``) against every peer's fastest mode (CTranslate2
int8, transformers bfloat16).

Each system runs in its own subprocess (gpt-2-simple switches TensorFlow to
graph mode for the whole process) and reports tokens/s at batch 1 and batch 8
for 128 new tokens (``--length``) after a 2-token prompt ("Hello world";
``--prompt_repeat`` makes it longer), sampling at
temperature 0.7 with no top-k/top-p (gpt-2-simple's defaults), best of
``--runs`` after a warm-up call; plus the time from process start to the first
generated text (imports, loading, compiling, generating the tokens). One-off
conversions (CTranslate2's copy, our LiteRT copies) are made before the clock starts.

Where our step's time goes (matrix products, the head, everything else):
``python benchmarks/profile_generate.py``.

Needs the benchmark extras: ``pip install -e ".[bench]"`` and the real GPT-2
vocabulary (``$GPT2_VOCAB_DIR``, default ``../shared/gpt2-vocab``). CTranslate2
reads a converted copy of the same weights (``ct2-transformers-converter`` on a
transformers-saved copy; its OpenAI-checkpoint converter is broken in 4.8.5).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

from machine import VOCAB_DIR, cpu_description, random_124m, rotated_rounds

PROMPT, PROMPT_IDS, NEW_TOKENS, TEMPERATURE = "Hello world", [15496, 995], 128, 0.7
# " Hello world" once more per --prompt_repeat: " Hello" is 18435 in GPT-2's vocabulary
MORE, MORE_IDS = " Hello world", [18435, 995]


def prompt(repeat=1):
    """The prompt and its GPT-2 ids: "Hello world", ``repeat`` times over.

        >>> prompt(2)
        ('Hello world Hello world', [15496, 995, 18435, 995])
    """
    return PROMPT + MORE * (repeat - 1), PROMPT_IDS + MORE_IDS * (repeat - 1)


# Each script prints "FIRST" when its first text exists, then one JSON line of results.
COMMON = textwrap.dedent("""
    import json, os, sys, time
    MODEL_DIR, RUNS, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    (PROMPT, PROMPT_IDS), T = json.loads(sys.argv[4]), {t}
    def best(fn, batch):
        fn(batch)  # warm-up: compiles this batch's shapes
        times = []
        for _ in range(RUNS):
            start = time.perf_counter(); fn(batch); times.append(time.perf_counter() - start)
        return batch * N / min(times)
    def report(fn):
        print(json.dumps({{"b1": best(fn, 1), "b8": best(fn, 8)}}), flush=True)
""").format(t=TEMPERATURE)

PLUS = """
    import gpt2_simple_plus as gpt2
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name="124M", model_dir=MODEL_DIR, {options})
    def run(batch):
        texts = gpt2.generate(sess, prefix=PROMPT, length=N, temperature=T, nsamples=batch,
                              batch_size=batch, return_as_list=True)
        assert len(texts) == batch
    run(1); print("FIRST", flush=True)
    report(run)
"""

# Loads the checkpoint into a transformers GPT2LMHeadModel (a function, so converting
# for CTranslate2 can reuse it).
HF_LOAD = """
    def hf_model():
        import numpy as np, torch
        from transformers import GPT2Config, GPT2LMHeadModel
        import tensorflow as tf
        reader = tf.train.load_checkpoint(os.path.join(MODEL_DIR, "124M", "model.ckpt"))
        config = GPT2Config(n_embd=768, n_head=12, n_layer=12, n_positions=1024, vocab_size=50257)
        model = GPT2LMHeadModel(config).eval()
        names = {"wte": "transformer.wte.weight", "wpe": "transformer.wpe.weight",
                 "ln_f/g": "transformer.ln_f.weight", "ln_f/b": "transformer.ln_f.bias"}
        for i in range(12):
            for ours, theirs in [("ln_1/g", "ln_1.weight"), ("ln_1/b", "ln_1.bias"),
                                 ("ln_2/g", "ln_2.weight"), ("ln_2/b", "ln_2.bias"),
                                 ("attn/c_attn/w", "attn.c_attn.weight"), ("attn/c_attn/b", "attn.c_attn.bias"),
                                 ("attn/c_proj/w", "attn.c_proj.weight"), ("attn/c_proj/b", "attn.c_proj.bias"),
                                 ("mlp/c_fc/w", "mlp.c_fc.weight"), ("mlp/c_fc/b", "mlp.c_fc.bias"),
                                 ("mlp/c_proj/w", "mlp.c_proj.weight"), ("mlp/c_proj/b", "mlp.c_proj.bias")]:
                names[f"h{i}/{ours}"] = f"transformer.h.{i}.{theirs}"
        state = {theirs: torch.from_numpy(np.squeeze(reader.get_tensor("model/" + ours), 0)
                                          if ours.endswith("/w") else reader.get_tensor("model/" + ours))
                 for ours, theirs in names.items()}
        model.load_state_dict(state, strict=False)
        model.tie_weights()
        return model
"""

TRANSFORMERS = HF_LOAD + """
    import torch
    model = hf_model().to(torch.DTYPE)
    def run(batch):
        ids = torch.tensor([PROMPT_IDS] * batch)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 temperature=T, top_k=0, max_new_tokens=N, min_new_tokens=N,
                                 pad_token_id=50256)
        assert out.shape == (batch, len(PROMPT_IDS) + N)
    run(1); print("FIRST", flush=True)
    report(run)
"""

# The converted model is cached beside the checkpoint (made once per benchmark run,
# outside the timed part; the time to first text counts loading, not converting).
CTRANSLATE2 = HF_LOAD + """
    import shutil, subprocess, ctranslate2
    ct2_dir = os.path.join(MODEL_DIR, "ct2-124M")
    if not os.path.isdir(ct2_dir):
        hf_dir = os.path.join(MODEL_DIR, "hf-124M")
        hf_model().save_pretrained(hf_dir)
        vocab = os.path.join(MODEL_DIR, "124M")  # GPT-2's files under Hugging Face's names
        shutil.copyfile(os.path.join(vocab, "encoder.json"), os.path.join(hf_dir, "vocab.json"))
        shutil.copyfile(os.path.join(vocab, "vocab.bpe"), os.path.join(hf_dir, "merges.txt"))
        with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
            f.write('{"tokenizer_class": "GPT2Tokenizer"}')
        subprocess.run(["ct2-transformers-converter", "--model", hf_dir, "--output_dir",
                        ct2_dir], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(hf_dir)
        print("CONVERTED", flush=True)
    start = time.perf_counter()
    generator = ctranslate2.Generator(ct2_dir, device="cpu", compute_type="COMPUTE_TYPE",
                                      intra_threads=os.cpu_count())
    with open(os.path.join(MODEL_DIR, "124M", "encoder.json")) as f:
        spelled = {i: token for token, i in json.load(f).items()}
    tokens = [spelled[i] for i in PROMPT_IDS]
    def run(batch):
        out = generator.generate_batch([tokens] * batch, max_length=N, min_length=N,
                                       sampling_temperature=T, sampling_topk=0,
                                       include_prompt_in_result=False)
        assert len(out) == batch and len(out[0].sequences_ids[0]) == N
    run(1); print("FIRST", flush=True)
    report(run)
"""

# A LiteRT copy is made once per checkpoint (kept beside it), in a process of its own, so
# the first-text time is what every later run sees, as with CTranslate2's conversion.
PLUS_LITERT = """
    import glob, subprocess
    if not glob.glob(os.path.join(MODEL_DIR, "124M", "model.ckpt.KIND*.tflite")):
        subprocess.run([sys.executable, "-c", "import sys, gpt2_simple_plus as g; "
                        "g.load_gpt2(g.start_tf_sess(), model_name='124M', "
                        "model_dir=sys.argv[1], OPTIONS)", MODEL_DIR],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("CONVERTED", flush=True)
"""
PLUS_INT8 = PLUS_LITERT.replace("KIND", "int8").replace("OPTIONS", "quantize='int8'") + \
    PLUS.format(options='quantize="int8"')
PLUS_FLOAT32_LITERT = PLUS_LITERT.replace("KIND", "float32").replace(
    "OPTIONS", "runtime='litert'") + PLUS.format(options='runtime="litert"')

SCRIPTS = {
    "gpt2_simple_plus": PLUS.format(options='compute_dtype="float32"'),
    "gpt2_simple_plus bf16": PLUS.format(options='compute_dtype="bfloat16"'),
    "gpt2_simple_plus int8": PLUS_INT8,
    "gpt2_simple_plus litert": PLUS_FLOAT32_LITERT,
    "gpt-2-simple 0.8.1": """
        import gpt_2_simple as gpt2
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, model_name="124M", model_dir=MODEL_DIR)
        def run(batch):
            texts = gpt2.generate(sess, model_name="124M", model_dir=MODEL_DIR, prefix=PROMPT,
                                  length=N, temperature=T, nsamples=batch, batch_size=batch,
                                  return_as_list=True)
            assert len(texts) == batch
        run(1); print("FIRST", flush=True)
        report(run)
    """,
    "transformers (torch)": TRANSFORMERS.replace("DTYPE", "float32"),
    "transformers (torch) bf16": TRANSFORMERS.replace("DTYPE", "bfloat16"),
    "CTranslate2": CTRANSLATE2.replace("COMPUTE_TYPE", "float32"),
    "CTranslate2 int8": CTRANSLATE2.replace("COMPUTE_TYPE", "int8"),
    "keras-hub (TF, XLA)": """
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import numpy as np, keras_hub
        backbone = keras_hub.models.GPT2Backbone(vocabulary_size=50257, num_layers=12, num_heads=12,
                                                 hidden_dim=768, intermediate_dim=3072,
                                                 max_sequence_length=1024)
        import tensorflow as tf
        reader = tf.train.load_checkpoint(os.path.join(MODEL_DIR, "124M", "model.ckpt"))
        backbone.get_layer("token_embedding").embeddings.assign(reader.get_tensor("model/wte"))
        lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        lm.compile(sampler=keras_hub.samplers.RandomSampler(temperature=T))
        def run(batch):
            ids = np.zeros([batch, len(PROMPT_IDS) + N], "int32"); ids[:, :len(PROMPT_IDS)] = PROMPT_IDS
            mask = np.zeros_like(ids, bool); mask[:, :len(PROMPT_IDS)] = True
            out = lm.generate({"token_ids": ids, "padding_mask": mask}, stop_token_ids=None)
            assert out["token_ids"].shape == (batch, len(PROMPT_IDS) + N)
        run(1); print("FIRST", flush=True)
        report(run)
    """,
}


FLOAT32_PEERS = ("gpt-2-simple 0.8.1", "transformers (torch)", "CTranslate2", "keras-hub (TF, XLA)")
FASTEST_PEERS = ("transformers (torch) bf16", "CTranslate2 int8")


def measure(name, model_dir, runs, length=NEW_TOKENS, repeat=1):
    """Run one system's script; returns its results plus seconds to first text."""
    code = COMMON + textwrap.dedent(SCRIPTS[name])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, model_dir, str(runs), str(length),
                             json.dumps(prompt(repeat))],
                            cwd=model_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    first, result = None, None
    for line in proc.stdout:
        if line.startswith("CONVERTED"):  # a one-off conversion is not loading
            start = time.perf_counter()
        elif line.startswith("FIRST") and first is None:
            first = time.perf_counter() - start
        elif line.startswith("{"):
            result = json.loads(line)
    err = proc.stderr.read()
    proc.wait()
    if proc.returncode or result is None:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"}
    return dict(result, first=first)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per batch size (best kept)")
    parser.add_argument("--length", type=int, default=NEW_TOKENS,
                        help="new tokens per generation (default %(default)s); a long one "
                             "(e.g. 1000, near gpt-2-simple's default of 1023) is where "
                             "attention over the key/value cache weighs")
    parser.add_argument("--prompt_repeat", type=int, default=1,
                        help="the prompt is \"Hello world\" this many times over (default "
                             "%(default)s: 2 tokens; 256 is a 512-token prefix, where reading "
                             "the prompt weighs)")
    parser.add_argument("--only", action="append", choices=sorted(SCRIPTS),
                        help="measure only this system (repeatable)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every system this many times, in a rotated order each "
                             "round, keeping each one's best figures (evens out a machine whose "
                             "speed drifts)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(VOCAB_DIR, "encoder.json")):
        sys.exit(f"GPT-2 vocabulary not found in {VOCAB_DIR}: set GPT2_VOCAB_DIR.")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_124m(tmp)
        names = args.only or list(SCRIPTS)
        results = {}
        for round_, name in rotated_rounds(names, args.rounds):
            print(f"measuring {name} (round {round_ + 1}/{args.rounds}) ...", flush=True)
            r = measure(name, model_dir, args.runs, args.length, args.prompt_repeat)
            print(f"  {r}", flush=True)
            old = results.get(name)
            if old is None or "error" in old:
                results[name] = r
            elif "error" not in r:
                results[name] = {"b1": max(old["b1"], r["b1"]), "b8": max(old["b8"], r["b8"]),
                                 "first": min(old["first"], r["first"])}
        results = {name: results[name] for name in names}
    prompt_len = len(prompt(args.prompt_repeat)[1])
    print(f"\n{cpu_description()}\n{args.length} new tokens after a {prompt_len}-token "
          f"prompt, temperature {TEMPERATURE}; best of {args.runs} runs"
          f"{f' in each of {args.rounds} rounds' if args.rounds > 1 else ''}\n")
    print(f"{'system':28} {'batch 1 tok/s':>14} {'batch 8 tok/s':>14} {'first text s':>13}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:28} failed: {r['error']}")
        else:
            print(f"{name:28} {r['b1']:14.1f} {r['b8']:14.1f} {r['first']:13.1f}")
    print()
    verdicts(results)


def verdicts(results):
    """Ratios against the issue's targets: float32 against float32 peers, fastest against fastest."""
    ok = {n: r for n, r in results.items() if "error" not in r}
    ours = {n: r for n, r in ok.items() if n.startswith("gpt2_simple_plus")}
    fp32_peers = {n: r for n, r in ok.items() if n in FLOAT32_PEERS}
    fast_peers = {n: r for n, r in ok.items() if n in FASTEST_PEERS}
    default = ours.get("gpt2_simple_plus")
    for name, what in (("gpt2_simple_plus", "float32 (default)"),
                       ("gpt2_simple_plus litert", "float32 on LiteRT")):
        if name not in ours or not fp32_peers:
            continue
        for key, target in (("b1", 1.1), ("b8", 1.5)):
            best = max(fp32_peers, key=lambda n: fp32_peers[n][key])
            ratio = ours[name][key] / fp32_peers[best][key]
            print(f"{what}, batch {key[1]}: {ratio:.2f}x the best float32 peer ({best}); "
                  f"target {target}x: {'met' if ratio >= target else 'NOT met'}")
    if ours and fast_peers:
        for key in ("b1", "b8"):
            fastest = max(ours, key=lambda n: ours[n][key])
            for peer, target in (("CTranslate2 int8", 1.0), ("transformers (torch) bf16", 1.3)):
                if peer in fast_peers:
                    ratio = ours[fastest][key] / fast_peers[peer][key]
                    print(f"fastest mode, batch {key[1]}: {fastest} is {ratio:.2f}x {peer}; "
                          f"target {target}x: {'met' if ratio >= target else 'NOT met'}")
    for name, r in ok.items():
        if not name.startswith("gpt2_simple_plus") and default:
            print(f"  gpt2_simple_plus vs {name}: batch 1 {default['b1'] / r['b1']:.2f}x, "
                  f"batch 8 {default['b8'] / r['b8']:.2f}x")


if __name__ == "__main__":
    main()

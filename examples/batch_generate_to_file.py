"""Generate texts for several prompts at once and save them all to one file.

``prefix`` may be a list: sample i starts from prompt i (the list repeats when
``nsamples`` is larger). ``batch_size`` texts are made together, which is
much faster than one at a time, on a GPU especially.

    python examples/batch_generate_to_file.py                     # from checkpoint/run1
    python examples/batch_generate_to_file.py --model-name 124M   # from the downloaded model
    python examples/batch_generate_to_file.py --tiny              # short texts (seconds)
"""

import argparse

import gpt2_simple_plus as gpt2

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--run-name", default="run1", help="a fine-tuned run in checkpoint/")
parser.add_argument("--model-name", help="or a downloaded model, e.g. 124M")
parser.add_argument("--model-dir", default="models")
parser.add_argument("--out", default="generated.txt", help="the file to write")
parser.add_argument("--tiny", action="store_true", help="short texts")
args = parser.parse_args()

prompts = ["Once upon a time", "The weather today", "In the year 2050", "My favourite recipe"]

# Load once; every generate call after this reuses the loaded, compiled model.
sess = gpt2.start_tf_sess()
gpt2.load_gpt2(sess, run_name=args.run_name, model_name=args.model_name,
               model_dir=args.model_dir)

# Two texts per prompt, four made at a time, all into one file with a line of
# "=" between texts. seed=0 gives the same texts on every run.
gpt2.generate_to_file(sess, destination_path=args.out, prefix=prompts,
                      nsamples=2 * len(prompts), batch_size=len(prompts),
                      length=20 if args.tiny else 100, temperature=0.8, top_p=0.9, seed=0)

with open(args.out, encoding="utf-8") as f:
    content = f.read()
print(f"Wrote {2 * len(prompts)} texts to {args.out} ({len(content):,} characters):\n")
print(content[:600])

"""Fine-tune on a CSV of short texts, then generate whole, separate texts.

Each row of a one-column CSV becomes one training text wrapped as
``<|startoftext|>text<|endoftext|>``. After training, generating from the
prefix ``<|startoftext|>`` and cutting at ``<|endoftext|>`` gives complete
texts in the style of the rows, one per sample (gpt-2-simple's recipe).

    python examples/csv_dataset.py                       # writes a sample CSV first
    python examples/csv_dataset.py --csv my_titles.csv --steps 500
    python examples/csv_dataset.py --tiny                # a few steps (seconds)

Needs a downloaded model (``models/124M``, fetched here if missing).
"""

import argparse
import csv
import random

import gpt2_simple_plus as gpt2

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--csv", help="a CSV whose first column is the text (one header row)")
parser.add_argument("--model-name", default="124M")
parser.add_argument("--model-dir", default="models")
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--tiny", action="store_true", help="a few steps and short texts")
args = parser.parse_args()

# 1. A CSV to learn from: a header, then one text per row. Without --csv we write
#    made-up tips in the style of a cookbook.
path = args.csv
if path is None:
    path = "tips.csv"
    rng = random.Random(0)
    verbs = ["Toast", "Salt", "Rest", "Chill", "Taste", "Stir"]
    things = ["the spices", "the pasta water", "the dough", "your knife", "the sauce"]
    reasons = ["before you start", "for more flavour", "so it does not stick", "every time"]
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tip"])
        for _ in range(200):
            writer.writerow([f"{rng.choice(verbs)} {rng.choice(things)} {rng.choice(reasons)}."])

# 2. Wrap every row in start and end tokens: tips.csv -> csv_encoded.txt
gpt2.encode_csv(path, out_path="csv_encoded.txt")
print(open("csv_encoded.txt", encoding="utf-8").read()[:200])

# 3. Fine-tune on the wrapped texts (finetune also reads the .csv directly, wrapping
#    it the same way). run_name keeps this run apart from others.
gpt2.download_gpt2(model_dir=args.model_dir, model_name=args.model_name)
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "csv_encoded.txt", model_name=args.model_name, model_dir=args.model_dir,
              run_name="tips", steps=3 if args.tiny else args.steps,
              learning_rate=1e-4, accumulate_gradients=1,
              print_every=1 if args.tiny else 10, sample_every=0)

# 4. Generate whole texts: start each at <|startoftext|>, stop it at <|endoftext|>,
#    and leave the start token out of what is returned.
texts = gpt2.generate(sess, prefix="<|startoftext|>", truncate="<|endoftext|>",
                      include_prefix=False, nsamples=5, batch_size=5,
                      length=16 if args.tiny else 40, temperature=0.8, return_as_list=True)
for text in texts:
    print("-", text.strip())

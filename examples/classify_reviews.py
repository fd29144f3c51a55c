"""Predict a review's stars (1-5) with GPT-2: Hugging Face's Yelp five-star tutorial, offline.

The tutorial's steps, one for one:

1. a CSV of reviews with a ``text`` and a ``label`` column, split into train and test
   (given with ``--csv``; otherwise a small synthetic one is written first);
2. fine-tune GPT-2 with a classification head (``gpt2.finetune_classifier``),
   printing validation loss and accuracy as it goes;
3. classify the test reviews (``gpt2.classify``) and print the accuracy.

    python examples/classify_reviews.py --tiny            # < 2 minutes on a laptop CPU
    python examples/classify_reviews.py --csv my_reviews.csv --model-name 124M --steps 500

The model is ``models/<model-name>`` when it is there (``--download`` fetches
it first); otherwise, to run offline, a small GPT-2 is trained from scratch
over a byte-level vocabulary (``--tiny``: the smallest one, a few hundred steps).
"""

import argparse
import csv
import json
import os
import random
import time

import gpt2_simple_plus as gpt2
from gpt2_simple_plus.data import read_labelled

STARS = {
    1: ["terrible", "awful", "disgusting", "inedible", "the worst"],
    2: ["bad", "poor", "bland", "disappointing", "mediocre"],
    3: ["okay", "average", "fine", "decent", "so-so"],
    4: ["good", "tasty", "nice", "pleasant", "solid"],
    5: ["amazing", "excellent", "perfect", "outstanding", "superb"],
}
DISHES = ["pizza", "burger", "soup", "pasta", "salad", "coffee", "tacos", "curry", "sushi"]
TEMPLATES = [
    "The {dish} was {a}.",
    "The {dish} was {a} and the service was {b}.",
    "{A} {dish}, {b} staff.",
    "We had the {dish}. Honestly {a}.",
    "Service: {a}. Food: {b}. Would {verdict}.",
]
VERDICTS = {1: "never return", 2: "not return", 3: "maybe return", 4: "return", 5: "return soon"}


def synthetic_reviews(n, seed=0):
    """``n`` short restaurant reviews whose wording gives away their stars."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        stars = rng.randint(1, 5)
        a, b = rng.choice(STARS[stars]), rng.choice(STARS[stars])
        text = rng.choice(TEMPLATES).format(dish=rng.choice(DISHES), a=a, b=b, A=a.capitalize(),
                                            verdict=VERDICTS[stars])
        rows.append((text, stars))
    return rows


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def scratch_model(folder, size, n_ctx):
    """A random GPT-2 of ``size`` over a byte-level vocabulary (256 bytes + <|endoftext|>)."""
    from gpt2_simple_plus.checkpoints import save_pretrained_layout
    from gpt2_simple_plus.encoder import bytes_to_unicode
    from gpt2_simple_plus.hparams import hparams_for
    from gpt2_simple_plus.model import random_weights

    if os.path.isfile(os.path.join(folder, "checkpoint")):
        return folder
    os.makedirs(folder, exist_ok=True)
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(folder, "encoder.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "vocab.bpe"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    hparams = hparams_for(size, n_vocab=len(vocab), n_ctx=n_ctx)
    save_pretrained_layout(folder, random_weights(hparams, seed=0), hparams)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", help="reviews with 'text' and 'label' columns "
                                      "(default: write a synthetic one)")
    parser.add_argument("--model-name", default="124M")
    parser.add_argument("--model-dir", default="models")
    parser.add_argument("--download", action="store_true", help="download the model if missing")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--tiny", action="store_true",
                        help="smallest model and data: a quick offline run (tests use it)")
    parser.add_argument("--workdir", default="classify_reviews",
                        help="where the CSV, scratch models and checkpoints go")
    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)

    # 1. The data: train and test splits of one CSV.
    path = args.csv
    if path is None:
        path = os.path.join(args.workdir, "reviews.csv")
        write_csv(path, synthetic_reviews(500 if args.tiny else 3000))
        print(f"Wrote synthetic reviews to {path}")
    texts, labels = read_labelled(path)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    n_test = len(order) // 5
    test, train = order[:n_test], order[n_test:]
    train_set = ([texts[i] for i in train], [labels[i] for i in train])

    # 2. The model: a downloaded GPT-2, or a small one from scratch to stay offline.
    model_dir, model_name = args.model_dir, args.model_name
    if args.download and not args.tiny:
        gpt2.download_gpt2(model_name=model_name, model_dir=model_dir)
    if args.tiny or not os.path.isfile(os.path.join(model_dir, model_name, "checkpoint")):
        size = "tiny" if args.tiny else "mini"
        if not args.tiny:
            print(f"{os.path.join(model_dir, model_name)} not found (--download fetches it): "
                  f"training a {size} GPT-2 from scratch instead.")
        model_dir, model_name = os.path.join(args.workdir, "models"), f"scratch-{size}"
        scratch_model(os.path.join(model_dir, model_name), size, n_ctx=128)
        steps, learning_rate = args.steps or (300 if args.tiny else 1500), 1e-3
    else:
        steps, learning_rate = args.steps or 500, 5e-5

    sess = gpt2.start_tf_sess()
    start = time.time()
    gpt2.finetune_classifier(sess, train_set, model_name=model_name, model_dir=model_dir,
                             run_name="reviews", checkpoint_dir=os.path.join(args.workdir,
                                                                             "checkpoint"),
                             steps=steps, batch_size=16, learning_rate=learning_rate,
                             max_length=128, eval_every=max(steps // 4, 1), print_every=0)
    print(f"Trained {steps} steps in {time.time() - start:.0f} s")

    # 3. Evaluate on the held-out test split.
    predictions = gpt2.classify(sess, [texts[i] for i in test])
    correct = sum(p["label"] == labels[i] for p, i in zip(predictions, test))
    n_labels = len(set(labels))
    print(f"Test accuracy: {100 * correct / len(test):.1f}% on {len(test)} reviews "
          f"(chance: {100 / n_labels:.0f}%)")
    for p, i in list(zip(predictions, test))[:3]:
        print(f"  {texts[i]!r}: predicted {p['label']} "
              f"({100 * p['probabilities'][p['label']]:.0f}%), true {labels[i]}")
    return correct / len(test)


if __name__ == "__main__":
    main()

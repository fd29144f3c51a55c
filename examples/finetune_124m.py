"""The classic flow: download GPT-2 124M, fine-tune it on a text, generate.

This is gpt-2-simple's README example; it needs the internet the first time
(about 500 MB). Without a text of your own, the training text is Python's
manual, which every Python installation carries.

    python examples/finetune_124m.py                              # 200 steps
    python examples/finetune_124m.py --dataset shakespeare.txt --steps 1000
    python examples/finetune_124m.py --tiny                       # 3 steps, short texts

No internet? Set GPT2_SIMPLE_PLUS_BASE_URL to a mirror of OpenAI's files, or
put the files in models/124M/ by hand (see the README's troubleshooting).
On a CPU a step takes seconds; on a Colab GPU, 200 steps take a few minutes.
"""

import argparse
import os

import gpt2_simple_plus as gpt2
from gpt2_simple_plus.demo import corpus_text

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dataset", help="a .txt file or folder (default: Python's manual)")
parser.add_argument("--model-name", default="124M", help="124M, 355M, 774M or 1558M")
parser.add_argument("--model-dir", default="models", help="where models are downloaded")
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--tiny", action="store_true", help="3 steps and short texts (seconds)")
args = parser.parse_args()

# 1. Download the model into models/124M (skipped when it is already there).
#    The address comes from $GPT2_SIMPLE_PLUS_BASE_URL when that is set.
gpt2.download_gpt2(model_dir=args.model_dir, model_name=args.model_name)

# 2. The text to learn from.
dataset = args.dataset
if dataset is None:
    dataset = "python_manual.txt"
    with open(dataset, "w", encoding="utf-8") as f:
        f.write(corpus_text())

# 3. Fine-tune. The run is saved in checkpoint/run1; samples go to samples/run1.
#    Run the script again and training continues where it stopped.
steps = 3 if args.tiny else args.steps
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, dataset,
              model_name=args.model_name, model_dir=args.model_dir,
              steps=steps,
              learning_rate=1e-4,       # small: the model already knows English
              accumulate_gradients=1,   # gpt-2-simple's default is 5 (slower, steadier)
              print_every=1 if args.tiny else 10,
              sample_every=2 if args.tiny else 100,   # a sample now and then
              sample_length=20 if args.tiny else 200)

# 4. Generate from the fine-tuned model (already in `sess`; a new script would
#    call gpt2.load_gpt2(sess) first).
texts = gpt2.generate(sess, prefix="The", length=20 if args.tiny else 150,
                      nsamples=2, temperature=0.7, top_k=40, return_as_list=True)
for text in texts:
    print("=" * 20)
    print(text)
print(f"\nThe fine-tuned model is in {os.path.join('checkpoint', 'run1')}.")

"""The offline quick start, in Python: train a small GPT-2 from scratch and generate.

No download and no files needed: the training text is Python's own manual
(the pages ``help("for")`` shows), which every Python installation carries.
This is what ``gpt2_simple_plus demo`` does, written out step by step.

    python examples/quickstart_offline.py            # about 3 minutes on 2 CPU cores
    python examples/quickstart_offline.py --tiny     # a few seconds, to check it runs

Everything is written to the current folder: python_manual.txt, vocab/,
checkpoint/quickstart/ (the trained model) and samples/.
"""

import argparse

import gpt2_simple_plus as gpt2
from gpt2_simple_plus.demo import corpus_text
from gpt2_simple_plus.hparams import HParams

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--steps", type=int, default=600, help="training steps")
parser.add_argument("--tiny", action="store_true", help="tiny model, few steps (seconds)")
args = parser.parse_args()

# 1. The training text: Python's manual, about 460,000 characters of English.
with open("python_manual.txt", "w", encoding="utf-8") as f:
    f.write(corpus_text())

# 2. A vocabulary learned from that text. GPT-2's own has 50,257 tokens; a small
#    model trained on a small text learns faster with a small vocabulary of its own.
vocab_size = 512 if args.tiny else 2048
gpt2.train_tokenizer("python_manual.txt", vocab_size=vocab_size, out_dir="vocab")

# 3. The shape of the model: 4 layers, 128 numbers wide, reading 128 tokens at a time.
#    (GPT-2 124M is 12 layers, 768 wide, 1024 tokens.)
if args.tiny:
    shape = HParams(n_vocab=vocab_size, n_ctx=32, n_embd=32, n_head=2, n_layer=2)
    steps = 20
else:
    shape = HParams(n_vocab=vocab_size, n_ctx=128, n_embd=128, n_head=4, n_layer=4)
    steps = args.steps

# 4. Train from random weights: model_name=None with hparams= and vocab_dir=.
#    The printed loss is how surprised the model is by the next token: watch it fall.
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "python_manual.txt",
              model_name=None, hparams=shape, vocab_dir="vocab",
              run_name="quickstart", restore_from="fresh",  # start again on every run
              steps=steps,
              batch_size=16, accumulate_gradients=1,        # 16 windows per step
              learning_rate=3e-3, warmup_steps=steps // 20, lr_decay="cosine",
              print_every=max(steps // 12, 1), sample_every=0, seed=0)

# 5. Generate. The model is in `sess` already; a new script would first call
#    gpt2.load_gpt2(sess, run_name="quickstart").
texts = gpt2.generate(sess, prefix=['The "for" statement', "A class definition"],
                      length=24 if args.tiny else 80, temperature=0.8, top_k=40,
                      seed=0, return_as_list=True)
for text in texts:
    print("=" * 20)
    print(text)
print("\nThe trained model is in checkpoint/quickstart/.")

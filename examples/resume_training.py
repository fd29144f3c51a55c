"""Stop training and carry on later: a run continues from its last checkpoint.

A run (``checkpoint/<run_name>/``) keeps the model, the optimizer's state and a
step counter. Calling ``finetune`` again with the same ``run_name`` (and the
default ``restore_from="latest"``) continues it: the step count goes on from
where it stopped and the loss picks up where it was. Ctrl-C during training
saves a checkpoint first, so an interrupted run continues the same way.

    python examples/resume_training.py               # 2 x 100 steps
    python examples/resume_training.py --tiny        # 2 x 3 steps (seconds)

Needs a downloaded model (``models/124M``, fetched here if missing).
"""

import argparse

import gpt2_simple_plus as gpt2
from gpt2_simple_plus.demo import corpus_text

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model-name", default="124M")
parser.add_argument("--model-dir", default="models")
parser.add_argument("--steps", type=int, default=100, help="steps in each session")
parser.add_argument("--tiny", action="store_true", help="3 steps each time, short texts")
args = parser.parse_args()
steps = 3 if args.tiny else args.steps

with open("python_manual.txt", "w", encoding="utf-8") as f:
    f.write(corpus_text())
gpt2.download_gpt2(model_dir=args.model_dir, model_name=args.model_name)

# Session 1: a fresh run. restore_from="fresh" starts from the downloaded model
# even if checkpoint/resumed already exists.
sess = gpt2.start_tf_sess()
gpt2.finetune(sess, "python_manual.txt", model_name=args.model_name, model_dir=args.model_dir,
              run_name="resumed", restore_from="fresh", steps=steps,
              accumulate_gradients=1, print_every=1, sample_every=0)
print("counter after session 1:", open("checkpoint/resumed/counter").read())

# Session 2, in a new session (as after a restart): the same run_name and
# restore_from="latest" (the default) continue the run.
sess = gpt2.reset_session(sess)
gpt2.finetune(sess, "python_manual.txt", model_name=args.model_name, model_dir=args.model_dir,
              run_name="resumed", restore_from="latest", steps=steps,
              accumulate_gradients=1, print_every=1, sample_every=0)
print("counter after session 2:", open("checkpoint/resumed/counter").read())

# Later still: load the run for generation only.
sess = gpt2.reset_session(sess)
gpt2.load_gpt2(sess, run_name="resumed")
gpt2.generate(sess, prefix="The", length=20 if args.tiny else 100, seed=0)

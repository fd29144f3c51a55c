"""How GPT-2 sees text and picks the next word: tokens, ids, probabilities, temperature.

1. Text becomes tokens (pieces of words), and each token is a number (its id).
2. For a prompt, the model gives every token in its vocabulary a probability
   of coming next.
3. Temperature reshapes those probabilities before one is drawn: below 1 the
   likely tokens get likelier (safe, repetitive text), above 1 the unlikely
   ones get a chance (surprising, then nonsensical text); 0 always takes the
   likeliest.

    python examples/teaching_tokens_temperature.py --model-name 124M
    python examples/teaching_tokens_temperature.py --run-name run1   # a fine-tuned run
    python examples/teaching_tokens_temperature.py --model-name 124M --tiny
"""

import argparse

import gpt2_simple_plus as gpt2


def shown(token):
    """A token in quotes, with invisible characters (newline, tab ...) escaped."""
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in token) + "'"


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model-name", help="a downloaded model, e.g. 124M")
parser.add_argument("--model-dir", default="models")
parser.add_argument("--run-name", default="run1", help="or a fine-tuned run in checkpoint/")
parser.add_argument("--prompt", default="The cat sat on the")
parser.add_argument("--tiny", action="store_true", help="short texts")
args = parser.parse_args()

sess = gpt2.start_tf_sess()
gpt2.load_gpt2(sess, run_name=args.run_name, model_name=args.model_name,
               model_dir=args.model_dir)

# 1. Tokens and ids. Note the space belongs to the token that follows it.
print(f"1. The prompt {args.prompt!r} as the model reads it:\n")
tokens = gpt2.tokenize(sess, args.prompt)
print(tokens)
print("\nids:", tokens.ids)

# 2. The five likeliest next tokens, at three temperatures side by side.
print("\n2. What comes next? The five likeliest tokens at three temperatures:\n")
temperatures = [0.5, 1.0, 2.0]
tables = [gpt2.next_token_probabilities(sess, args.prompt, top_k=5, temperature=t)
          for t in temperatures]
print("".join(f"{'temperature ' + str(t):<28}" for t in temperatures))
for rank in range(5):
    print("".join(f"{shown(tables[i][rank].token):<16}{tables[i][rank].probability:>8.1%}    "
                  for i in range(len(temperatures))))

# 3. The same prompt continued at different temperatures (same seed each time,
#    so only the temperature differs). Temperature 0 is greedy decoding.
print("\n3. Continuations:\n")
for t in [0.0, 0.7, 1.0, 1.5]:
    text = gpt2.generate(sess, prefix=args.prompt, length=10 if args.tiny else 30,
                         temperature=t, seed=0, return_as_list=True)[0]
    print(f"temperature {t}: {text!r}")

"""The offline quick start: train a small GPT-2 from scratch on Python's own manual.

Every Python installation carries ``pydoc_data.topics``: the pages ``help("for")``
shows, about 460 KB of English technical prose. :func:`run_demo` uses it as
its corpus, so it needs no network and no files from you:

1. write the corpus to ``<out>/corpus.txt``;
2. learn a byte-level BPE vocabulary of 2,048 tokens from it
   (:func:`~gpt2_simple_plus.train_tokenizer`) into ``<out>/vocab/``;
3. train a 4-layer GPT-2 from random weights with
   :func:`~gpt2_simple_plus.finetune` (``model_name=None``), printing the loss,
   into the run folder ``<out>/checkpoint/demo/``;
4. generate a few samples from prompts in the manual's style, print them and
   write them to ``<out>/samples.txt``.

From the command line::

    gpt2_simple_plus demo                  # about 3 minutes on 2 CPU cores
    gpt2_simple_plus demo --quick          # a few seconds, tiny settings (for tests)
    gpt2_simple_plus demo --model 124M     # download GPT-2 124M and fine-tune it instead

From Python::

    >>> from gpt2_simple_plus.demo import run_demo
    >>> result = run_demo(out="gpt2_demo", quick=True)   # doctest: +SKIP
    >>> print(result.samples[0])                         # doctest: +SKIP

The run folder is an ordinary one: ``gpt2.load_gpt2(sess, run_name="demo",
checkpoint_dir="gpt2_demo/checkpoint")`` loads it, and ``finetune`` with the
same ``run_name`` continues it.
"""

import dataclasses
import os
import time

CORPUS_NAME = "pydoc_data.topics"
DEFAULT_OUT = "gpt2_demo"
# Prompts in the manual's own style; the samples continue them.
PROMPTS = ('The "for" statement', "A class definition", "If the exception")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo's settings: the loss falls from 7.6 (a blind guess among 2,048
    tokens) to about 4.5 in 600 steps, and the samples use the manual's words
    and phrases."""

    vocab_size: int = 2048  # tokens learned from the corpus (GPT-2 has 50,257)
    n_ctx: int = 128  # tokens the model reads at once
    n_embd: int = 128  # width of the model
    n_head: int = 4  # attention heads per layer
    n_layer: int = 4  # transformer blocks
    steps: int = 600  # training steps
    batch_size: int = 16  # windows of n_ctx tokens per step
    learning_rate: float = 3e-3  # high, as suits a small model trained from scratch
    warmup_steps: int = 30  # the learning rate rises linearly over these steps ...
    lr_decay: str = "cosine"  # ... then falls to 0 at the last step
    print_every: int = 50  # steps between printed losses
    sample_length: int = 80  # tokens per sample
    minutes: str = "about 3 minutes"  # how long training takes on 2 CPU cores


FULL = DemoConfig()
# Tiny settings: seconds, for tests and a first check that everything works.
QUICK = DemoConfig(vocab_size=512, n_ctx=32, n_embd=32, n_head=2, n_layer=2, steps=30,
                   batch_size=8, learning_rate=3e-3, warmup_steps=3, print_every=10,
                   sample_length=24, minutes="a few seconds")
# Fine-tuning a downloaded GPT-2 (``model=``): gpt-2-simple's Colab settings, fewer steps.
PRETRAINED = DemoConfig(steps=100, batch_size=1, learning_rate=1e-4, warmup_steps=0,
                        lr_decay=None, print_every=10, sample_length=80,
                        minutes="a few minutes on a GPU, much longer on a CPU")


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` made: the run folder, the samples and where they went."""

    run_dir: str  # <out>/checkpoint/<run_name>, an ordinary run folder
    checkpoint_dir: str
    run_name: str
    corpus_path: str
    vocab_dir: str  # None when a downloaded model brought its vocabulary
    samples_path: str
    samples: list
    seconds: float


def corpus_text():
    """The standard library's help pages (``pydoc_data.topics``) as one text, topics in
    alphabetical order, separated by blank lines.

        >>> text = corpus_text()
        >>> len(text) > 100_000 and 'The "for" statement' in text
        True
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip("\n") for name in sorted(topics)) + "\n"


def run_demo(out=DEFAULT_OUT, steps=None, quick=False, model=None, model_dir="models",
             seed=0, prompts=PROMPTS):
    """Train a GPT-2 on Python's manual and print samples; returns a :class:`DemoResult`.

    * ``out``: the folder for everything made (created if needed).
    * ``steps``: training steps (default 600; 30 with ``quick``; 100 with ``model``).
    * ``quick``: tiny settings that finish in seconds (the samples are gibberish).
    * ``model``: a GPT-2 to download into ``model_dir`` and fine-tune (``"124M"``)
      instead of training from scratch; needs the network the first time.
    * ``seed``: fixes the weights, the training windows and the samples.
    * ``prompts``: the texts the samples start from.

    Runs again from scratch each time (the run's old checkpoint is replaced).

        >>> result = run_demo(out="gpt2_demo", quick=True)   # doctest: +SKIP
        >>> os.path.isdir(result.run_dir)                    # doctest: +SKIP
        True
    """
    import gpt2_simple_plus as gpt2

    config = QUICK if quick else (PRETRAINED if model else FULL)
    steps = config.steps if steps is None else int(steps)
    if steps < 1:
        raise gpt2.TrainingError(f"steps must be at least 1, got {steps}.")
    start = time.time()
    os.makedirs(out, exist_ok=True)
    what = (f"fine-tune GPT-2 {model} on Python's own manual" if model else
            "train a small GPT-2 from scratch on Python's own manual, offline")
    print(f"gpt2_simple_plus demo: {what}.")

    # 1. The corpus: every Python installation has it.
    corpus_path = os.path.join(out, "corpus.txt")
    text = corpus_text()
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"\n[1/4] Corpus: {CORPUS_NAME} ({len(text):,} characters of the help pages "
          f"help('for') shows) -> {corpus_path}")

    # 2. The vocabulary: learned from the corpus, or the downloaded model's own.
    if model:
        print(f"\n[2/4] Model: GPT-2 {model} and its vocabulary, into {model_dir}/")
        gpt2.download_gpt2(model_dir=model_dir, model_name=model)
        vocab_dir = None
    else:
        print(f"\n[2/4] Vocabulary: byte-level BPE of {config.vocab_size:,} tokens learned "
              f"from the corpus")
        vocab_dir = gpt2.train_tokenizer(corpus_path, vocab_size=config.vocab_size,
                                         out_dir=os.path.join(out, "vocab"))

    # 3. Training. restore_from="fresh" starts again from random (or downloaded) weights.
    checkpoint_dir = os.path.join(out, "checkpoint")
    run_name = "demo" + ("-" + model if model else "-quick" if quick else "")
    sess = gpt2.start_tf_sess()
    if model:
        print(f"\n[3/4] Fine-tuning {model} for {steps} steps ({config.minutes})...")
        gpt2.finetune(sess, corpus_path, model_name=model, model_dir=model_dir,
                      checkpoint_dir=checkpoint_dir, run_name=run_name, restore_from="fresh",
                      steps=steps, batch_size=config.batch_size, accumulate_gradients=1,
                      learning_rate=config.learning_rate, print_every=config.print_every,
                      sample_every=0, save_every=0, seed=seed)
    else:
        from .hparams import HParams

        hparams = HParams(n_vocab=config.vocab_size, n_ctx=config.n_ctx, n_embd=config.n_embd,
                          n_head=config.n_head, n_layer=config.n_layer)
        print(f"\n[3/4] Training a GPT-2 of {config.n_layer} layers, {config.n_embd} wide "
              f"({_parameters(hparams):,} parameters) from random weights: {steps} "
              f"steps of {config.batch_size} x {config.n_ctx} tokens ({config.minutes}). "
              f"The loss is the model's surprise at the next token; watch it fall.")
        gpt2.finetune(sess, corpus_path, model_name=None, hparams=hparams, vocab_dir=vocab_dir,
                      checkpoint_dir=checkpoint_dir, run_name=run_name, restore_from="fresh",
                      steps=steps, batch_size=config.batch_size, accumulate_gradients=1,
                      learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                      lr_decay=config.lr_decay, print_every=config.print_every,
                      sample_every=0, save_every=0, seed=seed)

    # 4. Samples from the trained model.
    print(f"\n[4/4] Samples ({config.sample_length} tokens each; temperature 0.8, top_k 40, "
          f"repetition_penalty 1.2):\n")
    samples = gpt2.generate(sess, prefix=list(prompts), nsamples=len(prompts),
                            batch_size=len(prompts), length=config.sample_length,
                            temperature=0.8, top_k=40, repetition_penalty=1.2, seed=seed,
                            return_as_list=True)
    samples_path = os.path.join(out, "samples.txt")
    with open(samples_path, "w", encoding="utf-8") as f:
        for i, sample in enumerate(samples, 1):
            block = f"======== SAMPLE {i} ========\n{sample.rstrip()}\n"
            print(block)
            f.write(block + "\n")

    seconds = time.time() - start
    run_dir = os.path.join(checkpoint_dir, run_name)
    print(f"Done in {_duration(seconds)}. What was made, in {out}/:")
    print(f"  {corpus_path:<34} the training text")
    if vocab_dir:
        print(f"  {vocab_dir + os.sep:<34} the vocabulary (encoder.json, vocab.bpe)")
    print(f"  {run_dir + os.sep:<34} the trained model, an ordinary run folder")
    print(f"  {samples_path:<34} the samples above")
    print("\nMore samples from the command line:")
    print(f"  gpt2_simple_plus generate --checkpoint_dir {checkpoint_dir} --run_name {run_name} "
          f"--prefix 'The \"while\" statement' --length 80 --top_k 40 --repetition_penalty 1.2")
    return DemoResult(run_dir=run_dir, checkpoint_dir=checkpoint_dir, run_name=run_name,
                      corpus_path=corpus_path, vocab_dir=vocab_dir, samples_path=samples_path,
                      samples=samples, seconds=seconds)


def _parameters(hparams):
    from .model import variable_shapes

    total = 0
    for shape in variable_shapes(hparams).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def _duration(seconds):
    """``"2m05s"`` or ``"42s"``.

        >>> _duration(125.2), _duration(42)
        ('2m05s', '42s')
    """
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"

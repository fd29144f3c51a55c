"""The command line: ``gpt2_simple_plus <command> ...``, or ``python -m gpt2_simple_plus``.

    gpt2_simple_plus demo                                    # offline quick start, ~3 minutes
    gpt2_simple_plus download 124M                           # models/124M
    gpt2_simple_plus finetune shakespeare.txt --steps 1000   # checkpoint/run1
    gpt2_simple_plus generate --prefix "ROMEO:" --nsamples 3 --length 100
    gpt2_simple_plus encode shakespeare.txt --out_path shakespeare.npz
    gpt2_simple_plus serve --run_name run1                   # http://127.0.0.1:8000

Every flag is the Python argument of the same name (``--run_name`` is
``run_name=``); ``--run-name`` is accepted too. gpt-2-simple's command lines
work once the program is renamed: ``--mode finetune --dataset x``,
``--include_prefix false``, ``--nfiles 3 --folder gen``. Its slips are not
copied: ``--mode`` is not overwritten by missing positionals, numbers are
numbers, and ``generate`` adds files to ``--folder`` without deleting it.

Mistakes (a missing dataset, an unknown model, a run that does not exist, a
bad number) print one line, ``error: ...``, and exit with status 2.

This module only reads the command line: the work is done by the package's
functions (``download_gpt2``, ``finetune``, ``generate``, ``encode_dataset``,
:func:`gpt2_simple_plus.demo.run_demo`, ``serve``).

    >>> parse(["--mode", "finetune", "--dataset", "data.txt", "--steps", "5"]).steps
    5
"""

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import sys
import tempfile

PROG = "gpt2_simple_plus"
COMMANDS = ("download", "finetune", "generate", "encode", "demo", "serve")
EXIT_USER_ERROR = 2

EXAMPLES = f"""\
examples:
  {PROG} demo                                   # offline: train a small GPT-2 on Python's manual
  {PROG} download 124M                          # GPT-2 124M into models/124M
  {PROG} finetune shakespeare.txt --steps 1000  # fine-tune it; the run is checkpoint/run1
  {PROG} generate --prefix "ROMEO:" --length 100 --nsamples 3
  {PROG} generate --nfiles 5 --nsamples 10 --folder gen   # files in gen/
  {PROG} encode shakespeare.txt --out_path shakespeare.npz
  {PROG} serve --run_name run1                  # an OpenAI-style API and a playground page

gpt-2-simple's command lines work as they are:
  {PROG} --mode finetune --dataset shakespeare.txt --run_name run1 --steps 1000
  {PROG} --mode generate --run_name run1 --nfiles 2 --include_prefix false

'{PROG} <command> --help' lists a command's options. Flags are spelt
like the Python arguments (--run_name); --run-name works too.
"""

DOWNLOAD_EXAMPLES = f"""\
examples:
  {PROG} download                        # GPT-2 124M into models/124M
  {PROG} download 355M --model_dir ~/models
  {PROG} download distilgpt2             # from Hugging Face, converted
  {PROG} download 124M --source huggingface

Without the internet, set GPT2_SIMPLE_PLUS_BASE_URL to a mirror, or place the
files by hand in models/124M/.
"""

FINETUNE_EXAMPLES = f"""\
examples:
  {PROG} finetune shakespeare.txt --steps 1000
  {PROG} finetune shakespeare.txt --steps 500 --run_name poems --batch_size 2
  {PROG} finetune data/ --model_name 355M --use_memory_saving_gradients --accumulate_gradients 1
  {PROG} finetune notes.txt --hparams mini --vocab_dir my_vocab --steps 2000 --learning_rate 1e-3
  {PROG} --mode finetune --dataset shakespeare.txt --steps 1000   # gpt-2-simple's spelling
  {PROG} finetune shakespeare.txt --workers 10.0.0.1:12345,10.0.0.2:12345 --worker_index 0
                                       # on two machines: --worker_index 1 on the second

The model is downloaded first if models/<model_name> is missing. Ctrl-C saves
a checkpoint and stops; the same command later continues the run.
"""

GENERATE_EXAMPLES = f"""\
examples:
  {PROG} generate                                  # from checkpoint/run1
  {PROG} generate --run_name poems --prefix "The sea" --length 60 --temperature 0.9
  {PROG} generate --model_name 124M --prefix "Hello" --top_p 0.9   # the pretrained model
  {PROG} generate --nfiles 3 --nsamples 5 --folder gen              # three files in gen/
  {PROG} generate --prefix "<|startoftext|>" --truncate "<|endoftext|>" --include_prefix false

Texts are printed, unless --folder/--nfiles (files in a folder, kept as they
are) or --destination_path (one file) say where to write them. With
gpt-2-simple's --mode generate they go to gen/, as in gpt-2-simple.
"""

ENCODE_EXAMPLES = f"""\
examples:
  {PROG} encode shakespeare.txt                       # -> text_encoded.npz
  {PROG} encode data/ --out_path data.npz --model_name 355M
  {PROG} encode notes.txt --model_dir checkpoint --model_name run1   # a run's vocabulary

Then: {PROG} finetune text_encoded.npz
"""

DEMO_EXAMPLES = f"""\
examples:
  {PROG} demo                       # about 3 minutes on 2 CPU cores, no network
  {PROG} demo --quick               # seconds: tiny settings, to check the installation
  {PROG} demo --steps 2000 --out my_demo
  {PROG} demo --model 124M          # download GPT-2 124M and fine-tune it instead (network)
"""

SERVE_EXAMPLES = f"""\
examples:
  {PROG} serve                                # checkpoint/run1 at http://127.0.0.1:8000
  {PROG} serve --model_name 124M --port 8080  # the downloaded model
  {PROG} serve --host 0.0.0.0 --api_key s3cret   # a classroom: reachable from the network

Open the address in a browser for the playground; the OpenAI-style API is at /v1
(POST /v1/completions). The key can also come from $GPT2_SIMPLE_PLUS_API_KEY.
Ctrl-C stops the server. Needs: pip install "gpt2_simple_plus[serve]".
"""


# ---------------------------------------------------------------------------
# Value types: each says what was expected, in the "error: ..." line.

def _number(kind, minimum=None, maximum=None, allowed=(), what=None):
    """An argparse type: ``kind`` (int or float) within ``minimum``..``maximum``."""
    what = what or ("a whole number" if kind is int else "a number")

    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_low = minimum is not None and value < minimum
        too_high = maximum is not None and value > maximum
        if value not in allowed and (too_low or too_high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return convert


def _bool(text):
    value = str(text).strip().lower()
    if value in ("true", "t", "yes", "y", "1", "on"):
        return True
    if value in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _names(text):
    """A comma-separated list: ``"attn,mlp/c_fc"`` -> ``("attn", "mlp/c_fc")``."""
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return names


DTYPES = ("float32", "bfloat16", "float16")  # finetune's precision, generation's compute_dtype
STEPS = _number(int, 1, allowed=(-1,), what="a whole number of steps, or -1 (until Ctrl-C)")
POSITIVE = _number(int, 1, what="a whole number of at least 1")
COUNT = _number(int, 0, what="a whole number (0 or more)")
NON_NEGATIVE = _number(float, 0.0, what="a number of at least 0")
FRACTION = _number(float, 0.0, 1.0, what="a number between 0 and 1")


# ---------------------------------------------------------------------------
# The parser

class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; "(default: X)" after options that have a default."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if not any(default is v for v in (None, False, argparse.SUPPRESS)) \
                and "default" not in text \
                and action.option_strings:
            text += f" (default: {default!r})" if isinstance(default, str) and \
                default.strip() != default else f" (default: {default})"
        return text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line on stderr and exit status 2."""

    def error(self, message):
        hint = f"run '{self.prog} --help' for help"
        self.exit(EXIT_USER_ERROR, f"error: {message} ({hint})\n")


def _flag(group, name, **kwargs):
    """A boolean option: ``--name`` alone means true; ``--name false`` (gpt-2-simple) works."""
    group.add_argument(name, nargs="?", const=True, type=_bool, metavar="true|false", **kwargs)


# ---------------------------------------------------------------------------
# finetune's flags, built from its signature and docstring

# Arguments of gpt2.finetune that have no flag: the session and the dataset (given
# above), and the ones a command line cannot pass.
FINETUNE_WITHOUT_FLAG = ("sess", "dataset", "reuse")
# What the command line says differently from the Python signature: gpt-2-simple's
# command-line defaults, value checks and short help. Every other argument of finetune
# (one added later too) gets a flag of its own name with the signature's default, a
# type guessed from that default, and help from the docstring line that names it.
FINETUNE_FLAGS = {
    "steps": dict(type=STEPS, help="-1 trains until Ctrl-C"),
    "model_name": dict(default=None, help="the model to start from (default 124M)"),
    "model_dir": dict(help="the folder of downloaded models"),
    "combine": dict(type=POSITIVE, help="join small files until this many characters"),
    "batch_size": dict(type=POSITIVE, help="windows per micro-batch"),
    "learning_rate": dict(type=NON_NEGATIVE, help="the step size"),
    "accumulate_gradients": dict(type=POSITIVE, help="micro-batches averaged per step"),
    "restore_from": dict(help="latest (continue the run), fresh (start from the model) "
                              "or a folder"),
    "run_name": dict(help="the run's folder in checkpoint_dir"),
    "checkpoint_dir": dict(help="the folder of runs"),
    "sample_every": dict(type=COUNT, default=0,
                         help="write samples to samples/<run_name>/ every N steps (0 = never)"),
    "sample_length": dict(type=POSITIVE, help="tokens per sample"),
    "sample_num": dict(type=POSITIVE, help="samples each time"),
    "multi_gpu": dict(help="train on every GPU"),
    "save_every": dict(type=COUNT, default=100,
                       help="save a checkpoint every N steps (0 = only at the end)"),
    "print_every": dict(type=POSITIVE, default=10, help="print the loss every N steps"),
    "max_checkpoints": dict(type=POSITIVE, help="checkpoints kept"),
    "use_memory_saving_gradients": dict(help="less memory, somewhat slower "
                                             "(README: Performance)"),
    "only_train_transformer_layers": dict(help="leave the embeddings as they are"),
    "optimizer": dict(choices=lambda: module_constant("optimizers", "OPTIMIZERS"),
                      help="how the weights move"),
    "overwrite": dict(help="delete the run's old checkpoints first"),
    "hparams": dict(type=str, help="train from scratch: a size (tiny, mini, small, 124M ...) "
                         "or an hparams.json; needs --vocab_dir"),
    "vocab_dir": dict(type=str, help="train from scratch: a folder with encoder.json and "
                           "vocab.bpe (see train_tokenizer)"),
    "seed": dict(type=int, help="fix the weights, the data order and the samples"),
    "val_dataset": dict(type=str, help="validation data, scored every --val_every steps"),
    "val_fraction": dict(type=FRACTION,
                         help="or keep this fraction of the dataset for validation"),
    "val_every": dict(type=POSITIVE,
                      help="steps between validations (default: --sample_every, or 100)"),
    "early_stopping_patience": dict(type=POSITIVE,
                                    help="stop after N validations without improvement"),
    "warmup_steps": dict(type=COUNT, help="raise the learning rate linearly over N steps"),
    "lr_decay": dict(choices=("cosine", "linear"),
                     help="lower the learning rate to 0 at the last step"),
    "max_grad_norm": dict(type=NON_NEGATIVE, help="clip the gradient norm"),
    "weight_decay": dict(type=NON_NEGATIVE, help="adamw only"),
    "precision": dict(choices=DTYPES,
                      help="float16/bfloat16 on GPUs and TPUs that are fast at them"),
    "jit_compile": dict(type=_bool, help="compile the step with XLA (default: automatic)"),
    "lora_targets": dict(type=_names, metavar="LAYER,...",
                         help="the projections that get LoRA adapters, comma-separated: "
                              "attn/c_attn, attn/c_proj, mlp/c_fc, mlp/c_proj, or attn, mlp, "
                              "c_attn, c_fc, c_proj (default: all four)"),
    "strategy": dict(choices=lambda: module_constant("distributed", "STRATEGY_NAMES"),
                     help="multiworker: train across the machines TF_CONFIG (or --workers) "
                          "lists, running the same command on each; mirrored: across this "
                          "machine's GPUs"),
}


class Parameter:
    """One argument of a Python function: ``name``, ``default``, whether it may be
    passed by position (gpt-2-simple's arguments are), and the help its docstring gives."""

    def __init__(self, name, default, positional, help):
        self.name, self.default, self.positional, self.help = name, default, positional, help

    def __repr__(self):
        return f"Parameter({self.name!r}, default={self.default!r})"


def _module_tree(module):
    import ast

    spec = importlib.util.find_spec(f"gpt2_simple_plus.{module}")
    with open(spec.origin, encoding="utf-8") as f:
        return ast.parse(f.read())


def module_constant(module, name):
    """The value of ``module.name``, a plain constant, read from the module's source.

        >>> "adam" in module_constant("optimizers", "OPTIMIZERS")
        True
    """
    import ast

    for node in _module_tree(module).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"{module}.{name}")


def function_parameters(module, function):
    """The :class:`Parameter` list of ``module.function``, read from the module's
    source (``import``-free, so the command line answers before TensorFlow loads).

        >>> [p.name for p in function_parameters("training", "finetune")][:4]
        ['dataset', 'steps', 'model_name', 'model_dir']
    """
    import ast

    tree = _module_tree(module)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    doc = ast.get_docstring(node) or ""
    args = node.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = [(a, d, True) for a, d in zip(positional, defaults)]
    pairs += [(a, d, False) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    params = []
    for a, d, is_positional in pairs:
        try:
            default = None if d is None else ast.literal_eval(d)
        except ValueError:  # a module's constant (lora.LAYERS) is read; anything else: no flag
            if not (isinstance(d, ast.Attribute) and isinstance(d.value, ast.Name)):
                continue
            try:
                default = module_constant(d.value.id, d.attr)
            except (KeyError, ImportError, ValueError):
                continue
        params.append(Parameter(a.arg, default, is_positional, _docstring_help(doc, a.arg)))
    return [p for p in params if p.name not in ("sess", "self")]


def finetune_parameters():
    """The arguments of ``gpt2.finetune`` that the ``finetune`` command takes as flags."""
    return [p for p in function_parameters("training", "finetune")
            if p.name not in FINETUNE_WITHOUT_FLAG]


def _docstring_help(doc, name):
    """The sentence of ``doc`` that first names ``name`` (as ````name````), or ""."""
    import re

    at = doc.find(f"``{name}``")
    if at == -1:
        return ""
    start = max(doc.rfind("* ", 0, at), doc.rfind(". ", 0, at), doc.rfind("; ", 0, at),
                doc.rfind("\n\n", 0, at))
    text = doc[start + 2 if start != -1 else 0:]
    end = re.search(r"\.\s|;\s|\n\s*\n|\n\s*\* ", text)
    text = " ".join((text[:end.start()] if end else text).split())
    return text.replace("``", "")


def _guess(text):
    """An argparse type for a flag whose Python default is None: a number if it reads
    as one, true/false as a boolean, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return _bool(text)
    except argparse.ArgumentTypeError:
        return text


def _add_parameter(group, param, overrides):
    """The flag ``--<name>`` for a Python argument: its default (unless ``overrides``
    says the command line's), its type from the default, its help from the docstring."""
    options = dict(default=param.default, help=param.help or f"see finetune's {param.name}")
    options.update(overrides)
    if callable(options.get("choices")):  # read from the package when the parser is built
        options["choices"] = tuple(options["choices"]())
    if isinstance(options["default"], bool) or options.get("type") is _bool:
        options.pop("type", None)
        _flag(group, f"--{param.name}", **options)
        return
    if "type" not in options and "choices" not in options and options["default"] is not None:
        options["type"] = type(options["default"])
    elif "type" not in options and "choices" not in options:
        options["type"] = _guess
    if options.get("type") is str:
        del options["type"]
    group.add_argument(f"--{param.name}", **options)


def build_parser():
    """The ``gpt2_simple_plus`` parser, with one sub-parser per command.

    Every argument of ``gpt2.finetune`` is a flag of ``finetune``:

        >>> commands = build_parser()._subparsers._group_actions[0].choices
        >>> flags = {a.dest for a in commands["finetune"]._actions}
        >>> sorted(p.name for p in finetune_parameters() if p.name not in flags)
        []
    """
    from . import __version__

    parser = _Parser(prog=PROG, formatter_class=_Formatter, epilog=EXAMPLES,
                     description="Fine-tune and sample OpenAI's GPT-2 on TensorFlow 2 "
                                 "(gpt-2-simple's successor).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)

    def command(name, help, epilog):
        return commands.add_parser(name, help=help, description=help, epilog=epilog,
                                   formatter_class=_Formatter)

    # download ---------------------------------------------------------------
    p = command("download", "download a GPT-2 model into models/<name>", DOWNLOAD_EXAMPLES)
    p.add_argument("model", nargs="?", metavar="model_name",
                   help="124M, 355M, 774M, 1558M, distilgpt2 or hf:<org>/<repo> (default 124M)")
    p.add_argument("--model_name", help="the same as the positional model_name")
    p.add_argument("--model_dir", default="models", help="the folder that holds models")
    p.add_argument("--base_url", help="a mirror of OpenAI's files "
                                      "(default: $GPT2_SIMPLE_PLUS_BASE_URL, else OpenAI)")
    p.add_argument("--source", choices=("openai", "huggingface"),
                   help="where OpenAI's sizes come from (default: OpenAI)")
    p.add_argument("--revision", default="main", help="a Hugging Face branch, tag or commit")
    p.add_argument("--timeout", type=_number(float, 0.001, what="a number of seconds"),
                   default=30.0, help="seconds to wait for the server")
    p.add_argument("--retries", type=COUNT, default=5,
                   help="attempts per file without progress, after the first")
    p.set_defaults(func=_download)

    # finetune ---------------------------------------------------------------
    p = command("finetune", "fine-tune GPT-2 on a text file, a folder, a CSV or an .npz",
                FINETUNE_EXAMPLES)
    p.add_argument("dataset_pos", nargs="?", metavar="dataset",
                   help="a .txt/.csv/.npz file, a folder or a glob pattern")
    gpt2_simple = p.add_argument_group("gpt-2-simple's options")
    gpt2_simple.add_argument("--dataset",
                             help="the same as the positional dataset (gpt-2-simple)")
    beyond = p.add_argument_group("beyond gpt-2-simple")
    for param in finetune_parameters():
        _add_parameter(gpt2_simple if param.positional else beyond, param,
                       FINETUNE_FLAGS.get(param.name, {}))
    _flag(beyond, "--download", default=True, help="download the model first if it is missing")
    beyond.add_argument("--workers", metavar="HOST:PORT,...",
                        help="train across these machines, the chief first: the same list on "
                             "every machine, each with its own --worker_index (sets TF_CONFIG "
                             "and --strategy multiworker)")
    beyond.add_argument("--worker_index", type=COUNT, metavar="N",
                        help="this machine's place in --workers (0 = the chief)")
    p.set_defaults(func=_finetune)

    # generate ---------------------------------------------------------------
    p = command("generate", "generate text from a fine-tuned run or a downloaded model",
                GENERATE_EXAMPLES)
    g = p.add_argument_group("gpt-2-simple's options")
    g.add_argument("--run_name", default="run1", help="the run to generate from")
    g.add_argument("--checkpoint_dir", default="checkpoint", help="the folder of runs")
    g.add_argument("--model_name", help="use the downloaded model models/<model_name> instead "
                                        "of a run")
    g.add_argument("--model_dir", default="models", help="the folder of downloaded models")
    g.add_argument("--prefix", help="the text every sample starts from")
    g.add_argument("--truncate", help="end each sample before this text")
    _flag(g, "--include_prefix", default=True, help="keep the prefix in the texts")
    g.add_argument("--nsamples", type=POSITIVE, default=1, help="texts per file (or printed)")
    g.add_argument("--batch_size", type=POSITIVE, default=1, help="texts made at once")
    g.add_argument("--length", type=POSITIVE, default=1023, help="tokens per text")
    g.add_argument("--temperature", type=NON_NEGATIVE, default=0.7, help="0 = always the likeliest")
    g.add_argument("--top_k", type=COUNT, default=0, help="sample from the k likeliest (0 = off)")
    g.add_argument("--top_p", type=FRACTION, default=0.0, help="nucleus sampling (0 = off)")
    g.add_argument("--sample_delim", default="=" * 20 + "\n", help="written between texts")
    g.add_argument("--nfiles", type=POSITIVE, help="write this many files into --folder")
    g.add_argument("--folder", help="write the texts to files in this folder (default gen)")
    _flag(g, "--multi_gpu", default=False, help="accepted; generation uses one device")
    g = p.add_argument_group("beyond gpt-2-simple")
    g.add_argument("--checkpoint", default="latest",
                   help="which checkpoint of the run, e.g. model-1000")
    g.add_argument("--stop", action="append",
                   help="end each sample before this text (repeatable)")
    g.add_argument("--repetition_penalty", type=_number(float, 1.0, what="a number of at least 1"),
                   default=1.0,
                   help="above 1 discourages repeats")
    g.add_argument("--seed", type=int, help="the same seed gives the same texts")
    g.add_argument("--destination_path", help="write the texts to this one file")
    _flag(g, "--stream", default=False, help="print the text as it is made (one sample)")
    _precision_flags(g)
    p.set_defaults(func=_generate)

    # encode -----------------------------------------------------------------
    p = command("encode", "pre-encode a dataset into an .npz so finetune starts at once",
                ENCODE_EXAMPLES)
    p.add_argument("dataset_pos", nargs="?", metavar="dataset",
                   help="a .txt/.csv file, a folder or a glob pattern")
    p.add_argument("--dataset", help="the same as the positional dataset")
    p.add_argument("--out_path", default="text_encoded.npz", help="the .npz to write")
    p.add_argument("--model_name", default="124M", help="whose vocabulary to encode with")
    p.add_argument("--model_dir", default="models", help="the folder of downloaded models")
    p.add_argument("--combine", type=POSITIVE, default=50000,
                   help="join small files until this many characters")
    p.set_defaults(func=_encode)

    # demo -------------------------------------------------------------------
    p = command("demo", "offline quick start: train a small GPT-2 on Python's manual and "
                        "generate from it", DEMO_EXAMPLES)
    p.add_argument("--steps", type=POSITIVE, help="training steps (default 600; 30 with "
                                                  "--quick; 100 with --model)")
    p.add_argument("--out", default="gpt2_demo", help="the folder for everything it makes")
    _flag(p, "--quick", default=False, help="tiny settings: seconds (for tests)")
    p.add_argument("--model", help="fine-tune this downloaded GPT-2 (e.g. 124M) instead of "
                                   "training from scratch; needs the network")
    p.add_argument("--model_dir", default="models", help="where --model is downloaded")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same run")
    p.set_defaults(func=_demo)

    # serve ------------------------------------------------------------------
    p = command("serve", "serve a run or a model over HTTP: an OpenAI-style API and a "
                         "playground page", SERVE_EXAMPLES)
    p.add_argument("--run_name", default="run1", help="the run to serve")
    p.add_argument("--checkpoint_dir", default="checkpoint", help="the folder of runs")
    p.add_argument("--model_name", help="serve the downloaded model models/<model_name> instead")
    p.add_argument("--model_dir", default="models", help="the folder of downloaded models")
    p.add_argument("--checkpoint", default="latest", help="which checkpoint of the run")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on; 0.0.0.0 opens it to the network")
    p.add_argument("--port", type=_number(int, 0, 65535, what="a port number (0 = any free)"),
                   default=8000, help="the port to listen on")
    p.add_argument("--api_key", help="require 'Authorization: Bearer <key>' "
                                     "(default: $GPT2_SIMPLE_PLUS_API_KEY)")
    p.add_argument("--max_tokens", type=POSITIVE, default=512, help="new tokens per text")
    p.add_argument("--max_batch", type=POSITIVE, default=32,
                   help="texts generated at once (and per request)")
    p.add_argument("--max_queue", type=POSITIVE, default=64,
                   help="requests waiting before the server answers 503")
    p.add_argument("--max_prompt_tokens", type=POSITIVE,
                   help="tokens per prompt (default: the model's context)")
    p.add_argument("--max_body_bytes", type=POSITIVE, default=1 << 20,
                   help="bytes per request body")
    p.add_argument("--batch_wait", type=_number(float, 0.0, 10.0, what="seconds from 0 to 10"),
                   default=0.005, help="seconds to wait for more requests to batch with")
    _precision_flags(p)
    p.set_defaults(func=_serve)
    return parser


def _precision_flags(group):
    group.add_argument("--compute_dtype", default="float32", choices=DTYPES,
                       help="the type the matmuls run in")
    group.add_argument("--quantize", choices=module_constant("lite", "QUANTIZE_MODES"),
                       help="int8: 8-bit weights on LiteRT, the fastest on a CPU")
    group.add_argument("--runtime", choices=module_constant("lite", "RUNTIMES"),
                       help="where each new token is computed: tensorflow (the default; "
                            "litert with --quantize) or litert (float32 weights on LiteRT: "
                            "faster, with a second copy of the weights)")


# ---------------------------------------------------------------------------
# gpt-2-simple's spellings

def _dashes_to_underscores(arg):
    """``--run-name=x`` -> ``--run_name=x``; values and other arguments are left alone."""
    if not arg.startswith("--") or len(arg) < 3 or not arg[2].isalpha():
        return arg
    name, eq, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + eq + value


def translate(argv):
    """``(argv, legacy)``: gpt-2-simple's command line in this one's order.

    ``--mode X`` becomes the command ``X``; a command given after options
    moves to the front; ``legacy`` says gpt-2-simple's ``--mode`` was used.

        >>> translate(["--run_name", "r", "--mode", "generate"])
        (['generate', '--run_name', 'r'], True)
        >>> translate(["--steps", "5", "finetune", "a.txt"])
        (['finetune', '--steps', '5', 'a.txt'], False)
    """
    argv = [_dashes_to_underscores(a) for a in argv]
    mode, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--mode":
            if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                raise _Usage(f"--mode needs a command: {', '.join(COMMANDS)}")
            mode, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--mode="):
            mode = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    if mode is not None:
        if rest and rest[0] in COMMANDS:
            if rest[0] != mode:
                raise _Usage(f"--mode {mode} and the command {rest[0]} disagree: give one")
            return rest, True
        return [mode] + rest, True
    if rest and rest[0].startswith("-") and rest[0] not in ("-h", "--help", "--version"):
        for j, arg in enumerate(rest):
            takes_value = rest[j - 1].startswith("--") and "=" not in rest[j - 1] if j else False
            if arg in COMMANDS and not takes_value:
                return [arg] + rest[:j] + rest[j + 1:], False
    return rest, False


class _Usage(Exception):
    """A mistake found before argparse runs."""


def parse(argv):
    """The parsed namespace of ``argv`` (gpt-2-simple's spellings accepted).

        >>> args = parse(["generate", "--include_prefix", "false", "--top-k", "40"])
        >>> args.include_prefix, args.top_k
        (False, 40)
    """
    parser = build_parser()
    try:
        argv, legacy = translate(argv)
    except _Usage as err:
        parser.error(str(err))
    args = parser.parse_args(argv)
    args.legacy = legacy
    if args.command is None:
        return args
    if hasattr(args, "dataset_pos"):  # finetune and encode: positional or --dataset
        given = [v for v in (args.dataset_pos, args.dataset) if v is not None]
        if len(set(given)) > 1:
            parser.error(f"two datasets given ({given[0]!r} and {given[1]!r}): give one")
        args.dataset = given[0] if given else None
    return args


# ---------------------------------------------------------------------------
# The commands: each hands its arguments to the package's functions.

def _download(args):
    import gpt2_simple_plus as gpt2

    if args.model and args.model_name and args.model != args.model_name:
        raise _Usage(f"two model names given ({args.model!r} and {args.model_name!r}): give one")
    name = args.model or args.model_name or "124M"
    folder = gpt2.download_gpt2(model_dir=args.model_dir, model_name=name, base_url=args.base_url,
                                source=args.source, revision=args.revision,
                                timeout=args.timeout, retries=args.retries)
    print(f"GPT-2 {name} is in {folder}")


def _check_dataset(dataset, command):
    from .data import dataset_files
    from .errors import DatasetError

    if dataset is None:
        raise DatasetError(f"{command} needs a dataset: {PROG} {command} shakespeare.txt "
                           f"(a .txt/.csv/.npz file, a folder or a glob pattern).")
    dataset_files(dataset)  # raises DatasetError naming the path when nothing is there


def _finetune(args):
    import gpt2_simple_plus as gpt2

    _check_dataset(args.dataset, "finetune")
    scratch = args.hparams is not None or args.vocab_dir is not None
    if scratch and args.model_name:
        raise _Usage("--hparams/--vocab_dir train a new model from scratch; leave out "
                     "--model_name (or leave out --hparams/--vocab_dir to fine-tune it)")
    model_name = None if scratch else (args.model_name or "124M")
    hparams = args.hparams
    if hparams and hparams.endswith(".json"):
        with open(hparams, encoding="utf-8") as f:
            hparams = json.load(f)
    run_has_model = os.path.isfile(os.path.join(args.checkpoint_dir, args.run_name, "checkpoint"))
    if model_name and args.download and not (args.restore_from == "latest" and run_has_model) \
            and _needs_download(args.model_dir, model_name):
        print(f"{os.path.join(args.model_dir, model_name)} is missing: downloading it first.")
        gpt2.download_gpt2(model_dir=args.model_dir, model_name=model_name)
    _set_workers(args)
    _load_tensorflow()
    sess = gpt2.start_tf_sess()
    options = {p.name: getattr(args, p.name) for p in finetune_parameters()}
    options.update(model_name=model_name, hparams=hparams)
    gpt2.finetune(sess, args.dataset, **options)
    if not _is_chief():
        return
    print(f"The run is in {os.path.join(args.checkpoint_dir, args.run_name)}; generate from it "
          f"with: {PROG} generate --run_name {args.run_name}"
          + ("" if args.checkpoint_dir == "checkpoint" else
             f" --checkpoint_dir {args.checkpoint_dir}"))


def _set_workers(args):
    """``--workers``/``--worker_index``: this process's ``TF_CONFIG``, without JSON to type."""
    if args.workers is None and args.worker_index is None:
        return
    if args.workers is None or args.worker_index is None:
        raise _Usage("--workers and --worker_index go together: the same --workers list on "
                     "every machine, and --worker_index 0 on the first (the chief), 1 on the "
                     "second ...")
    if args.strategy not in (None, "multiworker"):
        raise _Usage(f"--workers trains across machines; it does not go with --strategy "
                     f"{args.strategy}")
    if os.environ.get("TF_CONFIG"):
        raise _Usage("TF_CONFIG is set in the environment and --workers is given: give one "
                     "(unset TF_CONFIG to use --workers)")
    from .distributed import tf_config

    os.environ["TF_CONFIG"] = tf_config(args.workers.split(","), args.worker_index)
    args.strategy = "multiworker"


def _is_chief():
    """False in the workers of a multi-worker run other than the chief, which print nothing."""
    from .distributed import is_chief, multiworker_made

    strategy = multiworker_made()
    return strategy is None or is_chief(strategy)


def _needs_download(model_dir, model_name):
    """gpt-2-simple's ``cmd_finetune`` downloads a model that is not there. A folder
    placed by hand counts as there when it has what loading reads (an interrupted
    download never has ``model.ckpt.index`` without the weights before it)."""
    import gpt2_simple_plus as gpt2

    if gpt2.is_gpt2_downloaded(model_dir=model_dir, model_name=model_name):
        return False
    folder = os.path.join(model_dir, model_name)
    needed = ("hparams.json", "encoder.json", "vocab.bpe", "checkpoint", "model.ckpt.index")
    return not all(os.path.isfile(os.path.join(folder, name)) for name in needed)


def _generate(args):
    import gpt2_simple_plus as gpt2

    _load_tensorflow()
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, checkpoint=args.checkpoint, run_name=args.run_name,
                   checkpoint_dir=args.checkpoint_dir, model_name=args.model_name,
                   model_dir=args.model_dir, compute_dtype=args.compute_dtype,
                   quantize=args.quantize, runtime=args.runtime)
    options = dict(run_name=args.run_name, checkpoint_dir=args.checkpoint_dir,
                   model_name=args.model_name, model_dir=args.model_dir,
                   truncate=args.truncate, sample_delim=args.sample_delim, prefix=args.prefix,
                   nsamples=args.nsamples, batch_size=args.batch_size, length=args.length,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   include_prefix=args.include_prefix, stop=args.stop,
                   repetition_penalty=args.repetition_penalty)
    folder = args.folder or ("gen" if args.nfiles or args.legacy else None)
    if folder is None and args.destination_path is None:
        if args.stream:
            for piece in gpt2.generate(sess, seed=args.seed, stream=True, **options):
                print(piece, end="", flush=True)
            print()
        else:
            gpt2.generate(sess, seed=args.seed, **options)
        return
    if folder is None:
        gpt2.generate_to_file(sess, destination_path=args.destination_path, seed=args.seed,
                              **options)
        print(f"Wrote {args.nsamples} text{'s' * (args.nsamples > 1)} to "
              f"{args.destination_path}")
        return
    from tqdm import trange

    os.makedirs(folder, exist_ok=True)  # gpt-2-simple deleted an existing folder here
    nfiles = args.nfiles or 1
    for i in trange(nfiles, file=sys.stderr, disable=nfiles == 1):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S_%f")
        path = os.path.join(folder, f"gpt2_gentext_{stamp}.txt")
        seed = None if args.seed is None else args.seed + i
        gpt2.generate_to_file(sess, destination_path=path, seed=seed, **options)
    print(f"Wrote {nfiles} file{'s' * (nfiles > 1)} of {args.nsamples} "
          f"text{'s' * (args.nsamples > 1)} to {folder}{os.sep}")


def _encode(args):
    import gpt2_simple_plus as gpt2

    _check_dataset(args.dataset, "encode")
    gpt2.encode_dataset(args.dataset, model_dir=args.model_dir, out_path=args.out_path,
                        model_name=args.model_name, combine=args.combine)
    print(f"Encoded; train with: {PROG} finetune {args.out_path}")


def _demo(args):
    from .demo import run_demo

    if not args.model:  # with --model, the download comes first and may fail quickly
        _load_tensorflow()
    run_demo(out=args.out, steps=args.steps, quick=args.quick, model=args.model,
             model_dir=args.model_dir, seed=args.seed)


def _serve(args):
    from .serving import _require_extra, serve

    _require_extra()  # before loading TensorFlow: a missing extra is said at once
    _load_tensorflow()
    serve(run_name=args.run_name, checkpoint_dir=args.checkpoint_dir, model_name=args.model_name,
          model_dir=args.model_dir, checkpoint=args.checkpoint, host=args.host, port=args.port,
          api_key=args.api_key, max_tokens=args.max_tokens, max_batch=args.max_batch,
          max_queue=args.max_queue, max_prompt_tokens=args.max_prompt_tokens,
          max_body_bytes=args.max_body_bytes, batch_wait=args.batch_wait,
          compute_dtype=args.compute_dtype, quantize=args.quantize, runtime=args.runtime)


# ---------------------------------------------------------------------------

_quiet_import = [False]  # main() sets it when the user has not asked for TensorFlow's logs


def _load_tensorflow():
    """Import TensorFlow now (after the quick checks), quietly unless logs were asked for."""
    if _quiet_import[0] and "tensorflow" not in sys.modules:
        _import_tensorflow_quietly()


def _import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up notes (oneDNN, no CUDA driver ...) held
    back: they are written straight to file descriptor 2 before any setting applies.
    They are shown after all if the import fails."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (some embedded interpreters): import as usual
        saved = None
    with tempfile.TemporaryFile() as notes:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(notes.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
        except BaseException:
            if saved is not None:
                os.dup2(saved, 2)
                notes.seek(0)
                sys.stderr.write(notes.read().decode("utf-8", "replace"))
            raise
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status:
    0 when it worked, 2 for a mistake in the command or its inputs (one ``error:`` line
    on stderr), 130 after Ctrl-C."""
    # TensorFlow's C++ start-up warnings (no CUDA on a CPU machine ...) mean nothing to
    # a user of the command line; TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from .errors import Gpt2Error

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse(argv)
    except SystemExit as exit:  # --help, --version, or a mistake argparse reported
        return exit.code if isinstance(exit.code, int) else EXIT_USER_ERROR
    if args.command is None:
        build_parser().print_help()
        return 0
    _quiet_import[0] = quiet
    try:
        args.func(args)
    except _Usage as err:
        print(f"error: {err} (run '{PROG} {args.command} --help' for help)", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Gpt2Error, OSError) as err:  # OSError: a full disk, a folder we may not write...
        sys.stdout.flush()
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


# gpt-2-simple's name for its command line entry point.
cmd = main


if __name__ == "__main__":
    sys.exit(main())

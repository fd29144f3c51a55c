"""GPT-2 hyper-parameters: the five numbers in ``hparams.json`` and the named sizes.

    >>> from gpt2_simple_plus.hparams import HParams, hparams_for
    >>> hparams_for("gpt2-medium").n_layer
    24
    >>> HParams(n_vocab=10, n_ctx=8, n_embd=4, n_head=2, n_layer=1).head_size
    2
"""

import dataclasses
import json
import os

from .errors import HParamsError, ModelNotFoundError
from .files import write_text_atomic


@dataclasses.dataclass(frozen=True)
class HParams:
    """The shape of a GPT-2 model, exactly the fields of OpenAI's ``hparams.json``."""

    n_vocab: int = 50257  # tokens in the vocabulary; 50256 is <|endoftext|>
    n_ctx: int = 1024  # longest sequence the model sees (positions in wpe)
    n_embd: int = 768  # width of the residual stream
    n_head: int = 12  # attention heads per layer; must divide n_embd
    n_layer: int = 12  # transformer blocks

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise HParamsError(
                    f"hparams: {field.name} must be a positive whole number, got {value!r}."
                )
        if self.n_embd % self.n_head:
            raise HParamsError(
                f"hparams: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})."
            )

    @property
    def head_size(self):
        return self.n_embd // self.n_head

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values, *, source="hparams"):
        """Build from a dict, naming ``source`` in the error if a field is missing or wrong."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in values]
        if missing:
            raise HParamsError(
                f"{source} is missing {', '.join(missing)}; it needs all of {', '.join(names)}."
            )
        try:
            return cls(**{n: values[n] for n in names})
        except HParamsError as err:
            raise HParamsError(f"{source}: {err}") from None


# OpenAI's four releases. Hugging Face's names for the same models are aliases.
MODEL_SIZES = {
    "124M": HParams(n_embd=768, n_head=12, n_layer=12),
    "355M": HParams(n_embd=1024, n_head=16, n_layer=24),
    "774M": HParams(n_embd=1280, n_head=20, n_layer=36),
    "1558M": HParams(n_embd=1600, n_head=25, n_layer=48),
}

MODEL_ALIASES = {
    "117M": "124M",
    "345M": "355M",
    "gpt2": "124M",
    "gpt2-medium": "355M",
    "gpt2-large": "774M",
    "gpt2-xl": "1558M",
}

# Small shapes for tests, teaching and training from scratch; n_vocab is set
# from the vocabulary the model is trained with.
SMALL_SIZES = {
    "tiny": HParams(n_vocab=50257, n_ctx=64, n_embd=32, n_head=2, n_layer=2),
    "mini": HParams(n_vocab=50257, n_ctx=256, n_embd=128, n_head=4, n_layer=4),
    "small": HParams(n_vocab=50257, n_ctx=512, n_embd=256, n_head=8, n_layer=6),
}


def canonical_model_name(model_name):
    """Map an alias to OpenAI's folder name: ``"117M"`` and ``"gpt2"`` give ``"124M"``.

    Unknown names are returned unchanged (a mirror may host any model).

        >>> canonical_model_name("345M")
        '355M'
    """
    return MODEL_ALIASES.get(model_name, model_name)


def hparams_for(size, **overrides):
    """The hyper-parameters of a named size, with fields overridden.

        >>> hparams_for("tiny", n_vocab=300).n_vocab
        300
    """
    name = canonical_model_name(size)
    table = {**MODEL_SIZES, **SMALL_SIZES}
    if name not in table:
        raise HParamsError(
            f"Unknown model size {size!r}. Choose one of {', '.join(sorted(table))} "
            f"(aliases: {', '.join(sorted(MODEL_ALIASES))})."
        )
    return dataclasses.replace(table[name], **overrides)


def load_hparams(folder):
    """Read ``folder/hparams.json``.

        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> save_hparams(d, hparams_for("tiny"))
        >>> load_hparams(d).n_layer
        2
    """
    path = os.path.join(folder, "hparams.json")
    if not os.path.isfile(path):
        raise ModelNotFoundError(
            f"No hparams.json in {folder!r}. Download a model first, e.g. "
            f"gpt2.download_gpt2(model_name='124M'), or pass the folder that holds it."
        )
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise HParamsError(
            f"{path} is not valid JSON ({err}). The download may have failed: delete the "
            f"folder and download the model again."
        ) from None
    if not isinstance(values, dict):
        raise HParamsError(f"{path} should hold a JSON object, got {type(values).__name__}.")
    return HParams.from_dict(values, source=path)


def save_hparams(folder, hparams):
    """Write ``folder/hparams.json`` in OpenAI's layout (atomically)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "hparams.json")
    write_text_atomic(path, json.dumps(hparams.to_dict(), indent=2))

"""gpt2_simple_plus: fine-tune and sample OpenAI's GPT-2 in a few lines, on TensorFlow 2.

    import gpt2_simple_plus as gpt2
    gpt2.download_gpt2(model_name="124M")
    sess = gpt2.start_tf_sess()
    gpt2.finetune(sess, "shakespeare.txt", model_name="124M", steps=1000)
    gpt2.generate(sess)

The API is gpt-2-simple's, name for name and default for default. Each
function lives in the module of its concern (``download_gpt2`` in
``download.py``, ``finetune`` in ``training.py`` ...). Modules are imported on
first use, so ``import gpt2_simple_plus`` is quick and never touches
TensorFlow's global state.

    >>> import gpt2_simple_plus as gpt2
    >>> gpt2.finetune.__module__, gpt2.download_gpt2.__module__
    ('gpt2_simple_plus.training', 'gpt2_simple_plus.download')

README's "How the package is organised" maps every module.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # models and checkpoints
    "download_gpt2": "download",
    "is_gpt2_downloaded": "download",
    "get_encoder": "encoder",
    "train_tokenizer": "tokenizer_training",
    # sessions, generation
    "start_tf_sess": "session",
    "reset_session": "session",
    "load_gpt2": "generation",
    "generate": "generation",
    "generate_to_file": "generation",
    # training
    "finetune": "training",
    "encode_dataset": "data",
    "encode_csv": "data",
    "estimate_memory": "memory",
    # Colab and Google Drive
    "mount_gdrive": "colab",
    "is_mounted": "colab",
    "copy_checkpoint_to_gdrive": "colab",
    "copy_checkpoint_from_gdrive": "colab",
    "copy_file_to_gdrive": "colab",
    "copy_file_from_gdrive": "colab",
    # teaching tools, classification, serving
    "tokenize": "teaching",
    "next_token_probabilities": "teaching",
    "score": "teaching",
    "perplexity": "teaching",
    "finetune_classifier": "classifier",
    "classify": "classifier",
    "load_classifier": "classifier",
    "export_model": "export",
    "serve": "serving",
    "import_transformers": "huggingface",
    "plot_loss": "plots",
    # command line
    "cmd": "cli",
    # errors
    "Gpt2Error": "errors",
    "ModelNotFoundError": "errors",
    "CheckpointError": "errors",
    "HParamsError": "errors",
    "EncoderError": "errors",
    "DownloadError": "errors",
    "DatasetError": "errors",
    "GenerationError": "errors",
    "TrainingError": "errors",
    "ColabError": "errors",
    "WorkerError": "errors",
    "GraphModeError": "errors",
    "MissingDependencyError": "errors",
    "OutOfMemoryError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpt2_simple_plus' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def _import_helpers_quietly():
    """The package, and with it TensorFlow, imported with file descriptor 2 on /dev/null: the
    lines TensorFlow's C++ side prints as it loads (oneDNN, CUDA) bypass Python, and
    under pytest-xdist the controller printed them after the suite's summary."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import helpers
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return helpers


helpers = _import_helpers_quietly()


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pytest.ini): one worker per core, at most two. Each worker holds
    TensorFlow and its models (up to about 3 GB) and runs TensorFlow on every core,
    so more workers than two add memory without adding speed."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 2))


@pytest.fixture(scope="session")
def gpt2_vocab_dir():
    """The real GPT-2 vocabulary (../shared/gpt2-vocab or $GPT2_VOCAB_DIR)."""
    path = helpers.real_vocab_dir()
    if path is None:
        pytest.skip(f"real GPT-2 vocabulary not found at {helpers.GPT2_VOCAB_DIR} "
                    f"(set GPT2_VOCAB_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``models/tiny`` in OpenAI's layout: a random 2-layer GPT-2 with a 277-token vocabulary."""
    folder = tmp_path_factory.mktemp("tiny") / "models" / "tiny"
    helpers.make_model_dir(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_gpt2_vocab_model_dir(tmp_path_factory, gpt2_vocab_dir):
    """A random 2-layer GPT-2 with the real 50,257-token vocabulary (for gpt-2-simple interop)."""
    folder = tmp_path_factory.mktemp("tinyreal") / "models" / "tiny"
    helpers.make_model_dir(str(folder), vocab_dir=gpt2_vocab_dir)
    return str(folder)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """A pytest-xdist worker whose tests are done ignores SIGINT from then on.

    At unconfigure, pytest's unraisable-exception plugin runs ``gc.collect()`` five
    times; with TensorFlow and the session's models on a worker's heap that took 5.4
    to 6.6 s here. execnet sends a worker still busy 5 s after the controller closed
    it a SIGINT (``_terminate_execution``, which then waits 10 s more), and the
    KeyboardInterrupt landed inside a gc callback: a ``PytestUnraisableExceptionWarning``
    printed after the summary. Ignored, the SIGINT changes nothing and the worker ends
    on its own. (``gc.freeze()`` would make those passes quick, but hides referrers
    from ``gc.get_referrers``, which hypothesis's ``register_random`` then warns about.)
    Ctrl-C still stops the suite: the controller gets it and ends the workers."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)

"""Training across worker processes: MultiWorkerMirroredStrategy over TF_CONFIG on 127.0.0.1.

Two clusters of two real worker processes run side by side (module fixture), while
this process makes the one-process runs they must equal:

* cluster A: both workers in one folder (the issue's setup); 3 steps with a sample.
* cluster B: each worker in a folder of its own (two machines), resuming a run only
  the chief has (the one-process twin of A's); worker 1 is killed after two steps.

More clusters, each in a module fixture of its own, do the same for LoRA (C, D) and
for ``finetune_classifier`` (E trains and then resumes; F's second worker has other
data).

The workers print each step's exact loss as ``LOSS <float>`` on stderr (the
workers other than the chief print nothing on stdout).
"""

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import helpers
import gpt2_simple_plus as gpt2
from gpt2_simple_plus import checkpoints, classifier, distributed, loading, training
from gpt2_simple_plus.data import load_dataset
from gpt2_simple_plus._examples import example_vocab
from gpt2_simple_plus.encoder import get_encoder
from gpt2_simple_plus.errors import TrainingError

pytestmark = pytest.mark.slow

TEXT = "the cat sat on the mat and the hat. " * 60
KW = dict(model_name="tiny", model_dir="models", batch_size=2, accumulate_gradients=2,
          learning_rate=1e-3, seed=0, sample_every=2, sample_length=8, save_every=0,
          print_every=1)
A_STEPS = 3  # cluster B resumes the one-process run of A_STEPS steps
B_STEPS = 2  # steps of cluster B compared with one process, before worker 1 is killed

WORKER = textwrap.dedent("""
    import json, sys
    import gpt2_simple_plus as gpt2
    from gpt2_simple_plus import training

    make_train_step = training.make_train_step

    def recording(*args, **kwargs):
        step = make_train_step(*args, **kwargs)

        def run(*inputs):
            loss = step(*inputs)
            print("\\nLOSS", repr(float(loss)), file=sys.stderr, flush=True)
            if not hasattr(run, "counted"):  # the all-reduces in the step's graph
                graph = step.get_concrete_function(*inputs).graph
                run.counted = sum(op.type.startswith("CollectiveReduce")
                                  for op in graph.get_operations())
                print("\\nALLREDUCES", run.counted, file=sys.stderr, flush=True)
            return loss
        return run

    training.make_train_step = recording
    try:
        gpt2.finetune(gpt2.start_tf_sess(), "data.txt", strategy="multiworker",
                      **json.loads(sys.argv[1]))
    except gpt2.Gpt2Error as err:
        print(f"ERROR {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        sys.exit(3)
    print("FINISHED", file=sys.stderr, flush=True)
""")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Worker:
    """One worker process; its stdout and stderr go to files in its folder."""

    def __init__(self, folder, index, addresses, kwargs, script=WORKER):
        self.folder, self.index = folder, index
        self.out_path = os.path.join(folder, f"worker{index}.out")
        self.err_path = os.path.join(folder, f"worker{index}.err")
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONUNBUFFERED="1", PYTHONPATH=helpers.REPO)
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(kwargs)],
                                         cwd=folder, stdout=out, stderr=err, env=env)

    @property
    def out(self):
        with open(self.out_path) as f:
            return f.read()

    @property
    def err(self):
        with open(self.err_path) as f:
            return f.read()

    def losses(self):
        return [float(x) for x in re.findall(r"^LOSS (\S+)$", self.err, re.M)]

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker {self.index} still running after {timeout} s:\n"
                                 f"{self.out[-1500:]}\n{self.err[-3000:]}") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def log(self):
        return f"--- worker {self.index} stdout:\n{self.out[-1500:]}\n--- stderr:\n{self.err[-3000:]}"


def cluster(folders, kwargs, script=WORKER):
    addresses = [f"127.0.0.1:{p}" for p in free_ports(len(folders))]
    return [Worker(f, i, addresses, kwargs, script) for i, f in enumerate(folders)]


def machine(folder, tiny_model_dir, name="data.txt", text=TEXT):
    """A folder as a machine would hold it: models/tiny and the dataset (``name``)."""
    os.makedirs(folder, exist_ok=True)
    shutil.copytree(tiny_model_dir, os.path.join(folder, "models", "tiny"))
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)
    return folder


@contextlib.contextmanager
def in_folder_recording(folder, module, maker):
    """In ``folder``, with ``module.maker`` (a train-step maker) making steps that append
    their exact loss to the list this yields."""
    losses = []
    make = getattr(module, maker)

    def recording(*args, **kw):
        step = make(*args, **kw)

        def run(*inputs):
            loss = step(*inputs)
            losses.append(float(loss))
            return loss
        run.experimental_get_tracing_count = step.experimental_get_tracing_count
        return run

    cwd = os.getcwd()
    os.chdir(folder)
    setattr(module, maker, recording)
    try:
        yield losses
    finally:
        setattr(module, maker, make)
        os.chdir(cwd)


def finetune_here(folder, **kwargs):
    """A one-process finetune in ``folder``; returns the exact loss of each step."""
    with in_folder_recording(folder, training, "make_train_step") as losses:
        gpt2.finetune(gpt2.start_tf_sess(), "data.txt", **{**KW, **kwargs})
    return losses


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = str(tmp_path_factory.mktemp("distributed"))
    folder = lambda name: machine(os.path.join(root, name), tiny_model_dir)  # noqa: E731
    a, b = cluster([folder("a")] * 2, dict(KW, steps=A_STEPS)), []
    started = time.time()
    try:
        # the one-process runs they must equal, made while the workers start
        a_one = finetune_here(folder("a_one"), steps=A_STEPS)
        # cluster B resumes a run that only the chief's machine holds
        b_chief, b_worker, b_one = folder("b0"), folder("b1"), folder("b_one")
        for f in (b_chief, b_one):
            shutil.copytree(os.path.join(root, "a_one", "checkpoint"),
                            os.path.join(f, "checkpoint"))
        b_kw = dict(KW, seed=1, sample_every=0)
        b = cluster([b_chief, b_worker], dict(b_kw, steps=1000))
        b_one_losses = finetune_here(b_one, steps=B_STEPS, **b_kw)
        for w in a:
            w.wait(timeout=240)
        # cluster B: let it train B_STEPS steps, then kill worker 1
        while len(b[0].losses()) < B_STEPS and b[0].proc.poll() is None \
                and time.time() - started < 240:
            time.sleep(0.2)
        killed = time.time()
        b[1].kill()
        b[0].wait(timeout=60)
        b_chief_ended = time.time() - killed
    finally:
        for w in a + b:
            w.kill()
    return dict(root=root, a=a, a_one=a_one, b=b, b_one=b_one_losses,
                b_chief_ended=b_chief_ended)


def test_two_workers_in_one_folder_train_like_one_process(runs):
    a, root = runs["a"], runs["root"]
    assert [w.proc.returncode for w in a] == [0, 0], a[0].log() + a[1].log()
    chief, other = a
    assert "Training on 2 devices in 2 workers (this is the chief)" in chief.out
    assert "Saving checkpoint/run1/model-3" in chief.out
    assert other.out.strip() == "", other.log()  # only the chief prints
    # the workers agree with each other and with one process seeing the same windows
    assert len(runs["a_one"]) == A_STEPS
    np.testing.assert_allclose(chief.losses(), runs["a_one"], rtol=1e-5)
    np.testing.assert_allclose(other.losses(), runs["a_one"], rtol=1e-5)
    ours = dict(loading.read_checkpoint(os.path.join(root, "a", "checkpoint", "run1")).items())
    one = dict(loading.read_checkpoint(
        os.path.join(root, "a_one", "checkpoint", "run1")).items())
    base = dict(loading.read_checkpoint(os.path.join(root, "a", "models", "tiny")).items())
    assert max(float(np.abs(ours[n] - base[n]).max()) for n in ours) > 1e-4
    assert max(float(np.abs(ours[n] - one[n]).max()) for n in ours) < 1e-5
    # what the chief wrote, once: no temporary files, one dataset cache, one sample file,
    # one TensorBoard events file (named after its process)
    files, one_files = (sorted(re.sub(r"^(dataset-|events\.out\.tfevents\.).*?(\.\w+)?$",
                                      r"\1*\2", f) for f in os.listdir(
        os.path.join(root, name, "checkpoint", "run1"))) for name in ("a", "a_one"))
    assert files == one_files and files.count("dataset-*.npy") == 1, files
    assert files.count("events.out.tfevents.*.v2") == 1, files
    assert os.listdir(os.path.join(root, "a", "samples", "run1")) == ["samples-3"]
    assert checkpoints.read_counter(os.path.join(root, "a", "checkpoint", "run1")) == A_STEPS


def test_the_workers_exchange_the_gradients_in_packs_not_one_by_one(runs):
    # the loss and the gradient of every variable of the tiny model fit one pack
    # (distributed.PACK_BYTES): one all-reduce per step, where there was one per variable
    chief, other = runs["a"]
    variables = len(dict(loading.read_checkpoint(
        os.path.join(runs["root"], "a", "models", "tiny")).items()))
    assert variables > 20
    for w in (chief, other):
        assert re.findall(r"^ALLREDUCES (\d+)$", w.err, re.M) == ["1"], w.log()


def test_a_worker_resumes_a_run_only_the_chief_has_and_writes_nothing(runs):
    chief, other = runs["b"]
    # the chief's counter, sampler state and optimizer state reached worker 1:
    # the losses continue exactly as one process continues the run
    np.testing.assert_allclose(chief.losses()[:B_STEPS], runs["b_one"], rtol=1e-5,
                               err_msg=chief.log() + other.log())
    np.testing.assert_allclose(other.losses()[:B_STEPS], runs["b_one"], rtol=1e-5)
    assert f"[{A_STEPS + 1} | " in chief.out
    worker_folder = os.path.join(runs["root"], "b1")
    assert sorted(os.listdir(worker_folder)) == ["data.txt", "models", "worker1.err",
                                                 "worker1.out"]


def test_killing_a_worker_ends_the_other_with_a_clear_message(runs):
    chief, other = runs["b"]
    assert chief.proc.returncode == 3, chief.log()
    assert runs["b_chief_ended"] < 60
    message = [line for line in chief.err.splitlines() if line.startswith("ERROR ")]
    assert message, chief.log()
    assert message[0].startswith("ERROR WorkerError: Multi-worker training ended at step ")
    assert "worker 1 (127.0.0.1:" in message[0] and "stopped" in message[0]
    assert f"last checkpoint is checkpoint/run1/model-{A_STEPS}" in message[0]
    assert "Traceback" not in chief.err


def test_the_run_loads_in_gpt2_simple(runs):
    if importlib.util.find_spec("gpt_2_simple") is None:
        pytest.skip("gpt-2-simple is not installed")
    code = textwrap.dedent("""
        import gpt_2_simple as gpt2
        sess = gpt2.start_tf_sess()
        gpt2.load_gpt2(sess, run_name="run1", checkpoint_dir="checkpoint")
        text = gpt2.generate(sess, run_name="run1", checkpoint_dir="checkpoint", length=5,
                             prefix="the cat", seed=0, return_as_list=True)[0]
        print("RESULT", repr(text))
    """)
    proc = helpers.run_python(code, cwd=os.path.join(runs["root"], "a"), timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Loading checkpoint checkpoint/run1/model-3" in proc.stdout
    assert "RESULT 'the cat" in proc.stdout


# -- LoRA across workers --------------------------------------------------------------

LORA = dict(KW, lora_rank=2, lora_base_dtype="bfloat16")


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, tiny_model_dir):
    """Cluster C: two machines resume a LoRA run only the chief has. Cluster D: the second
    machine's base model differs from the chief's."""
    root = str(tmp_path_factory.mktemp("distributed_lora"))
    folder = lambda name: machine(os.path.join(root, name), tiny_model_dir)  # noqa: E731
    c, d = [], []
    try:
        first = finetune_here(folder("c_run"), steps=2, **LORA)  # the run the chief resumes
        for name in ("c0", "c_one"):
            shutil.copytree(os.path.join(root, "c_run", "checkpoint"),
                            os.path.join(folder(name), "checkpoint"))
        c = cluster([os.path.join(root, "c0"), folder("c1")], dict(LORA, steps=2))
        other_base = folder("d1")
        helpers.make_model_dir(os.path.join(other_base, "models", "tiny"), seed=1)
        d = cluster([folder("d0"), other_base], dict(LORA, steps=1))
        one = finetune_here(os.path.join(root, "c_one"), steps=2, **LORA)
        for w in c + d:
            w.wait(timeout=240)
    finally:
        for w in c + d:
            w.kill()
    return dict(root=root, c=c, d=d, first=first, one=one)


def test_lora_workers_resume_the_chiefs_run_like_one_process(lora_runs):
    chief, other = lora_runs["c"]
    root = lora_runs["root"]
    assert [w.proc.returncode for w in (chief, other)] == [0, 0], chief.log() + other.log()
    assert "Training on 2 devices in 2 workers (this is the chief)" in chief.out
    assert "Loading LoRA adapters checkpoint/run1/model-2" in chief.out
    # worker 1 had neither the adapters nor the optimizer state: both came from the chief,
    # so the losses go on exactly as one process continuing the run
    assert len(lora_runs["one"]) == 2
    np.testing.assert_allclose(chief.losses(), lora_runs["one"], rtol=1e-5)
    np.testing.assert_allclose(other.losses(), lora_runs["one"], rtol=1e-5)
    assert chief.losses()[0] != pytest.approx(lora_runs["first"][-1], rel=1e-4)
    run, one_run = (os.path.join(root, name, "checkpoint", "run1") for name in ("c0", "c_one"))
    assert checkpoints.read_counter(run) == 4
    ours = dict(loading.read_checkpoint(run).items())
    one = dict(loading.read_checkpoint(one_run).items())
    assert max(float(np.abs(ours[n] - one[n]).max()) for n in ours) < 1e-5
    assert {f for f in os.listdir(run) if f.startswith(("model-4", "lora-4"))} == \
        {f for f in os.listdir(one_run) if f.startswith(("model-4", "lora-4"))}
    assert sorted(os.listdir(os.path.join(root, "c1"))) == ["data.txt", "models", "worker1.err",
                                                            "worker1.out"]


def test_lora_workers_with_different_base_models_both_stop_and_say_so(lora_runs):
    for w in lora_runs["d"]:
        assert w.proc.returncode == 3, w.log()
        message = [line for line in w.err.splitlines() if line.startswith("ERROR ")]
        assert message and message[0].startswith(
            "ERROR TrainingError: The workers were started with different settings"), w.log()
        assert re.search(r"lora_base_fingerprint is \"\w{16}\" on the chief and \"\w{16}\" "
                         r"here|another worker's settings differ", message[0]), message[0]
        assert "Traceback" not in w.err
    assert "lora_base_fingerprint is" in lora_runs["d"][1].err
    assert not os.path.exists(os.path.join(lora_runs["root"], "d0", "checkpoint", "run1",
                                           "model-1.index"))


# -- the classifier across workers ----------------------------------------------------

CLASSIFIER_WORKER = textwrap.dedent("""
    import json, sys
    import gpt2_simple_plus as gpt2
    from gpt2_simple_plus import classifier

    make_train_step = classifier._train_step

    def recording(*args, **kwargs):
        step = make_train_step(*args, **kwargs)

        def run(*inputs):
            loss = step(*inputs)
            print("\\nLOSS", repr(float(loss)), file=sys.stderr, flush=True)
            return loss
        run.experimental_get_tracing_count = step.experimental_get_tracing_count
        return run

    classifier._train_step = recording
    sess = gpt2.start_tf_sess()
    try:
        result = gpt2.finetune_classifier(sess, "labelled.csv", strategy="multiworker",
                                          **json.loads(sys.argv[1]))
    except gpt2.Gpt2Error as err:
        print(f"ERROR {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        sys.exit(3)
    print("RESULT", json.dumps(result), file=sys.stderr, flush=True)
    print("CLASSIFY", json.dumps(gpt2.classify(sess, ["a red hat", "the hat is blue"])),
          file=sys.stderr, flush=True)
""")

LABELLED = "text,label\n" + "".join(f"{t},{c}\n" for t, c in [
    ("the hat is red", "red"), ("a red hat", "red"), ("red red mat", "red"),
    ("the hat is blue", "blue"), ("a blue hat", "blue"), ("blue cat mat", "blue")] * 4)
CLF = dict(model_name="tiny", model_dir="models", batch_size=4, learning_rate=1e-3, seed=0,
           eval_every=2, print_every=1, val_fraction=0.25)


def classifier_here(folder, **kwargs):
    """A one-process finetune_classifier in ``folder``: (exact losses, result)."""
    with in_folder_recording(folder, classifier, "_train_step") as losses:
        result = gpt2.finetune_classifier(gpt2.start_tf_sess(), "labelled.csv",
                                          **{**CLF, **kwargs})
    return losses, result


def worker_result(worker, key="RESULT"):
    found = re.findall(rf"^{key} (.*)$", worker.err, re.M)
    assert found, worker.log()
    return json.loads(found[-1])


@pytest.fixture(scope="module")
def classifier_runs(tmp_path_factory, tiny_model_dir):
    """Cluster E: two machines train a classifier, then resume the run only the chief's
    folder has. Cluster F: the second machine's dataset differs from the chief's."""
    root = str(tmp_path_factory.mktemp("distributed_classifier"))
    folder = lambda name, text=LABELLED: machine(  # noqa: E731
        os.path.join(root, name), tiny_model_dir, "labelled.csv", text)
    e = e2 = f = []
    try:
        e = cluster([folder("e0"), folder("e1")], dict(CLF, steps=3), CLASSIFIER_WORKER)
        f = cluster([folder("f0"), folder("f1", LABELLED.replace("a red hat", "a red cap"))],
                    dict(CLF, steps=1), CLASSIFIER_WORKER)
        one = classifier_here(folder("e_one"), steps=3)
        for w in e + f:
            w.wait(timeout=240)
        # the run only the chief's machine holds, continued by both and by one process
        for name in ("e2_0", "e2_one"):
            shutil.copytree(os.path.join(root, "e0", "checkpoint"),
                            os.path.join(folder(name), "checkpoint"))
        e2 = cluster([os.path.join(root, "e2_0"), folder("e2_1")],
                     dict(CLF, steps=2, restore_from="latest"), CLASSIFIER_WORKER)
        one2 = classifier_here(os.path.join(root, "e2_one"), steps=2, restore_from="latest")
        for w in e2:
            w.wait(timeout=240)
    finally:
        for w in e + e2 + f:
            w.kill()
    return dict(root=root, e=e, e2=e2, f=f, one=one, one2=one2)


def _classifier_run(root, name):
    run = os.path.join(root, name, "checkpoint", "classifier")
    weights = dict(loading.read_checkpoint(run).items())
    weights["head"] = checkpoints.read_train_state(run, checkpoints.read_counter(run))[
        "classifier/score"]
    return run, weights


def test_two_workers_train_a_classifier_like_one_process(classifier_runs):
    runs, root = classifier_runs, classifier_runs["root"]
    chief, other = runs["e"]
    assert [w.proc.returncode for w in (chief, other)] == [0, 0], chief.log() + other.log()
    assert "Training on 2 devices in 2 workers (this is the chief)" in chief.out
    assert other.out.strip() == "", other.log()  # only the chief prints
    losses, result = runs["one"]
    assert len(losses) == 3
    np.testing.assert_allclose(chief.losses(), losses, rtol=1e-5)
    np.testing.assert_allclose(other.losses(), losses, rtol=1e-5)
    for w in (chief, other):  # every worker returns the chief's figures
        theirs = worker_result(w)
        assert theirs["step"] == 3 and theirs["labels"] == ["blue", "red"]
        assert theirs["val_loss"] == pytest.approx(result["val_loss"], rel=1e-5)
        assert [h["step"] for h in theirs["history"]] == [2, 3]
    # the session holds the trained classifier, not the mirrored variables
    assert [c["label"] for c in worker_result(chief, "CLASSIFY")] == \
        [c["label"] for c in worker_result(other, "CLASSIFY")]
    run, ours = _classifier_run(root, "e0")
    _, one = _classifier_run(root, "e_one")
    base = dict(loading.read_checkpoint(os.path.join(root, "e0", "models", "tiny")).items())
    assert max(float(np.abs(ours[n] - base[n]).max()) for n in base) > 1e-4
    assert max(float(np.abs(ours[n] - one[n]).max()) for n in ours) < 1e-5
    assert checkpoints.read_counter(run) == 3
    assert sorted(os.listdir(os.path.join(root, "e1"))) == ["labelled.csv", "models",
                                                            "worker1.err", "worker1.out"]


def test_classifier_workers_resume_the_chiefs_run_like_one_process(classifier_runs):
    runs, root = classifier_runs, classifier_runs["root"]
    chief, other = runs["e2"]
    assert [w.proc.returncode for w in (chief, other)] == [0, 0], chief.log() + other.log()
    # worker 1 had no run: the weights, head, labels and step came from the chief
    losses, result = runs["one2"]
    assert len(losses) == 2
    np.testing.assert_allclose(chief.losses(), losses, rtol=1e-5)
    np.testing.assert_allclose(other.losses(), losses, rtol=1e-5)
    assert worker_result(other)["step"] == 5 and result["step"] == 5
    assert "[4 | " in chief.out and "[5 | " in chief.out
    _, ours = _classifier_run(root, "e2_0")
    _, one = _classifier_run(root, "e2_one")
    assert max(float(np.abs(ours[n] - one[n]).max()) for n in ours) < 1e-5
    assert sorted(os.listdir(os.path.join(root, "e2_1"))) == ["labelled.csv", "models",
                                                              "worker1.err", "worker1.out"]


def test_classifier_workers_with_different_data_both_stop_and_say_so(classifier_runs):
    for w in classifier_runs["f"]:
        assert w.proc.returncode == 3, w.log()
        message = [line for line in w.err.splitlines() if line.startswith("ERROR ")]
        assert message and message[0].startswith(
            "ERROR TrainingError: The workers were started with different settings"), w.log()
        assert "Traceback" not in w.err
    assert "train_rows is sha256:" in classifier_runs["f"][1].err
    assert not os.path.exists(os.path.join(classifier_runs["root"], "f0", "checkpoint",
                                           "classifier", "model-1.index"))


# -- without a cluster --------------------------------------------------------------

def test_multiworker_without_tf_config_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TrainingError, match="needs the environment variable TF_CONFIG"):
        distributed.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(TrainingError, match="TF_CONFIG is not valid"):
        distributed.make_strategy("multiworker")
    with pytest.raises(TrainingError, match="Unknown strategy 'tpus'. Choose one of: "
                                            "multiworker, mirrored"):
        distributed.make_strategy("tpus")
    assert distributed.make_strategy("none") is None
    assert distributed.is_chief(None) and distributed.worker_count(None) == 1


def test_a_worker_other_than_the_chief_reads_the_cache_but_never_writes_one(tmp_path):
    enc = get_encoder(example_vocab())
    (tmp_path / "data.txt").write_text(TEXT)
    run = tmp_path / "run"
    run.mkdir()
    mine = load_dataset(enc, str(tmp_path / "data.txt"), cache_dir=str(run), write_cache=False)
    assert os.listdir(run) == []
    chiefs = load_dataset(enc, str(tmp_path / "data.txt"), cache_dir=str(run))
    assert sorted(f.rsplit(".", 1)[1] for f in os.listdir(run)) == ["json", "npy"]
    again = load_dataset(enc, str(tmp_path / "data.txt"), cache_dir=str(run), write_cache=False)
    assert getattr(again[0], "filename", None)  # memory-mapped from the chief's cache
    for a, b, c in zip(mine, chiefs, again):
        assert a.tolist() == b.tolist() == c.tolist()


def test_the_message_names_the_lost_worker():
    import tensorflow as tf

    class FakeStrategy:
        class extended:
            should_checkpoint = True

        class cluster_resolver:
            task_type, task_id = "worker", 0

            @staticmethod
            def cluster_spec():
                return tf.train.ClusterSpec({"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]})

    err = tf.errors.UnavailableError(None, None, "Graph execution error:\n\nCollective ops is "
                                     "aborted by: The following tasks are unhealthy (stopped "
                                     "sending heartbeats):\n/job:worker/replica:0/task:1\n")
    message = str(distributed.lost_worker_error(err, FakeStrategy, 7,
                                                "checkpoint/run1/model-5"))
    assert message.startswith("Multi-worker training ended at step 7: worker 1 (10.0.0.2:2222) "
                              "stopped (TensorFlow: The following tasks are unhealthy (stopped "
                              "sending heartbeats)).")
    assert "last checkpoint is checkpoint/run1/model-5" in message


def test_the_command_line_flag_hands_the_strategy_name_to_finetune(tmp_path, monkeypatch):
    from gpt2_simple_plus import cli

    seen = {}
    monkeypatch.setattr(gpt2, "finetune", lambda sess, dataset, **kw: seen.update(kw))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(TEXT)
    assert cli.main(["finetune", "--dataset", "a.txt", "--hparams", "tiny", "--vocab_dir",
                     example_vocab(), "--strategy", "multiworker"]) == 0
    assert seen["strategy"] == "multiworker"
    assert cli.parse(["finetune", "--dataset", "a.txt"]).strategy is None
    with pytest.raises(SystemExit):
        cli.parse(["finetune", "--dataset", "a.txt", "--strategy", "tpus"])


def test_workers_and_worker_index_set_tf_config_for_finetune(tmp_path, monkeypatch):
    from gpt2_simple_plus import cli

    seen = {}
    monkeypatch.setattr(gpt2, "finetune", lambda sess, dataset, **kw: seen.update(
        kw, tf_config=os.environ["TF_CONFIG"]))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TF_CONFIG", "")  # restored (removed) after the test
    (tmp_path / "a.txt").write_text(TEXT)
    base = ["finetune", "a.txt", "--hparams", "tiny", "--vocab_dir", example_vocab()]
    assert cli.main(base + ["--workers", "10.0.0.1:2222, 10.0.0.2:2222",
                            "--worker_index", "1"]) == 0
    assert seen["strategy"] == "multiworker"
    assert json.loads(seen["tf_config"]) == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
        "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("flags, message", [
    (["--workers", "10.0.0.1:2222,10.0.0.2:2222"], "--workers and --worker_index go together"),
    (["--worker_index", "0"], "--workers and --worker_index go together"),
    (["--workers", "10.0.0.1:2222,10.0.0.2", "--worker_index", "0"],
     "Worker address '10.0.0.2' is not host:port"),
    (["--workers", "10.0.0.1:2222,10.0.0.2:2222", "--worker_index", "2"],
     "The worker index must be 0 to 1"),
    (["--workers", "10.0.0.1:2222,10.0.0.1:2222", "--worker_index", "0"],
     "list an address twice"),
    (["--workers", "10.0.0.1:2222", "--worker_index", "0"], "needs at least two workers"),
    (["--workers", "a:1,b:2", "--worker_index", "0", "--strategy", "mirrored"],
     "does not go with --strategy mirrored"),
    (["--workers", "a:1,b:2", "--worker_index", "0", "TF_CONFIG"],
     "TF_CONFIG is set in the environment and --workers is given"),
])
def test_bad_workers_flags_say_what_to_fix_before_anything_runs(tmp_path, monkeypatch, capsys,
                                                                flags, message):
    from gpt2_simple_plus import cli

    monkeypatch.setattr(gpt2, "finetune", lambda *a, **k: pytest.fail("finetune ran"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}' if "TF_CONFIG" in flags else "")
    (tmp_path / "a.txt").write_text(TEXT)
    flags = [f for f in flags if f != "TF_CONFIG"]
    assert cli.main(["finetune", "a.txt", "--hparams", "tiny", "--vocab_dir",
                     example_vocab()] + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_command_line_trains_across_two_workers_from_workers_flags(tmp_path,
                                                                     tiny_model_dir):
    folders = [machine(str(tmp_path / f"m{i}"), tiny_model_dir) for i in range(2)]
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=helpers.REPO, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(
        [sys.executable, "-m", "gpt2_simple_plus", "finetune", "data.txt", "--model_name",
         "tiny", "--steps", "2", "--batch_size", "2", "--accumulate_gradients", "1",
         "--sample_every", "0", "--seed", "0", "--download", "false", "--workers", workers,
         "--worker_index", str(i)], cwd=folder, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i, folder in enumerate(folders)]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    log = "\n".join(f"--- worker {i}:\n{out}\n{err[-2000:]}" for i, (out, err) in
                    enumerate(outputs))
    assert [p.returncode for p in procs] == [0, 0], log
    chief_out, worker_out = outputs[0][0], outputs[1][0]
    assert "Training on 2 devices in 2 workers (this is the chief)" in chief_out, log
    assert "The run is in checkpoint/run1" in chief_out, log
    assert worker_out.strip() == "", log
    assert checkpoints.read_counter(os.path.join(folders[0], "checkpoint", "run1")) == 2
    assert not os.path.exists(os.path.join(folders[1], "checkpoint"))


def test_doctests():
    import doctest

    result = doctest.testmod(distributed, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 3

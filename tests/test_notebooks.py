"""The notebooks in notebooks/ run end to end in a Jupyter kernel (nbclient, ``python3``).

Their first code cell reads ``GPT2_SIMPLE_PLUS_NOTEBOOK_TEST``: set, they run
offline in seconds on a tiny model trained from scratch instead of GPT-2 124M,
with Google Drive replaced by a folder (``GPT2_SIMPLE_PLUS_DRIVE_ROOT``).
"""

import os

import nbclient  # the test extra installs nbclient, nbformat and ipykernel (the kernel)
import nbformat

import helpers

NOTEBOOKS = os.path.join(helpers.REPO, "notebooks")


def execute(name, cwd, monkeypatch):
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    # committed without outputs, and the first code cell selects the test configuration
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "GPT2_SIMPLE_PLUS_NOTEBOOK_TEST" in code[0].source
    monkeypatch.setenv("GPT2_SIMPLE_PLUS_NOTEBOOK_TEST", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("GPT2_SIMPLE_PLUS_BASE_URL", raising=False)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    texts = ["".join(o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
                     for o in c.outputs) for c in code]
    images = [sum("image/png" in o.get("data", {}) for o in c.outputs) for c in code]
    return texts, images, code


def test_tutorial_colab(tmp_path, monkeypatch):
    drive = tmp_path / "drive"
    (drive / "MyDrive").mkdir(parents=True)
    monkeypatch.setenv("GPT2_SIMPLE_PLUS_DRIVE_ROOT", str(drive))
    work = tmp_path / "colab"
    work.mkdir()
    outputs, images, code = execute("tutorial_colab.ipynb", work, monkeypatch)
    text = "\n".join(outputs)
    # the loss plot (read from the run's TensorBoard events file), and the TensorBoard cell
    plot = next(i for i, c in enumerate(code) if "gpt2.plot_loss(" in c.source)
    assert images[plot] == 1 and sum(images) == 1
    assert "val_loss=" in text
    assert any("%tensorboard --logdir checkpoint" in c.source for c in code)
    run_files = os.listdir(work / "checkpoint" / "run1")
    assert any(n.startswith("events.out.tfevents.") for n in run_files)
    assert "[5 |" in text and "loss=" in text
    # saved to the Drive, deleted locally, restored and generated from
    assert (drive / "MyDrive" / "checkpoint_run1.tar").exists()
    assert (drive / "MyDrive" / "gpt2_gentext.txt").exists()
    assert (work / "checkpoint" / "run1" / "model-5.index").exists()
    assert "Loading checkpoint checkpoint/run1/model-5" in outputs[-1]
    assert len((work / "gpt2_gentext.txt").read_text(encoding="utf-8").split("=" * 20)) == 11


def test_teaching(tmp_path, monkeypatch):
    outputs, images, code = execute("teaching.ipynb", tmp_path, monkeypatch)
    text = "\n".join(outputs)
    # bar charts: two temperatures side by side, then top-k beside top-p
    charted = [c.source for c, n in zip(code, images) if n]
    assert len(charted) == 2 and sum(images) == 2
    assert "temperature" in charted[0] and "top_k=" in charted[1] and "top_p=" in charted[1]
    assert "token" in text and "ids: [" in text
    assert "rank" in text and "probability" in text  # next_token_probabilities' table
    assert "temperature 0.5" in text and "top_p=0.9: keeps the" in text
    for name in ("greedy (temperature 0)", "temperature 1.5 (no cut-off)"):
        assert name in text
    assert "normal:" in text and "shuffled:" in text

"""Classification fine-tuning: a tiny GPT-2 must really learn which keyword a text holds;
CSV and JSON-lines inputs, string and int labels, save / reload / classify, bad inputs."""

import json
import os

import numpy as np
import pytest

import gpt2_simple_plus as gpt2
from gpt2_simple_plus.checkpoints import read_bundle
from gpt2_simple_plus.loading import load_model
from gpt2_simple_plus.classifier import load_classifier
from gpt2_simple_plus.data import read_labelled

import helpers
from helpers import KEYWORDS, keyword_texts, write_csv, write_jsonl


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One real training run from a CSV with whole-number labels (0, 1, 2)."""
    folder = tmp_path_factory.mktemp("classifier")
    topics = sorted(set(KEYWORDS.values()))
    texts, labels = keyword_texts(300, seed=0)
    path = write_csv(folder / "train.csv", texts, [topics.index(x) for x in labels],
                     columns=("review", "stars"))
    sess = gpt2.start_tf_sess()
    result = gpt2.finetune_classifier(
        sess, path, text_column="review", label_column="stars", model_name="tiny",
        model_dir=os.path.dirname(tiny_model_dir), checkpoint_dir=str(folder / "checkpoint"),
        run_name="keywords", steps=120, batch_size=16, learning_rate=1e-3, max_length=64,
        eval_every=60, print_every=0, seed=0)
    return sess, result, str(folder / "checkpoint"), topics


def test_learns_keywords_well_above_chance(trained):
    sess, result, _, topics = trained
    assert result["labels"] == [0, 1, 2]
    assert [h["step"] for h in result["history"]] == [60, 120]
    assert result["val_accuracy"] >= 0.9
    texts, labels = keyword_texts(90, seed=1)  # held out: never seen in training
    out = gpt2.classify(sess, texts)
    accuracy = np.mean([o["label"] == topics.index(x) for o, x in zip(out, labels)])
    assert accuracy >= 0.9, accuracy
    for o in out:
        assert type(o["label"]) is int and set(o["probabilities"]) == {0, 1, 2}
        assert abs(sum(o["probabilities"].values()) - 1) < 1e-5
        assert o["label"] == max(o["probabilities"], key=o["probabilities"].get)
    single = gpt2.classify(sess, texts[0])
    assert single["label"] == out[0]["label"]
    assert single["probabilities"] == pytest.approx(out[0]["probabilities"], abs=1e-5)


def test_train_step_is_traced_once_per_length_bucket(trained):
    sess, *_ = trained
    traces = sess.classifier.train_traces
    assert 1 <= traces <= 3  # lengths 16, 32, 64 at most; not one per step (120 steps)


def test_run_folder_and_reload_round_trip(trained):
    sess, result, checkpoint_dir, _ = trained
    run = os.path.join(checkpoint_dir, "keywords")
    files = set(os.listdir(run))
    assert {"model-120.index", "model-120.data-00000-of-00001", "train_state-120.index",
            "labels.json", "hparams.json", "encoder.json", "vocab.bpe", "checkpoint",
            "counter"} <= files
    with open(os.path.join(run, "labels.json"), encoding="utf-8") as f:
        assert json.load(f) == [0, 1, 2]
    # The body is a plain GPT-2 checkpoint: nothing but GPT-2's variables.
    body = read_bundle(os.path.join(run, "model-120"))
    assert set(body) == set(sess.model.weights)
    assert load_model(run).hparams == sess.model.hparams
    texts, _ = keyword_texts(12, seed=3)
    before = gpt2.classify(sess, texts)
    fresh = gpt2.start_tf_sess()
    with pytest.raises(gpt2.ModelNotFoundError, match="finetune_classifier"):
        gpt2.classify(fresh, texts)
    after = gpt2.classify(fresh, texts, run_name="keywords", checkpoint_dir=checkpoint_dir)
    assert [a["label"] for a in after] == [b["label"] for b in before]
    for a, b in zip(after, before):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    clf = load_classifier(gpt2.start_tf_sess(), "keywords", checkpoint_dir)
    assert clf.labels == [0, 1, 2] and clf.max_length == 64


def test_jsonl_string_labels_progress_lines_and_continue_training(tiny_model_dir, tmp_path,
                                                                  capsys):
    texts, labels = keyword_texts(30, seed=4)
    path = write_jsonl(tmp_path / "train.jsonl", texts, labels)
    val = write_jsonl(tmp_path / "val.jsonl", *keyword_texts(6, seed=5))
    sess = gpt2.start_tf_sess()
    kwargs = dict(model_name="tiny", model_dir=os.path.dirname(tiny_model_dir),
                  checkpoint_dir=str(tmp_path / "ck"), run_name="topics", steps=3, batch_size=4,
                  print_every=1, eval_every=2)
    result = gpt2.finetune_classifier(sess, path, val_dataset=val, **kwargs)
    assert result["labels"] == ["fruit", "music", "water"] and result["step"] == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # steps 1 (training), 2 (evaluation), 3 (last: evaluation)
    assert lines[0].startswith("[1 | ") and " loss=" in lines[0] and " avg=" in lines[0]
    for line in lines[1:]:
        assert " loss=" in line and " val_loss=" in line and " val_acc=" in line
    assert lines[1].startswith("[2 | ") and lines[2].startswith("[3 | ")
    assert gpt2.classify(sess, "an apple")["label"] in result["labels"]
    # restore_from="latest" continues the run's step count with its labels.
    again = gpt2.finetune_classifier(gpt2.start_tf_sess(), path, restore_from="latest", **kwargs)
    assert again["step"] == 6
    assert os.path.isfile(tmp_path / "ck" / "topics" / "model-6.index")
    with pytest.raises(gpt2.TrainingError, match="labels"):
        gpt2.finetune_classifier(gpt2.start_tf_sess(), path, restore_from="latest",
                                 labels=["a", "b"], **kwargs)


def test_interrupting_saves_what_was_trained(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from gpt2_simple_plus import classifier

    calls, pad = [], classifier.pad_right

    def pad_then_stop(*args):
        calls.append(1)
        if len(calls) == 4:  # the 4th training batch: as if Ctrl-C were pressed
            raise KeyboardInterrupt
        return pad(*args)

    monkeypatch.setattr(classifier, "pad_right", pad_then_stop)
    result = gpt2.finetune_classifier(
        gpt2.start_tf_sess(), keyword_texts(20, seed=6), model_name="tiny",
        model_dir=os.path.dirname(tiny_model_dir), checkpoint_dir=str(tmp_path), steps=50,
        batch_size=4, print_every=0, eval_every=0)
    assert result["step"] == 3 and [h["step"] for h in result["history"]] == [3]
    assert "interrupted" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "classifier" / "model-3.index")
    assert os.path.isfile(tmp_path / "classifier" / "train_state-3.index")


def test_reading_datasets(tmp_path):
    texts, labels = ["good", "bad, really", "ok\nfine"], ["pos", "neg", "pos"]
    assert read_labelled((texts, labels)) == (texts, labels)
    assert read_labelled({"text": texts, "label": labels}) == (texts, labels)
    assert read_labelled([{"text": t, "label": x} for t, x in zip(texts, labels)]) == \
        (texts, labels)
    assert read_labelled(write_csv(tmp_path / "a.csv", texts, labels)) == (texts, labels)
    assert read_labelled(write_csv(tmp_path / "b.csv", texts, [5, 1, 3])) == (texts, [5, 1, 3])
    assert read_labelled(write_jsonl(tmp_path / "c.jsonl", texts, ["1", "2", "3"])) == \
        (texts, ["1", "2", "3"])  # JSON keeps strings strings
    with open(tmp_path / "d.json", "w") as f:
        json.dump([{"text": t, "label": i} for i, t in enumerate(texts)], f)
    assert read_labelled(str(tmp_path / "d.json")) == (texts, [0, 1, 2])


def test_bad_inputs_say_what_is_wrong(tiny_model_dir, tmp_path):
    csv_path = write_csv(tmp_path / "reviews.csv", ["nice"], [5], columns=("review", "stars"))
    with pytest.raises(gpt2.DatasetError) as err:
        read_labelled(csv_path)
    message = str(err.value)
    assert "reviews.csv" in message and "'text'" in message
    assert "'review'" in message and "'stars'" in message and "text_column" in message
    jsonl = write_jsonl(tmp_path / "r.jsonl", ["nice", "bad"], [5, 1], columns=("text", "stars"))
    with pytest.raises(gpt2.DatasetError, match=r"r\.jsonl, line 1 has no 'label'.*'stars'"):
        read_labelled(jsonl)
    with pytest.raises(gpt2.DatasetError, match="does not exist"):
        read_labelled(str(tmp_path / "missing.csv"))
    with pytest.raises(gpt2.DatasetError, match="mixes"):
        read_labelled((["a", "b"], [1, "x"]))
    with pytest.raises(gpt2.DatasetError, match="same length"):
        read_labelled((["a", "b"], [1]))
    with pytest.raises(gpt2.DatasetError, match="line 3"):
        read_labelled(write_csv(tmp_path / "e.csv", ["a", "b"], ["x", ""]))
    with pytest.raises(gpt2.DatasetError, match="no rows"):
        read_labelled(write_csv(tmp_path / "f.csv", [], []))
    sess = gpt2.start_tf_sess()
    model_dir = os.path.dirname(tiny_model_dir)
    with pytest.raises(gpt2.DatasetError, match="at least two labels"):
        gpt2.finetune_classifier(sess, (["a", "b"], ["x", "x"]), model_name="tiny",
                                 model_dir=model_dir, checkpoint_dir=str(tmp_path), steps=1)
    with pytest.raises(gpt2.ModelNotFoundError, match="download_gpt2"):
        gpt2.finetune_classifier(sess, (["a", "b"], ["x", "y"]), model_name="124M",
                                 model_dir=str(tmp_path / "no-models"),
                                 checkpoint_dir=str(tmp_path), steps=1)
    with pytest.raises(gpt2.ModelNotFoundError, match="not a classifier run"):
        load_classifier(sess, "tiny", checkpoint_dir=model_dir)
    with pytest.raises(gpt2.ModelNotFoundError, match="No classifier run"):
        load_classifier(sess, "nothing", checkpoint_dir=str(tmp_path))


@pytest.mark.slow
def test_classify_reviews_example(tmp_path):
    script = os.path.join(helpers.REPO, "examples", "classify_reviews.py")
    result = helpers.run_python(
        f"import sys, runpy; sys.argv = [{script!r}, '--tiny', '--workdir', {str(tmp_path)!r}]; "
        f"runpy.run_path({script!r}, run_name='__main__')", cwd=helpers.REPO, timeout=300,
        env={"PYTHONPATH": helpers.REPO + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(tmp_path / "reviews.csv")
    accuracy = [line for line in result.stdout.splitlines() if line.startswith("Test accuracy")]
    assert accuracy, result.stdout
    assert float(accuracy[0].split()[2].rstrip("%")) / 100 > 0.5  # chance is 0.2

"""Checkpoints: round trips, pruning, atomic saves and a clear message for every bad input."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from gpt2_simple_plus import checkpoints
from gpt2_simple_plus.checkpoints import (DATA_SUFFIX, CheckpointWeights, find_checkpoint,
                                          latest_checkpoint, list_checkpoints, read_counter,
                                          read_train_state, save_checkpoint,
                                          save_pretrained_layout)
from gpt2_simple_plus.loading import load_model, read_checkpoint
from gpt2_simple_plus.errors import CheckpointError, HParamsError, ModelNotFoundError
from gpt2_simple_plus.hparams import hparams_for, load_hparams, save_hparams
from gpt2_simple_plus.model import GPT2, random_weights

HP = hparams_for("tiny", n_vocab=300, n_ctx=16)
TOKENS = [[5, 17, 250, 3, 99, 42]]


def weights_for(seed, hparams=HP):
    return random_weights(hparams, seed)


def logits_of(weights, hparams=HP):
    return GPT2(hparams, weights)(TOKENS).numpy()


def saved_run(tmp_path, steps=(1,), **kwargs):
    run = str(tmp_path / "checkpoint" / "run1")
    for step in steps:
        save_checkpoint(run, weights_for(step), step, hparams=HP, **kwargs)
    return run


def state_of(folder):
    """The ``checkpoint`` state file as TensorFlow itself parses it."""
    state = tf.train.get_checkpoint_state(folder)
    return (os.path.basename(state.model_checkpoint_path),
            [os.path.basename(p) for p in state.all_model_checkpoint_paths])


def staging_folders(folder):
    return [n for n in os.listdir(folder) if n.startswith(".saving-") or n.startswith(".tmp-")]


# ---------------------------------------------------------------------------
# Round trips


def test_save_then_load_gives_identical_logits(tmp_path):
    run = str(tmp_path / "run1")
    weights = weights_for(7)
    assert save_checkpoint(run, weights, 7, hparams=HP) == "model-7"
    assert os.path.isfile(os.path.join(run, "model-7.index"))
    assert os.path.isfile(os.path.join(run, "model-7" + DATA_SUFFIX))
    model = load_model(run)
    assert model.hparams == HP
    for name, value in weights.items():
        np.testing.assert_array_equal(model.weights[name].numpy(), value, err_msg=name)
    np.testing.assert_array_equal(model(TOKENS).numpy(), logits_of(weights))
    assert state_of(run) == ("model-7", ["model-7"])
    assert tf.train.latest_checkpoint(run) == os.path.join(run, "model-7")
    assert staging_folders(run) == []


def test_bundle_keys_are_the_checkpoint_names(tmp_path):
    run = saved_run(tmp_path)
    reader = tf.train.load_checkpoint(os.path.join(run, "model-1"))
    assert reader.get_variable_to_shape_map() == {
        n: list(s) for n, s in checkpoints.variable_shapes(HP).items()}


def test_read_checkpoint_is_a_lazy_validated_mapping(tmp_path):
    run = saved_run(tmp_path, steps=(1, 2), max_checkpoints=None)
    weights = read_checkpoint(run, "model-1")
    assert isinstance(weights, CheckpointWeights)
    assert list(weights.keys()) == list(checkpoints.variable_shapes(HP))
    np.testing.assert_array_equal(weights["model/h1/mlp/c_fc/w"],
                                  weights_for(1)["model/h1/mlp/c_fc/w"])
    np.testing.assert_array_equal(load_model(run, "model-1")(TOKENS).numpy(),
                                  logits_of(weights_for(1)))
    np.testing.assert_array_equal(load_model(run)(TOKENS).numpy(), logits_of(weights_for(2)))


def test_max_checkpoints_prunes_old_bundles_and_the_state_file_lists_the_kept(tmp_path):
    run = saved_run(tmp_path, steps=(1, 2, 3, 4), max_checkpoints=2)
    assert sorted(n for n in os.listdir(run) if n.startswith("model-")) == [
        "model-3" + DATA_SUFFIX, "model-3.index", "model-4" + DATA_SUFFIX, "model-4.index"]
    assert state_of(run) == ("model-4", ["model-3", "model-4"])
    assert [os.path.basename(p) for p in list_checkpoints(run)] == ["model-3", "model-4"]
    np.testing.assert_array_equal(load_model(run, "model-3")(TOKENS).numpy(),
                                  logits_of(weights_for(3)))


def test_max_checkpoints_none_keeps_all_and_default_keeps_one(tmp_path):
    run = saved_run(tmp_path / "all", steps=(10, 20, 30), max_checkpoints=None)
    assert state_of(run) == ("model-30", ["model-10", "model-20", "model-30"])
    run = saved_run(tmp_path / "one", steps=(10, 20, 30))
    assert state_of(run) == ("model-30", ["model-30"])
    assert [os.path.basename(p) for p in list_checkpoints(run)] == ["model-30"]


def test_counter_follows_the_last_save(tmp_path):
    run = str(tmp_path / "run1")
    assert read_counter(run) == 0
    for step in (1, 250, 1000):
        save_checkpoint(run, weights_for(0), step, hparams=HP)
        assert read_counter(run) == step
    with open(os.path.join(run, "counter")) as f:
        assert f.read() == "1000\n"  # what gpt-2-simple writes and reads back


def test_garbage_counter_says_what_to_do(tmp_path):
    (tmp_path / "counter").write_text("twelve")
    with pytest.raises(CheckpointError) as err:
        read_counter(str(tmp_path))
    assert str(tmp_path / "counter") in str(err.value) and "Delete it" in str(err.value)


def test_train_state_written_read_back_and_pruned_together(tmp_path):
    run = str(tmp_path / "run1")
    states = {}
    for step in (1, 2, 3):
        states[step] = {
            "optimizer/m/model/wte": np.full((3, 4), step, np.float32),
            "optimizer/iterations": np.array(step * 10, np.int64),
        }
        save_checkpoint(run, weights_for(step), step, hparams=HP, train_state=states[step],
                        max_checkpoints=2)
    assert read_train_state(run, 1) is None
    for step in (2, 3):
        got = read_train_state(run, step)
        assert set(got) == set(states[step])
        for name, value in states[step].items():
            np.testing.assert_array_equal(got[name], value)
            assert got[name].dtype == value.dtype
    assert not any(n.startswith("train_state-1") for n in os.listdir(run))
    # the model files stay what gpt-2-simple expects: train state is not a checkpoint
    assert [os.path.basename(p) for p in list_checkpoints(run)] == ["model-2", "model-3"]
    assert state_of(run) == ("model-3", ["model-2", "model-3"])
    assert latest_checkpoint(run) == os.path.join(run, "model-3")


def test_model_files_from_copies_the_vocabulary(tmp_path, tiny_model_dir):
    run = str(tmp_path / "run1")
    weights = load_model(tiny_model_dir).numpy_weights()
    save_checkpoint(run, weights, 1, model_files_from=tiny_model_dir)
    for name in ("hparams.json", "encoder.json", "vocab.bpe"):
        with open(os.path.join(run, name), "rb") as a, \
                open(os.path.join(tiny_model_dir, name), "rb") as b:
            assert a.read() == b.read(), name
    np.testing.assert_array_equal(load_model(run)(TOKENS).numpy(),
                                  load_model(tiny_model_dir)(TOKENS).numpy())


def test_openai_layout_round_trip(tmp_path, tiny_model_dir):
    folder = str(tmp_path / "models" / "124M-like")
    weights = weights_for(11)
    save_pretrained_layout(folder, weights, HP, vocab_from=tiny_model_dir)
    assert sorted(os.listdir(folder)) == sorted([
        "checkpoint", "encoder.json", "hparams.json", "model.ckpt" + DATA_SUFFIX,
        "model.ckpt.index", "vocab.bpe"])
    assert state_of(folder) == ("model.ckpt", ["model.ckpt"])
    assert load_hparams(folder) == HP
    assert checkpoints.step_of(latest_checkpoint(folder)) == 0
    np.testing.assert_array_equal(load_model(folder)(TOKENS).numpy(), logits_of(weights))


def test_tiny_model_fixture_loads(tiny_model_dir):
    model = load_model(tiny_model_dir)
    assert model.hparams.n_vocab == 277 and model.hparams.n_layer == 2
    assert model([[1, 2, 3]]).shape == (1, 3, 277)


# ---------------------------------------------------------------------------
# Atomic saves


def assert_previous_checkpoint_in_charge(run):
    assert state_of(run) == ("model-1", ["model-1"])
    assert latest_checkpoint(run) == os.path.join(run, "model-1")
    assert read_counter(run) == 1
    np.testing.assert_array_equal(load_model(run)(TOKENS).numpy(), logits_of(weights_for(1)))
    assert staging_folders(run) == []


def test_interrupted_move_leaves_the_previous_checkpoint_in_charge(tmp_path, monkeypatch):
    run = saved_run(tmp_path)
    real_replace = os.replace

    def crash_on_index(src, dst):
        if str(dst).endswith(".index"):
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_index)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(run, weights_for(2), 2, hparams=HP)
    monkeypatch.undo()
    assert_previous_checkpoint_in_charge(run)
    assert "model-2" not in [os.path.basename(p) for p in list_checkpoints(run)]
    # the next save succeeds and takes over
    save_checkpoint(run, weights_for(2), 2, hparams=HP)
    assert state_of(run) == ("model-2", ["model-2"])
    np.testing.assert_array_equal(load_model(run)(TOKENS).numpy(), logits_of(weights_for(2)))


def test_interrupted_bundle_write_leaves_the_previous_checkpoint_in_charge(tmp_path, monkeypatch):
    run = saved_run(tmp_path)
    real_write = checkpoints.write_bundle
    calls = []

    def crash_on_second_bundle(prefix, arrays):
        calls.append(prefix)
        real_write(prefix, arrays)  # the model bundle is complete in the staging folder ...
        if len(calls) == 2:
            raise KeyboardInterrupt  # ... and the user interrupts while the train state is written

    monkeypatch.setattr(checkpoints, "write_bundle", crash_on_second_bundle)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run, weights_for(2), 2, hparams=HP,
                        train_state={"optimizer/iterations": np.array(2, np.int64)})
    monkeypatch.undo()
    assert len(calls) == 2 and all(".saving-" in p for p in calls)
    assert_previous_checkpoint_in_charge(run)
    assert not any(n.startswith(("model-2", "train_state-2")) for n in os.listdir(run))


def test_interrupted_state_file_write_leaves_the_previous_checkpoint_in_charge(tmp_path,
                                                                             monkeypatch):
    run = saved_run(tmp_path)
    real_replace = os.replace

    def crash_on_state_file(src, dst):
        if os.path.basename(dst) == "checkpoint":
            raise OSError("power cut (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_state_file)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(run, weights_for(2), 2, hparams=HP)
    monkeypatch.undo()
    assert_previous_checkpoint_in_charge(run)


# ---------------------------------------------------------------------------
# Bad inputs, and what the messages say


def test_missing_folder(tmp_path):
    folder = str(tmp_path / "models" / "124M")
    with pytest.raises(ModelNotFoundError) as err:
        load_model(folder)
    assert folder in str(err.value) and "download_gpt2" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        find_checkpoint(folder)


def test_folder_without_a_checkpoint_suggests_download(tmp_path):
    folder = str(tmp_path / "models" / "124M")
    save_hparams(folder, HP)
    with pytest.raises(ModelNotFoundError) as err:
        load_model(folder)
    message = str(err.value)
    assert folder in message and "No checkpoint" in message
    assert "download_gpt2(model_name='124M')" in message and "finetune" in message


def test_missing_data_file_names_it(tmp_path):
    run = saved_run(tmp_path)
    data = os.path.join(run, "model-1" + DATA_SUFFIX)
    os.remove(data)
    with pytest.raises(CheckpointError) as err:
        load_model(run)
    assert data in str(err.value) and "missing" in str(err.value)


def test_truncated_data_file_names_it(tmp_path):
    run = saved_run(tmp_path)
    data = os.path.join(run, "model-1" + DATA_SUFFIX)
    os.truncate(data, os.path.getsize(data) // 2)
    with pytest.raises(CheckpointError) as err:
        load_model(run)
    message = str(err.value)
    assert data in message and "truncated" in message and "download or train again" in message



def test_a_tensor_read_straight_into_tensorflow_equals_the_array(tmp_path):
    """CheckpointWeights.tensor (what a merged LoRA save reads) and its truncated file."""
    run = saved_run(tmp_path)
    weights = CheckpointWeights(find_checkpoint(run), load_hparams(run))
    for name in ("model/wte", "model/h0/attn/c_attn/w", "model/ln_f/b"):
        tensor = weights.tensor(name)
        assert isinstance(tensor, tf.Tensor) and tensor.dtype == tf.float32
        np.testing.assert_array_equal(tensor.numpy(), weights[name])
    data = os.path.join(run, "model-1" + DATA_SUFFIX)
    os.truncate(data, os.path.getsize(data) // 2)
    with pytest.raises(CheckpointError) as err:
        for name in weights.keys():
            weights.tensor(name)
    assert data in str(err.value) and "truncated" in str(err.value)

def test_truncated_train_state_names_it(tmp_path):
    run = saved_run(tmp_path, train_state={"m": np.zeros((1000,), np.float32),
                                           "v": np.ones((1000,), np.float32)})
    data = os.path.join(run, "train_state-1" + DATA_SUFFIX)
    os.truncate(data, os.path.getsize(data) // 2)
    with pytest.raises(CheckpointError) as err:
        read_train_state(run, 1)
    assert data in str(err.value) and "truncated" in str(err.value)


def test_corrupt_index_file(tmp_path):
    run = saved_run(tmp_path)
    with open(os.path.join(run, "model-1.index"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(500))
    with pytest.raises(CheckpointError) as err:
        load_model(run)
    message = str(err.value)
    assert os.path.join(run, "model-1") in message
    assert "corrupt" in message and "delete them" in message


def test_shapes_that_disagree_with_hparams_name_the_variable_and_both_shapes(tmp_path):
    run = saved_run(tmp_path)  # n_embd=32
    save_hparams(run, hparams_for("tiny", n_vocab=300, n_ctx=16, n_embd=64))
    with pytest.raises(CheckpointError) as err:
        load_model(run)
    message = str(err.value)
    assert "'model/wpe'" in message
    assert "(16, 32)" in message and "(16, 64)" in message
    assert "hparams.json" in message


def test_checkpoint_lacking_a_variable(tmp_path):
    run = str(tmp_path / "run1")
    weights = weights_for(1)
    del weights["model/ln_f/g"]
    save_checkpoint(run, weights, 1, hparams=HP)
    with pytest.raises(CheckpointError, match="lacks 1 variable.*'model/ln_f/g'"):
        load_model(run)


def test_invalid_hparams_json(tmp_path):
    run = saved_run(tmp_path)
    path = os.path.join(run, "hparams.json")
    with open(path, "w") as f:
        f.write('{"n_vocab": 300, "n_ctx": ')
    with pytest.raises(HParamsError) as err:
        load_model(run)
    assert path in str(err.value) and "not valid JSON" in str(err.value)
    assert "download the model again" in str(err.value)


def test_hparams_json_that_is_not_an_object(tmp_path):
    run = saved_run(tmp_path)
    with open(os.path.join(run, "hparams.json"), "w") as f:
        json.dump([1, 2, 3], f)
    with pytest.raises(HParamsError, match="JSON object"):
        load_model(run)


def test_unknown_checkpoint_lists_what_is_there(tmp_path):
    run = saved_run(tmp_path, steps=(100, 200), max_checkpoints=None)
    with pytest.raises(ModelNotFoundError) as err:
        load_model(run, checkpoint="model-999")
    message = str(err.value)
    assert "'model-999'" in message and run in message
    assert "model-100, model-200" in message


def test_state_file_naming_a_deleted_bundle_falls_back_to_what_is_on_disk(tmp_path):
    run = saved_run(tmp_path, steps=(1, 2), max_checkpoints=None)
    for suffix in (".index", DATA_SUFFIX):
        os.remove(os.path.join(run, "model-2" + suffix))
    assert latest_checkpoint(run) == os.path.join(run, "model-1")
    np.testing.assert_array_equal(load_model(run)(TOKENS).numpy(), logits_of(weights_for(1)))


def test_copied_run_folder_still_loads(tmp_path):
    """State files hold relative names, so a run folder can be moved (e.g. to Drive and back)."""
    run = saved_run(tmp_path)
    moved = str(tmp_path / "elsewhere")
    shutil.copytree(run, moved)
    shutil.rmtree(run)
    np.testing.assert_array_equal(load_model(moved)(TOKENS).numpy(), logits_of(weights_for(1)))

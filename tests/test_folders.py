"""folders.py: which folder holds which model, decided before any network access."""

import pytest

from gpt2_simple_plus.errors import ModelNotFoundError
from gpt2_simple_plus.folders import model_folder, model_folder_name, required_files


def test_folder_names_follow_the_documented_decision():
    assert model_folder_name("124M") == model_folder_name("gpt2") == "124M"
    assert model_folder_name("gpt2-xl") == "1558M"
    assert model_folder_name("gpt2", source="huggingface") == "hf-openai-community--gpt2"
    assert model_folder_name("345M", source="huggingface") == "hf-openai-community--gpt2-medium"
    assert model_folder_name("distilgpt2") == "distilgpt2"
    assert model_folder_name("hf:someone/my-gpt2") == "hf-someone--my-gpt2"
    with pytest.raises(ModelNotFoundError):
        model_folder_name("hf:not-a-repo")


def test_model_folder_says_what_to_run(tmp_path):
    (tmp_path / "models" / "124M").mkdir(parents=True)
    (tmp_path / "checkpoint" / "poems").mkdir(parents=True)
    assert model_folder(model_name="117M", model_dir=str(tmp_path / "models")) == \
        str(tmp_path / "models" / "124M")
    assert model_folder("poems", str(tmp_path / "checkpoint")) == \
        str(tmp_path / "checkpoint" / "poems")
    with pytest.raises(ModelNotFoundError, match=r"download_gpt2\(model_name='355M'"):
        model_folder(model_name="355M", model_dir=str(tmp_path / "models"))
    with pytest.raises(ModelNotFoundError, match="runs found: poems"):
        model_folder("run1", str(tmp_path / "checkpoint"))


def test_required_files_differ_only_by_the_meta_file():
    openai, converted = required_files("124M"), required_files("hf:someone/gpt2-small")
    assert set(openai) - set(converted) == {"model.ckpt.meta"} and len(openai) == 7

"""Bad checkpoints get one clear sentence (what, why, how to fix)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from graphport.errors import ModelLoadError, UnsupportedModelError
from graphport.models.loader import load_checkpoint


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path: Path) -> Path:
    target = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint("bert"), target)
    return target


def test_missing_path(tmp_path: Path):
    with pytest.raises(ModelLoadError, match=r"was not found.*never downloads"):
        load_checkpoint(tmp_path / "nope")


def test_unknown_hub_id_is_not_downloaded():
    with pytest.raises(ModelLoadError, match=r"not found: it is neither a local directory"):
        load_checkpoint("some-org/some-model-that-is-not-cached")


def test_empty_directory(tmp_path: Path):
    with pytest.raises(ModelLoadError, match=r"is empty, so it is not a transformers checkpoint"):
        load_checkpoint(tmp_path)


def test_a_file_instead_of_a_directory(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"is a file, not a checkpoint directory"):
        load_checkpoint(tmp_path / "model.onnx")


def test_corrupt_config(checkpoint_copy: Path):
    (checkpoint_copy / "config.json").write_text('{"model_type": "bert",')
    with pytest.raises(ModelLoadError, match=r"config.json is not valid JSON"):
        load_checkpoint(checkpoint_copy)


def test_unknown_model_type(checkpoint_copy: Path):
    (checkpoint_copy / "config.json").write_text(json.dumps({"model_type": "bertish"}))
    with pytest.raises(UnsupportedModelError, match=r"'bertish'.*unknown to the installed"):
        load_checkpoint(checkpoint_copy)


def test_removed_transformer_xl_is_explained(checkpoint_copy: Path):
    (checkpoint_copy / "config.json").write_text(json.dumps({"model_type": "transfo-xl"}))
    with pytest.raises(UnsupportedModelError, match=r"Transformer-XL.*removed in Transformers 5"):
        load_checkpoint(checkpoint_copy)


def test_checkpoint_without_weights(checkpoint_copy: Path):
    (checkpoint_copy / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"has a config but no weights"):
        load_checkpoint(checkpoint_copy)


def test_truncated_safetensors(checkpoint_copy: Path):
    weights = checkpoint_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"is truncated: its tensors need"):
        load_checkpoint(checkpoint_copy)


def test_safetensors_with_a_cut_header(checkpoint_copy: Path):
    (checkpoint_copy / "model.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(ModelLoadError, match=r"is truncated"):
        load_checkpoint(checkpoint_copy)


def test_good_checkpoint(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint("bert"))
    assert checkpoint.model_type == "bert"
    assert checkpoint.architectures == ["BertModel"]
    assert len(checkpoint.weights_sha256()) == 64

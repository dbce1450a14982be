"""Triton model repositories, checked by parsing config.pbtxt with Triton's own schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphport.deploy import deploy
from graphport.errors import UsageError
from graphport.exporters.pipeline import export_model

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed"
)
text_format = pytest.importorskip("google.protobuf.text_format")


@pytest.fixture(scope="module")
def exports(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("triton-exports")
    cases = {
        "bert-onnx": ("bert", "feature-extraction", "onnx"),
        "bert-mc-onnx": ("bert", "multiple-choice", "onnx"),
        "vit-openvino": ("vit", "image-classification", "openvino"),
        "wav2vec2-onnx": ("wav2vec2", "automatic-speech-recognition", "onnx"),
        "bert-torchscript": ("bert", "feature-extraction", "torchscript"),
    }
    out = {}
    for name, (model_type, task, fmt) in cases.items():
        out[name] = root / name
        export_model(tiny_checkpoint(model_type, task), out[name], fmt=fmt, validate=False)
    return out


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def by_name(tensors) -> dict:
    return {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in tensors}


def test_onnx_text_model(exports: dict[str, Path], tmp_path: Path):
    dest = deploy(exports["bert-onnx"], tmp_path / "repo", "triton", model_name="bert")
    config = parse(dest / "bert" / "config.pbtxt")
    assert config.name == "bert"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert config.HasField("dynamic_batching")
    assert by_name(config.input) == {
        "input_ids": ("TYPE_INT64", [-1]),
        "attention_mask": ("TYPE_INT64", [-1]),
        "token_type_ids": ("TYPE_INT64", [-1]),
    }
    assert by_name(config.output) == {"last_hidden_state": ("TYPE_FP32", [-1, 32])}
    assert (dest / "bert" / "1" / "model.onnx").is_file()
    assert (dest / "bert" / "config.json").is_file()


def test_choice_axis_and_unbatched(exports: dict[str, Path], tmp_path: Path):
    dest = deploy(exports["bert-mc-onnx"], tmp_path / "mc", "triton", max_batch_size=0)
    config = parse(dest / "mc" / "config.pbtxt")
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert by_name(config.input)["input_ids"] == ("TYPE_INT64", [-1, -1, -1])
    assert by_name(config.output) == {"logits": ("TYPE_FP32", [-1, -1])}  # batch, choice


def test_openvino_vision_model(exports: dict[str, Path], tmp_path: Path):
    dest = deploy(exports["vit-openvino"], tmp_path / "vit", "triton")
    config = parse(dest / "vit" / "config.pbtxt")
    assert config.backend == "openvino"
    assert by_name(config.input) == {"pixel_values": ("TYPE_FP32", [3, 32, 32])}
    assert by_name(config.output) == {"logits": ("TYPE_FP32", [3])}
    assert {p.name for p in (dest / "vit" / "1").iterdir()} == {"model.xml", "model.bin"}


def test_audio_and_torchscript(exports: dict[str, Path], tmp_path: Path):
    audio = parse(
        deploy(exports["wav2vec2-onnx"], tmp_path / "asr", "triton") / "asr" / "config.pbtxt"
    )
    assert by_name(audio.input) == {"input_values": ("TYPE_FP32", [-1])}
    assert by_name(audio.output)["logits"] == ("TYPE_FP32", [-1, 32])
    torch_config = parse(
        deploy(exports["bert-torchscript"], tmp_path / "ts", "triton") / "ts" / "config.pbtxt"
    )
    assert torch_config.platform == "pytorch_libtorch"


def test_bad_inputs(exports: dict[str, Path], tiny_checkpoint, tmp_path: Path):
    with pytest.raises(UsageError, match="not valid for Triton"):
        deploy(exports["bert-onnx"], tmp_path / "x", "triton", model_name="bad name!")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    with pytest.raises(UsageError, match="already exists and is not empty"):
        deploy(exports["bert-onnx"], occupied, "triton")
    export_model(tiny_checkpoint("bert"), tmp_path / "ort", fmt="ort", validate=False)
    with pytest.raises(UsageError, match="Triton has no backend for ort exports"):
        deploy(tmp_path / "ort", tmp_path / "y", "triton")
    with pytest.raises(UsageError, match="Unknown deploy target 'k8s'"):
        deploy(exports["bert-onnx"], tmp_path / "z", "k8s")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

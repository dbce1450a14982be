"""The export directory: contents, manifest, atomic writes, task inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graphport.api.export import export_model
from graphport.errors import ModelLoadError, ParityError, UnsupportedModelError, UsageError
from graphport.export import artifacts
from graphport.manifest import MANIFEST_NAME, ExportDirectory


def test_export_directory_is_self_describing(bert_export: Path, tiny_checkpoint):
    manifest = json.loads((bert_export / MANIFEST_NAME).read_text())
    assert manifest["task"] == "feature-extraction"
    assert manifest["family"] == "bert"
    assert manifest["source"]["model_type"] == "bert"
    assert len(manifest["source"]["weights_sha256"]) == 64
    assert manifest["opset"] == 18
    assert manifest["exporter"]["strategy"] == "torch.export"
    assert manifest["versions"]["torch"]
    graph = manifest["graphs"][0]
    assert graph["file"] == "model.onnx"
    assert [t["name"] for t in graph["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph["inputs"][0] == {
        "name": "input_ids",
        "dtype": "int64",
        "shape": ["batch", "sequence"],
    }
    assert graph["outputs"][0]["shape"] == ["batch", "sequence", 32]
    assert manifest["validation"]["passed"] is True
    assert set(manifest["validation"]["runtimes"]) == {"onnxruntime", "openvino"}
    for name in manifest["files"]:
        assert (bert_export / name).is_file()
    assert "config.json" in manifest["files"]
    assert (bert_export / "parity.json").is_file()
    assert not list(bert_export.parent.glob(".*partial*"))


def test_task_override(tiny_checkpoint, tmp_path: Path):
    result = export_model(
        tiny_checkpoint("bert", "fill-mask"), tmp_path / "out", task="default", validate=False
    )
    assert result.manifest.task == "feature-extraction"
    assert result.report is None
    assert result.manifest.validation is None


def test_failed_export_leaves_no_directory(tiny_checkpoint, tmp_path: Path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifacts, "save_onnx", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(tiny_checkpoint("bert"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_checkpoint, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(UsageError, match="already exists and is not empty; pass --overwrite"):
        export_model(tiny_checkpoint("bert"), out, validate=False)
    assert (out / "keep.txt").read_text() == "user data"
    export_model(tiny_checkpoint("bert"), out, validate=False, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert ExportDirectory(out).manifest.task == "feature-extraction"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_path_that_is_a_file(tiny_checkpoint, tmp_path: Path):
    target = tmp_path / "model.onnx"
    target.write_text("not a directory")
    with pytest.raises(UsageError, match="is an existing file"):
        export_model(tiny_checkpoint("bert"), target)


def test_bad_checkpoint_writes_nothing(tmp_path: Path):
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ModelLoadError):
        export_model(tmp_path / "ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_task_lists_supported(tiny_checkpoint, tmp_path: Path):
    with pytest.raises(UnsupportedModelError, match="does not support the task 'image-class"):
        export_model(tiny_checkpoint("bert"), tmp_path / "out", task="image-classification")
    assert not (tmp_path / "out").exists()


def test_parity_failure_fails_and_keeps_the_failed_report(tiny_checkpoint, tmp_path: Path):
    # An impossible tolerance makes float rounding differences count as failures.
    with pytest.raises(ParityError, match="does not match the eager model") as info:
        export_model(tiny_checkpoint("bert"), tmp_path / "out", atol=0.0)
    assert not info.value.report.passed
    manifest = ExportDirectory(tmp_path / "out").manifest
    assert manifest.validation["passed"] is False
    assert manifest.validation["failures"]


@pytest.mark.parametrize("dtype", ["fp16"])
def test_half_precision_export_validates(tiny_checkpoint, tmp_path: Path, dtype: str):
    result = export_model(tiny_checkpoint("bert"), tmp_path / "out", dtype=dtype)
    assert result.report.passed, result.report.failures()
    assert result.manifest.graphs[0].outputs[0].dtype == "float16"


def test_bf16_with_validation_is_refused_before_any_work(tiny_checkpoint, tmp_path: Path):
    with pytest.raises(UsageError, match="bf16 graph cannot be validated on the CPU runtimes"):
        export_model(tiny_checkpoint("bert"), tmp_path / "out", dtype="bf16")
    assert not (tmp_path / "out").exists()


def test_bf16_export_without_validation(tiny_checkpoint, tmp_path: Path):
    result = export_model(tiny_checkpoint("bert"), tmp_path / "out", dtype="bf16", validate=False)
    assert result.manifest.graphs[0].outputs[0].dtype == "bfloat16"
    assert result.manifest.dtype == "bf16"

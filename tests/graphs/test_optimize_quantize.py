"""optimize/quantize pipelines: SRC untouched, passes recorded and checked, budgets enforced."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import add_word_tokenizer

from graphport.api import transform
from graphport.api.export import export_model
from graphport.api.transform import optimize_export, quantize_export
from graphport.errors import ParityError, UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes import available_runtimes, default_runtimes
from graphport.validators.parity import NORM_TOL


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


@pytest.mark.parametrize(
    ("level", "passes"),
    [
        (1, ["cleanup"]),
        (2, ["cleanup", "ort-fusion", "pack-attention", "ort-cpu-kernels"]),
        (3, ["cleanup", "ort-fusion", "pack-attention", "ort-cpu-kernels", "ort-offline"]),
    ],
)
def test_optimize_levels(bert_export: Path, tmp_path: Path, level: int, passes: list[str]):
    before = digest(bert_export)
    result = optimize_export(bert_export, tmp_path / "opt", level=level)
    assert digest(bert_export) == before, "SRC stays untouched"
    assert [p["name"] for p in result.passes] == passes
    assert all(p["parity"]["passed"] for p in result.passes)
    assert all(p["budget"] == {"atol": 1e-4, "norm_tol": NORM_TOL} for p in result.passes)
    assert result.report.passed
    manifest = ExportDirectory(tmp_path / "opt").manifest
    assert [p["name"] for p in manifest.passes] == passes
    # Fused graphs use onnxruntime's contrib operators: only onnxruntime validates them.
    expected_target = None if level == 1 else "onnxruntime"
    assert manifest.target == expected_target
    expected_runtimes = ["onnxruntime"] if level > 1 else available_runtimes("onnx")
    assert default_runtimes(manifest) == expected_runtimes
    if level >= 2:
        fusions = manifest.passes[1]["fusions"]
        assert fusions["missing"] == []
        assert fusions["fired"]["attention"] == 2
        assert manifest.passes[3]["rewrites"] == {"skip_layer_norm": 4, "bias_gelu": 2}


def test_optimize_for_openvino_skips_ort_fusions(bert_export: Path, tmp_path: Path):
    result = optimize_export(bert_export, tmp_path / "ov", level=2, target="openvino")
    assert [p["name"] for p in result.passes] == ["cleanup"]
    assert set(result.report.runtimes) == {"onnxruntime", "openvino"}


@pytest.mark.parametrize(("mode", "budget"), [("int8-dynamic", 0.95), ("int4-weight", 0.90)])
def test_quantize_modes(bert_export: Path, tmp_path: Path, mode: str, budget: float):
    result = quantize_export(bert_export, tmp_path / "q", mode, block_size=16)
    (record,) = result.passes
    assert record["name"] == mode
    assert record["budget"] == {"min_cosine": budget}
    assert record["parity"]["passed"]
    manifest = ExportDirectory(tmp_path / "q").manifest
    assert manifest.tolerance["min_cosine"] == budget
    assert manifest.target == "onnxruntime"
    assert result.report.passed
    if mode == "int4-weight":  # the default method, and the kernel path recorded with it
        # Judged against eager with the graph's own int4 weights, mapped back by module scope.
        assert manifest.tolerance["reference"] == "int4 weights"
        replaced = re.search(r"int4 weights \((\d+) Linear layers\)", result.report.reference)
        assert replaced and int(replaced.group(1)) > 0
        assert record["method"] == "rtn"
        assert record["kernel"]["fast"] and "fast path" in record["kernel"]["summary"]
        assert manifest.passes[0]["kernel"] == record["kernel"]


@pytest.mark.parametrize(("bits", "budget"), [(8, 0.95), (4, 0.90)])
def test_openvino_weight_compression(bert_export: Path, tmp_path: Path, bits: int, budget: float):
    import openvino as ov

    result = quantize_export(bert_export, tmp_path / "ov", f"openvino-int{bits}-weight", None, 16)
    (record,) = result.passes
    assert record["name"] == f"openvino-int{bits}-weight" and record["tool"] == "nncf"
    assert record["parity"]["passed"] and set(result.report.runtimes) == {"openvino"}
    manifest = ExportDirectory(tmp_path / "ov").manifest
    assert (manifest.format, manifest.target) == ("openvino", "openvino")
    assert manifest.graph().file == "model.xml" and "model.onnx" not in manifest.files
    assert manifest.tolerance["min_cosine"] == budget
    if bits == 4:  # judged against eager with the IR's own weights, matched by value
        replaced = re.search(r"int4 weights \((\d+) Linear layers\)", result.report.reference)
        assert replaced and int(replaced.group(1)) > 0
    # The IR holds low-precision weight constants the kernels decompress.
    kinds = {
        op.get_output_element_type(0).get_type_name()
        for op in ov.Core().read_model(tmp_path / "ov" / "model.xml").get_ops()
        if op.get_type_name() == "Constant"
    }
    assert ("u8" if bits == 8 else "i4") in kinds
    before = (bert_export / "model.onnx").stat().st_size
    assert (tmp_path / "ov" / "model.bin").stat().st_size < before / 2


@pytest.fixture(scope="module")
def text_export(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    checkpoint = tmp_path_factory.mktemp("ckpt") / "bert"
    shutil.copytree(tiny_checkpoint("bert"), checkpoint)
    add_word_tokenizer(checkpoint)
    out = tmp_path_factory.mktemp("text") / "out"
    export_model(checkpoint, out, validate=False)
    return out


def test_static_int8_calibrates_on_a_text_file(text_export: Path, tmp_path: Path):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("hello world\n\ntext a b\nhello text a\n")
    result = quantize_export(
        text_export, tmp_path / "q", "int8-static", calibration, allow_budget_break=True
    )
    assert result.passes[0]["calibration_samples"] == 3  # blank lines are skipped


def test_dynamic_int8_with_calibration_tames_outliers_first(text_export: Path, tmp_path: Path):
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("hello world\ntext a b\nhello text a\n")
    result = quantize_export(text_export, tmp_path / "q", "int8-dynamic", calibration)
    names = ["split-outliers", "smooth-activations", "int8-dynamic"]
    assert [p["name"] for p in result.passes] == names
    split, smooth = result.passes[0], result.passes[1]
    assert smooth["calibration_samples"] == 3
    assert split["parity"]["passed"] and smooth["parity"]["passed"], "fp32 numbers kept"
    # Random weights have no outlier channels: nothing is worth a side path or a Mul.
    # (tests/graphs/test_passes.py plants outliers to see both passes act.)
    assert (split["split_channels"], smooth["smoothed"]) == (0, 0)
    assert not split["modified"] and not smooth["modified"]
    manifest = ExportDirectory(tmp_path / "q").manifest
    assert [p["name"] for p in manifest.passes] == names


def test_openvino_static_int8_on_a_fused_export(text_export: Path, tmp_path: Path):
    """The OpenVINO int8 path: outlier passes on the fused ONNX graph (checked on
    onnxruntime), then NNCF's calibrated quantization into IR, checked on OpenVINO."""
    import openvino as ov

    fused = optimize_export(text_export, tmp_path / "o2", level=2).path
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("hello world\ntext a b\nhello text a\n")
    result = quantize_export(fused, tmp_path / "ov", "openvino-int8-static", calibration)
    names = [p["name"] for p in result.passes]
    assert names[-3:] == ["split-outliers", "smooth-activations", "openvino-int8-static"]
    assert names[:4] == ["cleanup", "ort-fusion", "pack-attention", "ort-cpu-kernels"]
    static = result.passes[-1]
    assert static["calibration_samples"] == 3 and static["tool"] == "nncf"
    assert static["parity"]["passed"] and set(result.report.runtimes) == {"openvino"}
    manifest = ExportDirectory(tmp_path / "ov").manifest
    assert (manifest.format, manifest.target) == ("openvino", "openvino")
    assert manifest.tolerance["min_cosine"] == 0.95
    assert {"model.xml", "model.bin", "tokenizer.json"} <= set(manifest.files)
    model = ov.Core().read_model(tmp_path / "ov" / "model.xml")
    ops = Counter(op.get_type_name() for op in model.get_ops())
    assert ops["FakeQuantize"] > 0, "activations are quantized, not only weights"
    assert not any(p.name.startswith(".ov.") for p in tmp_path.iterdir()), "no scratch left"
    with pytest.raises(UsageError, match="needs calibration"):
        quantize_export(fused, tmp_path / "ov2", "openvino-int8-static")
    assert not (tmp_path / "ov2").exists()


def test_budget_break_fails_naming_the_pass(bert_export: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(transform.BUDGETS, "int8", 0.999999)
    with pytest.raises(ParityError, match=r"Pass int8-dynamic broke its budget \(passes before"):
        quantize_export(bert_export, tmp_path / "q", "int8-dynamic")
    assert not (tmp_path / "q").exists()
    kept = quantize_export(bert_export, tmp_path / "q", "int8-dynamic", allow_budget_break=True)
    assert kept.passes[0]["parity"]["passed"] is False


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda src, dst: quantize_export(src, dst, "int2"), "Unknown mode 'int2'"),
        (lambda src, dst: quantize_export(src, dst, "int8-static"), "needs calibration inputs"),
        (lambda src, dst: optimize_export(src, dst, level=4), "level 4 does not exist"),
        (lambda src, dst: optimize_export(src, dst, target="tflite"), "Unknown target 'tflite'"),
        (lambda src, dst: optimize_export(src, src), "DST must differ from SRC"),
        (lambda src, dst: quantize_export(src, dst, "int4-weight", block_size=24), "power of two"),
        (
            lambda src, dst: quantize_export(src, dst, "int8-dynamic", target_cosine=0.99),
            "needs --mode int8-dynamic and --calibration",
        ),
    ],
)
def test_bad_arguments(bert_export: Path, tmp_path: Path, call, message: str):
    with pytest.raises(UsageError, match=message):
        call(bert_export, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_onnx_exports_are_refused(tiny_checkpoint, tmp_path: Path):
    export_model(tiny_checkpoint("bert"), tmp_path / "ts", fmt="torchscript", validate=False)
    with pytest.raises(UsageError, match="Graph passes work on ONNX exports"):
        optimize_export(tmp_path / "ts", tmp_path / "out")

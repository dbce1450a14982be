"""validate_export and check_contract: parity is proven at new shapes, and breaks are caught."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from transformers import AutoConfig

from graphport.errors import Reason
from graphport.export.config import OnnxConfig
from graphport.manifest import MANIFEST_NAME, ExportDirectory
from graphport.models.registry import get_onnx_config
from graphport.validators.compare import compare_output
from graphport.validators.contract import ContractProblem, check_contract
from graphport.validators.parity import validate_export
from graphport.validators.report import CaseResult, ParityReport


@pytest.fixture(scope="module")
def config(bert_export: Path) -> OnnxConfig:
    model_config = AutoConfig.from_pretrained(bert_export, local_files_only=True)
    return get_onnx_config(model_config, "feature-extraction")


@pytest.fixture(scope="module")
def report(bert_export: Path) -> ParityReport:
    return validate_export(bert_export, ["onnxruntime", "openvino"])


def test_validation_passes_at_shapes_other_than_the_trace(report: ParityReport, config):
    assert report.passed, report.failures()
    assert report.failures() == []
    assert set(report.runtimes) == {"onnxruntime", "openvino"}
    trace = config.trace_shapes().sizes
    for runtime in ("onnxruntime", "openvino"):
        cases = [r for r in report.results if r.runtime == runtime]
        assert len(cases) >= 2
        assert len({tuple(sorted(r.sizes.items())) for r in cases}) == len(cases)
        for case in cases:
            assert case.sizes["batch"] != trace["batch"]
            assert case.sizes["sequence"] != trace["sequence"]
            (diff,) = case.outputs
            assert diff.name == "last_hidden_state"
            assert diff.expected_shape == [case.sizes["batch"], case.sizes["sequence"], 32]
            assert diff.max_abs <= report.atol


@pytest.fixture
def tampered_export(bert_export: Path, tmp_path: Path) -> Path:
    """A copy of the export with seeded noise added to one weight of the graph."""
    copy = Path(shutil.copytree(bert_export, tmp_path / "tampered"))
    model = onnx.load(copy / "model.onnx")
    (weight,) = [t for t in model.graph.initializer if t.name == "embeddings.LayerNorm.bias"]
    values = numpy_helper.to_array(weight)
    noise = np.random.default_rng(0).normal(0.0, 1e-2, values.shape).astype(values.dtype)
    weight.CopyFrom(numpy_helper.from_array(values + noise, weight.name))
    onnx.save(model, copy / "model.onnx")
    return copy


def test_a_tampered_graph_fails(tampered_export: Path):
    report = validate_export(tampered_export, ["onnxruntime"])
    assert not report.passed
    assert not report.contract_problems
    assert report.results and all(not r.passed for r in report.results)
    failures = report.failures()
    assert failures
    assert all(
        f.startswith("onnxruntime / shape set ") and "/ last_hidden_state: " in f for f in failures
    )
    assert "max abs diff" in failures[0]
    assert "> atol 0.0001" in failures[0]


@pytest.mark.parametrize(
    "module", ["encoder.layer.1.intermediate.dense", "encoder.layer.1.output.dense"]
)
def test_a_projection_scaled_by_one_percent_fails(bert_export: Path, tmp_path: Path, module: str):
    # The budget's magnitude term (norm_tol x RMS) leaves float32 noise room on real weights
    # without hiding a projection 1 % off (3e-4 on this model's unit-RMS hidden states).
    from conftest import perturb_initializer

    copy = Path(shutil.copytree(bert_export, tmp_path / "scaled"))
    perturb_initializer(copy, module, "MatMul", lambda w: w * np.float32(1.01))
    report = validate_export(copy, ["onnxruntime"])
    assert report.norm_tol > 0
    assert not report.passed
    failures = report.failures()
    assert failures and all("last_hidden_state" in f and " x rms " in f for f in failures)


def test_an_unavailable_runtime_is_a_failed_case(bert_export: Path, monkeypatch):
    from graphport.runtimes.openvino import OpenVinoRuntime

    monkeypatch.setattr(OpenVinoRuntime, "is_available", classmethod(lambda cls: False))
    report = validate_export(bert_export, ["openvino"])
    assert not report.passed
    assert report.runtimes == {"openvino": "unavailable"}
    (failure,) = report.failures()
    assert failure.startswith("openvino / load: The openvino runtime is not installed")


def manifest_copy(bert_export: Path, tmp_path: Path, edit) -> ExportDirectory:
    """A directory holding only the export's manifest, changed by ``edit(graph dict)``."""
    data = json.loads((bert_export / MANIFEST_NAME).read_text())
    edit(data["graphs"][0])
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    return ExportDirectory(tmp_path)


def test_the_contract_holds_for_the_export(bert_export: Path, config, tmp_path: Path):
    assert check_contract(ExportDirectory(bert_export), config) == []
    assert check_contract(manifest_copy(bert_export, tmp_path, lambda g: None), config) == []


def test_a_specialized_axis_breaks_the_contract(bert_export: Path, config, tmp_path: Path):
    def specialize(graph: dict) -> None:
        graph["outputs"][0]["shape"][1] = 16

    problems = check_contract(manifest_copy(bert_export, tmp_path, specialize), config)
    assert problems == [
        "axis 1 (sequence) of last_hidden_state was specialized to 16 during tracing; "
        "it must stay dynamic"
    ]


def test_a_specialized_input_axis_breaks_the_contract(bert_export: Path, config, tmp_path: Path):
    def specialize(graph: dict) -> None:
        graph["inputs"][1]["shape"][0] = 2

    (problem,) = check_contract(manifest_copy(bert_export, tmp_path, specialize), config)
    assert problem.startswith("axis 0 (batch) of attention_mask was specialized to 2")


def test_wrong_output_names_break_the_contract(bert_export: Path, config, tmp_path: Path):
    def rename(graph: dict) -> None:
        graph["outputs"][0]["name"] = "hidden_states"

    problems = check_contract(manifest_copy(bert_export, tmp_path, rename), config)
    assert problems == [
        "graph outputs are ['hidden_states'], the config declares ['last_hidden_state']"
    ]


def test_input_order_is_part_of_the_contract(bert_export: Path, config, tmp_path: Path):
    def swap(graph: dict) -> None:
        graph["inputs"][0], graph["inputs"][1] = graph["inputs"][1], graph["inputs"][0]

    (problem,) = check_contract(manifest_copy(bert_export, tmp_path, swap), config)
    assert problem.startswith("graph inputs are ['attention_mask', 'input_ids', ")


def _report(results: list[CaseResult], problems: list[str] | None = None) -> ParityReport:
    return ParityReport(
        "out",
        "feature-extraction",
        "fp32",
        "torch eager",
        {"onnxruntime": "ort"},
        problems or [],
        results,
        1e-4,
        1e-3,
    )


def test_the_verdict_needs_results_and_a_clean_contract():
    ok = np.zeros((1, 2, 3), dtype=np.float32)
    good = CaseResult(
        "onnxruntime",
        "shape set 1",
        {"batch": 1},
        [compare_output("last_hidden_state", ok, ok, 1e-4, 1e-3)],
        0.01,
    )
    assert _report([good]).passed
    assert not _report([])
    assert not _report([good], ["axis 1 (sequence) of x was specialized to 16"])
    crashed = CaseResult("onnxruntime", "shape set 2", {}, [], 0.01, "boom")
    assert not _report([good, crashed]).passed
    assert _report([good, crashed]).failures() == ["onnxruntime / shape set 2: boom"]


def test_report_to_dict_and_write(report: ParityReport, tmp_path: Path):
    data = report.to_dict()
    assert data["passed"] is True
    assert data["task"] == "feature-extraction"
    path = tmp_path / "parity.json"
    report.write(path)
    written = json.loads(path.read_text())
    assert written["passed"] is True
    assert set(written["runtimes"]) == {"onnxruntime", "openvino"}
    assert len(written["results"]) == len(report.results)
    assert written["results"][0]["outputs"][0]["name"] == "last_hidden_state"
    # The verdicts of every result and output are in the JSON, not only the report's.
    assert written["results"][0]["passed"] is True
    assert written["results"][0]["outputs"][0]["passed"] is True
    summary = report.summary()
    assert summary["passed"] is True
    assert summary["failures"] == []
    assert set(summary["worst"]) == {"onnxruntime", "openvino"}


def _strict_json(text: str) -> object:
    def reject(constant: str) -> float:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


def test_a_failed_report_is_strict_json(tmp_path: Path):
    expected = np.zeros((1, 2, 3), dtype=np.float32)
    missing = compare_output("last_hidden_state", expected, None, 1e-4, 1e-3)
    assert math.isnan(missing.max_abs)
    report = _report([CaseResult("onnxruntime", "shape set 1", {"batch": 1}, [missing], 0.01)])
    path = tmp_path / "parity.json"
    report.write(path)
    written = _strict_json(path.read_text())
    assert written["passed"] is False
    assert written["results"][0]["passed"] is False
    assert written["results"][0]["outputs"][0]["passed"] is False


def test_each_failure_carries_its_reason_as_data():
    ok, off = np.zeros((1, 2, 3), dtype=np.float32), np.ones((1, 2, 3), dtype=np.float32)
    differs = CaseResult(
        "openvino", "shape set 1", {}, [compare_output("x", ok, off, 1e-4, 1e-3)], 0.01
    )
    crashed = CaseResult("onnxruntime", "shape set 2", {}, [], 0.01, "boom")
    fixed = CaseResult(
        "onnxruntime", "shape set 3", {}, [], 0.01, "axis fixed", Reason.AXIS_SPECIALIZED
    )
    specialized = ContractProblem("axis 1 of x was specialized", Reason.AXIS_SPECIALIZED)
    report = _report([differs, crashed, fixed], [specialized.with_prefix("decoder: ")])
    assert [reason for reason, _ in report.failure_reasons()] == [
        Reason.AXIS_SPECIALIZED,
        Reason.OUTPUTS_DIFFER,
        Reason.RUNTIME_ERROR,
        Reason.AXIS_SPECIALIZED,
    ]
    assert report.failures()[0] == "decoder: axis 1 of x was specialized"
    assert report.failures()[2] == "onnxruntime / shape set 2: boom"
    # The JSON keeps its form: problems are strings, a case's reason its value.
    data = json.loads(json.dumps(report.to_dict()))
    assert data["contract_problems"] == ["decoder: axis 1 of x was specialized"]
    assert data["results"][2]["reason"] == "dynamic axis specialized"

"""Localization: a perturbed layer of an exported graph is named as the first divergence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import add_causal_tokenizer
from conftest import perturb_initializer as perturb

from graphport.api.export import export_model
from graphport.cli import cli
from graphport.validators.compare import Tolerance
from graphport.validators.localize import align_names
from graphport.validators.parity import cross_runtime_diffs, validate_export

RUNTIMES = "onnxruntime,openvino"


def failed(result: dict) -> bool:
    return bool(result["error"]) or any(o["mismatched"] or o["problem"] for o in result["outputs"])


def validate_cli(export_dir: Path) -> tuple[int, dict]:
    result = CliRunner().invoke(
        cli, ["validate", str(export_dir), "--localize", "--json", "--runtime", RUNTIMES]
    )
    return result.exit_code, json.loads(result.stdout[: result.stdout.rindex("}") + 1])


@pytest.fixture(scope="module")
def llama_export(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("llama-localize")
    source = root / "checkpoint"
    shutil.copytree(tiny_checkpoint("llama", "text-generation"), source)
    add_causal_tokenizer(source)
    export_model(source, root / "out", validate=False)  # inferred: with its KV cache
    return root / "out"


def test_an_unperturbed_export_passes_and_matches_modules(bert_export: Path):
    report = validate_export(bert_export, RUNTIMES.split(","), localize=True)
    assert report.passed, report.failures()
    for result in report.results:
        assert result.localized is not None and result.localized["matched"] > 0
        assert result.first_divergence is None
        assert result.layers and all(layer.passed for layer in result.layers)
    modules = [layer.module for layer in report.results[0].layers]
    assert "encoder.layer.1.intermediate.dense" in modules
    data = report.to_dict()
    assert data["results"][0]["layers"][0].keys() == {
        "module",
        "module_type",
        "onnx_node",
        "max_abs",
        "mean_abs",
        "cosine",
        "passed",
    }
    pairs = {(d["a"], d["b"]) for d in data["cross_runtime"]}
    assert pairs == {("onnxruntime", "openvino")}
    assert all(d["passed"] for d in data["cross_runtime"])


def test_a_perturbed_bert_bias_is_localized_on_both_runtimes(bert_export: Path, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(bert_export, out)
    perturb(out, "encoder.layer.1.intermediate.dense", "Add", lambda bias: bias + 1.0)
    code, report = validate_cli(out)
    assert code == 1
    failing = [r for r in report["results"] if failed(r)]
    assert {r["runtime"] for r in failing} == {"onnxruntime", "openvino"}
    for result in failing:
        first = result["first_divergence"]
        assert first["module"] == "encoder.layer.1.intermediate.dense", first
        assert first["module_type"] == "Linear" and first["max_abs"] > 0.5
        rows = result["layers"]
        index = [row["module"] for row in rows].index(first["module"])
        assert index > 0 and all(row["passed"] for row in rows[:index])
        assert 0 < result["localized"]["matched"] <= result["localized"]["modules"]


def test_a_perturbed_llama_weight_is_localized_on_both_runtimes(llama_export, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(llama_export, out)
    down_proj = "model.model.layers.1.mlp.down_proj"  # the traced wrapper's path
    perturb(out, down_proj, "MatMul", lambda weight: weight * 3.0)
    code, report = validate_cli(out)
    assert code == 1
    failing = [r for r in report["results"] if failed(r)]
    assert {r["runtime"] for r in failing} == {"onnxruntime", "openvino"}
    for result in failing:
        first = result["first_divergence"]
        assert first is not None and ".layers.1." in f".{first['module']}.", first
        assert first["module"].endswith("mlp.down_proj"), first


def test_the_text_report_names_the_first_divergence(bert_export: Path, tmp_path: Path):
    out = tmp_path / "out"
    shutil.copytree(bert_export, out)
    # Not a uniform shift: the LayerNorm after it would take that out again.
    perturb(
        out,
        "encoder.layer.0.output.dense",
        "Add",
        lambda b: b + np.linspace(-1, 1, b.size, dtype=b.dtype),
    )
    result = CliRunner().invoke(cli, ["validate", str(out), "--localize", "--runtime", "openvino"])
    assert result.exit_code == 1
    assert "first divergence  openvino / shape set 1: encoder.layer.0.output.dense" in (
        result.stdout
    )


def test_runtimes_that_pass_but_disagree_are_reported():
    reference = np.zeros((1, 3, 4), dtype=np.float32)
    actual = {  # each within atol 1e-3 of eager (0), 1.6e-3 apart from each other
        ("onnxruntime", "case"): {"out": reference + 8e-4},
        ("openvino", "case"): {"out": reference - 8e-4},
        ("tensorrt", "case"): {"out": reference + 8e-4},
    }
    feeds = {"case": {"input_ids": np.zeros((1, 3), dtype=np.int64)}}
    diffs = cross_runtime_diffs(actual, feeds, {"out": {0: "batch"}}, Tolerance(1e-3, 0.0))
    verdicts = {(d.a, d.b): d.passed for d in diffs}
    assert verdicts == {
        ("onnxruntime", "openvino"): False,
        ("onnxruntime", "tensorrt"): True,
        ("openvino", "tensorrt"): False,
    }
    assert diffs[0].max_abs == pytest.approx(1.6e-3)


def test_eager_names_align_with_a_wrapped_trace():
    eager = ["model.layers.0", "model.layers.0.mlp", "lm_head"]
    graph = ["model.model.layers.0", "model.model.layers.0.mlp", "model.lm_head"]
    assert align_names(eager, graph) == dict(zip(eager, graph, strict=True))

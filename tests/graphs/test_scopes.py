"""Module scopes survive optimization and quantization, so their graphs localize too."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from conftest import perturb_initializer as perturb

from graphport.api.transform import optimize_export, quantize_export
from graphport.graphs.scopes import CarryScopesPass, node_modules
from graphport.validators.parity import validate_export


def scoped(path: Path) -> tuple[int, int]:
    nodes = [n for n in ir.load(path).graph if n.op_type not in ("Shape", "Cast", "Constant")]
    return sum(1 for n in nodes if node_modules(n)), len(nodes)


@pytest.fixture(scope="module")
def fused(bert_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scopes") / "o2"
    return optimize_export(bert_export, out, level=2, runtimes=["onnxruntime"]).path


def test_a_fused_graph_keeps_its_scopes_and_localizes(fused: Path, tmp_path: Path):
    have, total = scoped(fused / "model.onnx")
    assert have == total, f"{total - have} of {total} fused nodes lost their module"
    bad = tmp_path / "bad"
    shutil.copytree(fused, bad)
    # The bias Add that ort-cpu-kernels split off BiasGelu: a node the pass wrote.
    perturb(bad, "encoder.layer.1.intermediate.dense", "Add", lambda b: b + np.float32(1))
    report = validate_export(bad, ["onnxruntime"], localize=True)
    assert not report.passed
    firsts = {r.first_divergence["module"] for r in report.results if r.first_divergence}
    assert firsts == {"encoder.layer.1.intermediate.dense"}


def test_a_quantized_graph_reports_its_error_budget_per_layer(fused: Path, tmp_path: Path):
    result = quantize_export(fused, tmp_path / "q", "int8-dynamic", localize=True)
    have, total = scoped(tmp_path / "q" / "model.onnx")
    assert have >= 0.9 * total, f"{total - have} of {total} quantized nodes lost their module"
    report = result.report
    assert report.passed and report.cosine == 0.95
    for case in report.results:
        assert case.localized["matched"] > 0 and case.layers  # rows even though it passes
        assert all(0.0 < layer.cosine < 1.0 + 1e-9 for layer in case.layers)
    text = report.table()
    assert "error budget per layer  onnxruntime /" in text
    ranked = [float(line.split()[-2]) for line in text.splitlines()[-10:]]
    assert ranked == sorted(ranked), "worst first"


def test_scopes_are_carried_onto_rewritten_nodes():
    scope = "['', 'encoder', 'encoder.dense', 'linear']"
    x = ir.val("x", ir.DataType.FLOAT, [2])
    before = ir.node("MatMul", [x, x], name="node_MatMul_7", metadata_props={})
    before.metadata_props["pkg.torch.onnx.name_scopes"] = scope
    before.outputs[0].name = "linear"
    old = ir.Model(ir.Graph([x], before.outputs, nodes=[before]), ir_version=10)
    y = ir.val("y", ir.DataType.FLOAT, [2])
    quant = ir.node("MatMulInteger", [y, y], name="node_MatMul_7_quant")
    cast = ir.node("Cast", quant.outputs, attributes={"to": 1}, name="val_cast")
    scale = ir.node("Mul", [cast.outputs[0], y], name="scale_mul")
    scale.outputs[0].name = "linear"
    new = ir.Model(ir.Graph([y], scale.outputs, nodes=[quant, cast, scale]), ir_version=10)
    CarryScopesPass(old)(new)
    assert [node_modules(n) for n in new.graph] == [["encoder", "encoder.dense"]] * 3

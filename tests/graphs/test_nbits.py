"""The MatMulNBits kernel path read from a graph, against the rules and onnxruntime itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphport.graphs.nbits import (
    DEQUANTIZE,
    PACKED_FP32,
    PACKED_INT8,
    kernel_path,
    kernel_report,
)
from graphport.graphs.quantize import quantize_int4_weights


@pytest.mark.parametrize(
    ("bits", "block", "level", "zero_points", "g_idx", "path", "reason"),
    [
        (4, 32, 4, "uint8", False, PACKED_INT8, ""),
        (4, 32, 4, "none", False, PACKED_INT8, ""),
        (8, 128, 4, "uint8", False, PACKED_INT8, ""),
        (4, 32, 0, "uint8", False, PACKED_FP32, ""),
        (4, 32, 4, "float32", False, DEQUANTIZE, "zero points not uint8"),
        (4, 32, 4, "float16", False, DEQUANTIZE, "zero points not uint8"),
        (4, 32, 4, "uint8", True, DEQUANTIZE, "a g_idx input"),
        (4, 512, 4, "uint8", False, DEQUANTIZE, "no MLAS kernel for 4 bits in blocks of 512"),
        (2, 32, 4, "uint8", False, DEQUANTIZE, "no MLAS kernel for 2 bits in blocks of 32"),
        (8, 32, 0, "none", False, DEQUANTIZE, "no fp32-activation MLAS kernel for 8 bits"),
    ],
)
def test_kernel_path_rules(bits, block, level, zero_points, g_idx, path, reason):
    got_path, got_reason = kernel_path(bits, block, level, zero_points, g_idx)
    assert got_path == path
    assert got_reason.startswith(reason) and bool(got_reason) == bool(reason)


@pytest.fixture(scope="module")
def graphs(bert_export: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nbits")
    shutil.copy2(bert_export / "model.onnx", root / "model.onnx")
    out = {"fp32": root / "model.onnx"}
    for method in ("rtn", "hqq"):
        out[method] = root / f"{method}.onnx"
        quantize_int4_weights(root / "model.onnx", out[method], block_size=16, method=method)
    return out


def fallbacks(path: Path, capfd: pytest.CaptureFixture) -> int:
    """How many MatMulNBits calls onnxruntime logs as dequantizing their weights, on one
    run of the tiny BERT graph."""
    options = ort.SessionOptions()
    options.log_severity_level = 1  # the fallback is logged at INFO
    session = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
    ids = np.arange(1, 8, dtype=np.int64)[None]
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    capfd.readouterr()
    session.run(None, feed)
    return capfd.readouterr().err.count("Falling back to using unpacked compute")


def test_report_matches_what_onnxruntime_runs(graphs: dict[str, Path], capfd):
    rtn = kernel_report(onnx.load(graphs["rtn"]))
    hqq = kernel_report(onnx.load(graphs["hqq"]))
    (group,) = rtn.groups
    assert (group.bits, group.block_size, group.accuracy_level) == (4, 16, 4)
    assert (group.zero_points, group.path, rtn.fast) == ("uint8", PACKED_INT8, True)
    assert rtn.summary() == (
        f"MatMulNBits: {group.count} int4 nodes, block 16, accuracy level 4, uint8 zero "
        "points -> onnxruntime's packed int8-activation kernel (fast path)"
    )
    (slow,) = hqq.groups
    assert (slow.zero_points, slow.path, hqq.fast) == ("float32", DEQUANTIZE, False)
    assert "slow path: zero points not uint8" in hqq.summary()
    # onnxruntime's own log: every node the report calls slow falls back, no other.
    assert fallbacks(graphs["rtn"], capfd) == 0
    assert fallbacks(graphs["hqq"], capfd) == slow.count == group.count


def test_report_of_a_graph_without_matmulnbits(graphs: dict[str, Path]):
    report = kernel_report(onnx.load(graphs["fp32"]))
    assert report.groups == [] and not report.fast
    assert report.summary() == "MatMulNBits: none (no weight was quantized)"
    assert report.to_dict() == {"summary": report.summary(), "fast": False, "groups": []}

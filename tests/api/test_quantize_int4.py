"""Calibrated and mixed-precision int4 (NNCF's awq and scale estimation, layers kept in
int8 by sensitivity, an int8 lm_head) and ``quantize --mode auto`` on a tiny random Llama:
each export is judged against eager with its own weights and passes; the search keeps a
configuration within its budget, or writes nothing and names the best it reached."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_WORDS, add_causal_tokenizer

from graphport.api import quantize_search as auto
from graphport.api.quantize import quantize_export
from graphport.cli import cli
from graphport.errors import BudgetError, UsageError
from graphport.manifest import ExportDirectory


@pytest.fixture(scope="module")
def llama(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama decoder export (KV cache) with its tokenizer, once per module."""
    from graphport.api.export import export_model

    root = tmp_path_factory.mktemp("int4-llama")
    source = root / "checkpoint"
    shutil.copytree(tiny_checkpoint("llama", "text-generation"), source)
    add_causal_tokenizer(source)
    export_model(source, root / "out", validate=False)
    return root / "out"


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lines of the tiny vocabulary's words (seeded): calibration and evaluation text."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("int4-data") / "words.txt"
    lines = [" ".join(rng.choices(list(TINY_WORDS), k=24)) for _ in range(24)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _kernels(result) -> dict[int, int]:
    """Nodes per bit width of the written graph, all on a packed MLAS kernel."""
    kernel = result.passes[-1]["kernel"]
    assert kernel["fast"], kernel["summary"]
    counts: dict[int, int] = {}
    for group in kernel["groups"]:
        counts[group["bits"]] = counts.get(group["bits"], 0) + group["count"]
    return counts


@pytest.mark.parametrize("method", ["awq", "scale-estimation"])
def test_calibrated_int4_passes_against_its_own_weights(llama: Path, tmp_path: Path, method):
    # No --calibration: the built-in English text calibrates.
    result = quantize_export(llama, tmp_path / "q", "int4-weight", block_size=16, method=method)
    record = result.passes[-1]
    assert record["method"] == method and record["tool"] == "nncf"
    assert result.report.passed
    # Every Linear, the lm_head included (rtn), mapped back to eager by the int4 reference.
    assert "int4 weights (15 Linear layers)" in result.report.reference
    assert _kernels(result) == {4: 15}
    assert record["int8_layers"] == []


def test_sensitive_layers_and_the_head_in_int8(llama: Path, words: Path, tmp_path: Path):
    result = quantize_export(
        llama,
        tmp_path / "q",
        "int4-weight",
        words,
        block_size=16,
        method="rtn",
        ratio=0.6,
        sensitivity="mean-variance",
        int8_head=True,
    )
    record = result.passes[-1]
    assert result.report.passed
    assert "int4 weights (15 Linear layers)" in result.report.reference
    counts = _kernels(result)
    assert counts[8] == len(record["int8_layers"]) and counts[4] == record["int4_layers"]
    assert counts[4] + counts[8] == 15 and counts[8] > 1
    assert record["sensitivity"] == "mean-variance" and record["ratio"] == 0.6
    # The last MatMul (lm_head) is among the int8 layers.
    assert record["int8_layers"][-1] == "node_linear_14"


def test_an_int8_head_with_onnxruntime_rtn(llama: Path, tmp_path: Path):
    result = quantize_export(llama, tmp_path / "q", "int4-weight", block_size=16, int8_head=True)
    assert result.report.passed
    assert _kernels(result) == {4: 14, 8: 1}
    assert "tool" not in result.passes[-1]  # onnxruntime's quantizer, not NNCF


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "hqq", "ratio": 0.5}, "go with rtn, awq or scale-estimation, not hqq"),
        ({"method": "gptq", "int8_head": True}, "gptq quantizes every MatMul"),
        ({"ratio": 0.5, "sensitivity": "entropy"}, "Unknown sensitivity metric 'entropy'"),
        ({"sensitivity": "hessian"}, "ranks the layers a ratio below 1"),
        ({"ratio": 1.5}, r"must lie in \(0, 1\]"),
    ],
)
def test_int4_options_that_do_not_go_together(llama: Path, tmp_path: Path, options, match):
    with pytest.raises(UsageError, match=match):
        quantize_export(llama, tmp_path / "q", "int4-weight", **options)
    assert not (tmp_path / "q").exists()


def test_int8_modes_take_no_int4_options(llama: Path, tmp_path: Path):
    with pytest.raises(UsageError, match="go with int4-weight"):
        quantize_export(llama, tmp_path / "q", "int8-dynamic", int8_head=True)


CANDIDATES = (
    auto.Candidate("rtn", 32),
    auto.Candidate("awq", 16, int8_head=True),
)


def test_auto_keeps_the_fastest_within_budget(llama: Path, words: Path, tmp_path: Path):
    out = tmp_path / "auto"
    result = auto.quantize_auto(llama, out, "50%", words, words, limit=256, candidates=CANDIDATES)
    assert result.metric == "perplexity"
    assert [t.error for t in result.trials] == [None, None]
    within = [t for t in result.trials if t.within]
    assert within and result.chosen is min(within, key=lambda t: t.seconds)
    manifest = ExportDirectory(out).manifest
    assert manifest.passes[-1]["method"] == result.chosen.candidate.method
    assert json.loads((out / "parity.json").read_text())["export_dir"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto"]  # no scratch left
    table = result.table()
    assert "rtn, block 32" in table and "awq, block 16, int8 head" in table
    assert "chosen" in table and "budget: perplexity loss at most 50.00%" in table


def test_auto_with_an_unmet_budget_writes_nothing(
    llama: Path, words: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A budget below any loss: the loss of every trial is made positive.
    monkeypatch.setattr(auto, "CANDIDATES", CANDIDATES[:1])
    monkeypatch.setattr(auto, "_loss", lambda metric, eager, value: 0.25)
    out = tmp_path / "auto"
    run = CliRunner().invoke(
        cli,
        [
            "quantize",
            str(llama),
            str(out),
            "--mode",
            "auto",
            "--max-metric-loss",
            "10%",
            "--data",
            str(words),
            "--limit",
            "128",
            "--json",
        ],
    )
    assert run.exit_code == 1, run.output
    assert "keeps the perplexity loss within 10.00%; the best reached 25.00% (rtn, block 32)" in (
        run.output
    )
    printed = json.loads(run.output[: run.output.rindex("}") + 1])
    assert printed["trials"][0]["loss"] == 0.25 and not printed["trials"][0]["within_budget"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("budget", "match"),
    [("two percent", "is not a number"), ("100%", r"must lie in \[0%, 100%\)")],
)
def test_a_bad_budget_is_one_sentence(llama: Path, tmp_path: Path, budget, match):
    with pytest.raises(UsageError, match=match):
        auto.quantize_auto(llama, tmp_path / "auto", budget)
    assert not (tmp_path / "auto").exists()


def test_auto_with_no_configuration_written(llama: Path, tmp_path: Path):
    with pytest.raises(BudgetError, match=r"No int4 configuration could be written .*gptq"):
        auto.quantize_auto(
            llama, tmp_path / "auto", "2%", candidates=[auto.Candidate("gptq", 32, True)]
        )
    assert sorted(tmp_path.iterdir()) == []


def test_export_model_takes_the_quantize_options(llama: Path, tmp_path: Path):
    from graphport.api.export import export_model

    out = tmp_path / "out"
    options = {"method": "scale-estimation", "block_size": 16, "int8_head": True}
    result = export_model(
        llama.parent / "checkpoint", out, quantize="int4-weight", quantize_options=options
    )
    assert result.plan.quantize_options == options and not result.plan.streaming
    record = result.manifest.passes[-1]
    assert (record["method"], record["block_size"]) == ("scale-estimation", 16)
    assert record["int8_layers"] == ["node_linear_14"] and result.report.passed


@pytest.mark.parametrize(
    ("quantize", "options", "match"),
    [
        ("int4-weight", {"bits": 3}, r"Unknown quantize option\(s\) bits"),
        ("int4-weight", {"method": "awq", "ratio": 0.0}, "must lie in"),
        (None, {"method": "awq"}, "add a quantization mode"),
    ],
)
def test_export_model_checks_the_quantize_options_first(
    llama: Path, tmp_path: Path, quantize, options, match
):
    from graphport.api.plan import plan_export

    with pytest.raises(UsageError, match=match):
        plan_export(
            llama.parent / "checkpoint",
            tmp_path / "out",
            quantize=quantize,
            quantize_options=options,
        )
    assert not (tmp_path / "out").exists()


def test_the_cli_options(llama: Path, tmp_path: Path):
    # A data-free sensitivity: rtn with a ratio needs no calibration text at all.
    out = tmp_path / "q"
    run = CliRunner().invoke(
        cli,
        [
            "quantize", str(llama), str(out), "--mode", "int4-weight", "--block-size", "16",
            "--ratio", "0.5", "--sensitivity", "weight-error", "--int8-head",
        ],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "int8 nodes, block 16" in run.output and "int4 nodes, block 16" in run.output
    record = ExportDirectory(out).manifest.passes[-1]
    assert record["sensitivity"] == "weight-error" and record["tool"] == "nncf"


def test_a_tied_head_is_made_int8(tmp_path: Path):
    """A head tied to the embedding reads the table through a Transpose: the int8 head
    gets a transposed copy of its own; without --int8-head it stays float."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from graphport.graphs.quantize import quantize_int4_weights

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "embed")
    inner = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "proj")
    nodes = [
        helper.make_node("Gather", ["embed", "ids"], ["hidden"], name="embedding"),
        helper.make_node("MatMul", ["hidden", "proj"], ["mixed"], name="layer"),
        helper.make_node("Transpose", ["embed"], ["embed_t"], perm=[1, 0], name="tie"),
        helper.make_node("MatMul", ["mixed", "embed_t"], ["logits"], name="lm_head"),
    ]
    graph = helper.make_graph(
        nodes,
        "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [table, inner],
    )
    src = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), src)
    for int8_head, bits in [(False, {"layer": 4}), (True, {"layer": 4, "lm_head": 8})]:
        dst = tmp_path / f"q{int8_head}.onnx"
        details = quantize_int4_weights(src, dst, block_size=16, int8_head=int8_head)
        written = onnx.load(dst)
        found = {
            n.output[0].replace("mixed", "layer").replace("logits", "lm_head"): next(
                a.i for a in n.attribute if a.name == "bits"
            )
            for n in written.graph.node
            if n.op_type == "MatMulNBits"
        }
        assert found == bits
        assert details["int8_layers"] == (["lm_head"] if int8_head else [])

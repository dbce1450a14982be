"""One table of export options driven through the Python API and the CLI: both read the
same plan (api/plan.py), so both write the same manifest; ``--plan`` prints that plan
without exporting, and ``plan_export`` refuses bad combinations before any work."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result
from conftest import add_causal_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from graphport.api import export_model, plan_export
from graphport.cli import cli
from graphport.errors import UsageError
from graphport.manifest import ExportDirectory, Manifest
from graphport.verbosity import set_verbosity

LLAMA = {
    "hidden_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 128,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "architectures": ["LlamaForCausalLM"],
}


# name: (checkpoint, API keywords, CLI options, what the manifest must say). "HTML" in
# either stands for a path of the case's own.
CASES: dict[str, tuple[str, dict[str, Any], list[str], dict[str, Any]]] = {
    "default": ("bert", {}, [], {"validated": True}),
    "no validation": (
        "bert",
        {"validate": False},
        ["--no-validate"],
        {"validated": False},
    ),
    "-O 1, html": (
        "bert",
        {"optimize": 1, "runtimes": ["onnxruntime"], "html": "HTML"},
        ["-O", "1", "--runtime", "onnxruntime", "--html", "HTML"],
        {"passes": ["cleanup"], "validated": True},
    ),
    "int8-dynamic": (
        "bert",
        {"quantize": "int8-dynamic", "validate": False},
        ["--quantize", "int8-dynamic", "--no-validate"],
        {"passes": ["int8-dynamic"], "target": "onnxruntime"},
    ),
    "fp16": (
        "bert",
        {"dtype": "fp16", "runtimes": "onnxruntime"},
        ["--dtype", "fp16", "--runtime", "onnxruntime"],
        {"dtype": "fp16"},
    ),
    "openvino": (
        "bert",
        {"fmt": "openvino", "validate": False},
        ["--format", "openvino", "--no-validate"],
        {"format": "openvino", "files": ["config.json", "model.bin", "model.xml"]},
    ),
    "int4 with quantize's options": (
        "llama",
        {
            "quantize": "int4-weight",
            "quantize_options": {"method": "rtn", "block_size": 16},
            "validate": False,
        },
        ["--quantize", "int4-weight", "--method", "rtn", "--block-size", "16", "--no-validate"],
        {"passes": ["int4-weight"], "streamed": False, "target": "onnxruntime"},
    ),
    "int4 streamed": (
        "llama",
        {"quantize": "int4-weight", "validate": False},
        ["--quantize", "int4-weight", "--no-validate"],
        {"passes": ["int4-weight"], "streamed": True, "target": "onnxruntime"},
    ),
}


@pytest.fixture(autouse=True)
def _restore_verbosity() -> Iterator[None]:
    yield  # the CLI sets graphport's log level for the whole process
    set_verbosity("error")


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    llama = tmp_path_factory.mktemp("options") / "llama"
    LlamaForCausalLM(LlamaConfig(**LLAMA)).save_pretrained(llama)
    add_causal_tokenizer(llama)
    return {"bert": tiny_checkpoint("bert"), "llama": llama}


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def summary(manifest: Manifest) -> dict[str, Any]:
    """What an option decides, as the manifest records it."""
    return {
        "task": manifest.task,
        "format": manifest.format,
        "dtype": manifest.dtype,
        "opset": manifest.opset,
        "target": manifest.target,
        "passes": [p["name"] for p in manifest.passes],
        "streamed": "streamed" in manifest.exporter,
        "validated": manifest.validation is not None,
        "files": sorted(f for f in manifest.files if f != "parity.json"),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_the_api_and_the_cli_write_the_same_export(checkpoints, tmp_path: Path, case: str):
    name, keywords, options, expected = CASES[case]
    checkpoint = checkpoints[name]
    api_html, cli_html = tmp_path / "api.html", tmp_path / "cli.html"
    keywords = {k: api_html if v == "HTML" else v for k, v in keywords.items()}
    options = [str(cli_html) if o == "HTML" else o for o in options]

    plan = plan_export(checkpoint, tmp_path / "api", **keywords)
    result = export_model(checkpoint, tmp_path / "api", **keywords)
    printed = invoke("export", str(checkpoint), str(tmp_path / "cli"), *options).output

    from_api = summary(result.manifest)
    from_cli = summary(ExportDirectory(tmp_path / "cli").manifest)
    assert from_api == from_cli
    assert summary(ExportDirectory(tmp_path / "api").manifest) == from_api
    assert {k: from_api[k] for k in expected} == expected
    # What the plan said is what both did.
    assert plan.streaming == from_api["streamed"]
    assert plan.transforms == bool(result.transforms)
    if plan.validate and not plan.transforms:
        assert {r.runtime for r in result.report.results} == set(plan.runtimes)
    assert f"Exported {plan.checkpoint.model_type} ({plan.task.value}, {plan.fmt}" in printed
    if plan.transforms:
        assert printed.rstrip().endswith(f"Wrote {tmp_path / 'cli'}")
        assert [s.path for s in result.transforms][-1] == tmp_path / "api"
    if "html" in keywords:
        assert api_html.is_file() and cli_html.is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".html")) == [
        "api",
        "cli",
    ], "no staging left behind"


def test_a_chained_export_loads_the_checkpoint_once(
    checkpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import graphport.api.export as api_export
    import graphport.api.steps
    import graphport.validators.parity

    loads: list[str] = []
    load_model = api_export.load_model
    monkeypatch.setattr(
        api_export,
        "load_model",
        lambda checkpoint, *a: loads.append("eager") or load_model(checkpoint, *a),
    )
    for user in (graphport.validators.parity, graphport.api.steps):
        monkeypatch.setattr(user, "load_reference", lambda *a: pytest.fail("reloaded"))
    stages: list[Any] = []
    out = tmp_path / "out"
    result = export_model(
        checkpoints["bert"],
        out,
        optimize=1,
        quantize="int8-dynamic",
        validate=False,
        on_step=stages.append,
    )
    assert loads == ["eager"]
    assert [type(s).__name__ for s in stages] == [
        "ExportResult",
        "TransformResult",
        "TransformResult",
    ]
    assert [p["name"] for p in result.manifest.passes] == ["cleanup", "int8-dynamic"]
    assert result.report.passed and result.path == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_plan_is_printed_and_nothing_written(checkpoints, tmp_path: Path):
    out = tmp_path / "out"
    printed = invoke("export", str(checkpoints["bert"]), str(out), "-O", "2", "--plan").output
    assert "task        feature-extraction (inferred)" in printed
    assert "trace       the eager model loaded in memory (cpu)" in printed
    assert "optimize    -O 2" in printed
    assert "validate    against eager on onnxruntime" in printed
    assert "then        every pass checked on onnxruntime" in printed
    assert "memory      about " in printed
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_plan_of_a_streamed_int4_export_as_json(checkpoints, tmp_path: Path):
    out = tmp_path / "out"
    args = ["export", str(checkpoints["llama"]), str(out), "--quantize", "int4-weight", "--plan"]
    printed = invoke(*args).output
    assert "on the meta device" in printed
    assert "int4-weight while each weight is written" in printed
    plan = json.loads(invoke(*args, "--json").output)
    assert plan["streaming"] and plan["device"] == "meta"
    assert plan["quantize"]["streamed"] == "int4-weight" and plan["quantize"]["pass"] is None
    assert plan["validate"] == ["onnxruntime"]  # MatMulNBits runs on onnxruntime only
    assert plan["task"] == "text-generation" and plan["with_past"]
    assert plan["peak_memory"] > 0
    assert not list(tmp_path.iterdir())


def test_executorch_quantizes_in_its_lowering(checkpoints, tmp_path: Path):
    plan = plan_export(
        checkpoints["llama"], tmp_path / "out", fmt="executorch", quantize="int8-dynamic"
    )
    assert plan.format_options.quantize == "int8-dynamic"
    assert plan.quantize is None and plan.streamed_quantize is None
    assert plan.format_options.static_cache and not plan.onnx_config.use_past
    assert "ExecuTorch's lowering" in "\n".join(plan.describe())


def _gptq_config(checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of ``checkpoint`` whose config says GPTQ (enough for the plan to ask)."""
    import shutil

    copy = Path(shutil.copytree(checkpoint, tmp_path / "gptq"))
    config = json.loads((copy / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 32}
    (copy / "config.json").write_text(json.dumps(config))
    return copy


# name: (checkpoint, keywords, message)
REFUSALS: dict[str, tuple[str, dict[str, Any], str]] = {
    "html without validation": (
        "bert",
        {"html": "report.html", "validate": False},
        r"--html writes the parity report, which --no-validate skips; drop one\.",
    ),
    "unknown dtype": ("bert", {"dtype": "fp8"}, r"Unknown dtype 'fp8'"),
    "bf16 validated": ("bert", {"dtype": "bf16"}, r"A bf16 graph cannot be validated"),
    "optimization level 4": ("bert", {"optimize": 4}, r"Optimization level 4 does not exist"),
    "quantize an openvino export": (
        "bert",
        {"fmt": "openvino", "quantize": "int8-dynamic"},
        r"--optimize and --quantize rewrite ONNX graphs .* drop --format\.",
    ),
    "calibration without quantize": (
        "bert",
        {"optimize": 2, "calibration": "sentences.txt"},
        r"--calibration is for --quantize; add a quantization mode\.",
    ),
    "streamed and optimized": (
        "llama",
        {"streaming": True, "optimize": 1},
        r"A streamed export takes --quantize int4-weight alone",
    ),
    "streamed int8": (
        "llama",
        {"streaming": True, "quantize": "int8-dynamic"},
        r"A streamed export quantizes in mode int4-weight only",
    ),
    "executorch int8-static": (
        "llama",
        {"fmt": "executorch", "quantize": "int8-static"},
        r"--format executorch quantizes with int8-dynamic or int4-weight",
    ),
    "GPTQ not streamed": ("gptq", {"streaming": False}, r"is a GPTQ checkpoint.*--no-streaming"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_plan_export_refuses_before_any_work(checkpoints, tmp_path: Path, case: str):
    name, keywords, message = REFUSALS[case]
    if name == "gptq":
        checkpoint = _gptq_config(checkpoints["llama"], tmp_path)
    else:
        checkpoint = checkpoints[name]
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UsageError, match=message):
        plan_export(checkpoint, tmp_path / "out", **keywords)
    assert sorted(tmp_path.iterdir()) == before

"""Edge formats: ExecuTorch (.pte on XNNPACK) fp32, int8 and a decoder with a static KV
cache generating as eager; LiteRT refused with its reason."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import add_causal_tokenizer

from graphport.api.export import export_model
from graphport.api.generate import generate_text
from graphport.cli import cli
from graphport.exporters.artifacts import FormatOptions
from graphport.manifest import ExportDirectory
from graphport.models.tiny import save_tiny_checkpoint
from graphport.validators.parity import validate_export

needs_executorch = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None and os.environ.get("CI") != "true",
    reason="executorch is not installed (pip install graphport[edge])",
)


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama") / "checkpoint"
    return add_causal_tokenizer(save_tiny_checkpoint("llama", path, task="text-generation"))


@needs_executorch
@pytest.mark.parametrize(
    "quantize",
    # int8 currently fails its own check: min cosine 0.99999998 suggests the torchao
    # transform leaves the lowered linears fp32 (open; see the issue 17 report).
    [None, pytest.param("int8-dynamic", marks=pytest.mark.slow)],
)
def test_bert_validates_on_executorch(quantize: str | None, tiny_checkpoint, tmp_path: Path):
    out = tmp_path / "out"
    result = export_model(
        tiny_checkpoint("bert"),
        out,
        fmt="executorch",
        format_options=FormatOptions(quantize=quantize),
    )
    assert result.report.passed, result.report.failures()
    assert set(result.report.runtimes) == {"executorch"}
    manifest = result.manifest
    assert manifest.format == "executorch"
    assert "model.pte" in manifest.files
    assert manifest.exporter["quantization"] == quantize
    assert manifest.exporter["delegated_subgraphs"] > 0
    # Layer norms and the mask arithmetic stay on the portable kernels; the log says so.
    assert any(op.startswith("native_layer_norm") for op in manifest.exporter["portable_operators"])
    if quantize:  # judged with the int8 budget of the ONNX exports
        assert manifest.tolerance["min_cosine"] == 0.95
        worst = min(o.min_cosine for r in result.report.results for o in r.outputs)
        assert 0.95 <= worst < 0.99999, "int8 weights must differ from fp32, within budget"
    else:
        assert "min_cosine" not in manifest.tolerance
    assert validate_export(ExportDirectory(out), ["executorch"]).passed


@needs_executorch
def test_decoder_generates_on_executorch_as_eager(llama_checkpoint: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    result = export_model(
        llama_checkpoint, out, fmt="executorch", format_options=FormatOptions(max_cache_len=48)
    )
    assert result.report.passed, result.report.failures()
    assert result.manifest.exporter["static_cache"] == {"max_cache_len": 48, "batch": 1}
    # Validation's generation check: one prompt and a left-padded batch of three.
    assert len(result.report.generation) == 2
    assert all(check.passed for check in result.report.generation)

    generated = generate_text(out, ["hello world"], max_new_tokens=12, do_sample=False)
    tokenizer = AutoTokenizer.from_pretrained(llama_checkpoint)
    eager = AutoModelForCausalLM.from_pretrained(llama_checkpoint).eval()
    ids = tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad():
        expected = eager.generate(**ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    prompt = ids["input_ids"].shape[1]
    assert generated.trimmed(0) == expected[0, prompt:].tolist()[: len(generated.trimmed(0))]
    assert len(generated.trimmed(0)) > 0


@needs_executorch
@pytest.mark.slow  # a second lowering of the decoder
def test_sequence_past_the_static_cache_is_refused(llama_checkpoint: Path, tmp_path: Path):
    from graphport.errors import UsageError

    out = tmp_path / "out"
    export_model(
        llama_checkpoint,
        out,
        fmt="executorch",
        validate=False,
        format_options=FormatOptions(max_cache_len=8),
    )
    with pytest.raises(UsageError, match="KV cache holds 8 positions"):
        generate_text(out, ["hello world"], max_new_tokens=12, do_sample=False)


def test_executorch_refuses_onnx_quantization_modes(tiny_checkpoint, tmp_path: Path):
    result = CliRunner().invoke(
        cli,
        ["export", str(tiny_checkpoint("bert")), str(tmp_path / "out"), "--format",
         "executorch", "--quantize", "int8-static"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "int8-dynamic or int4-weight" in result.output
    assert not (tmp_path / "out").exists()


def test_litert_is_refused_with_its_reason(tiny_checkpoint, tmp_path: Path):
    result = CliRunner().invoke(
        cli, ["export", str(tiny_checkpoint("bert")), str(tmp_path / "out"), "--format", "litert"]
    )
    assert result.exit_code == 1
    assert "litert-torch 0.10.0 converts only at the trace shapes" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()

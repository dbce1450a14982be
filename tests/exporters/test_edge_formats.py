"""Edge formats: ExecuTorch (.pte on XNNPACK) fp32 and int8 for an encoder and a decoder
with a static KV cache (generating as eager in fp32); LiteRT refused with its reason.

Lowering dominates the cost (about 7 s for an fp32 program of one layer, twice that for a
quantized one), so each program is exported once per module and every test reads it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import add_causal_tokenizer

from graphport.api.export import ExportResult, export_model
from graphport.api.generate import generate_text
from graphport.cli import cli
from graphport.errors import UsageError
from graphport.formats.executorch import ExecuTorchOptions
from graphport.manifest import ExportDirectory
from graphport.models.tiny import save_tiny_checkpoint
from graphport.validators.parity import validate_export

needs_executorch = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None and os.environ.get("CI") != "true",
    reason="executorch is not installed (pip install graphport[edge])",
)
# Enough for validation's generation check (a padded prompt of 17 tokens + 16 new ones).
CACHE = 48
# Quantized weights must move the outputs measurably; fp32 programs stay above this.
DIFFERS = 0.99999


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # At the default initializer_range (0.02) the embeddings' residual swamps every linear
    # of a tiny model: int8 weights moved the output by 2e-8 in cosine, far below what any
    # check can tell from fp32. Weights 10x larger make the linears count, as trained
    # weights do. One layer: lowering costs in proportion to the layers (a quantized one
    # twice an fp32 one), and a second layer adds nothing these checks could miss.
    path = tmp_path_factory.mktemp("bert") / "checkpoint"
    return save_tiny_checkpoint("bert", path, initializer_range=0.2, num_hidden_layers=1)


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama, one layer as the BERT: the program's cache is the same per layer."""
    path = tmp_path_factory.mktemp("llama") / "checkpoint"
    checkpoint = save_tiny_checkpoint("llama", path, task="text-generation", num_hidden_layers=1)
    return add_causal_tokenizer(checkpoint)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory):
    """``exports(checkpoint, mode)`` -> its validated ExecuTorch export, built once."""
    cache: dict[tuple[Path, str | None], ExportResult] = {}

    def make(checkpoint: Path, quantize: str | None) -> ExportResult:
        if (checkpoint, quantize) not in cache:
            out = tmp_path_factory.mktemp(f"{checkpoint.parent.name}-{quantize}") / "out"
            cache[checkpoint, quantize] = export_model(
                checkpoint,
                out,
                fmt="executorch",
                format_options=ExecuTorchOptions(quantize=quantize, max_cache_len=CACHE),
            )
        return cache[checkpoint, quantize]

    return make


def _worst_cosine(result: ExportResult) -> float:
    return min(o.min_cosine for r in result.report.results for o in r.outputs)


def _pte_bytes(result: ExportResult) -> int:
    return (result.path / "model.pte").stat().st_size


def _check_quantized(result: ExportResult, mode: str, budget: float) -> None:
    """Validated within the ONNX budget of ``mode``, and measurably unlike fp32 eager."""
    assert result.report.passed, result.report.failures()
    assert result.manifest.exporter["quantization"] == mode
    assert result.manifest.tolerance["min_cosine"] == budget
    assert result.report.generation == []  # tokens are only compared in fp32
    worst = _worst_cosine(result)
    assert budget <= worst < DIFFERS, f"{mode} weights must move the outputs, within budget"
    assert validate_export(ExportDirectory(result.path), ["executorch"]).passed


@needs_executorch
def test_bert_validates_on_executorch(exports, bert_checkpoint: Path):
    result = exports(bert_checkpoint, None)
    assert result.report.passed, result.report.failures()
    assert set(result.report.runtimes) == {"executorch"}
    manifest = result.manifest
    assert manifest.format == "executorch"
    assert "model.pte" in manifest.files
    assert manifest.exporter["quantization"] is None
    assert manifest.exporter["delegated_subgraphs"] > 0
    # Layer norms and the mask arithmetic stay on the portable kernels; the log says so.
    assert any(op.startswith("native_layer_norm") for op in manifest.exporter["portable_operators"])
    assert "min_cosine" not in manifest.tolerance
    assert _worst_cosine(result) > DIFFERS
    assert validate_export(ExportDirectory(result.path), ["executorch"]).passed


@needs_executorch
def test_bert_int8_validates_with_its_budget_and_differs_from_fp32(exports, bert_checkpoint):
    int8 = exports(bert_checkpoint, "int8-dynamic")
    _check_quantized(int8, "int8-dynamic", 0.95)
    # 7 linears of 32..64 features: int8 keeps 1 of every 4 of their weight bytes.
    assert _pte_bytes(int8) < 0.8 * _pte_bytes(exports(bert_checkpoint, None))


@needs_executorch
def test_decoder_generates_on_executorch_as_eager(exports, llama_checkpoint: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = exports(llama_checkpoint, None)
    assert result.report.passed, result.report.failures()
    assert result.manifest.exporter["static_cache"] == {"max_cache_len": CACHE, "batch": 1}
    # Validation's generation check: one prompt and a left-padded batch of three.
    assert len(result.report.generation) == 2
    assert all(check.passed for check in result.report.generation)

    generated = generate_text(result.path, ["hello world"], max_new_tokens=12, do_sample=False)
    tokenizer = AutoTokenizer.from_pretrained(llama_checkpoint)
    eager = AutoModelForCausalLM.from_pretrained(llama_checkpoint).eval()
    ids = tokenizer(["hello world"], return_tensors="pt")
    with torch.no_grad():
        expected = eager.generate(**ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    prompt = ids["input_ids"].shape[1]
    assert len(generated.trimmed(0)) > 0
    assert generated.trimmed(0) == expected[0, prompt:].tolist()[: len(generated.trimmed(0))]


@needs_executorch
def test_sequence_past_the_static_cache_is_refused(exports, llama_checkpoint: Path):
    out = exports(llama_checkpoint, None).path
    with pytest.raises(UsageError, match=f"KV cache holds {CACHE} positions"):
        generate_text(out, ["hello world"], max_new_tokens=CACHE, min_new_tokens=CACHE)


@needs_executorch
def test_decoder_int8_validates_with_its_budget_and_differs_from_fp32(
    exports, llama_checkpoint: Path
):
    int8 = exports(llama_checkpoint, "int8-dynamic")
    _check_quantized(int8, "int8-dynamic", 0.95)
    assert _pte_bytes(int8) < _pte_bytes(exports(llama_checkpoint, None))


@needs_executorch
@pytest.mark.slow
def test_decoder_int4_validates_with_its_budget_and_shrinks_the_program(
    exports, llama_checkpoint: Path, request: pytest.FixtureRequest
):
    # CI runs every test it collects (scripts/test.sh passes no -m), so this one asks.
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a third lowering of the decoder (about 15 s); select it with -m slow")
    fp32, int8 = (
        exports(llama_checkpoint, None),
        exports(llama_checkpoint, "int8-dynamic"),
    )
    int4 = exports(llama_checkpoint, "int4-weight")
    _check_quantized(int4, "int4-weight", 0.90)
    assert _worst_cosine(int4) < _worst_cosine(int8)
    assert _pte_bytes(int4) < _pte_bytes(int8) < _pte_bytes(fp32)


@needs_executorch
def test_int4_refuses_linears_that_are_not_whole_groups(tmp_path: Path):
    # hidden 48: int4 weights come in groups of 32 input features; nothing is lowered.
    checkpoint = save_tiny_checkpoint("bert", tmp_path / "checkpoint", hidden_size=48)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["export", str(checkpoint), str(out), "--format", "executorch", "--quantize",
         "int4-weight"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "groups of 32 input features" in result.output
    assert "--quantize int8-dynamic" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


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

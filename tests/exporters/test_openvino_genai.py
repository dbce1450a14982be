"""A decoder exported with --format openvino is stateful, in openvino-genai's layout:
``openvino_genai.LLMPipeline(OUT, "CPU")`` generates eager's greedy tokens from it, and
from its int4 (NNCF) quantization; graphport's own OpenVINO runtime drives its state."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import add_causal_tokenizer

import graphport
from graphport.api.export import export_model
from graphport.api.generate import generate_text
from graphport.api.transform import quantize_export
from graphport.cli import cli
from graphport.export.openvino import GENAI_TOKENIZER_FILES, genai_files, is_stateful
from graphport.manifest import ExportDirectory
from graphport.runtimes.engines import OpenvinoGenaiEngine

genai = pytest.importorskip("openvino_genai", reason="openvino-genai not installed")
ov = pytest.importorskip("openvino")

PROMPT = "w5 w9 w12 w7"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("llama-genai") / "checkpoint"
    shutil.copytree(tiny_checkpoint("llama", "text-generation"), source)
    return add_causal_tokenizer(source)


@pytest.fixture(scope="module")
def ov_export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llama-genai-export") / "out"
    export_model(checkpoint, out, fmt="openvino")  # validated on OpenVINO, tokens included
    return out


@pytest.fixture(scope="module")
def eager(checkpoint: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="module")
def tokenizer(checkpoint: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint, padding_side="left")


def _eager_new_tokens(eager, encoded, **kwargs) -> list[list[int]]:
    with torch.no_grad():
        out = eager.generate(**encoded, max_new_tokens=NEW_TOKENS, pad_token_id=0, **kwargs)
    return out[:, encoded["input_ids"].shape[1] :].tolist()


def _pipeline_tokens(directory: Path, ids: np.ndarray) -> list[list[int]]:
    pipe = genai.LLMPipeline(str(directory), "CPU")
    config = pipe.get_generation_config()
    config.max_new_tokens, config.do_sample = NEW_TOKENS, False
    inputs = genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
    return [list(tokens) for tokens in pipe.generate(inputs, config).tokens]


def test_the_export_is_stateful_in_openvino_genais_layout(ov_export: Path):
    manifest = ExportDirectory(ov_export).manifest
    assert manifest.graph().file == "openvino_model.xml"
    assert {"openvino_model.bin", "generation_config.json", "config.json"} <= set(manifest.files)
    assert set(GENAI_TOKENIZER_FILES) <= set(manifest.files)
    model = ov.Core().read_model(ov_export / "openvino_model.xml")
    assert is_stateful(model)
    names = [port.get_any_name() for port in model.inputs]
    assert names == ["input_ids", "attention_mask", "position_ids", "beam_idx"]
    assert [port.get_any_name() for port in model.outputs] == ["logits"]
    # The export's own validation ran the stateful graph, greedy tokens included.
    assert manifest.validation["passed"] and manifest.validation["generation"]


def test_llm_pipeline_generates_eagers_greedy_tokens(ov_export, eager, tokenizer):
    encoded = tokenizer([PROMPT], return_tensors="pt")
    expected = _eager_new_tokens(eager, encoded, do_sample=False)
    assert _pipeline_tokens(ov_export, encoded["input_ids"].numpy()) == expected
    # From the string too: the converted tokenizer and detokenizer round trip.
    pipe = genai.LLMPipeline(str(ov_export), "CPU")
    text = pipe.generate(PROMPT, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert str(text) == tokenizer.decode(expected[0], skip_special_tokens=True)


@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 2}], ids=["greedy", "beams"])
def test_graphport_load_drives_the_state(ov_export, eager, tokenizer, kwargs, monkeypatch):
    encoded = tokenizer([PROMPT, "w3 w8"], return_tensors="pt", padding=True)
    model = graphport.load(ov_export, runtime="openvino")
    tensors = ov.Tensor
    set_states = []  # the runtime sets a variable from an ov.Tensor of its past

    def counting(*args, **kw):
        set_states.append(1)
        return tensors(*args, **kw)

    monkeypatch.setattr(ov, "Tensor", counting)
    for _ in range(2):  # a second generate() starts from a fresh cache
        set_states.clear()
        with torch.no_grad():
            out = model.generate(**encoded, max_new_tokens=NEW_TOKENS, pad_token_id=0, **kwargs)
        assert out[:, encoded["input_ids"].shape[1] :].tolist() == _eager_new_tokens(
            eager, encoded, **kwargs
        )
        if not kwargs:  # greedy feeds back what the graph returned: set on the first step only
            assert len(set_states) == 4  # 2 layers x key, value


def test_generate_command_runs_the_export(ov_export: Path):
    # (graphport validate is validate_export, which the export itself ran.)
    result = CliRunner().invoke(
        cli, ["generate", str(ov_export), PROMPT, "--max-new-tokens", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert '"token_ids"' in result.output


def test_generate_takes_openvino_genai_for_a_padded_batch(ov_export, eager, tokenizer):
    prompts = [PROMPT, "w3 w8", "w9 w4"]  # rows of two lengths: a batch per length
    result = generate_text(ov_export, prompts, max_new_tokens=NEW_TOKENS)
    assert result.engine == "openvino-genai"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    assert result.tokens == _eager_new_tokens(eager, encoded, do_sample=False)
    assert generate_text(ov_export, prompts[:1], engine="transformers").engine == "transformers"


def test_the_engine_computes_in_the_exports_precision(ov_export, monkeypatch):
    # OpenVINO computes fp32 graphs in bf16 on CPUs with bf16 units unless told otherwise;
    # that changed SmolLM2's greedy tokens (BENCHMARKS.md), so the engine asks for f32.
    asked: dict[str, object] = {}
    real = genai.LLMPipeline

    def spy(path, device, **properties):
        asked.update(properties)
        return real(path, device, **properties)

    monkeypatch.setattr(genai, "LLMPipeline", spy)
    OpenvinoGenaiEngine(ExportDirectory(ov_export))
    assert asked["INFERENCE_PRECISION_HINT"] == "f32"


def test_int4_quantization_stays_stateful_and_runs_in_llm_pipeline(
    ov_export, tokenizer, tmp_path: Path
):
    out = tmp_path / "int4"
    result = quantize_export(ov_export, out, "openvino-int4-weight")
    assert result.report.passed
    model = ov.Core().read_model(out / "openvino_model.xml")
    assert is_stateful(model)
    assert any(
        op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i4
        for op in model.get_ops()
    )
    ids = tokenizer([PROMPT], return_tensors="np")["input_ids"]
    tokens = _pipeline_tokens(out, ids)
    assert len(tokens) == 1 and len(tokens[0]) == NEW_TOKENS


def test_triton_refuses_the_stateful_decoder(ov_export: Path, tmp_path: Path):
    result = CliRunner().invoke(
        cli, ["deploy", str(ov_export), str(tmp_path / "triton"), "--target", "triton"]
    )
    assert result.exit_code == 2 and "keeps its KV cache as state" in result.output
    assert not (tmp_path / "triton").exists()


def test_no_tokenizer_warns_why_llm_pipeline_will_not_run(tmp_path: Path, caplog):
    (tmp_path / "openvino_model.xml").write_text("<net/>")
    with caplog.at_level(logging.WARNING, logger="graphport.export.openvino"):
        assert genai_files(tmp_path) == []
    assert "LLMPipeline will not run this export: the export has no tokenizer" in caplog.text

"""-O2 decoders on GroupQueryAttention with a shared KV buffer: fused ops, the manifest's
contract, greedy parity with eager through graphport.load(OUT).generate(), and a buffer
that stays put across steps."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
import torch
from click.testing import CliRunner
from conftest import add_causal_tokenizer
from transformers import AutoModelForCausalLM

import graphport
from graphport.api.export import export_model
from graphport.api.transform import optimize_export
from graphport.cli import cli
from graphport.graphs.quantize import quantize_int4_weights, quiet_onnxruntime_tools
from graphport.models.tiny import save_tiny_checkpoint

LAYERS = 2
# hidden 32, 4 heads, 2 KV heads; qwen2's q/k/v projections carry biases (-m slow: the
# suite's time budget)
CASES = ("llama", pytest.param("qwen2", marks=pytest.mark.slow))


@pytest.fixture(scope="module", params=CASES)
def decoder(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    model_type = request.param
    root = tmp_path_factory.mktemp(f"gqa-{model_type}")
    checkpoint = save_tiny_checkpoint(model_type, root / "checkpoint", task="text-generation")
    add_causal_tokenizer(checkpoint)
    export_model(checkpoint, root / "onnx", validate=False)
    # optimize_export validates every pass and the result, greedy generation included
    optimize_export(root / "onnx", root / "o2", level=2)
    return model_type, checkpoint, root / "o2"


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(4, 90, (3, 7)))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding, as decoder tokenizers pad
    mask[2, :5] = 0
    return ids, mask


GREEDY = {"max_new_tokens": 10, "min_new_tokens": 10, "do_sample": False, "pad_token_id": 0}


def test_o2_decoder_runs_group_query_attention(decoder):
    _, _, out = decoder
    ops = Counter(n.op_type for n in ir.load(out / "model.onnx").graph)
    assert ops["GroupQueryAttention"] == LAYERS
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * LAYERS
    assert ops["Softmax"] == 0, "the unfused attention is gone"
    manifest = graphport.load(out).export_dir.manifest
    assert manifest.kv_cache["shared_buffer"] is True
    assert manifest.kv_cache["max_length"] == 128
    assert manifest.target == "onnxruntime"
    (record,) = [p for p in manifest.passes if p["name"] == "group-query-attention"]
    assert record["layers"] == LAYERS
    assert ops["RotaryEmbedding"] == 2 * LAYERS and ops["Neg"] == 0


@pytest.mark.parametrize("batch", [1, 3])
def test_generate_matches_eager_on_the_shared_buffer(decoder, batch: int):
    _, checkpoint, out = decoder
    eager = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    model = graphport.load(out)
    ids, mask = _prompts()
    ids, mask = ids[:batch], mask[:batch]
    expected = eager.generate(ids, attention_mask=mask, **GREEDY)
    assert torch.equal(model.generate(ids, attention_mask=mask, **GREEDY), expected)
    assert model.kv_buffer.arrays[0][0].shape[0] == batch, "the buffered path ran"


def test_the_buffer_is_written_in_place(decoder, monkeypatch: pytest.MonkeyPatch):
    _, _, out = decoder
    model = graphport.load(out)
    pointers: list[int] = []
    step = model._buffered_step

    def recorded(feeds, cache, past_length):
        output = step(feeds, cache, past_length)
        pointers.append(output.cache.layers[0].keys.data_ptr())
        return output

    monkeypatch.setattr(model, "_buffered_step", recorded)
    monkeypatch.setattr(model.runtime, "run", lambda feeds: pytest.fail("unbound run"))
    ids, mask = _prompts()
    model.generate(ids, attention_mask=mask, **GREEDY)
    buffer = model.kv_buffer.arrays[0][0]
    assert len(pointers) == GREEDY["max_new_tokens"]
    assert set(pointers) == {buffer.ctypes.data}, "every step's cache is the one buffer"
    assert buffer.shape[2] == ids.shape[1] + GREEDY["max_new_tokens"]


def test_int4_decoder_buffered_equals_unbuffered(decoder, tmp_path: Path):
    """int4 of the -O2 graph quantizes every projection and the lm_head; the buffered
    loop gives the tokens the graph gives when fed its present arrays."""
    _, _, out = decoder
    int4 = tmp_path / "int4"
    shutil.copytree(out, int4)
    with quiet_onnxruntime_tools():
        quantize_int4_weights(int4 / "model.onnx", int4 / "model.onnx", block_size=16)
    ops = Counter(n.op_type for n in ir.load(int4 / "model.onnx").graph)
    assert ops["MatMulNBits"] == 7 * LAYERS + 1 and ops["MatMul"] == 0
    ids, mask = _prompts()
    model = graphport.load(int4)
    buffered = model.generate(ids, attention_mask=mask, **GREEDY)
    model.shares_buffer = False
    assert torch.equal(model.generate(ids, attention_mask=mask, **GREEDY), buffered)


def test_beam_search_on_the_fused_decoder(decoder):
    """Beam search feeds the graph its present arrays (no shared buffer)."""
    _, checkpoint, out = decoder
    eager = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ids, mask = _prompts()
    beams = {**GREEDY, "num_beams": 2}
    expected = eager.generate(ids, attention_mask=mask, **beams)
    assert torch.equal(graphport.load(out).generate(ids, attention_mask=mask, **beams), expected)


def test_cli_generates_on_the_fused_decoder(decoder):
    model_type, _, out = decoder
    if model_type != "llama":
        pytest.skip("the word tokenizer gives qwen2's tiny export no prompt tokens")
    result = CliRunner().invoke(cli, ["generate", str(out), "w5 w9", "w3", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output


def test_a_generation_longer_than_planned_grows_the_buffer(decoder):
    _, checkpoint, out = decoder
    eager = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    model = graphport.load(out)
    model.generation_config.max_length = 8  # what the buffer is planned from
    ids, mask = _prompts()
    longer = {"max_length": 17, "do_sample": False, "pad_token_id": 0, "min_length": 17}
    expected = eager.generate(ids, attention_mask=mask, **longer)
    assert torch.equal(model.generate(ids, attention_mask=mask, **longer), expected)
    assert model.kv_buffer.length >= 16 > 8

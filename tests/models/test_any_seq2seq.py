"""Encoder-decoders without a family generate with their KV cache (issue 14, item 4).

Each case is a tiny random checkpoint exported with the task inferred from its
``*ForConditionalGeneration`` architecture and default options; the cache's layer count,
KV heads and head dims come from a dry run of the eager model. The export validates
itself, and that is what is checked here: encoder and decoder outputs against eager on
two shape sets, and transformers' greedy ``generate()`` on the export loaded with
``graphport.load`` against eager ``generate()`` (``check_generation``: 24 tokens for one
input and a right-padded batch of 3) on onnxruntime and OpenVINO. Initialisations are
wider than the models' own, so random models emit varied tokens (see
``graphport.models.seq2seq``). Only pegasus (sinusoidal positions) and mvp (learned
ones) run in CI; umt5 (relative buckets, as t5 in the families' tests) and BART's closest
relatives are ``slow``, since each export costs several seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch

from graphport.api.export import export_model
from graphport.errors import UnsupportedModelError, UsageError
from graphport.export.cache_layout import CacheLayout, UnsupportedCacheError
from graphport.manifest import ExportDirectory
from graphport.models.registry import export_config, get_onnx_config
from graphport.models.tiny import save_tiny_checkpoint, tiny_model

RUNTIMES = {"onnxruntime", "openvino"}
_UNTIED = {"tie_word_embeddings": False}

# model type -> tiny config overrides (initialisations that give varied tokens); none of
# these types has a family in graphport.
CASES: dict[str, dict[str, Any]] = {
    # Sinusoidal positions under embeddings scaled by sqrt(d_model).
    "pegasus": {**_UNTIED, "init_std": 0.4},
    # MvpForConditionalGeneration also fills masks; the export generates.
    "mvp": {**_UNTIED, "init_std": 0.2},
    # T5's relative attention buckets, per layer.
    "umt5": {**_UNTIED, "initializer_factor": 2.0},
    "blenderbot": {**_UNTIED, "init_std": 0.5},
    "plbart": {**_UNTIED, "init_std": 0.2},
}
SLOW = {"umt5", "blenderbot", "plbart"}


@pytest.mark.parametrize(
    "model_type",
    [pytest.param(t, marks=[pytest.mark.slow] if t in SLOW else []) for t in CASES],
)
def test_exports_with_its_cache_and_generates_as_eager(model_type: str, tmp_path: Path):
    checkpoint = save_tiny_checkpoint(
        model_type, tmp_path / "checkpoint", "text2text-generation", **CASES[model_type]
    )
    out = tmp_path / "out"
    result = export_model(checkpoint, out)  # no task: inferred, with the KV cache

    manifest = result.manifest
    assert (manifest.task, manifest.family) == ("text2text-generation", "generic")
    assert result.report.passed, "\n".join(result.report.failures())
    assert [g.name for g in manifest.graphs] == ["encoder", "decoder"]
    contract = manifest.kv_cache
    assert (contract["graph"], contract["encoder_graph"]) == ("decoder", "encoder")
    assert (contract["num_layers"], contract["num_kv_heads"], contract["head_dim"]) == (2, 4, 8)
    assert contract["cross_attention_layers"] == [{"num_kv_heads": 4, "head_dim": 8}] * 2
    for graph in ("encoder", "decoder"):
        nodes = onnx.load(str(out / f"{graph}.onnx"), load_external_data=False).graph.node
        assert not {node.op_type for node in nodes} & {"If", "Loop", "Scan"}
    # The layout a later command rebuilds from the manifest names the decoder's inputs.
    decoder = export_config(ExportDirectory(out)).for_graph("decoder")
    assert list(decoder.inputs) == [t.name for t in manifest.graph("decoder").inputs]

    checks = result.report.generation
    assert {c.runtime for c in checks} == RUNTIMES
    assert sorted(len(c.expected) for c in checks) == [1, 1, 3, 3]
    for check in checks:
        assert check.passed and check.actual == check.expected
        assert all(len(row) == 24 for row in check.expected)
    tokens = {token for check in checks for row in check.expected for token in row}
    assert len(tokens) > 4, "varied tokens test positions and the cache, not a constant"


# model type -> (tiny config overrides, the error the export fails with, its sentence).
REFUSED: dict[str, tuple[dict[str, Any], type[Exception], str]] = {
    # Its decoder reads router logits off the encoder output it is given, so the decoder
    # graph (fed last_hidden_state alone) cannot run it.
    "switch_transformers": (
        {"decoder_start_token_id": 0},
        UnsupportedModelError,
        r"fails on a dry run of its decoder.*router_logits",
    ),
    # Its decoder takes one new token at most on a cache.
    "prophetnet": ({}, UnsupportedModelError, r"fails on a dry run.*of length 1"),
    # Its encoder reshapes into a data-dependent number of attention-window chunks.
    "led": ({}, UnsupportedModelError, r"LED's encoder pads its input.*cannot export"),
    # The tiny config names no decoder start (a real LongT5 checkpoint does).
    "longt5": ({}, UsageError, r"names no decoder_start_token_id or bos_token_id"),
}


@pytest.mark.parametrize("model_type", list(REFUSED))
def test_a_model_that_cannot_generate_through_the_graphs_is_refused(model_type: str):
    overrides, error, message = REFUSED[model_type]
    model = tiny_model(model_type, "text2text-generation", **overrides)
    with pytest.raises(error, match=message):
        get_onnx_config(model.config, "text2text-generation-with-past").sub_graphs(model)


def test_a_cache_that_is_not_an_encoder_decoder_cache_is_refused():
    class Encoder(torch.nn.Module):
        def forward(self, input_ids):
            return (input_ids.float()[..., None],)

    class PlainCache(torch.nn.Module):
        def get_encoder(self):
            return Encoder()

        def get_input_embeddings(self):
            return torch.nn.Embedding(8, 2)

        def forward(self, encoder_outputs, decoder_input_ids, use_cache):
            return {"logits": decoder_input_ids.float(), "past_key_values": (decoder_input_ids,)}

    with pytest.raises(UnsupportedCacheError, match=r"returns a tuple as its cache, not an"):
        CacheLayout.read_encoder_decoder(PlainCache(), {"input_ids": torch.ones(1, 4).long()})

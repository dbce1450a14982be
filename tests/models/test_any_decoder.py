"""Causal LMs without a family generate with their KV cache (issue 14).

Each case is a tiny random checkpoint exported with the task inferred from its
``*ForCausalLM`` architecture. The export validates itself: logits and presents against
eager on two shape sets, and greedy generation against transformers' ``generate()`` for
24 tokens (a prompt alone and a left-padded batch of 3) on onnxruntime and OpenVINO.
Sliding windows are 8 positions, so prompt plus new tokens run well past them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from graphport.api.export import export_model
from graphport.export.cache_layout import CacheLayout, UnsupportedCacheError
from graphport.manifest import ExportDirectory
from graphport.models.registry import export_config
from graphport.models.tiny import save_tiny_checkpoint
from graphport.runtimes import get_runtime_class
from graphport.runtimes.model import empty_past

WINDOW = 8
# Small, and with special tokens inside the small vocabulary.
TINY = {
    "vocab_size": 128,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
HYBRID = {"sliding_window": WINDOW, "layer_types": ["sliding_attention", "full_attention"]}

# model type -> (config overrides, family, sliding window per layer)
CASES: dict[str, tuple[dict[str, Any], str, list[int | None]]] = {
    "qwen3": ({}, "generic", [None, None]),
    "phi3": ({}, "generic", [None, None]),
    "olmo2": ({}, "generic", [None, None]),
    "granite": ({}, "generic", [None, None]),
    "smollm3": ({}, "generic", [None, None]),
    # Hybrid caches: a sliding layer, then a global one.
    "gemma2": ({"sliding_window": WINDOW}, "generic", [WINDOW, None]),
    "gemma3_text": (HYBRID, "generic", [WINDOW, None]),
    # Every layer slides; mistral keeps its family, which reads the same layout.
    "mistral": ({"sliding_window": WINDOW}, "llama", [WINDOW, WINDOW]),
    # Mixtures of experts.
    "mixtral": ({}, "generic", [None, None]),
    "qwen2_moe": ({}, "generic", [None, None]),
    "qwen3_moe": ({}, "generic", [None, None]),
    "olmoe": ({}, "generic", [None, None]),
    # Multi-head latent attention: values narrower than keys, recorded per layer.
    "deepseek_v3": ({}, "generic", [None, None]),
}


# The list runs in CI; the other cases run with -m slow (the suite's time budget).
SLOW = {"smollm3", "mistral", "qwen3_moe", "olmoe", "deepseek_v3"}


@pytest.mark.parametrize(
    "model_type",
    [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in CASES],
)
def test_exports_with_its_cache_and_generates_as_eager(model_type: str, tmp_path: Path):
    overrides, family, windows = CASES[model_type]
    checkpoint = save_tiny_checkpoint(
        model_type, tmp_path / "checkpoint", task="text-generation", **TINY, **overrides
    )
    out = tmp_path / "out"
    export_model(checkpoint, out)  # no task: inferred, with the KV cache

    manifest = ExportDirectory(out).manifest
    assert (manifest.task, manifest.family) == ("text-generation", family)
    contract = manifest.kv_cache
    assert contract["num_layers"] == 2 and contract["graph"] == "model"
    layers = contract.get("layers") or [{}] * 2
    assert [layer.get("sliding_window") for layer in layers] == windows
    if model_type == "deepseek_v3":
        assert [layer["value_head_dim"] for layer in layers] == [8, 8]

    validation = manifest.validation
    assert validation["passed"], validation["failures"]
    generation = validation["generation"]
    assert sorted(generation) == [
        f"{runtime} / {case}"
        for runtime in ("onnxruntime", "openvino")
        for case in ("padded batch of 3", "single prompt")
    ]
    assert all(g["tokens"] == 24 and g["first_difference"] is None for g in generation.values())

    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    assert not {node.op_type for node in graph.node} & {"If", "Loop", "Scan"}
    # The layout a later command rebuilds from the manifest names the graph's inputs.
    assert list(export_config(ExportDirectory(out)).inputs) == [i.name for i in graph.input]


def test_a_sliding_layer_keeps_its_window_as_transformers_does(tmp_path: Path):
    checkpoint = save_tiny_checkpoint(
        "gemma2", tmp_path / "checkpoint", "text-generation", sliding_window=WINDOW, **TINY
    )
    out = tmp_path / "out"
    export_model(checkpoint, out, runtimes=["onnxruntime"])
    directory = ExportDirectory(out)
    runtime = get_runtime_class("onnxruntime")(directory)
    prompt = np.arange(5, 17, dtype=np.int64)[None]  # 12 tokens: past the window
    feeds = {
        "input_ids": prompt,
        "attention_mask": np.ones_like(prompt),
        "position_ids": np.arange(12)[None],
        **empty_past(directory.manifest.kv_cache, 1),
    }
    present = runtime.run(feeds)
    assert present["present.0.key"].shape[2] == WINDOW - 1  # the sliding layer
    assert present["present.1.key"].shape[2] == 12  # the global one keeps every position

    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        cache = eager(input_ids=torch.from_numpy(prompt), use_cache=True).past_key_values
    np.testing.assert_allclose(present["present.0.key"], cache.layers[0].keys.numpy(), atol=1e-5)


def test_a_model_without_a_plain_cache_is_refused_with_the_reason():
    class NoCache(torch.nn.Module):
        def forward(self, input_ids, attention_mask, use_cache):
            return {"logits": input_ids.float(), "past_key_values": (input_ids,)}

    with pytest.raises(UnsupportedCacheError, match=r"returns a tuple as its cache, not a"):
        CacheLayout.read(NoCache(), [5, 6, 7])


# A family that declares no causal-LM head lends it to the generic KV-cache path: an
# encoder's decoder head (saved with is_decoder=True) and a seq2seq family's decoder alone.
BORROWED = {
    "bert": ("BertLMHeadModel", {"is_decoder": True}),
    "bart": ("BartForCausalLM", {}),
}


@pytest.mark.parametrize("model_type", ["bert", pytest.param("bart", marks=pytest.mark.slow)])
def test_a_family_without_a_causal_head_generates_through_the_generic_path(
    model_type: str, tmp_path: Path
):
    architecture, overrides = BORROWED[model_type]
    checkpoint = save_tiny_checkpoint(
        model_type, tmp_path / "checkpoint", task="text-generation", **TINY, **overrides
    )
    out = tmp_path / "out"
    export_model(checkpoint, out, runtimes=["onnxruntime"])  # task inferred from the head

    manifest = ExportDirectory(out).manifest
    assert manifest.source["architectures"] == [architecture]
    assert (manifest.task, manifest.family) == ("text-generation", model_type)
    assert manifest.kv_cache["num_layers"] == 2
    generation = manifest.validation["generation"]
    assert generation and all(g["first_difference"] is None for g in generation.values())

"""``genai_config.json``: the file onnxruntime-genai reads to run an ONNX decoder export.

``onnxruntime_genai.Model(OUT)`` loads a directory that holds the decoder graph, its
tokenizer files and ``genai_config.json``, which names the graph, its inputs and outputs
and the KV cache's sizes, and sets the search defaults. graphport writes it beside every
ONNX decoder-only export it can run (the field names are those of onnxruntime-genai's
``src/config.h``; its model builder writes the same file):

1. ``model.type`` is ``decoder``, genai's generic decoder-only model: the graph computes
   everything itself (rotary, norms), so no family-specific behaviour applies.
2. ``model.decoder`` names ``model.onnx`` and the tensor names of the manifest
   (``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.%d.key`` ...,
   ``logits``, ``present.%d.key`` ...); the KV sizes (layers, KV heads, head size) are the
   manifest's cache contract, hidden size and attention heads the model config's.
3. ``context_length`` is the model's position limit (config.json), capped by the cache
   buffer of a GroupQueryAttention graph (``kv_cache.max_length``); ``search.max_length``
   defaults to it.
4. ``search`` takes generation_config.json's settings (greedy unless it samples);
   ``past_present_share_buffer`` is true only where the graph allows one buffer as past
   and present (``kv_cache.shared_buffer``, written by ``-O 2``'s GroupQueryAttention).
5. An export genai cannot run gets no file: ``genai_unsupported`` says why (the part it
   cannot feed), and the engine choice repeats it to whoever asks for genai.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from graphport.manifest import PAST_PREFIX, PRESENT_PREFIX, Manifest

logger = logging.getLogger(__name__)

GENAI_CONFIG = "genai_config.json"
GENAI_INPUTS = frozenset({"input_ids", "attention_mask", "position_ids"})
KV_LAYOUT = ["batch", "kv_heads", "sequence", "head_dim"]
# generation_config.json key -> genai search key (the same meaning in both), and defaults.
SEARCH = {
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "repetition_penalty": 1.0,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
}


def genai_unsupported(manifest: Manifest) -> str | None:
    """Why onnxruntime-genai cannot run the export (None: it can), as the end of a
    sentence that starts "onnxruntime-genai cannot run this export: "."""
    if not all(graph.file.endswith(".onnx") for graph in manifest.graphs):
        return f"its graphs are {manifest.format}, not ONNX"
    contract = manifest.kv_cache
    if manifest.task != "text-generation" or len(manifest.graphs) != 1 or not contract:
        return f"it is not a decoder-only language model with a KV cache (task {manifest.task})"
    if contract.get("layout") != KV_LAYOUT:
        return f"its KV cache is laid out as {contract.get('layout')}, not {KV_LAYOUT}"
    if any(layer.get("sliding_window") for layer in contract.get("layers") or []):
        return "some layers keep a sliding window of the cache"
    graph = manifest.graphs[0]
    for tensor in graph.inputs:
        if tensor.name not in GENAI_INPUTS and not tensor.name.startswith(PAST_PREFIX):
            return f"its graph takes the input {tensor.name!r}, which genai does not feed"
    names = {t.name for t in graph.inputs}
    if "input_ids" not in names:
        return "its graph takes no input_ids"
    dtypes = {t.dtype for t in graph.inputs if t.name in ("attention_mask", "position_ids")}
    if len(dtypes) > 1:
        return "its attention_mask and position_ids differ in dtype"
    outputs = {t.name for t in graph.outputs}
    layers = int(contract.get("num_layers") or 0)
    for i in range(layers):
        for kind in ("key", "value"):
            if f"{PAST_PREFIX}{i}.{kind}" not in names:
                return f"its graph has no input {PAST_PREFIX}{i}.{kind}"
            if f"{PRESENT_PREFIX}{i}.{kind}" not in outputs:
                return f"its graph has no output {PRESENT_PREFIX}{i}.{kind}"
    if "logits" not in outputs:
        return "its graph has no logits output"
    return None


def _read(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def _first(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def genai_config(directory: Path, manifest: Manifest) -> dict[str, Any]:
    """The contents of genai_config.json for the export in ``directory`` (rules 1-4)."""
    config = _text_config(_read(directory, "config.json"))
    generation = _read(directory, "generation_config.json")
    contract = manifest.kv_cache or {}
    graph = manifest.graphs[0]
    names = {t.name for t in graph.inputs}
    heads = int(contract["num_kv_heads"])
    positions = _first(config, "max_position_embeddings", "n_positions", "n_ctx", "seq_length")
    limits = [n for n in (positions, contract.get("max_length")) if n]
    context = int(min(limits)) if limits else 4096  # rule 3
    eos = _ids(generation.get("eos_token_id", config.get("eos_token_id")))
    pad = generation.get("pad_token_id", config.get("pad_token_id"))
    if pad is None:
        pad = eos[0] if eos else 0
    bos = generation.get("bos_token_id", config.get("bos_token_id"))
    vocab = next(t.shape[-1] for t in graph.outputs if t.name == "logits")
    inputs = {name: name for name in sorted(GENAI_INPUTS) if name in names}
    search: dict[str, Any] = {}
    for key, default in SEARCH.items():
        value = generation.get(key)
        search[key] = default if value is None else value
    search.update(
        {
            "min_length": 0,
            "max_length": context,
            "early_stopping": bool(generation.get("early_stopping", True)),
            "past_present_share_buffer": bool(contract.get("shared_buffer")),  # rule 4
        }
    )
    return {
        "model": {
            "type": "decoder",  # rule 1
            "bos_token_id": int(bos) if bos is not None else (eos[0] if eos else 0),
            "eos_token_id": eos,
            "pad_token_id": int(pad),
            "context_length": context,
            "vocab_size": vocab if isinstance(vocab, int) else int(config.get("vocab_size", 0)),
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": graph.file,
                "hidden_size": int(_first(config, "hidden_size", "n_embd", "d_model") or 0),
                "num_attention_heads": int(
                    _first(config, "num_attention_heads", "n_head", "num_heads") or heads
                ),
                "num_key_value_heads": heads,
                "num_hidden_layers": int(contract["num_layers"]),
                "head_size": int(contract["head_dim"]),
                "inputs": {
                    **inputs,
                    "past_key_names": f"{PAST_PREFIX}%d.key",
                    "past_value_names": f"{PAST_PREFIX}%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": f"{PRESENT_PREFIX}%d.key",
                    "present_value_names": f"{PRESENT_PREFIX}%d.value",
                },
            },
        },
        "search": search,
    }


def write_genai_config(directory: Path, manifest: Manifest) -> list[str]:
    """Write genai_config.json into ``directory`` where genai can run the export (rule 5;
    a stale one is removed where it cannot); returns the files written."""
    path = Path(directory) / GENAI_CONFIG
    reason = genai_unsupported(manifest)
    if reason is not None:
        path.unlink(missing_ok=True)
        logger.debug("No %s: onnxruntime-genai cannot run this export: %s.", GENAI_CONFIG, reason)
        return []
    content = genai_config(Path(directory), manifest)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return [GENAI_CONFIG]

"""Generation settings of an export, shared by everything that generates from it.

Decoding itself is transformers' own ``generate()`` running on the runtime
(``graphport.load(OUT).generate()``, graphport/runtimes/model.py), which ``graphport
generate`` and the export validation use too: graphport keeps no decoding rules of its
own. What is here is read from the export directory: the generation config and its
eos/pad/length defaults, the position limits, the left padding of a decoder-only batch,
and the greedy ``generate()`` call validation compares runtimes with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory

logger = logging.getLogger(__name__)


def load_generation_config(export_dir: ExportDirectory) -> Any:
    """The export's ``GenerationConfig``: generation_config.json, else from config.json."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(export_dir.path, local_files_only=True)
    except OSError:
        model_config = AutoConfig.from_pretrained(export_dir.path, local_files_only=True)
        return GenerationConfig.from_model_config(model_config)


def generation_defaults(export_dir: ExportDirectory) -> dict[str, Any]:
    """eos/pad ids and sampling defaults from generation_config.json, else config.json."""
    config = load_generation_config(export_dir)
    eos = config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    return {
        "eos_token_id": eos,
        "pad_token_id": int(pad),
        "max_new_tokens": config.max_new_tokens or 20,
        "repetition_penalty": config.repetition_penalty or 1.0,
    }


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (input_ids, attention_mask), padded on the left as generation pads."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UsageError("Every prompt must have at least one token.")
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _read_config(export_dir: ExportDirectory) -> dict[str, Any]:
    import json

    config_file = export_dir.path / "config.json"
    if not config_file.is_file():
        return {}
    return json.loads(config_file.read_text(encoding="utf-8"))


def _first_int(config: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def max_positions(export_dir: ExportDirectory) -> int | None:
    """The model's position limit from config.json (None: none recorded)."""
    keys = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")
    return _first_int(_read_config(export_dir), keys)


def decoder_max_positions(export_dir: ExportDirectory) -> int | None:
    """The decoder's position limit (None: none recorded, as with relative positions)."""
    config = _read_config(export_dir)
    decoder = config.get("decoder") if isinstance(config.get("decoder"), dict) else config
    keys = ("max_target_positions", "max_position_embeddings", "n_positions", "n_ctx")
    return _first_int(decoder, keys)


# Greedy steps compared with transformers' generate() when an export is validated.
VALIDATION_STEPS = 24


def eager_generate(
    model: Any,
    inputs: Mapping[str, np.ndarray],
    max_new_tokens: int,
    pad_token_id: int,
    min_new_tokens: int = 0,
) -> np.ndarray:
    """transformers' greedy ``generate()`` on ``model`` (the eager model, or an export
    loaded with ``graphport.load``); only the new tokens.

    The new tokens are the last ones, one per step scored: what precedes them differs by
    model (a decoder-only model's prompt, an encoder-decoder's start token, Whisper's
    language and task tokens). Greedy means one beam, whatever the generation config says.
    """
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    dtype = model.dtype  # a loaded export has no parameters; its dtype is the export's
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    with torch.no_grad():
        output = model.generate(
            **tensors,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
    sequences = output.sequences
    return sequences[:, sequences.shape[1] - len(output.scores) :].numpy()

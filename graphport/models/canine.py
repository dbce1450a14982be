"""CANINE: a tokenizer-free encoder over characters (Unicode code points).

``input_ids`` are code points, not vocabulary ids: they are hashed into embedding buckets,
so any value from 0 to 0x10FFFF is valid and there is no ``vocab_size``. The model
downsamples characters by ``downsampling_rate`` (4) into "molecules" with a strided
convolution and repeats them back.

Sequence lengths: any from ``downsampling_rate`` (one molecule) to
``max_position_embeddings``, and to ``num_hash_buckets``, which also sizes its character
position table (16384 both, in the released checkpoints). The molecule count
``length // rate`` would make torch.export rewrite the sequence axis as a multiple of the
rate if it were a named dimension; the graph is traced through ``Positional`` (see
``graphport.models.towers``), which keeps it general, and validation runs at lengths that
are not multiples of the rate.

Two of its steps are written with Python control flow over the sequence length, which
torch.export can only trace by fixing the length; ``patch_model`` swaps them, while
tracing only, for tensor expressions that compute the same values (rules):

1. The molecule mask is a ``MaxPool1d`` over the character mask; the patch takes the max
   over windows of ``downsampling_rate`` gathered by index instead.
2. The first character encoder attends locally, chunk by chunk, in a Python loop over
   ``range(0, length, stride)``; the patch runs one attention over all characters with
   the keys of other chunks masked to -inf. Keys masked that way get exactly zero weight,
   and keys that padding masks keep the original finite minimum, so a chunk of padding
   only still averages its own keys, as the loop does.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from graphport.export.config import SubGraph
from graphport.export.modalities import TextOnnxConfig
from graphport.models.registry import register
from graphport.models.tiny import UNSET
from graphport.models.towers import Positional

# Code points of ordinary text: printable ASCII up to the CJK blocks; CANINE's special
# characters (CLS 0xE000, SEP 0xE001, ...) sit in the private use area above.
_TEXT_CODE_POINTS = (0x20, 0x3000)

# Local-attention chunks of 8 characters, so validation crosses chunk boundaries (rule 2);
# 256 positions hold the validation sentences, one character each (CANINE sizes its
# position table by num_hash_buckets, not max_position_embeddings).
_TINY = {
    "num_hash_buckets": 256,
    "local_transformer_stride": 8,
    "max_position_embeddings": 256,
    "vocab_size": UNSET,
}


@register("canine", family="canine", tiny=_TINY)
class CanineOnnxConfig(TextOnnxConfig):
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        **TextOnnxConfig.profile_ranges,
        "sequence": (4, 128, 2048),
    }

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "input_ids":
            return rng.integers(*_TEXT_CODE_POINTS, size=shape, dtype=np.int64)
        return super().dummy_input(name, shape, rng)

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        return [SubGraph("model", Positional(model, list(self.inputs)), self)]

    @contextlib.contextmanager
    def patch_model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        from transformers import CanineModel

        canine = next(m for m in model.modules() if isinstance(m, CanineModel))
        patched: list[tuple[Any, str]] = [(canine, "_downsample_attention_mask")]
        canine._downsample_attention_mask = types.MethodType(_downsample_mask, canine)
        for layer in canine.initial_char_encoder.layer:
            if _is_plain_local(layer.attention):
                layer.attention.forward = types.MethodType(_local_as_masked, layer.attention)
                patched.append((layer.attention, "forward"))
        try:
            yield model
        finally:
            for owner, name in patched:
                delattr(owner, name)  # the instance attribute hid the class method


def _downsample_mask(self: Any, mask: torch.Tensor, downsampling_rate: int) -> torch.Tensor:
    """Rule 1: the max of each window of ``downsampling_rate`` characters, a trailing
    partial window dropped (as ``MaxPool1d`` does).

    The windows are gathered by index rather than sliced off the mask: a slice of a
    dynamic length makes torch.export assume the length is a multiple of the rate.
    """
    molecules = mask.shape[1] // downsampling_rate
    windows = torch.arange(molecules * downsampling_rate, device=mask.device)
    return mask[:, windows.reshape(molecules, downsampling_rate)].float().amax(dim=-1)


def _is_plain_local(attention: Any) -> bool:
    """Chunked attention as CANINE configures it: equal, non-overlapping chunks."""
    return (
        attention.local
        and not attention.always_attend_to_first_position
        and not attention.first_position_attends_to_all
        and attention.attend_from_chunk_width
        == attention.attend_from_chunk_stride
        == attention.attend_to_chunk_width
        == attention.attend_to_chunk_stride
    )


def _local_as_masked(
    self: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    output_attentions: bool | None = False,
) -> tuple[torch.Tensor, ...]:
    """Rule 2: one attention over all characters, other chunks' keys masked to -inf.

    The 3-D mask holds 1 (attend) and 0 (padding); the attention turns it into
    ``(1 - mask) * min``, so -inf here becomes -inf there.
    """
    length = hidden_states.shape[1]
    chunk = torch.arange(length, device=hidden_states.device) // self.attend_from_chunk_stride
    same_chunk = chunk[:, None] == chunk[None, :]
    if attention_mask is None:
        attention_mask = hidden_states.new_ones(hidden_states.shape[0], length, length)
    attention_mask = attention_mask.masked_fill(~same_chunk, float("-inf"))
    outputs = self.self(hidden_states, hidden_states, attention_mask, output_attentions)
    return (self.output(outputs[0], hidden_states), *outputs[1:])

"""CPM-Ant: a Chinese decoder whose forward builds its own masks from the token ids.

Its forward takes ``input_ids`` only: padding is id 0, found by value, and it must be on
the left (the model counts the non-zero ids per row and attends that many last
positions). The graph is the bare model without a cache (feature extraction):
``input_ids`` -> ``last_hidden_state`` over the input positions (the learned prompt it
prepends is cut off again). Generation (CpmAntForCausalLM with a cache) is not exported
by this family.

Its padding mask is built from a Python list of ``range(length)``, which torch.export can
only trace by fixing the length; ``patch_model`` builds the same mask from
``torch.arange`` while tracing.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from graphport.export.config import Axes
from graphport.export.modalities import TextOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register
from graphport.models.tiny import UNSET

_TINY = {
    "dim_head": 8,
    "dim_ff": 64,
    "prompt_length": 4,
    "position_bias_num_buckets": 32,
    "position_bias_max_distance": 128,
    "intermediate_size": UNSET,
    "max_position_embeddings": UNSET,
}


@register("cpmant", family="cpmant", tiny=_TINY)
class CpmAntOnnxConfig(TextOnnxConfig):
    tasks = (Task.FEATURE_EXTRACTION,)
    # CpmAntForCausalLM's cache layers hold more positions than the tokens fed (its prompt
    # segments), which the generic KV-cache path cannot carry as past tensors.
    lends_decoder = False

    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {"input_ids": {0: "batch", 1: "sequence"}}

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        # Left-padded with id 0, rows of different lengths.
        ids = super().dummy_input(name, shape, rng)
        return ids * super().dummy_input("attention_mask", shape, rng)[..., ::-1]

    @contextlib.contextmanager
    def patch_model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        from transformers import CpmAntModel

        cpmant = next(m for m in model.modules() if isinstance(m, CpmAntModel))
        cpmant._prepare_attention_mask = types.MethodType(_prepare_attention_mask, cpmant)
        try:
            yield model
        finally:
            del cpmant._prepare_attention_mask  # the instance attribute hid the method


def _prepare_attention_mask(
    self: Any,
    input_ids: torch.Tensor,
    span: torch.Tensor,
    context: torch.Tensor,
    length: torch.Tensor,
) -> torch.Tensor:
    """transformers' ``CpmAntModel._prepare_attention_mask`` with the Python list
    ``range(seqlen - prompt_length)[::-1]`` written as a descending ``torch.arange``."""
    batch, seqlen = input_ids.shape
    device = input_ids.device
    positions = torch.arange(seqlen, device=device)
    directional = positions <= positions.view(-1, 1)
    mask = context[:, None, :] | (
        context[:, :, None].logical_not() & directional.view(1, seqlen, seqlen)
    )
    mask = mask & (span[:, None, :] == span[:, :, None])
    from_end = torch.arange(seqlen - self.prompt_length - 1, -1, -1, device=device)
    mask_1d = from_end[None, :].repeat(batch, 1) < length[:, None]
    prompt = torch.ones(batch, self.prompt_length, device=device).bool()
    mask_1d = torch.cat((prompt, mask_1d), dim=1)
    return mask_1d.view(batch, seqlen, 1) & mask_1d.view(batch, 1, seqlen) & mask

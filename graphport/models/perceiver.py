"""Perceiver IO: a latent-array transformer whose modality lives in its pre/postprocessors.

Every Perceiver head takes one input named ``inputs``: UTF-8 byte ids for the language
heads (PerceiverForMaskedLM, PerceiverForSequenceClassification), pixels for the image
classifier. The graph names it as the preprocessors do (``input_ids`` and
``attention_mask`` from the Perceiver tokenizer, ``pixel_values`` from the image
processor), so exports feed like any text or vision model; a small wrapper passes it on
as ``inputs``.

The masked-LM decoder queries ``max_position_embeddings`` positions whatever the input
length, and only the first ``sequence`` are predictions for the input; the wrapper keeps
those, so ``logits`` is (batch, sequence, vocab) as for every fill-mask export.

Registered tasks are what the auto classes give: fill-mask, text-classification and
image-classification (the learned-position classifier, whose image size is fixed by its
position table). The bare PerceiverModel has no preprocessor, so it takes embeddings no
processor makes: feature-extraction is not offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphport.exporters.config import Axes, SubGraph, TextOnnxConfig, _pair
from graphport.exporters.tasks import Task
from graphport.models.registry import register
from graphport.models.tiny import UNSET

_TINY = {
    "d_model": 32,
    "d_latents": 32,
    "num_latents": 8,
    "num_self_attends_per_block": 2,
    "num_self_attention_heads": 4,
    "num_cross_attention_heads": 4,
    "image_size": 16,
    "hidden_size": UNSET,
    "num_hidden_layers": UNSET,
    "num_attention_heads": UNSET,
    "intermediate_size": UNSET,
}


class PerceiverInputs(torch.nn.Module):
    """Feeds a Perceiver head its ``inputs`` under the preprocessor's name, and keeps the
    masked-LM logits of the input positions only."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # not training mode, whatever exporters restore

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        inputs = pixel_values if input_ids is None else input_ids
        logits = self.model(inputs=inputs, attention_mask=attention_mask).logits
        if logits.dim() == 3 and input_ids is not None:
            logits = logits[:, : input_ids.shape[1]]
        return {"logits": logits}


@register("perceiver", family="perceiver", tiny=_TINY)
class PerceiverOnnxConfig(TextOnnxConfig):
    tasks = (Task.FILL_MASK, Task.TEXT_CLASSIFICATION, Task.IMAGE_CLASSIFICATION)

    def __init__(self, config: Any, task: str | Task = Task.FILL_MASK, **kwargs: Any) -> None:
        super().__init__(config, task, **kwargs)
        if self.task is Task.IMAGE_CLASSIFICATION:
            self.modality = "vision"  # type: ignore[misc]  # the image head reads pixels

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if self.task is Task.IMAGE_CLASSIFICATION:
            return {"pixel_values": {0: "batch"}}  # its position table fixes the image size
        return {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
        }

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if name == "pixel_values":
            return (sizes["batch"], 3, *_pair(self._config.image_size))
        return super().input_shape(name, sizes)

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "pixel_values":
            return rng.standard_normal(shape, dtype=np.float32)
        return super().dummy_input(name, shape, rng)

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        return [SubGraph("model", PerceiverInputs(model), self)]

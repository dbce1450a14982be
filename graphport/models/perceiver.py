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

Registered tasks are what the auto classes give: fill-mask, text-classification,
image-classification (the learned-position classifier, whose image size is fixed by its
position table) and feature-extraction. The bare PerceiverModel has no preprocessor, so it
takes what none makes: ``inputs`` are embeddings (batch, sequence, ``d_model``), fed under
their own name with ``attention_mask``, and ``last_hidden_state`` is the latent array
(batch, ``num_latents``, ``d_latents``), as many positions whatever the input length. Its
modality is ``embeddings``: neither sentences nor images feed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphport.export.config import Axes, SubGraph
from graphport.export.modalities import TextOnnxConfig, _pair
from graphport.export.tasks import Task
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
    tasks = (
        Task.FILL_MASK,
        Task.TEXT_CLASSIFICATION,
        Task.IMAGE_CLASSIFICATION,
        Task.FEATURE_EXTRACTION,
    )

    def __init__(self, config: Any, task: str | Task = Task.FILL_MASK, **kwargs: Any) -> None:
        super().__init__(config, task, **kwargs)
        if self.task is Task.IMAGE_CLASSIFICATION:
            self.modality = "vision"  # type: ignore[misc]  # the image head reads pixels
        elif self.task is Task.FEATURE_EXTRACTION:
            self.modality = "embeddings"  # type: ignore[misc]  # no processor makes them

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if self.task is Task.IMAGE_CLASSIFICATION:
            return {"pixel_values": {0: "batch"}}  # its position table fixes the image size
        if self.task is Task.FEATURE_EXTRACTION:
            return {
                "inputs": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
            }
        return {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
        }

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.task is Task.FEATURE_EXTRACTION:
            return {"last_hidden_state": {0: "batch"}}  # the latents, fixed in number
        return super().outputs

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if name == "pixel_values":
            return (sizes["batch"], 3, *_pair(self._config.image_size))
        if name == "inputs":
            return (sizes["batch"], sizes["sequence"], int(self._config.d_model))
        return super().input_shape(name, sizes)

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name in ("pixel_values", "inputs"):
            return rng.standard_normal(shape, dtype=np.float32)
        return super().dummy_input(name, shape, rng)

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        if self.task is Task.FEATURE_EXTRACTION:
            return [SubGraph("model", model, self)]  # the bare model takes ``inputs`` itself
        return [SubGraph("model", PerceiverInputs(model), self)]

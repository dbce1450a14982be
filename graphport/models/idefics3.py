"""Idefics3 and SmolVLM (``Idefics3ForConditionalGeneration``,
``SmolVLMForConditionalGeneration``: one architecture): a SigLIP-like vision tower, a
pixel-shuffle connector and a Llama decoder, exported for image-text-to-text as the three
graphs of graphport.export.vlm.

The processor splits an image into tiles of the vision config's size plus a downscaled
whole image; eager takes them as (batch, images, channels, height, width) with all-zero
images padding the rows that have fewer, and a ``pixel_attention_mask`` of the pixels
that are image. The vision graph takes the real tiles flattened into one axis, with their
masks (the runtime model flattens them and drops the padding, as eager's
``get_image_features`` does), and returns each tile's features after the connector.
Other tasks of the model type keep the generic path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from graphport.export.config import Axes
from graphport.export.vlm import ImageTextOnnxConfig, register_image_text


@register_image_text("idefics3", "smolvlm")
class Idefics3OnnxConfig(ImageTextOnnxConfig):
    family = "idefics3"

    @property
    def image_tokens(self) -> int:
        return super().image_tokens // int(self._config.scale_factor) ** 2

    @property
    def vision_inputs(self) -> Mapping[str, Axes]:
        return {"pixel_values": {0: "image"}, "pixel_attention_mask": {0: "image"}}

    def generation_pixels(
        self, images: list[int], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """(batch, images, ...) with rows of fewer images padded by zeros, as the processor
        pads them."""
        shape = (len(images), max(images), *self.pixel_shape())
        pixels = np.zeros(shape, dtype=np.float32)
        mask = np.zeros((*shape[:2], *shape[3:]), dtype=np.int64)
        for row, count in enumerate(images):
            pixels[row, :count] = rng.standard_normal((count, *shape[2:]), dtype=np.float32)
            mask[row, :count] = 1
        return {"pixel_values": pixels, "pixel_attention_mask": mask}

    def image_features(self, model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> Any:
        """``get_image_features`` on tiles that are all real: its patch mask, the vision
        tower, the connector, without the split into a list per prompt."""
        inner = model.model
        patch = self._config.vision_config.patch_size
        mask = inputs["pixel_attention_mask"]
        grid = mask.unfold(dimension=1, size=patch, step=patch)
        grid = grid.unfold(dimension=2, size=patch, step=patch)
        patches = grid.sum(dim=(-1, -2)) > 0
        states = inner.vision_model(
            pixel_values=inputs["pixel_values"], patch_attention_mask=patches
        ).last_hidden_state
        return inner.connector(states)

"""LLaVA (``LlavaForConditionalGeneration``): a CLIP-like vision tower, a projector and a
decoder, exported for image-text-to-text as the three graphs of
graphport.export.vlm.

The vision graph runs ``get_image_features`` with the config's ``vision_feature_layer``
and ``vision_feature_select_strategy`` (``default`` drops the CLS position), as eager's
forward does. Images are the vision config's size (the processor resizes to it), so
every image gives the same number of features. Other tasks of the model type (its
feature extraction) keep the generic path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from graphport.export.vlm import ImageTextOnnxConfig, register_image_text


@register_image_text("llava")
class LlavaOnnxConfig(ImageTextOnnxConfig):
    family = "llava"

    @property
    def image_tokens(self) -> int:
        full = self._config.vision_feature_select_strategy == "full"
        return super().image_tokens + (1 if full else 0)

    def image_features(self, model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> Any:
        """What ``get_image_features`` computes, stacked: it ends by splitting the features
        into a list per image, which a trace would fix to the traced number of images."""
        inner, config = model.model, self._config
        hidden = inner.vision_tower(inputs["pixel_values"], output_hidden_states=True)
        layers = config.vision_feature_layer
        chosen = [
            hidden.hidden_states[i] for i in ([layers] if isinstance(layers, int) else layers)
        ]
        if config.vision_feature_select_strategy == "default":  # without the CLS position
            chosen = [states[:, 1:] for states in chosen]
        return inner.multi_modal_projector(torch.cat(chosen, dim=-1))

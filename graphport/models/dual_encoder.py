"""VisionTextDualEncoder: any vision encoder and any text encoder with two projections.

Users embed texts and images apart (a text query against an image index, or class prompts
once and images many times), so the export is two graphs, one per tower:

* ``text``: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the text
  encoder uses them) -> ``text_embeds`` (batch, projection_dim);
* ``vision``: ``pixel_values`` -> ``image_embeds`` (batch, projection_dim).

The embeddings are ``get_text_features`` / ``get_image_features``: projected, not yet
L2-normalized. Zero-shot image classification is ``logit_scale.exp()`` times the cosine
similarity of the two, which is why no joint graph is exported (transformers maps this
model to feature extraction only; a joint graph would hold every weight twice).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from graphport.export.config import OnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register
from graphport.models.tiny import TINY_TEXT, UNSET
from graphport.models.towers import (
    CompositeOnnxConfig,
    TextTowerOnnxConfig,
    Tower,
    VisionTowerOnnxConfig,
)

_VISION = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}
# The sizes live in the two sub-configs; the top level takes none of the modality defaults.
_NO_DEFAULTS = dict.fromkeys(
    (
        "image_size",
        "patch_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "num_labels",
    ),
    UNSET,
)
_TINY = {
    **_NO_DEFAULTS,
    "text_config": {"model_type": "bert", **TINY_TEXT},
    "vision_config": {"model_type": "vit", **_VISION},
    "projection_dim": 16,
}


@register("vision-text-dual-encoder", family="vision-text-dual-encoder", tiny=_TINY)
class VisionTextDualEncoderOnnxConfig(CompositeOnnxConfig):
    modality: ClassVar[str] = "vision"  # its processor is an image processor plus a tokenizer

    def graph_configs(self) -> dict[str, OnnxConfig]:
        return {
            "text": TextTowerOnnxConfig(self._config.text_config, Task.FEATURE_EXTRACTION),
            "vision": VisionTowerOnnxConfig(self._config.vision_config, Task.FEATURE_EXTRACTION),
        }

    def graph_modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        configs = self.graph_configs()
        return {
            "text": Tower(model, list(configs["text"].inputs), "get_text_features", "text_embeds"),
            "vision": Tower(
                model, list(configs["vision"].inputs), "get_image_features", "image_embeds"
            ),
        }

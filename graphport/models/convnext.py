"""ConvNeXt and ConvNeXt V2 image models."""

from __future__ import annotations

from graphport.export.modalities import VisionOnnxConfig
from graphport.models.registry import register

# num_hidden_layers is ConvNeXt's name for its number of stages.
_TINY = {
    "hidden_sizes": [8, 16, 24, 32],
    "depths": [1, 1, 1, 1],
    "num_hidden_layers": 4,
    "image_size": 64,
}


@register("convnext", "convnextv2", family="convnext", tiny=_TINY)
class ConvNextOnnxConfig(VisionOnnxConfig):
    pass

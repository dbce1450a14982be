"""ConvNeXt and ConvNeXt V2 image models."""

from __future__ import annotations

from graphport.exporters.config import VisionOnnxConfig
from graphport.models.registry import register

_TINY = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "image_size": 64}


@register("convnext", "convnextv2", family="convnext", tiny=_TINY)
class ConvNextOnnxConfig(VisionOnnxConfig):
    pass

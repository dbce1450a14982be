"""ResNet image models."""

from __future__ import annotations

from graphport.export.modalities import VisionOnnxConfig
from graphport.models.registry import register

_TINY = {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}


@register("resnet", family="resnet", tiny=_TINY)
class ResNetOnnxConfig(VisionOnnxConfig):
    pass

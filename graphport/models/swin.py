"""Swin Transformer image models (shifted-window attention)."""

from __future__ import annotations

from graphport.export.modalities import VisionOnnxConfig
from graphport.models.registry import register

_TINY = {
    "image_size": 32,
    "patch_size": 2,
    "embed_dim": 16,
    "depths": [1, 2],
    "num_attention_heads": [2, 4],
    "window_size": 4,
}


@register("swin", family="swin", tiny=_TINY)
class SwinOnnxConfig(VisionOnnxConfig):
    pass

"""Vision transformers over image patches: ViT and its relatives."""

from __future__ import annotations

from graphport.exporters.config import VisionOnnxConfig
from graphport.exporters.tasks import Task
from graphport.models.registry import register

# BEiT-style segmentation heads read four intermediate layers.
_SEGMENTATION_TINY = {"num_hidden_layers": 4, "out_indices": [1, 2, 3, 4]}


@register("vit", "deit", "dinov2", family="vit")
class ViTOnnxConfig(VisionOnnxConfig):
    pass


@register(
    "beit",
    "data2vec-vision",
    family="vit",
    tiny={**_SEGMENTATION_TINY, "use_auxiliary_head": False},
)
class BeitOnnxConfig(ViTOnnxConfig):
    tasks = (Task.FEATURE_EXTRACTION, Task.IMAGE_CLASSIFICATION, Task.SEMANTIC_SEGMENTATION)


@register("yolos", family="vit", tiny={"image_size": [32, 48], "num_detection_tokens": 4})
class YolosOnnxConfig(ViTOnnxConfig):
    # The backbone; the detection head arrives with object-detection support.
    tasks = (Task.FEATURE_EXTRACTION,)

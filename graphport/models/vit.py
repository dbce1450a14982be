"""Vision transformers over image patches: ViT and its relatives."""

from __future__ import annotations

from collections.abc import Mapping

from graphport.export.config import Axes
from graphport.export.modalities import VisionOnnxConfig
from graphport.export.tasks import Task
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
    """YOLOS detects with DETR-style detection tokens appended to the patches.

    The detector returns, per detection token, class ``logits`` (batch, detection tokens,
    labels + 1; the last class is "no object") and ``pred_boxes`` (batch, detection
    tokens, 4): normalized (center x, center y, width, height), before post-processing.
    """

    tasks = (Task.FEATURE_EXTRACTION, Task.OBJECT_DETECTION)

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.task is Task.OBJECT_DETECTION:
            return {"logits": {0: "batch"}, "pred_boxes": {0: "batch"}}
        return super().outputs

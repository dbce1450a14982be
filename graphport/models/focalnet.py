"""FocalNet: focal modulation in place of self-attention, in Swin-like stages."""

from __future__ import annotations

from collections.abc import Mapping

from graphport.export.config import Axes
from graphport.export.modalities import VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

_TINY = {
    "image_size": 32,
    "patch_size": 4,
    "embed_dim": 8,
    "hidden_sizes": [16, 32],
    "depths": [1, 1],
    "focal_levels": [2, 2],
    "focal_windows": [3, 3],
}


@register("focalnet", family="focalnet", tiny=_TINY)
class FocalNetOnnxConfig(VisionOnnxConfig):
    """Static image size, as for Swin: the patch embeddings pad a size that is not a
    multiple of the patch in a Python branch, which a trace would fix one way.

    Feature extraction also returns ``pooler_output``, the (batch, hidden) average of the
    last stage's tokens that the classifier reads.
    """

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.task is Task.FEATURE_EXTRACTION:
            return {"last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}}
        return super().outputs

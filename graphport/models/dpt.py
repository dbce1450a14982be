"""DPT (Dense Prediction Transformer): a ViT whose token grids a convolutional neck
reassembles into an image-sized depth map or segmentation."""

from __future__ import annotations

from collections.abc import Mapping

from graphport.export.config import Axes
from graphport.export.modalities import VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

# The neck reads four encoder layers (backbone_out_indices), so the tiny encoder has four;
# the reassemble factors (4, 2, 1, 0.5) turn its 4 x 4 token grid into 16, 8, 4 and 2.
# The neck and heads are unnormalized convolutions: at the default initializer range the
# tiny model's depth and logits are ~1e-8, which any graph would match; 0.15 makes them ~1.
_TINY = {
    "initializer_range": 0.15,
    "num_hidden_layers": 4,
    "backbone_out_indices": [0, 1, 2, 3],
    "neck_hidden_sizes": [8, 16, 24, 32],
    "fusion_hidden_size": 16,
    "use_auxiliary_head": False,
}


@register("dpt", family="dpt", tiny=_TINY)
class DptOnnxConfig(VisionOnnxConfig):
    """Static image size, as ViT's: the neck's reshapes keep the traced token grid.

    ``predicted_depth`` is (batch, height, width), with no channel axis, and segmentation
    ``logits`` are (batch, labels, height, width), both at the input size for the usual
    16-pixel patches. Feature extraction adds ``pooler_output``, (batch, hidden).
    """

    tasks = (Task.FEATURE_EXTRACTION, Task.DEPTH_ESTIMATION, Task.SEMANTIC_SEGMENTATION)

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.task is Task.FEATURE_EXTRACTION:
            return {"last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}}
        if self.task is Task.DEPTH_ESTIMATION:
            return {"predicted_depth": {0: "batch"}}
        return super().outputs

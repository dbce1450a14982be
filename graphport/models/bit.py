"""BiT (Big Transfer): a pre-activation ResNet with weight-standardized convolutions."""

from __future__ import annotations

from collections.abc import Mapping

from graphport.export.config import Axes
from graphport.export.modalities import VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register
from graphport.models.tiny import UNSET

_TINY = {
    "embedding_size": 8,
    "hidden_sizes": [8, 16, 24, 32],
    "depths": [1, 1, 1, 1],
    "num_groups": 2,  # GroupNorm groups must divide the narrowest (bottleneck) width
    "num_hidden_layers": UNSET,
}


@register("bit", family="bit", tiny=_TINY)
class BitOnnxConfig(VisionOnnxConfig):
    """Fully convolutional: any image size, so height and width stay dynamic.

    Its features are a map, not tokens: ``last_hidden_state`` is (batch, channels,
    height / 32, width / 32) and ``pooler_output`` its global average, (batch, channels,
    1, 1).
    """

    dynamic_image_size = True

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.task is Task.FEATURE_EXTRACTION:
            return {
                "last_hidden_state": {0: "batch", 2: "feature_height", 3: "feature_width"},
                "pooler_output": {0: "batch"},
            }
        return super().outputs

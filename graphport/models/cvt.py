"""CvT (Convolutional vision Transformer): convolutional token embedding and projections."""

from __future__ import annotations

from collections.abc import Mapping

from graphport.export.config import Axes
from graphport.export.modalities import VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

# Three stages with per-stage lists. CvtStage indexes its per-layer drop-path rates by the
# stage index, so stage i needs at least i + 1 layers (the released models have 1, 2, 10).
_TINY = {
    "embed_dim": [8, 16, 24],
    "num_heads": [1, 2, 2],
    "depth": [1, 2, 3],
}


@register("cvt", family="cvt", tiny=_TINY)
class CvtOnnxConfig(VisionOnnxConfig):
    """Static image size, like ViT: the released checkpoints classify at 224 or 384 pixels
    (a dynamic trace validates too, but takes three times as long to export).

    Features are a map plus a token: ``last_hidden_state`` is (batch, channels,
    height / 16, width / 16) and ``cls_token_value`` the (batch, 1, channels) class token
    the classifier reads.
    """

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.task is Task.FEATURE_EXTRACTION:
            return {"last_hidden_state": {0: "batch"}, "cls_token_value": {0: "batch"}}
        return super().outputs

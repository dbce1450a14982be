"""MobileViT V2: MobileNet blocks with separable linear attention over unfolded patches."""

from __future__ import annotations

from collections.abc import Mapping

from graphport.export.config import Axes
from graphport.export.modalities import VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

# width_multiplier scales every stage's channels (0.25 gives 16 to 128); patch_size must
# stay 2, the size the unfolding and the output stride of 32 assume. Batch-normalized
# convolutions at the default initializer range shrink activations ~1e4-fold per stage, so
# the tiny model's outputs would be exactly 0; 0.3 keeps them ~1.
_TINY = {
    "initializer_range": 0.3,
    "image_size": 64,
    "patch_size": 2,
    "width_multiplier": 0.25,
    "n_attn_blocks": [1, 1, 1],
    "aspp_out_channels": 16,
}


@register("mobilevitv2", family="mobilevit", tiny=_TINY)
class MobileViTV2OnnxConfig(VisionOnnxConfig):
    """Static image size: patches are unfolded and folded back with sizes computed in
    Python (neither exporter traces it with a dynamic size).

    Features are a map: ``last_hidden_state`` is (batch, channels, height / 32,
    width / 32) and ``pooler_output`` its (batch, channels) average. Segmentation
    ``logits`` are at that same stride, (batch, labels, height / 32, width / 32): the
    processor, not the model, upsamples them.
    """

    tasks = (Task.FEATURE_EXTRACTION, Task.IMAGE_CLASSIFICATION, Task.SEMANTIC_SEGMENTATION)

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.task is Task.FEATURE_EXTRACTION:
            return {"last_hidden_state": {0: "batch"}, "pooler_output": {0: "batch"}}
        return super().outputs

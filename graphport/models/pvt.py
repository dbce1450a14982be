"""PVT (Pyramid Vision Transformer): a ViT whose token grid shrinks stage by stage."""

from __future__ import annotations

from graphport.export.modalities import VisionOnnxConfig
from graphport.models.registry import register

# Four stages; num_attention_heads is per stage here, so the modality's single value must
# be replaced. The grids are 16, 8, 4 and 2 tokens wide at 64 pixels.
_TINY = {
    "image_size": 64,
    "hidden_sizes": [8, 16, 24, 32],
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 1, 2, 2],
    "mlp_ratios": [2, 2, 2, 2],
    "sequence_reduction_ratios": [4, 2, 1, 1],
}


@register("pvt", family="pvt", tiny=_TINY)
class PvtOnnxConfig(VisionOnnxConfig):
    """Static image size: each stage's position embeddings are learned at the config's size,
    and a dynamic trace keeps the traced token grid in its reshapes (it fails elsewhere).

    ``last_hidden_state`` is the last stage's tokens, (batch, 1 + tokens, hidden): the
    class token is added in the last stage only.
    """

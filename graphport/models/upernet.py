"""UperNet: a semantic-segmentation head (pyramid pooling + FPN) over a backbone."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping

import torch

from graphport.export.config import Axes
from graphport.export.modalities import VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

# UperNet has no model of its own, only the segmentation head over a backbone config; the
# tiny one is a four-stage ConvNeXt, as in the released upernet-convnext checkpoints.
_TINY = {
    "backbone_config": {
        "model_type": "convnext",
        "hidden_sizes": [8, 16, 24, 32],
        "depths": [1, 1, 1, 1],
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    "hidden_size": 16,
    # The auxiliary head only feeds the training loss (an export traces it, then drops it
    # from the graph), so the tiny model goes without: a quicker trace, the same graph.
    "use_auxiliary_head": False,
    # At the default initializer range the tiny logits are ~1e-2, too close to the parity
    # tolerance for it to mean much; 0.1 makes them ~1.
    "initializer_range": 0.1,
}


def _pair(size: int | tuple[int | None, int | None]) -> tuple[int | None, int | None]:
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def _bin_weights(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, size) averaging weights over PyTorch's adaptive-pooling bins: bin i spans
    [floor(i * size / bins), ceil((i + 1) * size / bins))."""
    index = torch.arange(size, device=like.device)
    bin_index = torch.arange(bins, device=like.device)
    start = (bin_index * size) // bins
    end = ((bin_index + 1) * size + bins - 1) // bins
    inside = (index[None, :] >= start[:, None]) & (index[None, :] < end[:, None])
    weights = inside.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def adaptive_avg_pool2d(x: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    """``nn.AdaptiveAvgPool2d`` as two matrix products whose weights follow the input size.

    torch.export decomposes adaptive pooling into windows whose lengths are fixed at the
    traced size, so at any other size the graph pools the wrong windows while its axes stay
    symbolic (UperNet's logits were 3% off; only parity at other sizes shows it). These
    weights are computed from the runtime size, over the same bins.
    """
    rows, cols = _pair(output_size)
    height = _bin_weights(x.shape[-2], rows, x)
    width = _bin_weights(x.shape[-1], cols, x)
    return torch.einsum("ih,...hw,jw->...ij", height, x, width)


@register("upernet", family="upernet", tiny=_TINY)
class UperNetOnnxConfig(VisionOnnxConfig):
    """Segmentation only: UperNet is a head, transformers has no base upernet model.

    Convolutional throughout, so height and width stay dynamic once the pyramid pooling is
    traced size-independently (``patch_model``). The logits are upsampled to the input,
    (batch, labels, height, width).
    """

    tasks = (Task.SEMANTIC_SEGMENTATION,)
    dynamic_image_size = True

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return {"logits": {0: "batch", 2: "height", 3: "width"}}

    @contextlib.contextmanager
    def patch_model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Pool with ``adaptive_avg_pool2d`` while tracing; eager keeps torch's pooling."""
        pools = [
            m
            for m in model.modules()
            if isinstance(m, torch.nn.AdaptiveAvgPool2d)
            and None not in _pair(m.output_size)  # None keeps an input axis: nothing to fix
        ]
        for pool in pools:
            pool.forward = functools.partial(adaptive_avg_pool2d, output_size=pool.output_size)
        try:
            yield model
        finally:
            for pool in pools:
                del pool.forward

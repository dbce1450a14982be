"""LiLT: a text encoder with a parallel layout stream over word bounding boxes.

Besides the tokens it takes ``bbox`` (batch, sequence, 4): one box per token as
(x0, y0, x1, y1) on a 0..1000 page grid, with x0 <= x1 and y0 <= y1. The layout
embeddings index tables with the coordinates and with the box width and height, so a
coordinate outside 0..1000 or an inverted box is an index error, not a number; dummy
boxes are drawn inside those bounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from graphport.export.config import Axes
from graphport.export.modalities import TextOnnxConfig
from graphport.models.registry import register

# The page grid that layout models normalize boxes to.
PAGE_GRID = 1000


def dummy_boxes(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Valid (x0, y0, x1, y1) boxes on the 0..1000 grid, of shape ``shape`` (..., 4)."""
    corner = rng.integers(0, PAGE_GRID // 2, size=(*shape[:-1], 2), dtype=np.int64)
    extent = rng.integers(0, PAGE_GRID // 2 + 1, size=(*shape[:-1], 2), dtype=np.int64)
    return np.concatenate([corner, corner + extent], axis=-1)


# Six layout tables of hidden_size // 6 are concatenated back to hidden_size.
_TINY = {"hidden_size": 48}


@register("lilt", family="lilt", tiny=_TINY)
class LiltOnnxConfig(TextOnnxConfig):
    @property
    def takes_sentences(self) -> bool:
        """Sentences alone cannot feed the graph: the boxes come from OCR or a PDF layout."""
        return False

    @property
    def inputs(self) -> Mapping[str, Axes]:
        inputs = dict(super().inputs)
        token_axes = inputs.pop("input_ids")
        return {"input_ids": token_axes, "bbox": dict(token_axes), **inputs}

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        shape = super().input_shape(name, sizes)
        return (*shape, 4) if name == "bbox" else shape

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "bbox":
            return dummy_boxes(shape, rng)
        return super().dummy_input(name, shape, rng)

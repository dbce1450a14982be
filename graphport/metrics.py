"""Numeric comparisons shared by the validators and the passes that measure themselves
(quantization against a target cosine): plain numpy, at the bottom of the layers."""

from __future__ import annotations

import numpy as np


def row_cosines(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Cosine similarity per row; two zero rows count as identical (1.0)."""
    dot = (actual * expected).sum(-1)
    norms = np.linalg.norm(actual, axis=-1) * np.linalg.norm(expected, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dot / norms, np.where(np.abs(actual).sum(-1) == 0, 1.0, 0.0))
    return cos

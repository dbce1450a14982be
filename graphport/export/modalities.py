"""Modality bases: the inputs and dummy data shared by every family of a modality.

``TextOnnxConfig`` takes token ids, ``VisionOnnxConfig`` pixel values and
``AudioOnnxConfig`` a raw waveform; a family subclasses one and declares what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from graphport.export.config import Axes, OnnxConfig
from graphport.export.tasks import Task


class TextOnnxConfig(OnnxConfig):
    """Token inputs: ``input_ids``, ``attention_mask`` and, when used, ``token_type_ids``."""

    modality: ClassVar[str] = "text"
    tasks = (
        Task.FEATURE_EXTRACTION,
        Task.FILL_MASK,
        Task.TEXT_CLASSIFICATION,
        Task.TOKEN_CLASSIFICATION,
        Task.QUESTION_ANSWERING,
        Task.MULTIPLE_CHOICE,
    )

    @property
    def uses_token_type_ids(self) -> bool:
        """Models trained with one segment type (RoBERTa, DeBERTa-v2...) take none."""
        return getattr(self._config, "type_vocab_size", 0) > 1

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if self.task is Task.MULTIPLE_CHOICE:
            axes = {0: "batch", 1: "choice", 2: "sequence"}
        else:
            axes = {0: "batch", 1: "sequence"}
        names = ["input_ids", "attention_mask"]
        if self.uses_token_type_ids:
            names.append("token_type_ids")
        return {name: dict(axes) for name in names}

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "input_ids":
            # Skip the first few ids, where the special tokens usually sit.
            low = min(5, self._config.vocab_size - 1)
            return rng.integers(low, self._config.vocab_size, size=shape, dtype=np.int64)
        if name == "attention_mask":
            # Right padding of different lengths: row 0 is full, the others lose up to
            # half their tokens, so validation exercises masked positions.
            mask = np.ones(shape, dtype=np.int64)
            rows = mask.reshape(-1, shape[-1])
            for i in range(1, rows.shape[0]):
                rows[i, shape[-1] - int(rng.integers(0, shape[-1] // 2 + 1)) :] = 0
            return mask
        if name == "token_type_ids":
            types = np.zeros(shape, dtype=np.int64)
            types[..., shape[-1] // 2 :] = 1
            return types
        return super().dummy_input(name, shape, rng)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, list | tuple):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class VisionOnnxConfig(OnnxConfig):
    """``pixel_values`` of shape (batch, channels, height, width).

    Height and width are static at the config's ``image_size`` unless a family sets
    ``dynamic_image_size`` (convolutional models that accept any resolution).
    """

    modality: ClassVar[str] = "vision"
    tasks = (Task.FEATURE_EXTRACTION, Task.IMAGE_CLASSIFICATION)
    dynamic_image_size: ClassVar[bool] = False
    ATOL_FOR_VALIDATION = 1e-4

    @property
    def inputs(self) -> Mapping[str, Axes]:
        axes = {0: "batch", 2: "height", 3: "width"}  # channels are fixed by the weights
        if not self.dynamic_image_size:
            axes = {0: "batch"}
        return {"pixel_values": axes}

    @property
    def outputs(self) -> Mapping[str, Axes]:
        outputs = super().outputs
        if self.task is Task.FEATURE_EXTRACTION:
            outputs = {"last_hidden_state": {0: "batch"}}
        return outputs

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(getattr(self._config, "image_size", 224))

    @property
    def num_channels(self) -> int:
        return int(getattr(self._config, "num_channels", 3))

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if self.dynamic_image_size:
            return (sizes["batch"], self.num_channels, sizes["height"], sizes["width"])
        return (sizes["batch"], self.num_channels, *self.image_size)

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        # Normalized pixels: roughly zero mean, unit variance, as processors produce.
        return rng.standard_normal(shape, dtype=np.float32)


class AudioOnnxConfig(OnnxConfig):
    """Raw waveform ``input_values`` of shape (batch, sequence)."""

    modality: ClassVar[str] = "audio"
    trace_sizes: ClassVar[dict[str, int]] = {"batch": 2, "sequence": 3200}
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        "batch": (1, 1, 16),
        "sequence": (1600, 16000, 480000),
    }
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {"batch": 1, "sequence": 2400},
        {"batch": 3, "sequence": 4800},
    )

    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {"input_values": {0: "batch", 1: "sequence"}}

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        # A normalized waveform: a few sines plus noise, per row.
        t = np.arange(shape[-1], dtype=np.float32) / 16000.0
        freqs = rng.uniform(100.0, 2000.0, size=(shape[0], 3)).astype(np.float32)
        wave = np.sin(2 * np.pi * freqs[:, :, None] * t[None, None, :]).sum(axis=1)
        wave += 0.1 * rng.standard_normal(wave.shape, dtype=np.float32)
        return ((wave - wave.mean(-1, keepdims=True)) / wave.std(-1, keepdims=True)).astype(
            np.float32
        )

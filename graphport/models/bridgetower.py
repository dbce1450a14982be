"""BridgeTower: text and vision encoders bridged layer by layer into a cross-modal encoder.

Unlike a dual encoder, its output depends on the text and the image together, so the
export is one graph: ``input_ids``, ``attention_mask`` and ``pixel_values`` ->
``text_features`` (batch, sequence, hidden), ``image_features`` (batch, patches + 1,
hidden) and ``pooler_output`` (batch, 2 * hidden), the pair's joint representation.
The image size is fixed by the vision config's position embeddings. ``pixel_mask``, which
the image processor also returns, is not read by the model, so the graph does not take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from graphport.export.config import Axes, OnnxConfig
from graphport.export.modalities import TextOnnxConfig, VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register
from graphport.models.tiny import UNSET

# The vision encoder has hidden_size // 64 heads, so 64 is the narrowest width it takes.
_TINY = {
    **dict.fromkeys(("vocab_size", "intermediate_size", "max_position_embeddings"), UNSET),
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "text_config": {
        "vocab_size": 128,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    },
    "vision_config": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "patch_size": 8,
        "image_size": 32,
    },
}


@register("bridgetower", family="bridgetower", tiny=_TINY)
class BridgeTowerOnnxConfig(OnnxConfig):
    modality: ClassVar[str] = "text"
    tasks = (Task.FEATURE_EXTRACTION,)

    def __init__(self, config: Any, task: str | Task = Task.FEATURE_EXTRACTION, **kwargs: Any):
        super().__init__(config, task, **kwargs)
        self._text = TextOnnxConfig(config.text_config, Task.FEATURE_EXTRACTION)
        self._vision = VisionOnnxConfig(config.vision_config, Task.FEATURE_EXTRACTION)

    @property
    def takes_sentences(self) -> bool:
        """Sentences alone cannot feed the graph: every text comes with an image."""
        return False

    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {**self._text.inputs, **self._vision.inputs}

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return {
            "text_features": {0: "batch", 1: "sequence"},
            "image_features": {0: "batch"},
            "pooler_output": {0: "batch"},
        }

    def _owner(self, name: str) -> OnnxConfig:
        return self._vision if name in self._vision.inputs else self._text

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return self._owner(name).input_shape(name, sizes)

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        return self._owner(name).dummy_input(name, shape, rng)

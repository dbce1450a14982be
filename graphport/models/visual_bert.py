"""VisualBERT: a BERT encoder over tokens followed by image-region features.

The regions come from an external detector as ``visual_embeds`` (batch, visual,
visual_embedding_dim) with their own ``visual_attention_mask`` and
``visual_token_type_ids``, so the graph takes them beside the tokens. The encoder runs
over tokens and regions concatenated: ``last_hidden_state`` has sequence + visual
positions, an axis of its own (``text_and_visual``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from graphport.export.config import Axes
from graphport.export.modalities import TextOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

_TINY = {"visual_embedding_dim": 16}


@register("visual_bert", family="visual_bert", tiny=_TINY)
class VisualBertOnnxConfig(TextOnnxConfig):
    # Only the bare encoder has an auto class; the VQA/NLVR2 heads are loaded by name.
    tasks = (Task.FEATURE_EXTRACTION,)
    trace_sizes: ClassVar[dict[str, int]] = {**TextOnnxConfig.trace_sizes, "visual": 6}
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {**TextOnnxConfig.validation_sizes[0], "visual": 4},
        {**TextOnnxConfig.validation_sizes[1], "visual": 9},
    )
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        **TextOnnxConfig.profile_ranges,
        "visual": (1, 36, 100),  # detectors keep 10 to 100 regions per image
    }

    @property
    def takes_sentences(self) -> bool:
        """Sentences alone cannot feed the graph: the regions come from a detector."""
        return False

    @property
    def inputs(self) -> Mapping[str, Axes]:
        visual = {0: "batch", 1: "visual"}
        return {
            **super().inputs,
            "visual_embeds": dict(visual),
            "visual_attention_mask": dict(visual),
            "visual_token_type_ids": dict(visual),
        }

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return {"last_hidden_state": {0: "batch", 1: "text_and_visual"}}

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        shape = super().input_shape(name, sizes)
        if name == "visual_embeds":
            return (*shape, self._config.visual_embedding_dim)
        return shape

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "visual_embeds":
            return rng.standard_normal(shape, dtype=np.float32)
        if name == "visual_attention_mask":
            return super().dummy_input("attention_mask", shape, rng)
        if name == "visual_token_type_ids":
            return np.ones(shape, dtype=np.int64)  # regions are segment 1, as trained
        return super().dummy_input(name, shape, rng)

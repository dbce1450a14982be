"""LUKE: a RoBERTa-like encoder that also reads entities (Wikipedia entries) beside words.

Entities are a second sequence with an ``entity`` axis: ``entity_ids``,
``entity_attention_mask``, ``entity_token_type_ids`` and ``entity_position_ids``, which
lists, per entity, the word positions of its mention padded with -1 to the tokenizer's
``max_mention_length`` (the ``mention`` axis). The graph takes the entity inputs always:
a sentence without entities is one padded entity with an all-zero mask. Entity outputs
(``entity_last_hidden_state``, ``entity_logits``) sit beside the word outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch

from graphport.export.config import Axes, ShapeSet
from graphport.export.modalities import TextOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

# A 500k-entry entity vocabulary would make the tiny model the size of the real one.
_TINY = {"entity_vocab_size": 32, "entity_emb_size": 16}

# Outputs over the entity sequence that a task returns beside its word outputs.
_ENTITY_OUTPUTS = {
    Task.FEATURE_EXTRACTION: "entity_last_hidden_state",
    Task.FILL_MASK: "entity_logits",
}


@register("luke", family="luke", tiny=_TINY)
class LukeOnnxConfig(TextOnnxConfig):
    trace_sizes: ClassVar[dict[str, int]] = {
        **TextOnnxConfig.trace_sizes,
        "entity": 5,
        "mention": 4,
    }
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {**TextOnnxConfig.validation_sizes[0], "entity": 2, "mention": 3},
        {**TextOnnxConfig.validation_sizes[1], "entity": 7, "mention": 6},
    )
    # LukeTokenizer pads mentions to max_mention_length, 30.
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        **TextOnnxConfig.profile_ranges,
        "entity": (1, 8, 64),
        "mention": (1, 30, 30),
    }

    @property
    def takes_sentences(self) -> bool:
        """Sentences alone cannot feed the graph: the entities come from an entity linker."""
        return False

    @property
    def inputs(self) -> Mapping[str, Axes]:
        inputs = dict(super().inputs)
        lead = {0: "batch", 1: "choice"} if self.task is Task.MULTIPLE_CHOICE else {0: "batch"}
        entity = {**lead, len(lead): "entity"}
        inputs["entity_ids"] = entity
        inputs["entity_attention_mask"] = dict(entity)
        if self.uses_token_type_ids:
            inputs["entity_token_type_ids"] = dict(entity)
        inputs["entity_position_ids"] = {**entity, len(entity): "mention"}
        return inputs

    @property
    def outputs(self) -> Mapping[str, Axes]:
        outputs = dict(super().outputs)
        if self.task in _ENTITY_OUTPUTS:
            outputs[_ENTITY_OUTPUTS[self.task]] = {0: "batch", 1: "entity"}
        return outputs

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "entity_ids":
            # 0 is [PAD] and 2 [MASK] in LUKE's entity vocabulary; draw real entities.
            vocab = self._config.entity_vocab_size
            return rng.integers(min(3, vocab - 1), vocab, size=shape, dtype=np.int64)
        if name == "entity_attention_mask":
            return super().dummy_input("attention_mask", shape, rng)
        if name == "entity_token_type_ids":
            return np.zeros(shape, dtype=np.int64)
        return super().dummy_input(name, shape, rng)

    def dummy_inputs(self, shapes: ShapeSet, seed: int = 0) -> dict[str, torch.Tensor]:
        """As the base class, except that mentions point inside the word sequence."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for name in self.inputs:
            shape = self.input_shape(name, shapes.sizes)
            if name == "entity_position_ids":
                value = mention_positions(shape, shapes.sizes["sequence"], rng)
            else:
                value = self.dummy_input(name, shape, rng)
            feeds[name] = torch.from_numpy(value)
        return feeds


def mention_positions(
    shape: tuple[int, ...], sequence: int, rng: np.random.Generator
) -> np.ndarray:
    """Per entity, a span of consecutive word positions below ``sequence``, padded with -1."""
    positions = np.full(shape, -1, dtype=np.int64)
    for row in positions.reshape(-1, shape[-1]):
        length = int(rng.integers(1, shape[-1] + 1))
        start = int(rng.integers(0, max(sequence - length, 0) + 1))
        span = np.arange(start, min(start + length, sequence))
        row[: len(span)] = span
    return positions

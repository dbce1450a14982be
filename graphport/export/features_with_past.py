"""Feature extraction with a KV cache: the base model of a decoder, returning its last
hidden state and the cache, for every model type whose base model takes a cache.

The graph contract is the decoder's (``OnnxConfigWithPast``): ``input_ids``,
``attention_mask`` over past and new positions, ``position_ids`` where the model takes
them, ``past_key_values.{i}.key/value`` -> ``last_hidden_state``, ``present.{i}.key/value``.
A family's own decoder config keeps its inputs and patches (``with_features``); only the
module traced changes, from the causal LM's logits to the base model's hidden states.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from graphport.export.config import SubGraph
from graphport.export.decoder import OnnxConfigWithPast
from graphport.export.generic_decoder import GenericDecoderOnnxConfig
from graphport.export.kv_cache import CausalLMWithCache
from graphport.export.tasks import Task


class FeaturesWithCache(CausalLMWithCache):
    """``forward(*inputs)`` -> ``{last_hidden_state, present.{i}.key/value}``."""

    head_output = "last_hidden_state"

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        result = super().forward(*inputs)
        return {"last_hidden_state": result.pop("logits"), **result}


class FeaturesWithPastMixin:
    """Traces the base model with its cache (``FeaturesWithCache``) in place of the causal
    LM's logits; the rest of the decoder config stays as it is."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.FEATURE_EXTRACTION,)

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        """None: a base model does not generate, so validation checks its outputs alone."""
        return []

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        config: Any = self
        if not config.use_past:
            return super().sub_graphs(model)  # type: ignore[misc]
        config.read_cache_layout(model)
        module = FeaturesWithCache(
            model, list(config.inputs), config.num_layers, config.cache_layout
        )
        return [SubGraph("model", module, config)]


class GenericFeaturesWithPastOnnxConfig(FeaturesWithPastMixin, GenericDecoderOnnxConfig):
    """A base model without a family, with the KV cache its eager model returns."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.FEATURE_EXTRACTION,)

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.FEATURE_EXTRACTION,
        patching_specs: list[Any] | None = None,
        use_past: bool = True,
    ) -> None:
        super().__init__(config, task, patching_specs, use_past)


_WITH_FEATURES: dict[type, type] = {}


def with_features(config_class: type[OnnxConfigWithPast]) -> type[OnnxConfigWithPast]:
    """``config_class`` (a family's decoder config) exporting feature extraction with its
    cache from the base model."""
    if config_class not in _WITH_FEATURES:
        _WITH_FEATURES[config_class] = type(
            config_class.__name__, (FeaturesWithPastMixin, config_class), {}
        )
    return _WITH_FEATURES[config_class]

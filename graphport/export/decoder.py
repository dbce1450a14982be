"""The export config of a decoder-only language model, with or without its KV cache.

``OnnxConfigWithPast`` names the cache's graph inputs and outputs
(``past_key_values.{i}.key/value`` -> ``present.{i}.key/value``, from
``graphport.export.kv_cache``), sizes it from the model's cache layout
(``graphport.export.cache_layout``) and makes left-padded dummy prompts on a random past.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from graphport.export.cache_layout import CacheLayout, UnsupportedCacheError
from graphport.export.config import Axes, OnnxConfig, ShapeSet, SubGraph
from graphport.export.kv_cache import CausalLMWithCache, past_names, present_names
from graphport.export.tasks import Task

logger = logging.getLogger(__name__)


class OnnxConfigWithPast(OnnxConfig):
    """A decoder-only language model; with ``use_past`` its graph takes and returns a KV
    cache (``past_key_values.{i}.key/value`` -> ``present.{i}.key/value``).

    The graph takes ``attention_mask`` over past and new positions and, when the model's
    forward has them, explicit ``position_ids``, so left-padded batches generate exactly as
    transformers does. An empty past (``past_sequence`` = 0) is the first step.

    Against a model (``sub_graphs``), the cache's layout is read from a dry run of the
    model (``CacheLayout.read``): every layer's KV heads and head dim, and which layers keep
    a sliding window. A sliding layer's past and present are its own axes
    (``sliding_past_sequence``, ``sliding_present_sequence``: at most ``sliding_window - 1``
    positions); without a layout the sizes come from the config's attribute names.
    """

    modality: ClassVar[str] = "text"
    tasks = (Task.FEATURE_EXTRACTION, Task.TEXT_GENERATION)
    # Set by ``sub_graphs`` (or from a manifest's contract); None: sizes from the config.
    cache_layout: CacheLayout | None = None
    # A sliding layer's past while tracing: shorter than the other past axes, and than the
    # window, so that the graph stays general in both.
    SLIDING_TRACE_PAST: ClassVar[int] = 3
    trace_sizes: ClassVar[dict[str, int]] = {"batch": 2, "sequence": 7, "past_sequence": 5}
    # The two shapes generation uses: a prompt with an empty cache, one token on a cache.
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {"batch": 1, "sequence": 11, "past_sequence": 0},
        {"batch": 3, "sequence": 1, "past_sequence": 29},
    )
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        "batch": (1, 1, 16),
        "sequence": (1, 128, 512),
        "past_sequence": (0, 128, 1024),
    }

    @classmethod
    def with_past(cls, config: Any, task: str | Task = "default") -> OnnxConfigWithPast:
        return cls(config, task=task, use_past=True)

    @property
    def num_layers(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.num_layers
        for attr in ("num_hidden_layers", "n_layer", "num_layers"):
            if hasattr(self._config, attr):
                return int(getattr(self._config, attr))
        raise AttributeError("could not find the number of layers in the model config")

    @property
    def num_attention_heads(self) -> int:
        for attr in ("num_attention_heads", "n_head", "num_heads"):
            if hasattr(self._config, attr):
                return int(getattr(self._config, attr))
        raise AttributeError("could not find the number of attention heads in the model config")

    @property
    def num_kv_heads(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.layers[0].num_kv_heads
        return int(getattr(self._config, "num_key_value_heads", None) or self.num_attention_heads)

    @property
    def head_dim(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.layers[0].head_dim
        return int(
            getattr(self._config, "head_dim", None)
            or self._config.hidden_size // self.num_attention_heads
        )

    def _past_axis(self, layer: int) -> str:
        layout = self.cache_layout
        return layout.past_axis(layer) if layout is not None else "past_sequence"

    def _present_axis(self, layer: int) -> str:
        layout = self.cache_layout
        return layout.present_axis(layer) if layout is not None else "total_sequence"

    def adopt_kv_cache_contract(self, contract: Mapping[str, Any]) -> None:
        """Take the cache layout an export's manifest records (no model at hand)."""
        self.cache_layout = CacheLayout.from_contract(contract)

    def read_cache_layout(self, model: torch.nn.Module) -> None:
        """The layout of ``model``'s own cache (a family whose model returns a cache of
        another kind keeps the sizes its config names)."""
        try:
            self.cache_layout = CacheLayout.read(model)
        except UnsupportedCacheError:
            logger.debug("No cache layout read for %s", type(model).__name__, exc_info=True)

    @property
    def model_parameters(self) -> frozenset[str]:
        """Keyword arguments the task's model class takes (decides optional inputs)."""
        import inspect

        import transformers

        name = self.task.model_class_name(self._config.model_type)
        model_class = getattr(transformers, name, None) if name else None
        if model_class is None:
            return frozenset()
        return frozenset(inspect.signature(model_class.forward).parameters)

    @property
    def uses_position_ids(self) -> bool:
        return self.use_past and "position_ids" in self.model_parameters

    @property
    def takes_sentences(self) -> bool:
        return not self.use_past

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if not self.use_past:
            return {
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
            }
        inputs: dict[str, Axes] = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
        }
        if self.uses_position_ids:
            inputs["position_ids"] = {0: "batch", 1: "sequence"}
        for index, name in enumerate(past_names(self.num_layers)):
            inputs[name] = {0: "batch", 2: self._past_axis(index // 2)}
        return inputs

    @property
    def outputs(self) -> Mapping[str, Axes]:
        outputs = dict(super().outputs)
        if self.use_past:
            for index, name in enumerate(present_names(self.num_layers)):
                outputs[name] = {0: "batch", 2: self._present_axis(index // 2)}
        return outputs

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        return {"use_cache": self.use_past} if hasattr(self._config, "use_cache") else None

    def validation_shapes(self) -> list[ShapeSet]:
        if self.use_past:
            return super().validation_shapes()
        return [
            ShapeSet({"batch": 1, "sequence": 11}, "shape set 1"),
            ShapeSet({"batch": 3, "sequence": 29}, "shape set 2"),
        ]

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if not self.use_past:
            return super().input_shape(name, sizes)
        batch, sequence, past = sizes["batch"], sizes["sequence"], sizes["past_sequence"]
        if name == "attention_mask":
            return (batch, past + sequence)
        if name.startswith("past_key_values.") and self.cache_layout is not None:
            layer = int(name.split(".")[1])
            shape = self.cache_layout.layers[layer]
            length = self.cache_layout.past_length(layer, sizes)
            return shape.shape(batch, length, value=name.endswith(".value"))
        if name.startswith("past_key_values."):
            return (batch, self.num_kv_heads, past, self.head_dim)
        return (batch, sequence)

    def trace_shapes(self) -> ShapeSet:
        shapes = super().trace_shapes()
        if not self.use_past or self.cache_layout is None:
            return shapes
        sizes = dict(shapes.sizes)
        for layer, shape in enumerate(self.cache_layout.layers):
            if shape.keeps is not None:
                past = min(self.SLIDING_TRACE_PAST, shape.keeps, sizes["past_sequence"])
                sizes[self.cache_layout.past_axis(layer)] = past
        return ShapeSet(sizes, shapes.label)

    def dummy_inputs(self, shapes: ShapeSet, seed: int = 0) -> dict[str, torch.Tensor]:
        """Left-padded prompts (as generation pads them), their positions, a random past
        (no past without ``use_past``)."""
        rng = np.random.default_rng(seed)
        sizes = {**shapes.sizes, "past_sequence": shapes.sizes.get("past_sequence", 0)}
        if not self.use_past:
            sizes["past_sequence"] = 0
        total = sizes["past_sequence"] + sizes["sequence"]
        mask = np.ones((sizes["batch"], total), dtype=np.int64)
        for row in range(1, sizes["batch"]):
            mask[row, : int(rng.integers(0, total // 2 + 1))] = 0
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        positions[mask == 0] = 1
        feeds = {}
        for name in self.inputs:
            shape = self.input_shape(name, sizes)
            if name == "input_ids":
                low = min(5, self.text_vocab_size - 1)
                value = rng.integers(low, self.text_vocab_size, size=shape, dtype=np.int64)
            elif name == "attention_mask":
                value = mask
            elif name == "position_ids":
                value = positions[:, total - sizes["sequence"] :]
            else:
                value = rng.standard_normal(shape, dtype=np.float32)
            feeds[name] = torch.from_numpy(np.ascontiguousarray(value))
        return feeds

    @property
    def text_vocab_size(self) -> int:
        """The vocabulary token inputs are drawn from: the config's, or its text config's
        (a vision-language model generating from text alone keeps it there)."""
        size = getattr(self._config, "vocab_size", None)
        return int(size if size is not None else self._config.get_text_config().vocab_size)

    def kv_cache_contract(self) -> dict[str, Any] | None:
        if not self.use_past:
            return None
        return {
            "graph": "model",
            "inputs": "past_key_values.{i}.key / past_key_values.{i}.value",
            "outputs": "present.{i}.key / present.{i}.value",
            "layout": ["batch", "kv_heads", "sequence", "head_dim"],
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            **(self.cache_layout.contract() if self.cache_layout is not None else {}),
            "position_ids": self.uses_position_ids,
            "empty_past": "the first step feeds past tensors with 0 positions",
        }

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        """Prompts generation is validated on: one alone, three of different lengths
        left-padded into one batch (random ids past the special tokens)."""
        rng = np.random.default_rng(seed)
        low = min(5, self.text_vocab_size - 1)
        pad = getattr(self._config, "pad_token_id", None) or 0
        cases = []
        for label, lengths in (("single prompt", (9,)), ("padded batch of 3", (7, 3, 12))):
            width = max(lengths)
            ids = np.full((len(lengths), width), pad, dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, length in enumerate(lengths):
                ids[row, width - length :] = rng.integers(low, self.text_vocab_size, length)
                mask[row, width - length :] = 1
            cases.append((label, {"input_ids": ids, "attention_mask": mask}))
        return cases

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        if not self.use_past:
            return super().sub_graphs(model)
        self.read_cache_layout(model)
        module = CausalLMWithCache(model, list(self.inputs), self.num_layers, self.cache_layout)
        return [SubGraph("model", module, self)]

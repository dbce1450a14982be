"""The generic KV-cache export: any causal LM whose cache is a transformers ``Cache``.

A model type no family registers is exported for ``text-generation-with-past`` when its
causal-LM class takes a cache (``cache`` or ``past_key_values``). Nothing is read from
config names: the cache's layout (layers, KV heads, head dims, sliding windows) comes
from a dry run of the eager model (``CacheLayout.read``), and the graph contract is the
decoder families' (``OnnxConfigWithPast``): one ``model`` graph, an empty first past, no
If node. Mixture-of-experts layers trace in their batched form, as on the generic path.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch

from graphport.errors import ExportError, UnsupportedModelError
from graphport.export.cache_layout import CacheLayout
from graphport.export.decoder import OnnxConfigWithPast
from graphport.export.generic import _TRACEABLE_EXPERTS, _experts_implementation, model_class
from graphport.export.tasks import Task

CACHE_ARGUMENTS = ("cache", "past_key_values")


def takes_cache(model_type: str, task: Task = Task.TEXT_GENERATION) -> bool:
    """Whether the ``task`` class (the causal LM by default) of ``model_type`` takes a cache
    in its forward."""
    try:
        cls = model_class(model_type, task)
    except UnsupportedModelError:
        return False
    return any(name in inspect.signature(cls.forward).parameters for name in CACHE_ARGUMENTS)


class GenericDecoderOnnxConfig(OnnxConfigWithPast):
    """A causal LM without a family, with the KV cache its eager model returns."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT_GENERATION,)

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.TEXT_GENERATION,
        patching_specs: list[Any] | None = None,
        use_past: bool = True,
    ) -> None:
        super().__init__(config, task, patching_specs, use_past)
        if not takes_cache(config.model_type):
            raise UnsupportedModelError(
                f"Model type {config.model_type!r} has no family in graphport, and its "
                f"causal-LM class takes no cache ({' or '.join(CACHE_ARGUMENTS)}), so it cannot "
                "be exported with one; export text-generation without -with-past."
            )

    @property
    def num_layers(self) -> int:
        return self._layout().num_layers

    @property
    def num_kv_heads(self) -> int:
        return self._layout().layers[0].num_kv_heads

    @property
    def head_dim(self) -> int:
        return self._layout().layers[0].head_dim

    def _layout(self) -> CacheLayout:
        if self.cache_layout is None:
            raise ExportError(
                f"The cache layout of model type {self._config.model_type!r} is read from a dry "
                "run of its model, and none has run yet; call sub_graphs(model) first (or "
                "adopt_kv_cache_contract with an export's manifest entry)."
            )
        return self.cache_layout

    def read_cache_layout(self, model: torch.nn.Module) -> None:
        self.cache_layout = CacheLayout.read(model)  # no fallback: nothing else to go by

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        return {"use_cache": True} if hasattr(self._config, "use_cache") else None

    @contextlib.contextmanager
    def patch_model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Mixture-of-experts layers as batched matmuls over gathered expert weights (see
        ``GenericOnnxConfig.patch_model``): no data-dependent loop over experts."""
        # The graph's module wraps the transformers model (CausalLMWithCache).
        target = model if hasattr(model, "set_experts_implementation") else model.model
        experts = _experts_implementation(target)
        if experts not in (None, _TRACEABLE_EXPERTS):
            target.set_experts_implementation(_TRACEABLE_EXPERTS)
        try:
            yield model
        finally:
            if experts not in (None, _TRACEABLE_EXPERTS):
                target.set_experts_implementation(experts)

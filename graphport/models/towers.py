"""Modules that export part of a model, or a model called differently than by its forward.

A composite model (a dual encoder, CLAP) is exported as several graphs, one per tower a
user runs on its own: ``Tower`` calls one of the model's feature methods
(``get_text_features``...) and names its result. ``Positional`` calls a whole model.

Both take their inputs positionally, in the export config's order (``positional =
True``): torch.export then derives each axis from ``Dim.DYNAMIC`` instead of demanding
named ranges up front, so a model whose shapes depend on ``length // k`` (CANINE's
molecules) keeps its sequence axis general rather than having the exporter rewrite it as
a multiple of ``k``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from graphport.export.config import Axes, OnnxConfig, SubGraph
from graphport.export.modalities import TextOnnxConfig, VisionOnnxConfig
from graphport.export.tasks import Task

Inputs = dict[str, torch.Tensor]


class Positional(torch.nn.Module):
    """``forward(*inputs)`` in ``input_names`` order -> ``call(model, named inputs)``.

    ``call`` defaults to calling the model; it may rename inputs or pick outputs.
    """

    positional = True

    def __init__(
        self,
        model: torch.nn.Module,
        input_names: Sequence[str],
        call: Callable[[Any, Inputs], Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.call = call
        # A wrapper starts in training mode; exporters that restore the top module's mode
        # recursively (the TorchScript fallback) would switch the wrapped model's dropout on.
        self.train(model.training)

    def forward(self, *inputs: torch.Tensor) -> Any:
        named = dict(zip(self.input_names, inputs, strict=True))
        if self.call is None:
            return self.model(**named)
        return self.call(self.model, named)


class Tower(Positional):
    """One tower of a composite model: ``model.<method>(**inputs)`` as ``{output: ...}``.

    Feature methods return the projected embedding, as a tensor (Transformers 4) or as
    the ``pooler_output`` of a model output (Transformers 5); both are accepted.
    """

    def __init__(
        self, model: torch.nn.Module, input_names: Sequence[str], method: str, output: str
    ) -> None:
        super().__init__(model, input_names)
        self.method = method
        self.output = output

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        named = dict(zip(self.input_names, inputs, strict=True))
        result = getattr(self.model, self.method)(**named)
        if not isinstance(result, torch.Tensor):
            result = result.pooler_output
        return {self.output: result}


# ---- export configs of tower graphs ---------------------------------------------------------


class TextTowerOnnxConfig(TextOnnxConfig):
    """The text tower of a composite model: tokens -> one embedding per text.

    Built from the composite's ``text_config``, which sets the vocabulary and whether
    ``token_type_ids`` are used.
    """

    output_name: ClassVar[str] = "text_embeds"

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return {self.output_name: {0: "batch"}}


class VisionTowerOnnxConfig(VisionOnnxConfig):
    """The vision tower of a composite model: pixels -> one embedding per image.

    Built from the composite's ``vision_config`` (its ``image_size`` fixes the input).
    """

    output_name: ClassVar[str] = "image_embeds"

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return {self.output_name: {0: "batch"}}


class CompositeOnnxConfig(OnnxConfig):
    """A model exported as several graphs, each with its own config (``graph_configs``).

    ``inputs`` and ``outputs`` are those of every graph together (names do not repeat
    across towers), for code written against the one-graph API; the graphs themselves
    come from ``sub_graphs``.
    """

    tasks = (Task.FEATURE_EXTRACTION,)

    def graph_configs(self) -> dict[str, OnnxConfig]:
        raise NotImplementedError(f"{type(self).__name__} must define `graph_configs`.")

    def graph_modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        raise NotImplementedError(f"{type(self).__name__} must define `graph_modules`.")

    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {k: v for c in self.graph_configs().values() for k, v in c.inputs.items()}

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return {k: v for c in self.graph_configs().values() for k, v in c.outputs.items()}

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        configs, modules = self.graph_configs(), self.graph_modules(model)
        return [SubGraph(name, modules[name], config) for name, config in configs.items()]

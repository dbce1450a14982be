"""A module with an explicit forward signature that returns only the task's outputs.

torch.jit.trace, torch.export and the C++ loaders of TorchScript and AOTInductor packages
call a model positionally, in a fixed order, and get a tuple back. Hugging Face models
take keyword arguments and return a ModelOutput with extra fields. This wrapper turns
one into the other: inputs positionally in the export config's order, outputs as a
tuple in the config's order, nothing else computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SelectOutputs(torch.nn.Module):
    """``forward(*inputs)`` in ``input_names`` order -> tuple of ``output_names``."""

    def __init__(
        self, model: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str]
    ) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.input_names, inputs, strict=True))
        if getattr(self.model, "positional", False):
            # A graph module whose input names are not identifiers (past_key_values.0.key,
            # export/kv_cache.py) takes them positionally, in its own order.
            output = self.model(*(named[name] for name in self.model.input_names))
        else:
            output = self.model(**named)
        return tuple(output[name] for name in self.output_names)


def wrap_for_tracing(
    model: torch.nn.Module, config: object
) -> tuple[SelectOutputs, tuple[torch.Tensor, ...]]:
    """``SelectOutputs`` over ``model`` and its positional trace inputs (floats cast to the
    model's dtype), from an export config."""
    wrapper = SelectOutputs(model, list(config.inputs), list(config.outputs)).eval()
    dtype = next(model.parameters()).dtype
    inputs = tuple(
        t.to(dtype) if t.is_floating_point() else t
        for t in config.dummy_inputs(config.trace_shapes()).values()
    )
    return wrapper, inputs


def dynamic_shapes_for(input_axes: dict[str, dict[int, str]]) -> dict[str, tuple[dict, ...]]:
    """torch.export dynamic shapes for ``SelectOutputs`` (its ``*inputs`` are one tuple).

    ``Dim.DYNAMIC`` lets torch.export derive each axis' range (a sequence is bounded by the
    position embeddings) and tie equal axes across inputs; named ``Dim``s would demand
    the ranges up front. Names matter only in ONNX graphs, not in .pt/.pt2 artifacts.
    """
    return {
        "inputs": tuple(
            dict.fromkeys(axes, torch.export.Dim.DYNAMIC) for axes in input_axes.values()
        )
    }

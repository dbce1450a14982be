"""Localize a parity failure to the PyTorch module whose output first leaves tolerance.

Rules, in order:
  1. the eager model runs with a forward hook on every module; each call's first tensor
     output is recorded, in the order the calls finish (a module after its children);
  2. every ONNX node carries the module path torch.export gave it (the
     ``pkg.torch.onnx.name_scopes`` metadata the exporter keeps); a value produced inside
     module M and read outside it (or a graph output) is a candidate for M's output. A
     fused or quantized node carries the common part of the scopes it replaced, so its
     value is a candidate of the smallest module enclosing the whole region;
  3. the runtime runs once with every candidate exposed; each module's output is the
     candidate of the same shape closest to eager (a module returning several tensors of
     one shape, like rotary cos and sin, has several), compared with the export's
     tolerance (rtol at least ``INTERMEDIATE_RTOL``) or its cosine budget, padding
     positions left out;
  4. modules without a candidate the runtime still computes (fused away, folded, integer
     outputs) are skipped and counted: the result says how many were matched;
  5. the first compared module that leaves tolerance, in execution order, is the first
     divergence.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphport.graphs.scopes import node_modules
from graphport.validators.compare import Tolerance, compare_output

logger = logging.getLogger(__name__)

# The relative tolerance floor of an intermediate value. Some hidden states carry outlier
# channels in the hundreds or thousands (MiniLM's output.dense: fp32's spacing there is
# 6e-5 to 1e-4), where the export's atol alone would flag plain fp32 rounding.
INTERMEDIATE_RTOL = 1e-5


@dataclasses.dataclass
class LayerDiff:
    """One module's output on a runtime against the same module's eager output."""

    module: str
    module_type: str
    onnx_node: str
    max_abs: float
    mean_abs: float
    cosine: float
    passed: bool

    def divergence(self) -> dict[str, Any]:
        """The report's ``first_divergence`` entry (the row without its verdict)."""
        data = dataclasses.asdict(self)
        del data["passed"]
        return data


@dataclasses.dataclass
class Localization:
    layers: list[LayerDiff]
    matched: int
    modules: int

    @property
    def first_divergence(self) -> LayerDiff | None:
        return next((layer for layer in self.layers if not layer.passed), None)


@dataclasses.dataclass
class ModuleOutput:
    # Dotted path in the eager module; a later call N gets ``path@N``, the form
    # torch.export gives repeated calls' scopes.
    name: str
    module_type: str
    value: np.ndarray


def eager_module_outputs(
    model: Any, feeds: Mapping[str, np.ndarray], run: Callable[[dict], Any]
) -> tuple[list[ModuleOutput], Any]:
    """Rule 1: ``run(feeds)`` (a call of ``model``) with hooks on ``model``'s modules;
    returns the first floating-point tensor output of every module call (the root's are
    the graph outputs, compared already), in the order the calls return, and what ``run``
    returned."""
    import torch

    recorded: list[ModuleOutput] = []
    calls: dict[str, int] = {}

    def first_tensor(value: Any) -> torch.Tensor | None:
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, Mapping):
            value = list(value.values())
        if isinstance(value, list | tuple):
            for item in value:
                found = first_tensor(item)
                if found is not None:
                    return found
        return None

    def hook(name: str) -> Callable:
        def record(module: torch.nn.Module, args: Any, output: Any) -> None:
            count = calls.get(name, 0)
            calls[name] = count + 1
            tensor = first_tensor(output)
            if tensor is None or not tensor.is_floating_point():
                return
            label = f"{name}@{count}" if count else name
            value = tensor.detach().float().numpy().copy()
            recorded.append(ModuleOutput(label, type(module).__name__, value))

        return record

    handles = [
        module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name
    ]
    try:
        result = run(dict(feeds))
    finally:
        for handle in handles:
            handle.remove()
    return recorded, result


def graph_module_values(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Rule 2: for every module path, the (value, node) pairs that leave it, in graph order."""
    import onnx_ir as ir

    model = ir.load(path)
    outputs = {v.name for v in model.graph.outputs}
    nodes = list(model.graph)
    modules = {id(node): set(node_modules(node)) for node in nodes}
    candidates: dict[str, list[tuple[str, str]]] = {}
    for node in nodes:
        inside = node_modules(node)
        for value in node.outputs:
            if value.name is None:
                continue
            # A reader without a scope (a node a pass wrote) says nothing about where the
            # value goes: a MatMul whose bias Add lost its scope does not leave its Linear.
            readers = [modules[id(user)] for user, _ in value.uses() if modules.get(id(user))]
            for module in inside:
                if value.name in outputs or any(module not in r for r in readers):
                    candidates.setdefault(module, []).append((value.name, node.name or ""))
    return candidates


def _components(name: str) -> list[str]:
    return name.split(".") if name else []


def align_names(eager: Sequence[str], graph: Sequence[str]) -> dict[str, str]:
    """Eager module names -> graph scope paths. The traced module may be a wrapper of the
    eager one or the other way round (``model.model.layers.1`` against
    ``model.layers.1``), so the leading components dropped on either side are those that
    match the most names."""
    graph_set = set(graph)
    best: dict[str, str] = {}
    for drop_eager in range(3):
        for drop_graph in range(3):
            prefixes = {
                ".".join(_components(g)[:drop_graph])
                for g in graph
                if len(_components(g)) > drop_graph
            }
            for prefix in prefixes or {""}:
                mapping = {}
                for name in eager:
                    parts = _components(name)
                    if len(parts) <= drop_eager:
                        continue
                    candidate = ".".join(([prefix] if prefix else []) + parts[drop_eager:])
                    if candidate in graph_set:
                        mapping[name] = candidate
                if len(mapping) > len(best):
                    best = mapping
    return best


def localize(
    runtime: Any,
    feeds: Mapping[str, np.ndarray],
    eager: Sequence[ModuleOutput],
    candidates: Mapping[str, Sequence[tuple[str, str]]],
    tolerance: Tolerance,
    valid: Callable[[tuple[int, ...]], np.ndarray | None],
) -> Localization:
    """Rules 3 to 5 for one runtime and one case; ``valid(shape)`` gives the positions to
    judge in an output of that shape (None: all). Modules are judged by the export's
    ``atol``, ``rtol`` (floored) and ``cosine``, without per-output or norm terms."""
    names = align_names([m.name for m in eager], list(candidates))
    wanted = sorted({v for m in eager if m.name in names for v, _ in candidates[names[m.name]]})
    values = runtime.run_with_intermediates(feeds, wanted) if wanted else {}
    layers = []
    for module in eager:
        options = candidates.get(names.get(module.name, ""), ())
        best = None
        for value, node in options:
            actual = values.get(value)
            if (
                actual is None
                or actual.shape != module.value.shape
                or not np.issubdtype(actual.dtype, np.floating)
            ):
                continue
            diff = compare_output(
                module.name,
                module.value,
                actual,
                tolerance.atol,
                max(tolerance.rtol, INTERMEDIATE_RTOL),
                valid(module.value.shape),
                tolerance.cosine,
            )
            if best is None or _closer(diff, best[0]):
                best = (diff, node)
        if best is None:
            continue
        diff, node = best
        layers.append(
            LayerDiff(
                module.name,
                module.module_type,
                node,
                diff.max_abs,
                diff.mean_abs,
                diff.min_cosine,
                diff.passed,
            )
        )
    logger.debug(
        "%s: %d of %d modules matched to graph values", runtime.name, len(layers), len(eager)
    )
    return Localization(layers, len(layers), len(eager))


def _closer(diff: Any, other: Any) -> bool:
    def key(d: Any) -> tuple[bool, float]:
        return (not d.passed, d.max_abs if np.isfinite(d.max_abs) else np.inf)

    return key(diff) < key(other)

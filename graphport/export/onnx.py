"""Trace an eager model into an ONNX graph named and shaped as its export config says.

Strategies are tried in order and each returns a result instead of raising; when all fail
the error lists every strategy and why it failed. The first is torch's torch.export-based
exporter; the TorchScript-based exporter is only a fallback, and the manifest records
that it was used and why.

After tracing, the graph keeps only the outputs the task declares (in the declared order,
with unused nodes removed) and output axes the config names dynamic get those names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
import torch
from onnx_ir.passes.common import ClearMetadataAndDocStringPass, RemoveUnusedNodesPass

from graphport.errors import EagerModelError, ExportError, Reason, UsageError
from graphport.export.config import MIN_ONNX_OPSET, OnnxConfig
from graphport.export.signature import dynamic_shapes_for
from graphport.graphs.cleanup import exact_rewrite_rules
from graphport.graphs.scopes import MODULE_SCOPES_KEY

logger = logging.getLogger(__name__)

# Protobuf cannot hold a message over 2 GiB; above this many bytes of weights the graph is
# saved with its tensors in a side file (model.onnx_data).
EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26


def max_onnx_opset() -> int:
    """The newest opset both onnx and the exporter's operator library know."""
    from onnxscript import onnx_opset

    torchlib = max(
        int(name[5:]) for name in dir(onnx_opset) if name.startswith("opset") and name[5:].isdigit()
    )
    return min(onnx.defs.onnx_opset_version(), torchlib)


def check_opset(opset: int) -> None:
    high = max_onnx_opset()
    if not MIN_ONNX_OPSET <= opset <= high:
        raise UsageError(
            f"Opset {opset} cannot be produced: the torch.export-based exporter writes opsets "
            f"{MIN_ONNX_OPSET} to {high} (lower ones need a version conversion that is not "
            f"reliable on transformer graphs); pass --opset between {MIN_ONNX_OPSET} and {high}."
        )


@dataclasses.dataclass
class Attempt:
    """One strategy tried: its name, whether it worked, and why not."""

    strategy: str
    succeeded: bool
    seconds: float
    error: str | None = None


@dataclasses.dataclass
class OnnxExport:
    model: ir.Model
    strategy: str
    attempts: list[Attempt]
    opset: int

    @property
    def fallback_reason(self) -> str | None:
        failed = [a for a in self.attempts if not a.succeeded]
        return "; ".join(f"{a.strategy}: {a.error}" for a in failed) or None


def flatten_output_names(output: Any, prefix: str = "") -> list[str]:
    """Names of the tensors in a model output, in the order the exporter flattens them."""
    if isinstance(output, torch.Tensor):
        return [prefix]
    if isinstance(output, Mapping):  # ModelOutput keeps only its non-None fields
        items = [(k, v) for k, v in output.items() if v is not None]
    elif isinstance(output, list | tuple):
        items = [(str(i), v) for i, v in enumerate(output)]
    else:
        return []
    names = []
    for key, value in items:
        names += flatten_output_names(value, f"{prefix}.{key}" if prefix else key)
    return names


def named_output_tensors(output: Any) -> dict[str, torch.Tensor]:
    """The tensors of a model output by their flattened names (see ``flatten_output_names``)."""

    def leaves(value: Any) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value]
        if isinstance(value, Mapping):
            return [leaf for v in value.values() if v is not None for leaf in leaves(v)]
        if isinstance(value, list | tuple):
            return [leaf for v in value for leaf in leaves(v)]
        return []

    return dict(zip(flatten_output_names(output), leaves(output), strict=True))


def _torch_export(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    config: OnnxConfig,
    output_names: list[str],
    opset: int,
    optimize: bool = True,
) -> ir.Model:
    if getattr(model, "positional", False):
        # Input names that are not identifiers (past_key_values.0.key) go positionally. Axes
        # tied by arithmetic (total = past + new positions) rule out named Dims; torch.export
        # derives the relations, and the ONNX axes are named afterwards.
        args, kwargs = tuple(inputs.values()), {}
        dynamic_shapes: Any = dynamic_shapes_for(config.inputs)
    else:
        dims: dict[str, torch.export.Dim] = {}
        args, kwargs = (), inputs
        dynamic_shapes = {
            name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes.items()}
            for name, axes in config.inputs.items()
        }
    with exact_rewrite_rules():  # the exporter's optimizer drops tiny epsilons otherwise
        program = torch.onnx.export(
            model,
            args,
            kwargs=kwargs,
            input_names=list(inputs),
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            optimize=optimize,
            verbose=False,
        )
    return program.model


def _torchscript_export(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    config: OnnxConfig,
    output_names: list[str],
    opset: int,
) -> ir.Model:
    dynamic_axes = {**config.inputs, **config.outputs}
    positional = getattr(model, "positional", False)
    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        tuple(inputs.values()) if positional else (),
        buffer,
        kwargs={} if positional else inputs,
        input_names=list(inputs),
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        opset_version=opset,
        dynamo=False,
        do_constant_folding=True,
    )
    return ir.from_proto(onnx.load_from_string(buffer.getvalue()))


Strategy = Callable[[torch.nn.Module, dict, OnnxConfig, list, int], ir.Model]
STRATEGIES: tuple[tuple[str, Strategy], ...] = (
    ("torch.export", _torch_export),
    ("torchscript", _torchscript_export),
)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporters print progress and warnings of their own; graphport reports instead.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def export_to_onnx(
    model: torch.nn.Module,
    config: OnnxConfig,
    opset: int | None = None,
    strategies: tuple[tuple[str, Strategy], ...] = STRATEGIES,
) -> OnnxExport:
    """Trace ``model`` with the config's dummy inputs into an ``ir.Model``."""
    opset = opset or config.default_onnx_opset
    check_opset(opset)
    inputs = _trace_inputs(model, config)
    if _on_meta(model):
        # A model without storage (export/streaming.py): only torch.export traces it,
        # and without torch.onnx's optimizer, which would read the weights' values.
        strategies = (("torch.export", functools.partial(_torch_export, optimize=False)),)
    attempts: list[Attempt] = []
    with torch.no_grad(), config.patch_model(model) as patched:
        reference = run_eager(patched, inputs)
        output_names = flatten_output_names(reference)
        missing = [name for name in config.outputs if name not in output_names]
        if missing:
            raise ExportError(
                f"{type(model).__name__} returns {output_names}, not {missing} that the "
                f"{config.task.value} export needs."
            )
        for name, strategy in strategies:
            start = time.perf_counter()
            try:
                with _quiet_exporter():
                    graph = strategy(patched, inputs, config, output_names, opset)
            except Exception as e:
                attempts.append(Attempt(name, False, time.perf_counter() - start, _first_line(e)))
                logger.warning("Export strategy %s failed: %s", name, attempts[-1].error)
                logger.debug("Traceback of the %s failure", name, exc_info=True)
                continue
            attempts.append(Attempt(name, True, time.perf_counter() - start))
            break
        else:
            tried = "; ".join(f"{a.strategy}: {a.error}" for a in attempts)
            raise ExportError(
                f"Every export strategy failed. {tried}", reason=Reason.TRACING_FAILED
            )
    if name != strategies[0][0]:
        logger.warning("Exported with the %s fallback exporter.", name)
    select_outputs(graph, config.outputs)
    name_input_axes(graph, config.inputs)
    return OnnxExport(graph, name, attempts, opset)


def check_eager_runs(model: torch.nn.Module, config: OnnxConfig) -> None:
    """Run the eager model once on the config's trace inputs, before anything is written:
    a checkpoint whose own sizes do not fit together fails here, with its message."""
    inputs = _trace_inputs(model, config)
    with torch.no_grad(), config.patch_model(model) as patched:
        if not _on_meta(model):
            run_eager(patched, inputs)
            return
        try:  # shapes only: a failure here is the meta device's, not the config's
            call_module(patched, inputs)
        except Exception as e:
            raise ExportError(
                f"{type(model).__name__} cannot run on the meta device, which a streamed "
                f"export traces on ({_first_line(e)}); export it without --streaming."
            ) from e


def _on_meta(model: torch.nn.Module) -> bool:
    return next(model.parameters()).device.type == "meta"


def _trace_inputs(model: torch.nn.Module, config: OnnxConfig) -> dict[str, torch.Tensor]:
    """The config's dummy inputs at the trace shapes, in the model's float dtype, on the
    meta device for a model built there (shapes only, like the model)."""
    dtype = next(model.parameters()).dtype
    inputs = _cast_floats(config.dummy_inputs(config.trace_shapes()), dtype)
    if _on_meta(model):
        inputs = {name: tensor.to("meta") for name, tensor in inputs.items()}
    return inputs


def run_eager(module: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> Any:
    """``call_module``, with a failure of the eager model itself as an ``EagerModelError``."""
    try:
        return call_module(module, inputs)
    except Exception as e:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
        raise EagerModelError(
            f"The eager {type(module).__name__} itself fails on inputs built from its config "
            f"({shapes}): {_first_line(e)}; the checkpoint's config.json sizes do not fit "
            "together, so fix the config (or the checkpoint) and export again."
        ) from e


def call_module(module: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> Any:
    """Call a traced module the way it takes its inputs (by name, or positionally)."""
    if getattr(module, "positional", False):
        return module(*(inputs[name] for name in module.input_names))
    return module(**inputs)


def name_input_axes(model: ir.Model, inputs: Mapping[str, Mapping[int, str]]) -> None:
    """Give the graph's dynamic input axes the config's names (torch.export may have named
    them s0, s1...)."""
    for value in model.graph.inputs:
        if value.shape is None or value.name not in inputs:
            continue
        dims = list(value.shape)
        for axis, axis_name in inputs[value.name].items():
            if axis < len(dims) and isinstance(dims[axis], ir.SymbolicDim):
                dims[axis] = ir.SymbolicDim(axis_name)
        value.shape = ir.Shape(dims)


def _cast_floats(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


def select_outputs(model: ir.Model, outputs: Mapping[str, Mapping[int, str]]) -> None:
    """Keep only ``outputs`` (in that order), drop dead nodes and per-node trace metadata
    but the module scopes, name the dynamic axes."""
    by_name = {value.name: value for value in model.graph.outputs}
    model.graph.outputs.clear()
    model.graph.outputs.extend(by_name[name] for name in outputs)
    RemoveUnusedNodesPass()(model)
    # The exporter annotates every node with its Python stack trace, FX node and class
    # hierarchy: several KB per node in a shipped graph. Only the module path stays.
    scopes = {
        node: node.metadata_props[MODULE_SCOPES_KEY]
        for node in ir.traversal.RecursiveGraphIterator(model.graph)
        if MODULE_SCOPES_KEY in node.metadata_props
    }
    ClearMetadataAndDocStringPass()(model)
    for node, scope in scopes.items():
        node.metadata_props[MODULE_SCOPES_KEY] = scope
    for value in model.graph.outputs:
        shape = value.shape
        if shape is None:
            continue
        dims = list(shape)
        for axis, axis_name in outputs[value.name].items():
            # A derived size (e.g. audio frames from samples) gets the config's name; a
            # static one stays, and validation reports it as specialized.
            if axis < len(dims) and isinstance(dims[axis], ir.SymbolicDim):
                dims[axis] = ir.SymbolicDim(axis_name)
        value.shape = ir.Shape(dims)


def tensor_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value)


def save_onnx(
    model: ir.Model, path: str, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
) -> str | None:
    """Save ``model``; weights go to ``<name>_data`` when they exceed the threshold.

    Returns the external data file name, or None when everything is in one file.
    """
    target = Path(path)
    if tensor_bytes(model) > external_data_threshold:
        data_name = target.name + "_data"
        ir.save(model, target, external_data=data_name)
        return data_name
    ir.save(model, target)
    return None

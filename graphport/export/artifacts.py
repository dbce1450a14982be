"""The tracing steps the export formats (graphport/formats/) share.

``trace_onnx`` traces a model to an ONNX graph (torch.export based) in a staging directory:
the ONNX-derived formats (onnx, openvino, ort, tensorrt) start from it and convert with the
target's own tool. ``spec_from_eager`` describes the inputs and outputs of an artifact of
the torch formats (torchscript, pt2, executorch), which trace the eager model directly.
Each format returns an ``Artifact``: the graph's spec for the manifest, the files written,
and exporter details.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphport.export.config import OnnxConfig
from graphport.export.onnx import call_module, export_to_onnx, named_output_tensors, save_onnx
from graphport.manifest import GraphSpec, TensorSpec

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Artifact:
    spec: GraphSpec
    files: list[str]
    exporter: dict[str, Any]
    opset: int | None


def trace_onnx(
    model: torch.nn.Module,
    config: OnnxConfig,
    directory: Path,
    opset: int | None = None,
    name: str = "model",
) -> Artifact:
    """Trace ``model`` to ``directory/name.onnx`` (and its data file when large)."""
    logger.info("Tracing with torch.export (opset %s)", opset or config.default_onnx_opset)
    exported = export_to_onnx(model, config, opset)
    external = save_onnx(exported.model, str(directory / f"{name}.onnx"))
    spec = GraphSpec.from_ir(name, f"{name}.onnx", exported.model, external)
    files = [f"{name}.onnx", *([external] if external else [])]
    info: dict[str, Any] = {
        "strategy": exported.strategy,
        "fallback_reason": exported.fallback_reason,
        "attempts": [dataclasses.asdict(a) for a in exported.attempts],
    }
    return Artifact(spec, files, info, exported.opset)


def remove_files(directory: Path, files: list[str]) -> None:
    """Delete ``files`` from ``directory`` (an intermediate ONNX graph once converted)."""
    for name in files:
        (directory / name).unlink(missing_ok=True)


def spec_from_eager(model: torch.nn.Module, config: OnnxConfig) -> GraphSpec:
    """Inputs/outputs of a torch artifact: names and axes from the config, dtypes and static
    sizes from one eager run at the trace shapes."""
    inputs = config.dummy_inputs(config.trace_shapes())
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        output = call_module(model, inputs)  # a KV-cache wrapper takes them positionally
    leaves = named_output_tensors(output)

    def spec(name: str, tensor: torch.Tensor, axes: Mapping[int, str]) -> TensorSpec:
        shape = [axes.get(i, size) for i, size in enumerate(tensor.shape)]
        return TensorSpec(name, _numpy_dtype(tensor.dtype), shape)

    return GraphSpec(
        "model",
        "",
        [spec(n, inputs[n], axes) for n, axes in config.inputs.items()],
        [spec(n, leaves[n], axes) for n, axes in config.outputs.items()],
    )


def _numpy_dtype(dtype: torch.dtype) -> str:
    if dtype == torch.bfloat16:
        return "bfloat16"
    return np.dtype(str(dtype).removeprefix("torch.")).name

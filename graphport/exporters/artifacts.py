"""Write the graph artifact of one export format into a staging directory.

ONNX-derived formats (onnx, openvino, ort, tensorrt) trace to ONNX first and convert with
the target's own tool; torch formats (torchscript, pt2) trace the eager model directly.
Each returns the graph's spec for the manifest, the files written, and exporter details.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphport.errors import UsageError
from graphport.exporters import executorch
from graphport.exporters.config import OnnxConfig
from graphport.exporters.litert import require_litert
from graphport.exporters.onnx import call_module, export_to_onnx, named_output_tensors, save_onnx
from graphport.exporters.openvino import onnx_to_openvino
from graphport.exporters.ort import onnx_to_ort, required_operators
from graphport.exporters.pt2 import export_pt2
from graphport.exporters.tensorrt import build_engine, optimization_profile, require_tensorrt
from graphport.exporters.torchscript import DEPRECATION, export_torchscript
from graphport.manifest import GraphSpec, TensorSpec

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino", "torchscript", "pt2", "ort", "tensorrt", "executorch", "litert")
ONNX_BASED = frozenset({"onnx", "openvino", "ort", "tensorrt"})


@dataclasses.dataclass
class Artifact:
    spec: GraphSpec
    files: list[str]
    exporter: dict[str, Any]
    opset: int | None


@dataclasses.dataclass
class FormatOptions:
    """Format-specific knobs (each ignored by the formats it does not concern)."""

    opset: int | None = None
    openvino_fp16_weights: bool = False
    ort_target_platform: str | None = None
    trt_profile: Mapping[str, tuple[int, int, int]] | None = None
    quantize: str | None = None  # executorch: int8-dynamic or int4-weight (torchao, XNNPACK)
    static_cache: bool = False  # executorch: a decoder with its KV cache in the program
    max_cache_len: int | None = None  # executorch: the static cache's positions


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if fmt == "tensorrt":
        require_tensorrt()  # before any work: TensorRT and a GPU must be here
    elif fmt == "litert":
        require_litert()


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


def write_artifact(
    fmt: str,
    model: torch.nn.Module,
    config: OnnxConfig,
    directory: Path,
    options: FormatOptions | None = None,
    name: str = "model",
) -> Artifact:
    """Trace ``model`` into graph ``name`` of format ``fmt``: files ``name.onnx`` etc."""
    options = options or FormatOptions()
    start = time.perf_counter()
    if fmt in ONNX_BASED:
        logger.info(
            "Tracing with torch.export (opset %s)", options.opset or config.default_onnx_opset
        )
        exported = export_to_onnx(model, config, options.opset)
        external = save_onnx(exported.model, str(directory / f"{name}.onnx"))
        spec = GraphSpec.from_ir(name, f"{name}.onnx", exported.model, external)
        files = [f"{name}.onnx", *([external] if external else [])]
        info: dict[str, Any] = {
            "strategy": exported.strategy,
            "fallback_reason": exported.fallback_reason,
            "attempts": [dataclasses.asdict(a) for a in exported.attempts],
        }
        opset: int | None = exported.opset
        if fmt == "openvino":
            xml = onnx_to_openvino(
                directory / f"{name}.onnx", directory / f"{name}.xml", options.openvino_fp16_weights
            )
            _remove(directory, files)
            # A decoder is stateful, in openvino-genai's layout (exporters/openvino.py).
            spec.file, spec.external_data = xml.name, xml.with_suffix(".bin").name
            files = [spec.file, spec.external_data]
            info["weights"] = "fp16" if options.openvino_fp16_weights else "as exported"
            if xml.name != f"{name}.xml":
                info["stateful"] = "KV cache as OpenVINO state (beam_idx), openvino-genai layout"
        elif fmt == "ort":
            logger.info("Converting to the onnxruntime mobile format")
            onnx_to_ort(directory / f"{name}.onnx", directory, options.ort_target_platform)
            _remove(directory, files)
            spec.file, spec.external_data = f"{name}.ort", None
            files = [f"{name}.ort", required_operators(name)]
        elif fmt == "tensorrt":
            profile = optimization_profile(config, options.trt_profile)
            logger.info("Building the TensorRT engine")
            info["tensorrt"] = build_engine(
                directory / f"{name}.onnx", directory / f"{name}.engine", profile
            )
            info["profile"] = [dataclasses.asdict(p) for p in profile]
            info["precision"] = "strongly typed: the graph's dtypes"
            spec.file = f"{name}.engine"
            files.append(f"{name}.engine")  # the ONNX stays: engines are rebuilt from it
    else:
        spec = spec_from_eager(model, config)
        spec.name = name
        opset = None
        if fmt == "torchscript":
            logger.info("Tracing with torch.jit.trace")
            export_torchscript(model, config, directory / f"{name}.pt")
            spec.file = f"{name}.pt"
            info = {"strategy": "torch.jit.trace", "deprecated": DEPRECATION}
        elif fmt == "executorch":
            info = _write_executorch(model, config, directory / f"{name}.pte", options)
            spec.file = f"{name}.pte"
        else:
            logger.info("Exporting with torch.export and compiling with AOTInductor")
            export_pt2(model, config, directory / f"{name}.pt2")
            spec.file = f"{name}.pt2"
            info = {"strategy": "torch.export + AOTInductor"}
        files = [spec.file]
    info["seconds"] = round(time.perf_counter() - start, 3)
    info["config_class"] = type(config).__name__
    return Artifact(spec, files, info, opset)


def _write_executorch(
    model: torch.nn.Module, config: OnnxConfig, path: Path, options: FormatOptions
) -> dict[str, Any]:
    mode = options.quantize
    if options.static_cache:
        length = options.max_cache_len or executorch.DEFAULT_MAX_CACHE_LEN
        limit = getattr(config.config, "max_position_embeddings", None)
        length = min(length, int(limit)) if limit else length
        logger.info("Lowering to ExecuTorch (XNNPACK) with a static KV cache of %d", length)
        info = executorch.export_executorch_decoder(model, path, length, mode)
    else:
        logger.info("Lowering to ExecuTorch (XNNPACK)")
        info = executorch.export_executorch(model, config, path, mode)
    strategy = "torch.export + ExecuTorch XNNPACK"
    return {"strategy": strategy, **info, "quantization": mode}


def _remove(directory: Path, files: list[str]) -> None:
    for name in files:
        (directory / name).unlink(missing_ok=True)

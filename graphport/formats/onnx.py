"""The ONNX format: ``model.onnx`` (+ ``model.onnx_data`` when large), traced with
torch.export; the graph passes (optimize, quantize) rewrite it and a streamed export
writes it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from graphport.formats.base import Format, FormatOptions, register_format

if TYPE_CHECKING:
    import torch

    from graphport.exporters.artifacts import Artifact
    from graphport.exporters.config import OnnxConfig


@register_format("onnx")
class OnnxFormat(Format):
    rank = 10
    summary = "onnx"
    writes = (".onnx", ".onnx_data")
    runtimes = ("onnxruntime", "openvino")
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "onnxruntime", "cpp": "openvino"}
    takes_passes = True
    streams = True
    # onnxruntime's CPU provider has no bfloat16 kernels; OpenVINO misreads bf16 ONNX.
    validates_bf16 = False

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.exporters.artifacts import trace_onnx

        return trace_onnx(model, config, directory, options.opset, name)

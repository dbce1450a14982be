"""The ONNX format: ``model.onnx`` (+ ``model.onnx_data`` when large), traced with
torch.export; the graph passes (optimize, quantize) rewrite it and a streamed export
writes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from graphport.formats.base import OnnxDerivedFormat, register_format


@register_format("onnx")
class OnnxFormat(OnnxDerivedFormat):
    rank = 10
    summary = "onnx"
    writes = (".onnx", ".onnx_data")
    runtimes = ("onnxruntime", "openvino")
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "onnxruntime", "cpp": "openvino"}
    takes_passes = True
    streams = True
    # onnxruntime's CPU provider has no bfloat16 kernels; OpenVINO misreads bf16 ONNX.
    validates_bf16 = False
    keeps_onnx = True  # the traced graph is the format: nothing to convert

"""The onnxruntime mobile format: ``model.ort`` and the operators it needs (for a reduced
onnxruntime build), converted from the traced ONNX graph."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from graphport.formats.base import Format, FormatOptions, register_format

if TYPE_CHECKING:
    import torch

    from graphport.exporters.artifacts import Artifact
    from graphport.exporters.config import OnnxConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class OrtOptions(FormatOptions):
    ort_target_platform: str | None = None  # arm or amd64: the optimizations it applies


@register_format("ort")
class OrtFormat(Format):
    rank = 50
    summary = "ort (onnxruntime mobile)"
    writes = (".ort", ".required_operators.config")
    runtimes = ("onnxruntime",)
    validates_bf16 = False  # onnxruntime's CPU provider has no bfloat16 kernels
    options = OrtOptions

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.exporters.artifacts import remove_files, trace_onnx
        from graphport.exporters.ort import onnx_to_ort, required_operators

        assert isinstance(options, OrtOptions)
        artifact = trace_onnx(model, config, directory, options.opset, name)
        logger.info("Converting to the onnxruntime mobile format")
        onnx_to_ort(directory / f"{name}.onnx", directory, options.ort_target_platform)
        remove_files(directory, artifact.files)
        artifact.spec.file, artifact.spec.external_data = f"{name}.ort", None
        artifact.files = [f"{name}.ort", required_operators(name)]
        return artifact

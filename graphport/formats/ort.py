"""The onnxruntime mobile format: ``model.ort`` and the operators it needs (for a reduced
onnxruntime build), converted from the traced ONNX graph."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from graphport.formats.base import FormatOptions, OnnxDerivedFormat, register_format

if TYPE_CHECKING:
    from graphport.export.artifacts import Artifact
    from graphport.export.config import OnnxConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class OrtOptions(FormatOptions):
    ort_target_platform: str | None = None  # arm or amd64: the optimizations it applies


@register_format("ort")
class OrtFormat(OnnxDerivedFormat):
    rank = 50
    summary = "ort (onnxruntime mobile)"
    writes = (".ort", ".required_operators.config")
    runtimes = ("onnxruntime",)
    validates_bf16 = False  # onnxruntime's CPU provider has no bfloat16 kernels
    options = OrtOptions

    def convert(
        self, artifact: Artifact, config: OnnxConfig, onnx: Path, options: FormatOptions
    ) -> None:
        # rule 7 of formats/base.py
        from graphport.export.ort import onnx_to_ort, required_operators

        assert isinstance(options, OrtOptions)
        logger.info("Converting to the onnxruntime mobile format")
        onnx_to_ort(onnx, onnx.parent, options.ort_target_platform)
        artifact.spec.file, artifact.spec.external_data = onnx.with_suffix(".ort").name, None
        artifact.files = [artifact.spec.file, required_operators(onnx.stem)]

"""The OpenVINO IR format: ``model.xml`` + ``model.bin``, converted from the traced ONNX
graph; a decoder is stateful, in openvino-genai's layout (export/openvino.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from graphport.formats.base import FormatOptions, OnnxDerivedFormat, register_format

if TYPE_CHECKING:
    from graphport.export.artifacts import Artifact
    from graphport.export.config import OnnxConfig


@dataclasses.dataclass
class OpenVinoOptions(FormatOptions):
    openvino_fp16_weights: bool = False  # compress the IR's float weights to fp16


@register_format("openvino")
class OpenVinoFormat(OnnxDerivedFormat):
    rank = 20
    summary = "openvino IR"
    writes = (".xml", ".bin")
    runtimes = ("openvino",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "openvino", "cpp": "openvino"}
    validates_bf16 = False  # OpenVINO returns float16 results far from eager for bf16
    requires = "openvino"
    package = "OpenVINO"
    options = OpenVinoOptions

    def convert(
        self, artifact: Artifact, config: OnnxConfig, onnx: Path, options: FormatOptions
    ) -> None:
        from graphport.export.openvino import onnx_to_openvino  # rule 7 of formats/base.py

        assert isinstance(options, OpenVinoOptions)
        fp16 = options.openvino_fp16_weights
        xml = onnx_to_openvino(onnx, onnx.with_suffix(".xml"), fp16)
        spec = artifact.spec
        spec.file, spec.external_data = xml.name, xml.with_suffix(".bin").name
        artifact.files = [spec.file, spec.external_data]
        artifact.exporter["weights"] = "fp16" if fp16 else "as exported"
        if xml.name != onnx.with_suffix(".xml").name:
            artifact.exporter["stateful"] = (
                "KV cache as OpenVINO state (beam_idx), openvino-genai layout"
            )

    def finish(self, directory: Path) -> list[str]:
        """A stateful decoder's tokenizer for openvino-genai."""
        from graphport.export.openvino import genai_files  # rule 7 of formats/base.py

        return genai_files(directory)

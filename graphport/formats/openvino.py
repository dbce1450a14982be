"""The OpenVINO IR format: ``model.xml`` + ``model.bin``, converted from the traced ONNX
graph; a decoder is stateful, in openvino-genai's layout (exporters/openvino.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from graphport.formats.base import Format, FormatOptions, register_format

if TYPE_CHECKING:
    import torch

    from graphport.exporters.artifacts import Artifact
    from graphport.exporters.config import OnnxConfig


@dataclasses.dataclass
class OpenVinoOptions(FormatOptions):
    openvino_fp16_weights: bool = False  # compress the IR's float weights to fp16


@register_format("openvino")
class OpenVinoFormat(Format):
    rank = 20
    summary = "openvino IR"
    writes = (".xml", ".bin")
    runtimes = ("openvino",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "openvino", "cpp": "openvino"}
    validates_bf16 = False  # OpenVINO returns float16 results far from eager for bf16
    requires = "openvino"
    package = "OpenVINO"
    options = OpenVinoOptions

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.exporters.artifacts import remove_files, trace_onnx
        from graphport.exporters.openvino import onnx_to_openvino

        assert isinstance(options, OpenVinoOptions)
        artifact = trace_onnx(model, config, directory, options.opset, name)
        fp16 = options.openvino_fp16_weights
        xml = onnx_to_openvino(directory / f"{name}.onnx", directory / f"{name}.xml", fp16)
        remove_files(directory, artifact.files)
        spec = artifact.spec
        spec.file, spec.external_data = xml.name, xml.with_suffix(".bin").name
        artifact.files = [spec.file, spec.external_data]
        artifact.exporter["weights"] = "fp16" if fp16 else "as exported"
        if xml.name != f"{name}.xml":
            artifact.exporter["stateful"] = (
                "KV cache as OpenVINO state (beam_idx), openvino-genai layout"
            )
        return artifact

    def finish(self, directory: Path) -> list[str]:
        """A stateful decoder's tokenizer for openvino-genai."""
        from graphport.exporters.openvino import genai_files

        return genai_files(directory)

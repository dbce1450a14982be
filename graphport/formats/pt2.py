"""The pt2 format: an AOTInductor package (``model.pt2``) compiled from torch.export
(exporters/pt2.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from graphport.formats.base import Format, FormatOptions, register_format

if TYPE_CHECKING:
    import torch

    from graphport.exporters.artifacts import Artifact
    from graphport.exporters.config import OnnxConfig


@register_format("pt2")
class Pt2Format(Format):
    rank = 40
    summary = "pt2 (AOTInductor)"
    writes = (".pt2",)
    runtimes = ("aoti",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"cpp": "aoti"}

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.exporters.artifacts import Artifact, logger, spec_from_eager
        from graphport.exporters.pt2 import export_pt2

        spec = spec_from_eager(model, config)
        spec.name, spec.file = name, f"{name}.pt2"
        logger.info("Exporting with torch.export and compiling with AOTInductor")
        export_pt2(model, config, directory / spec.file)
        return Artifact(spec, [spec.file], {"strategy": "torch.export + AOTInductor"}, None)

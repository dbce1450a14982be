"""The TorchScript format: ``model.pt`` from ``torch.jit.trace`` (deprecated by torch;
exporters/torchscript.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from graphport.formats.base import Format, FormatOptions, register_format

if TYPE_CHECKING:
    import torch

    from graphport.exporters.artifacts import Artifact
    from graphport.exporters.config import OnnxConfig


@register_format("torchscript")
class TorchScriptFormat(Format):
    rank = 30
    summary = "torchscript (.pt, deprecated by torch)"
    writes = (".pt",)
    runtimes = ("torchscript",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "pytorch"}

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.exporters.artifacts import Artifact, logger, spec_from_eager
        from graphport.exporters.torchscript import DEPRECATION, export_torchscript

        spec = spec_from_eager(model, config)
        spec.name, spec.file = name, f"{name}.pt"
        logger.info("Tracing with torch.jit.trace")
        export_torchscript(model, config, directory / spec.file)
        info = {"strategy": "torch.jit.trace", "deprecated": DEPRECATION}
        return Artifact(spec, [spec.file], info, None)

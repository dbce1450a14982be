"""The TorchScript format: ``model.pt`` from ``torch.jit.trace`` (deprecated by torch;
export/torchscript.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from graphport.formats.base import FormatOptions, TorchFormat, register_format

if TYPE_CHECKING:
    import torch

    from graphport.export.config import OnnxConfig

logger = logging.getLogger(__name__)


@register_format("torchscript")
class TorchScriptFormat(TorchFormat):
    rank = 30
    summary = "torchscript (.pt, deprecated by torch)"
    writes = (".pt",)
    runtimes = ("torchscript",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "pytorch"}

    def export(
        self, model: torch.nn.Module, config: OnnxConfig, path: Path, options: FormatOptions
    ) -> dict[str, Any]:
        # rule 7 of formats/base.py
        from graphport.export.torchscript import DEPRECATION, export_torchscript

        logger.info("Tracing with torch.jit.trace")
        export_torchscript(model, config, path)
        return {"strategy": "torch.jit.trace", "deprecated": DEPRECATION}

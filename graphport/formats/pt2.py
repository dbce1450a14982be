"""The pt2 format: an AOTInductor package (``model.pt2``) compiled from torch.export
(export/pt2.py)."""

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


@register_format("pt2")
class Pt2Format(TorchFormat):
    rank = 40
    summary = "pt2 (AOTInductor)"
    writes = (".pt2",)
    runtimes = ("aoti",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"cpp": "aoti"}

    def export(
        self, model: torch.nn.Module, config: OnnxConfig, path: Path, options: FormatOptions
    ) -> dict[str, Any]:
        from graphport.export.pt2 import export_pt2  # rule 7 of formats/base.py

        logger.info("Exporting with torch.export and compiling with AOTInductor")
        export_pt2(model, config, path)
        return {"strategy": "torch.export + AOTInductor"}

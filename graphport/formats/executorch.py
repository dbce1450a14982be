"""The ExecuTorch format: a ``.pte`` program lowered to XNNPACK, optionally quantized in
the lowering (torchao); a decoder keeps a static KV cache inside the program
(export/executorch.py). Needs the ``edge`` extra."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphport.formats.base import FormatOptions, TorchFormat, register_format

if TYPE_CHECKING:
    import torch

    from graphport.export.config import OnnxConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ExecuTorchOptions(FormatOptions):
    quantize: str | None = None  # int8-dynamic or int4-weight (torchao, XNNPACK)
    static_cache: bool = False  # a decoder with its KV cache in the program
    max_cache_len: int | None = None  # the static cache's positions

    @property
    def lowering_mode(self) -> str | None:
        return self.quantize

    @property
    def lowering_precision(self) -> str | None:
        from graphport.export.executorch import QUANT_MODES  # rule 7 of formats/base.py

        return QUANT_MODES[self.quantize] if self.quantize is not None else None


@register_format("executorch")
class ExecuTorchFormat(TorchFormat):
    rank = 70
    summary = "executorch (.pte on XNNPACK)"
    writes = (".pte",)
    runtimes = ("executorch",)
    quantizes_in_lowering = True
    lowering = "ExecuTorch's lowering (torchao)"
    static_cache = True
    extra = "edge"
    requires = "executorch"
    package = "ExecuTorch"
    options = ExecuTorchOptions

    def check_options(self, options: FormatOptions) -> None:
        from graphport.export.executorch import check_quantize  # rule 7 of formats/base.py

        assert isinstance(options, ExecuTorchOptions)
        check_quantize(options.quantize)

    def export(
        self, model: torch.nn.Module, config: OnnxConfig, path: Path, options: FormatOptions
    ) -> dict[str, Any]:
        from graphport.export import executorch  # rule 7 of formats/base.py

        assert isinstance(options, ExecuTorchOptions)
        mode = options.quantize
        info: dict[str, Any]
        if options.static_cache:
            length = options.max_cache_len or executorch.DEFAULT_MAX_CACHE_LEN
            limit = getattr(config.config, "max_position_embeddings", None)
            length = min(length, int(limit)) if limit else length
            logger.info("Lowering to ExecuTorch (XNNPACK) with a static KV cache of %d", length)
            info = executorch.export_executorch_decoder(model, path, length, mode)
        else:
            logger.info("Lowering to ExecuTorch (XNNPACK)")
            info = executorch.export_executorch(model, config, path, mode)
        strategy = "torch.export + ExecuTorch XNNPACK"
        return {"strategy": strategy, **info, "quantization": mode}

"""TorchScript (.pt) export for libtorch users.

torch marks TorchScript deprecated (torch.export and AOTInductor replace it); graphport
still writes it because existing C++ and mobile deployments load it, and the manifest
records the deprecation. The module is traced (not scripted) through ``SelectOutputs``,
so it takes the inputs positionally in the manifest's order and returns a tuple.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from graphport.errors import ExportError
from graphport.export.config import OnnxConfig
from graphport.export.signature import wrap_for_tracing

DEPRECATION = (
    "TorchScript is deprecated in PyTorch; prefer --format pt2 (torch.export + AOTInductor) "
    "for new deployments."
)


def export_torchscript(model: torch.nn.Module, config: OnnxConfig, path: Path) -> None:
    wrapper, inputs = wrap_for_tracing(model, config)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(wrapper, inputs, check_trace=False, strict=False)
            traced = torch.jit.freeze(traced)
        torch.jit.save(traced, str(path))
    except Exception as e:
        raise ExportError(f"TorchScript tracing failed: {e}") from e

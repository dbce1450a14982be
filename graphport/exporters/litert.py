"""LiteRT (.tflite, the TensorFlow Lite successor) through litert-torch.

litert-torch captures the model with torch.export and lowers it to a .tflite flatbuffer
that ai-edge-litert's interpreter (and Android's LiteRT) runs. The program is converted at
the trace shapes; the runtime adapter resizes its inputs per call. Inputs are positional
in the manifest's order, outputs in its order.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import torch

from graphport.errors import ExportError, RuntimeUnavailableError
from graphport.exporters.config import OnnxConfig
from graphport.exporters.signature import wrap_for_tracing

INSTALL = (
    "install the edge extra (`pip install graphport[edge]`, litert-torch and ai-edge-litert "
    "beside torch 2.13)"
)


def require_litert() -> None:
    """Before any work: litert-torch must be importable."""
    if importlib.util.find_spec("litert_torch") is None:
        raise RuntimeUnavailableError(
            f"--format litert needs litert-torch, which is not installed; {INSTALL}, or "
            "pick --format executorch for on-device PyTorch."
        )


def export_litert(model: torch.nn.Module, config: OnnxConfig, path: Path) -> dict[str, Any]:
    import litert_torch

    wrapper, inputs = wrap_for_tracing(model, config)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = litert_torch.convert(wrapper, inputs)
            converted.export(str(path))
    except Exception as e:
        raise ExportError(
            "litert-torch could not convert the model: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}."
        ) from e
    return {"strategy": "torch.export + litert-torch"}

"""Output formats: one module each, registered with ``@register_format`` (formats/base.py).

``write_artifact`` writes one graph of an export in the format asked for; everything else
asks the format object (``get_format(name)``) what it writes, which runtimes run it, which
deploy targets and passes take it, and which extra it needs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from graphport.formats.base import (
    Format,
    FormatOptions,
    OnnxDerivedFormat,
    TorchFormat,
    format_names,
    formats,
    formats_for_target,
    get_format,
    missing_extra,
    register_format,
    unregister_format,
)

if TYPE_CHECKING:
    import torch

    from graphport.export.artifacts import Artifact
    from graphport.export.config import OnnxConfig


def write_artifact(
    fmt: str,
    model: torch.nn.Module,
    config: OnnxConfig,
    directory: Path,
    options: FormatOptions | None = None,
    name: str = "model",
) -> Artifact:
    """Trace ``model`` into graph ``name`` of format ``fmt``: files ``name.onnx`` etc."""
    target = get_format(fmt)
    start = time.perf_counter()
    artifact = target.write(model, config, directory, target.make_options(options), name)
    artifact.exporter["seconds"] = round(time.perf_counter() - start, 3)
    artifact.exporter["config_class"] = type(config).__name__
    return artifact


__all__ = [
    "Format",
    "FormatOptions",
    "OnnxDerivedFormat",
    "TorchFormat",
    "format_names",
    "formats",
    "formats_for_target",
    "get_format",
    "missing_extra",
    "register_format",
    "unregister_format",
    "write_artifact",
]

"""Deployment targets: turn an export directory into something a platform runs directly.

``cpp``: a CMake project with a small C++ program embedding the runtime's C++ API.
``triton``: a Triton Inference Server model repository.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from graphport.errors import UsageError

TARGETS = {
    "cpp": "graphport.deploy.cpp:deploy_cpp",
    "triton": "graphport.deploy.triton:deploy_triton",
}


def deploy(export_dir: str | Path, dest: str | Path, target: str, **options: Any) -> Path:
    """Write ``target``'s deployment of ``export_dir`` into ``dest``; returns ``dest``."""
    if target not in TARGETS:
        raise UsageError(f"Unknown deploy target {target!r}; use one of {', '.join(TARGETS)}.")
    module, function = TARGETS[target].split(":")
    return getattr(importlib.import_module(module), function)(
        Path(export_dir), Path(dest), **options
    )


__all__ = ["TARGETS", "deploy"]

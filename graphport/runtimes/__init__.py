"""Runtimes behind one interface: ``Runtime(export_dir).run(feeds) -> {name: array}``.

Adapters are imported lazily, so a missing runtime costs nothing until it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from graphport.errors import MissingExtraError, RuntimeUnavailableError, UsageError
from graphport.formats import get_format, missing_extra
from graphport.runtimes.base import Runtime

_ADAPTERS = {
    "onnxruntime": "graphport.runtimes.onnxruntime:OnnxRuntime",
    "openvino": "graphport.runtimes.openvino:OpenVinoRuntime",
    "torchscript": "graphport.runtimes.torchscript:TorchScriptRuntime",
    "aoti": "graphport.runtimes.aoti:AotiRuntime",
    "tensorrt": "graphport.runtimes.tensorrt:TensorRtRuntime",
    "executorch": "graphport.runtimes.executorch:ExecuTorchRuntime",
    "torch": "graphport.runtimes.torch:TorchRuntime",
}


def runtime_names() -> list[str]:
    return list(_ADAPTERS)


def get_runtime_class(name: str) -> type[Runtime]:
    key = name.strip().lower()
    if key not in _ADAPTERS:
        raise UsageError(f"Unknown runtime {name!r}; choose from {', '.join(_ADAPTERS)}.")
    module, cls = _ADAPTERS[key].split(":")
    runtime = getattr(importlib.import_module(module), cls)
    if not runtime.is_available():
        if runtime.extra is not None:
            raise MissingExtraError(missing_extra(key, "runtime", runtime.package, runtime.extra))
        raise RuntimeUnavailableError(
            f"The {key} runtime is not installed; install the `{runtime.module}` package."
        )
    return runtime


def parse_runtimes(
    spec: str | list[str] | tuple[str, ...],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Runtime names from a comma-separated list; unknown or unusable ones fail here,
    before any work, as do options a runtime cannot honour (a missing provider)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise UsageError("No runtime given; choose from " + ", ".join(_ADAPTERS) + ".")
    for name in names:
        get_runtime_class(name).check_options((options or {}).get(name, {}))
    return names


def default_runtimes(manifest: object) -> list[str]:
    """The runtimes that validate an export by default: its target, else every installed
    runtime that runs its format."""
    target = getattr(manifest, "target", None)
    return [target] if target else available_runtimes(getattr(manifest, "format", None))


def available_runtimes(fmt: str | None = None) -> list[str]:
    """Installed runtimes, or those of them that run artifacts of format ``fmt`` (in the
    format's order: its default first)."""
    out = []
    for name in _ADAPTERS if fmt is None else get_format(fmt).runtimes:
        try:
            get_runtime_class(name)
        except RuntimeUnavailableError:
            continue
        out.append(name)
    return out


__all__ = [
    "Runtime",
    "available_runtimes",
    "default_runtimes",
    "get_runtime_class",
    "parse_runtimes",
    "runtime_names",
]

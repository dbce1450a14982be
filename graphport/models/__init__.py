"""Architecture families, the registry that maps model types to them, and the loader.

Importing this package imports every module in it, which registers every family: a new
family is a new module here, with nothing else to edit.
"""

import importlib
import pkgutil

from graphport.models.registry import (
    Registration,
    get_onnx_config,
    get_registration,
    register,
    registrations,
    supported_tasks,
)

_NOT_FAMILIES = {"registry", "loader", "rotary", "tiny", "tiny_vlm"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_FAMILIES:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Registration",
    "get_onnx_config",
    "get_registration",
    "register",
    "registrations",
    "supported_tasks",
]

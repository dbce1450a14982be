"""Architecture families, the registry that maps model types to them, and the loader.

Importing this package registers every family module below.
"""

from graphport.models import bert, convnext, resnet, swin, vit, wav2vec2  # noqa: F401
from graphport.models.registry import (
    Registration,
    get_onnx_config,
    get_registration,
    register,
    registrations,
    supported_tasks,
)

__all__ = [
    "Registration",
    "get_onnx_config",
    "get_registration",
    "register",
    "registrations",
    "supported_tasks",
]

"""graphport: export Transformers models to graphs, run them anywhere, prove parity.

The public entry points and where each lives:

- ``export_model`` (graphport/exporters/pipeline.py): a checkpoint -> an export directory.
- ``validate_export`` (graphport/validators/parity.py): an export against eager.
- ``load`` (graphport/api.py): an export as a transformers model on a runtime.
- ``pipeline`` (graphport/api.py): ``transformers.pipeline`` around ``load``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "export_model", "load", "pipeline", "validate_export"]


def __getattr__(name: str) -> Any:
    # The heavy entry points import torch and transformers; load them on first use so
    # `import graphport` (and `graphport --help`) stay fast.
    if name == "export_model":
        from graphport.exporters.pipeline import export_model

        return export_model
    if name == "validate_export":
        from graphport.validators.parity import validate_export

        return validate_export
    if name in ("load", "pipeline"):
        from graphport import api

        return getattr(api, name)
    raise AttributeError(f"module 'graphport' has no attribute {name!r}")

"""graphport: export Transformers models to graphs, run them anywhere, prove parity.

The public entry points, all in the orchestration layer ``graphport.api``:

- ``export_model`` (graphport/api/export.py): a checkpoint -> an export directory, with
  every option of ``graphport export`` (-O, quantize, streaming, format knobs).
- ``plan_export`` (graphport/api/plan.py): what such an export will do, checked first.
- ``ExportOptions`` (graphport/api/plan.py): the options both take, as one record.
- ``optimize_export``, ``quantize_export`` (graphport/api/transform.py): an export -> a
  new export, every pass checked against eager; ``quantize_auto``
  (graphport/api/quantize_search.py): the fastest int4 export within an accuracy budget.
- ``validate_export`` (graphport/validators/parity.py): an export against eager.
- ``evaluate`` (graphport/api/evaluate.py): task accuracy of exports against eager.
- ``load`` (graphport/api/load.py): an export as a transformers model on a runtime.
- ``pipeline`` (graphport/api/load.py): ``transformers.pipeline`` around ``load``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PUBLIC = (
    "ExportOptions",
    "evaluate",
    "export_model",
    "load",
    "optimize_export",
    "pipeline",
    "plan_export",
    "quantize_auto",
    "quantize_export",
)
__all__ = ["__version__", *_PUBLIC, "validate_export"]


def __getattr__(name: str) -> Any:
    # The entry points import torch and transformers; load them on first use so
    # `import graphport` (and `graphport --help`) stay fast.
    if name in (*_PUBLIC, "validate_export"):
        import graphport.api

        return getattr(graphport.api, name)
    raise AttributeError(f"module 'graphport' has no attribute {name!r}")

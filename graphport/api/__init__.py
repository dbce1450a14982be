"""The orchestration layer and the public Python surface: it calls every layer below it.

- ``export_model`` (export.py): checkpoint -> config -> trace -> validate -> place.
- ``optimize_export`` / ``quantize_export`` (transform.py): an export -> a new export,
  every pass checked against eager.
- ``load`` / ``pipeline`` (load.py): an export directory as a transformers model on a
  runtime, and ``transformers.pipeline`` around it.
- ``evaluate`` (evaluate.py): task accuracy of exports against eager on a dataset.
- ``validate_export`` lives in ``graphport.validators`` and is re-exported here.
"""

from graphport.api.evaluate import evaluate
from graphport.api.export import ExportResult, export_model
from graphport.api.load import load, pipeline
from graphport.api.transform import TransformResult, optimize_export, quantize_export
from graphport.validators.parity import validate_export

__all__ = [
    "ExportResult",
    "TransformResult",
    "evaluate",
    "export_model",
    "load",
    "optimize_export",
    "pipeline",
    "quantize_export",
    "validate_export",
]

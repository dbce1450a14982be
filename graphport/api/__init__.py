"""The orchestration layer and the public Python surface: it calls every layer below it.

- ``plan_export`` (plan.py): every decision of an export, checked and taken once, from
  its ``ExportOptions`` (the one list of export options, which the CLI builds too).
- ``export_model`` (export.py): plan -> trace -> validate -> place -> optimize/quantize.
- ``optimize_export`` / ``quantize_export`` (transform.py): an export -> a new export,
  every pass checked against eager; ``quantize_auto`` (quantize_search.py): the fastest
  int4 export within an accuracy budget.
- ``load`` / ``pipeline`` (load.py): an export directory as a transformers model on a
  runtime, and ``transformers.pipeline`` around it.
- ``evaluate`` (evaluate.py): task accuracy of exports against eager on a dataset.
- ``bench_export`` (bench.py): latency and throughput of an export on its runtimes.
- ``validate_export`` lives in ``graphport.validators`` and is re-exported here.
"""

from graphport.api.evaluate import evaluate
from graphport.api.export import ExportResult, export_model, run_export
from graphport.api.load import load, pipeline
from graphport.api.plan import ExportOptions, ExportPlan, plan_export
from graphport.api.quantize_search import quantize_auto
from graphport.api.transform import TransformResult, optimize_export, quantize_export
from graphport.validators.parity import validate_export

__all__ = [
    "ExportOptions",
    "ExportPlan",
    "ExportResult",
    "TransformResult",
    "evaluate",
    "export_model",
    "load",
    "optimize_export",
    "pipeline",
    "plan_export",
    "quantize_auto",
    "quantize_export",
    "run_export",
    "validate_export",
]

"""``export_model``: checkpoint directory -> validated, self-describing export directory.

Steps: ``plan_export`` (api/plan.py) checks every option and decides the export once
(checkpoint, task, format, streaming, where a quantization happens); then load the eager
model, trace to ONNX, write graph + preprocessor files + manifest into a staging
directory beside the output, validate it, then move it into place, and run the plan's
optimize and quantize passes on it (api/transform.py). Any failure before the move
removes the staging directory, so an output directory with a manifest only exists for an
export that finished (a parity failure keeps it, with the failed report in its manifest,
for inspection, and still fails the command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from graphport.api.plan import ExportOptions, ExportPlan, plan_export
from graphport.api.transform import BUDGETS, TransformResult, optimize_export, quantize_export
from graphport.errors import ParityError
from graphport.export.cache_layout import UnsupportedCacheError
from graphport.export.genai_config import write_genai_config
from graphport.export.onnx import check_eager_runs
from graphport.formats import FormatOptions, get_format, write_artifact
from graphport.manifest import (
    MANIFEST_NAME,
    ExportDirectory,
    Manifest,
    move_into_place,
    staging_directory,
)
from graphport.models.loader import load_meta_model, load_model
from graphport.models.registry import get_onnx_config
from graphport.validators.parity import INT4_REFERENCE, NORM_TOL, validate_export
from graphport.validators.report import ParityReport

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = (
    "graphport",
    "torch",
    "transformers",
    "onnx",
    "onnx-ir",
    "onnxscript",
    "onnxruntime",
    "openvino",
)
REPORT_NAME = "parity.json"


@dataclasses.dataclass
class ExportResult:
    """An export directory and its last parity report; with optimize/quantize passes,
    the final (transformed) directory, and each pass's result in ``transforms``."""

    path: Path
    manifest: Manifest
    report: ParityReport | None
    seconds: float
    plan: ExportPlan | None = None
    transforms: list[TransformResult] = dataclasses.field(default_factory=list)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return versions


def _kv_cache_contract(config: Any, dtype: str) -> dict[str, Any] | None:
    contract = config.kv_cache_contract()
    if contract is not None:
        contract["dtype"] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype]
    return contract


def _quantized_budget(options: FormatOptions) -> dict[str, float]:
    """The min cosine of a program quantized in its lowering (ExecuTorch): the ONNX budget
    of its precision."""
    precision = options.lowering_precision
    return {} if precision is None else {"min_cosine": BUDGETS[precision]}


def _int4_budget() -> float:
    return BUDGETS["int4"]


# What ``export_model`` reports after each stage: the plain export, then each transform.
StepCallback = Callable[["ExportResult | TransformResult"], None]


def export_model(
    model: str | Path,
    output: str | Path,
    options: ExportOptions | None = None,
    on_step: StepCallback | None = None,
    **keywords: Any,
) -> ExportResult:
    """Export ``model`` (a checkpoint directory or cached hub id) into ``output``: the
    Python form of ``graphport export``, with the same options (``ExportOptions``, in
    api/plan.py), given as one record or as keywords (which override it).

    ``on_step`` is called with the plain export's result, then each transform's.
    ``quantize_options`` (an ``ExportOptions`` field) are ``quantize_export``'s keywords
    for the quantization pass (``method="awq"``, ``block_size``, ``ratio``, ...).

    Every option is checked first, by ``plan_export`` (api/plan.py); ``run_export``
    runs a plan made before.
    """
    return run_export(plan_export(model, output, options, **keywords), on_step)


def run_export(plan: ExportPlan, on_step: StepCallback | None = None) -> ExportResult:
    """Carry out ``plan``: the plain export, then its optimize and quantize passes.

    With passes, the plain export is an intermediate staged beside the output, and the
    result is the last pass's export (``transforms`` holds every pass's result)."""
    start = time.perf_counter()
    notify = on_step or (lambda step: None)
    try:
        if not plan.transforms:
            result, _ = _export(plan, plan.output)
            notify(result)
        else:
            with staging_directory(plan.output) as staging:
                exported, eager = _export(plan, staging / "export")
                notify(exported)
                # The traced eager model is every pass's reference: not loaded again.
                steps = _transform(plan, exported.path, eager, notify)
            result = ExportResult(
                plan.output,
                ExportDirectory(plan.output).manifest,
                steps[-1].report,
                time.perf_counter() - start,
                plan,
                steps,
            )
    except ParityError as e:  # a failed report is the one most worth reading
        _write_html(plan.html, e.report)
        raise
    _write_html(plan.html, result.report)
    return result


def _write_html(html: Path | None, report: ParityReport | None) -> None:
    if html is not None and report is not None:
        from graphport.validators.html import write_html

        write_html(report, html)


def _transform(
    plan: ExportPlan, exported: Path, reference: Any, notify: StepCallback
) -> list[TransformResult]:
    """The -O optimization, then the quantization, of the plain export ``exported``,
    checked against the eager model ``reference``."""
    steps: list[TransformResult] = []
    current = exported
    if plan.optimize is not None:
        target = plan.output if plan.quantize is None else exported.parent / "optimized"
        step = optimize_export(
            current,
            target,
            level=plan.optimize,
            overwrite=plan.overwrite,
            localize=plan.localize,
            reference=reference,
        )
        notify(step)
        steps.append(step)
        current = step.path
    if plan.quantize is not None:
        step = quantize_export(
            current,
            plan.output,
            plan.quantize,
            plan.calibration,
            overwrite=plan.overwrite,
            localize=plan.localize,
            reference=reference,
            **plan.quantize_options,
        )
        notify(step)
        steps.append(step)
    return steps


def _export(plan: ExportPlan, output: Path) -> tuple[ExportResult, Any]:
    """The plain export of ``plan`` into ``output``: load, trace, write, validate, place.
    Returns its result and the eager model it traced."""
    from graphport.api.streaming import write_streamed

    start = time.perf_counter()
    checkpoint, task, dtype = plan.checkpoint, plan.task, plan.dtype
    onnx_config = plan.onnx_config
    logger.info("Loading %s (%s, %s)", checkpoint.path, checkpoint.model_type, task.value)
    loader = load_meta_model if plan.streaming else load_model
    eager = loader(checkpoint, task, dtype, dict(plan.model_overrides))
    options = plan.format_options
    try:
        graphs = onnx_config.sub_graphs(eager)
    except UnsupportedCacheError as e:
        if plan.task_given:  # asked for with-past: say why not
            raise
        # Inferred: a causal LM whose cache is not plain keys and values generates without.
        logger.warning("%s Exporting %s without a KV cache.", e, task.value)
        onnx_config = get_onnx_config(checkpoint.config, task.value)
        graphs = onnx_config.sub_graphs(eager)
    for graph in graphs:  # before anything is written
        check_eager_runs(graph.module, graph.config)

    with staging_directory(output) as staging:
        artifacts = [
            write_streamed(
                graph, eager, checkpoint, staging, plan.opset, plan.streamed_quantize, plan.gptq
            )
            if plan.streaming
            else write_artifact(plan.fmt, graph.module, graph.config, staging, options, graph.name)
            for graph in graphs
        ]
        artifact = artifacts[0]
        exporter = dict(artifact.exporter)
        if len(artifacts) > 1:
            exporter["graphs"] = {a.spec.name: a.exporter for a in artifacts}
            # The top-level entry must not hide a sub-graph that needed the fallback.
            fallback = next((a for a in artifacts if a.exporter.get("fallback_reason")), None)
            if fallback is not None:
                exporter["strategy"] = fallback.exporter["strategy"]
                exporter["fallback_reason"] = (
                    f"graph {fallback.spec.name}: {fallback.exporter['fallback_reason']}"
                )
        # A streamed export wrote MatMulNBits (asked for, or a GPTQ checkpoint's blocks).
        quantized = any(a.exporter.get("streamed", {}).get("matmuls") for a in artifacts)
        copied = []
        for file in checkpoint.preprocessor_files():
            shutil.copy2(file, staging / file.name)
            copied.append(file.name)
        copied += get_format(plan.fmt).finish(staging)  # openvino-genai's tokenizer
        manifest = Manifest(
            source={
                "model": checkpoint.source,
                "path": str(checkpoint.path.resolve()),
                "model_type": checkpoint.model_type,
                "architectures": checkpoint.architectures,
                "weights_sha256": checkpoint.weights_sha256(),
            },
            task=task.value,
            family=plan.registration.family,
            generic=plan.registration.generic,
            modality=onnx_config.modality,
            format=plan.fmt,
            dtype=dtype,
            opset=artifact.opset,
            graphs=[a.spec for a in artifacts],
            exporter=exporter,
            tolerance={
                "atol": plan.atol if plan.atol is not None else onnx_config.atol_for_validation,
                "rtol": plan.rtol if plan.rtol is not None else onnx_config.rtol_for_validation,
                # A budget the user sets is absolute: no magnitude term (validators/parity.py).
                "norm_tol": 0.0 if plan.atol is not None or plan.rtol is not None else NORM_TOL,
                **_quantized_budget(options),
                **(
                    {"min_cosine": _int4_budget(), "reference": INT4_REFERENCE} if quantized else {}
                ),
            },
            versions=package_versions(),
            files=sorted({*(f for a in artifacts for f in a.files), *copied}),
            kv_cache=_kv_cache_contract(onnx_config, dtype),
        )
        if quantized:
            manifest.target = "onnxruntime"  # MatMulNBits is an onnxruntime operator
            streamed = dict(artifact.exporter["streamed"])
            manifest.passes.append(
                {
                    "name": plan.streamed_quantize or "gptq",
                    "modified": True,
                    "seconds": streamed.pop("seconds"),
                    "budget": {"min_cosine": _int4_budget(), "reference": INT4_REFERENCE},
                    "streamed": True,
                    **streamed,
                }
            )
        manifest.files = sorted({*manifest.files, *write_genai_config(staging, manifest)})
        manifest.write(staging)

        report = None
        if plan.validate:
            logger.info("Validating against eager on %s", ", ".join(plan.runtimes))
            report = validate_export(
                ExportDirectory(staging),
                list(plan.runtimes),
                atol=plan.atol,
                rtol=plan.rtol,
                # A streamed export's model has no weights: validation loads the eager
                # model in the checkpoint's precision and frees it before the runtimes.
                reference_model=None if plan.streaming else eager,
                config=onnx_config,
                runtime_options=plan.runtime_options,
                localize=plan.localize,
                release_reference=plan.streaming,
            )
            report.export_dir = str(output)
            manifest.validation = report.summary()
            if quantized:  # the streamed quantization's record, as a pass's
                manifest.passes[-1]["parity"] = {
                    "passed": report.passed,
                    **manifest.validation["worst"],
                }
            manifest.write(staging)
            report.write(staging / REPORT_NAME)
        move_into_place(staging, output)

    result = ExportResult(output, manifest, report, time.perf_counter() - start, plan)
    if report is not None and not report.passed:
        raise ParityError(
            f"The export of {checkpoint.source} does not match the eager model: "
            + "; ".join(report.failures()[:5])
            + f". The directory {output} is kept for inspection; its {MANIFEST_NAME} and "
            f"{REPORT_NAME} record the failed report.",
            report,
        )
    return result, eager

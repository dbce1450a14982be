"""``export_model``: checkpoint directory -> validated, self-describing export directory.

Steps: check the checkpoint, resolve the task, build the export config, load the eager
model, trace to ONNX, write graph + preprocessor files + manifest into a staging
directory beside the output, validate it, then move it into place. Any failure before
the move removes the staging directory, so an output directory with a manifest only
exists for an export that finished (a parity failure keeps it, with the failed report
in its manifest, for inspection, and still fails the command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from graphport.errors import ParityError, UsageError
from graphport.exporters.artifacts import FormatOptions, check_format, write_artifact
from graphport.exporters.cache_layout import UnsupportedCacheError
from graphport.exporters.genai_config import write_genai_config
from graphport.exporters.onnx import check_eager_runs, check_opset
from graphport.exporters.tasks import Task
from graphport.manifest import (
    MANIFEST_NAME,
    ExportDirectory,
    Manifest,
    check_output_path,
    move_into_place,
    staging_directory,
)
from graphport.models.loader import DTYPES, load_checkpoint, load_meta_model, load_model
from graphport.models.registry import get_onnx_config, get_registration, resolve_task
from graphport.validators.parity import INT4_REFERENCE, ParityReport, validate_export

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
    path: Path
    manifest: Manifest
    report: ParityReport | None
    seconds: float


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


def _executorch_graphs(
    checkpoint: Any, task: Task, with_past: bool, options: FormatOptions
) -> tuple[Any, FormatOptions]:
    """An ExecuTorch decoder keeps its KV cache inside the program (static, batch 1), so
    its graph has the contract of a decoder without a cache (runtimes/executorch.py)."""
    from graphport.exporters.executorch import check_quantize

    check_quantize(options.quantize)
    if with_past and task is not Task.TEXT_GENERATION:
        raise UsageError(
            f"--format executorch exports decoder-only models with their KV cache, and "
            f"{checkpoint.model_type} ({task.value}) is an encoder-decoder; export it with "
            "--format onnx."
        )
    return get_onnx_config(checkpoint.config, task.value), dataclasses.replace(
        options, static_cache=with_past
    )


def _quantized_budget(options: FormatOptions) -> dict[str, float]:
    """The min cosine of a quantized ExecuTorch program: the ONNX budgets of its mode."""
    if options.quantize is None:
        return {}
    from graphport.api.transform import BUDGETS
    from graphport.exporters.executorch import QUANT_MODES

    return {"min_cosine": BUDGETS[QUANT_MODES[options.quantize]]}


def _int4_budget() -> float:
    from graphport.api.transform import BUDGETS

    return BUDGETS["int4"]


def _export_then_quantize(
    model: str | Path,
    output: Path,
    quantize: str,
    overwrite: bool,
    localize: bool,
    **export_options: Any,
) -> ExportResult:
    """An export in memory, then ``quantize_export`` on it into ``output``."""
    from graphport.api.transform import quantize_export

    start = time.perf_counter()
    check_output_path(output, overwrite)
    with staging_directory(output) as staging:
        exported = export_model(model, staging / "export", localize=localize, **export_options)
        result = quantize_export(
            exported.path, output, quantize, overwrite=overwrite, localize=localize
        )
    manifest = ExportDirectory(output).manifest
    return ExportResult(output, manifest, result.report, time.perf_counter() - start)


def export_model(
    model: str | Path,
    output: str | Path,
    task: str | Task | None = None,
    opset: int | None = None,
    dtype: str = "fp32",
    atol: float | None = None,
    validate: bool = True,
    rtol: float | None = None,
    runtimes: Sequence[str] | None = None,
    overwrite: bool = False,
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None,
    fmt: str = "onnx",
    format_options: FormatOptions | None = None,
    localize: bool = False,
    quantize: str | None = None,
    streaming: bool | None = None,
) -> ExportResult:
    """Export ``model`` (a checkpoint directory or cached hub id) into ``output``.

    ``runtimes`` defaults to every installed runtime that can run the format. ``localize``
    compares every module's output in validation too (see ``validate_export``).

    ``streaming`` (default: when the in-memory export would not fit in memory) traces the
    model on the meta device and writes each weight from the checkpoint, one at a time
    (api/streaming.py); ``quantize="int4-weight"`` then quantizes each weight on its way
    to the file. Without streaming, ``quantize`` runs ``quantize_export`` on the export.
    """
    from graphport.api.streaming import (
        check_memory,
        checkpoint_is_gptq,
        should_stream,
        write_streamed,
    )
    from graphport.runtimes import available_runtimes, parse_runtimes

    start = time.perf_counter()
    output = Path(output)
    if dtype not in DTYPES:
        raise UsageError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    check_format(fmt)
    if dtype == "bf16" and validate and fmt in ("onnx", "openvino", "ort"):
        raise UsageError(
            "A bf16 graph cannot be validated on the CPU runtimes: onnxruntime's CPU provider "
            "has no bfloat16 kernels and OpenVINO's ONNX reader returns float16 results far "
            "from eager for bfloat16 graphs; export with --no-validate and validate where bf16 "
            "kernels exist, or use --dtype fp16."
        )
    if opset is not None:
        check_opset(opset)
    check_output_path(output, overwrite)
    if validate and runtimes is not None:  # bad names fail before any work
        runtimes = parse_runtimes(runtimes, runtime_options)
    checkpoint = load_checkpoint(model)
    stream = should_stream(checkpoint, dtype, fmt, quantize, streaming)
    if quantize is not None and not stream:
        return _export_then_quantize(
            model,
            output,
            quantize,
            overwrite,
            localize,
            task=task,
            opset=opset,
            dtype=dtype,
            atol=atol,
            validate=validate,
            rtol=rtol,
            runtimes=runtimes,
            runtime_options=runtime_options,
            fmt=fmt,
            format_options=format_options,
            streaming=False,
        )
    if stream:
        check_memory(checkpoint, validate)
    registration = get_registration(checkpoint.model_type)
    parsed_task, with_past = resolve_task(checkpoint, task)
    onnx_config = get_onnx_config(
        checkpoint.config, f"{parsed_task.value}{'-with-past' if with_past else ''}"
    )
    if validate:
        # An int4 graph (MatMulNBits) runs on onnxruntime only.
        quantized_graph = quantize is not None or checkpoint_is_gptq(checkpoint)
        default = ["onnxruntime"] if quantized_graph else available_runtimes(fmt)
        if runtimes is None:
            runtimes = parse_runtimes(default, runtime_options)
    logger.info("Loading %s (%s, %s)", checkpoint.path, checkpoint.model_type, parsed_task.value)
    loader = load_meta_model if stream else load_model
    eager = loader(checkpoint, parsed_task, dtype, dict(onnx_config.values_override or {}))
    options = dataclasses.replace(format_options or FormatOptions(), opset=opset)
    if fmt == "executorch":
        onnx_config, options = _executorch_graphs(checkpoint, parsed_task, with_past, options)
    try:
        graphs = onnx_config.sub_graphs(eager)
    except UnsupportedCacheError as e:
        if task not in (None, "auto"):  # asked for with-past: say why not
            raise
        # Inferred: a causal LM whose cache is not plain keys and values generates without.
        logger.warning("%s Exporting %s without a KV cache.", e, parsed_task.value)
        onnx_config = get_onnx_config(checkpoint.config, parsed_task.value)
        graphs = onnx_config.sub_graphs(eager)
    for graph in graphs:  # before anything is written
        check_eager_runs(graph.module, graph.config)

    with staging_directory(output) as staging:
        artifacts = [
            write_streamed(graph, eager, checkpoint, staging, opset, quantize)
            if stream
            else write_artifact(fmt, graph.module, graph.config, staging, options, graph.name)
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
        if fmt == "openvino":  # a stateful decoder's tokenizer for openvino-genai
            from graphport.exporters.openvino import genai_files

            copied += genai_files(staging)
        manifest = Manifest(
            source={
                "model": checkpoint.source,
                "path": str(checkpoint.path.resolve()),
                "model_type": checkpoint.model_type,
                "architectures": checkpoint.architectures,
                "weights_sha256": checkpoint.weights_sha256(),
            },
            task=parsed_task.value,
            family=registration.family,
            generic=registration.generic,
            modality=onnx_config.modality,
            format=fmt,
            dtype=dtype,
            opset=artifact.opset,
            graphs=[a.spec for a in artifacts],
            exporter=exporter,
            tolerance={
                "atol": atol if atol is not None else onnx_config.atol_for_validation,
                "rtol": rtol if rtol is not None else onnx_config.rtol_for_validation,
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
                    "name": quantize or "gptq",
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
        if validate:
            logger.info("Validating against eager on %s", ", ".join(runtimes))
            report = validate_export(
                ExportDirectory(staging),
                runtimes,
                atol=atol,
                rtol=rtol,
                # A streamed export's model has no weights: validation loads the eager
                # model in the checkpoint's precision and frees it before the runtimes.
                reference_model=None if stream else eager,
                config=onnx_config,
                runtime_options=runtime_options,
                localize=localize,
                release_reference=stream,
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

    result = ExportResult(output, manifest, report, time.perf_counter() - start)
    if report is not None and not report.passed:
        raise ParityError(
            f"The export of {checkpoint.source} does not match the eager model: "
            + "; ".join(report.failures()[:5])
            + f". The directory {output} is kept for inspection; its {MANIFEST_NAME} and "
            f"{REPORT_NAME} record the failed report.",
            report,
        )
    return result

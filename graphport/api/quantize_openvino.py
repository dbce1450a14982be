"""Quantization for OpenVINO: an export's graphs converted to IR with NNCF-compressed
weights (int8, int4) or NNCF's static int8, checked on OpenVINO against eager."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphport.api.calibration import calibration_feeds, smooth_step, split_step
from graphport.api.steps import (
    BUDGETS,
    TransformResult,
    check_budget,
    check_source,
    place,
    run_steps,
)
from graphport.errors import UsageError
from graphport.export.genai_config import GENAI_CONFIG
from graphport.export.openvino import genai_files
from graphport.export.openvino_quantize import compress_weights, quantize_static
from graphport.manifest import (
    ExportDirectory,
    Manifest,
    check_output_path,
    staging_directory,
)
from graphport.validators.parity import INT4_REFERENCE, validate_export
from graphport.validators.reference import load_reference

logger = logging.getLogger(__name__)


def compress_openvino_export(
    src_dir: str | Path,
    dst_dir: str | Path,
    bits: int = 8,
    group_size: int = 64,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """An OpenVINO IR export of SRC with NNCF-compressed weights, checked on OpenVINO
    against eager with the int8 / int4 budget."""
    logger.info("Compressing the weights to int%d for OpenVINO", bits)
    return _openvino_export(
        src_dir,
        dst_dir,
        f"openvino-int{bits}-weight",
        "int8" if bits == 8 else "int4",
        lambda onnx_path, xml_path: compress_weights(onnx_path, xml_path, bits, group_size),
        allow_budget_break,
        overwrite,
        localize,
        reference,
    )


def quantize_openvino_static(
    src_dir: str | Path,
    dst_dir: str | Path,
    calibration: str | Path,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """Static int8 for OpenVINO: split-outliers and smooth-activations on the ONNX graph
    (checked on onnxruntime like every fp32 pass), then NNCF's post-training
    quantization calibrated on the same inputs, saved as IR and checked on OpenVINO.

    The outlier passes find single-node GELUs in fused graphs: quantize an ``-O2``
    export (OpenVINO reads the com.microsoft operators it uses).
    """
    src = ExportDirectory(src_dir)
    dst = Path(dst_dir)
    check_source(src, dst)
    check_output_path(dst, overwrite)
    if len(src.manifest.graphs) != 1:
        raise UsageError("openvino-int8-static quantizes single-graph exports only.")
    feeds = calibration_feeds(src.path, calibration)
    if reference is None:  # one eager model for the ONNX passes and the IR's check
        reference = load_reference(src)
    steps = [
        ("split-outliers", "fp32", split_step(feeds)),
        ("smooth-activations", "fp32", smooth_step(feeds)),
    ]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", dir=dst.parent) as scratch:
        prepared = Path(scratch) / "prepared"
        run_steps(
            src.path,
            prepared,
            steps,
            None,
            ["onnxruntime"],
            allow_budget_break,
            False,
            reference=reference,
        )
        logger.info("Quantizing weights and activations to int8 for OpenVINO")
        return _openvino_export(
            prepared,
            dst,
            "openvino-int8-static",
            "int8",
            lambda onnx_path, xml_path: quantize_static(onnx_path, xml_path, feeds),
            allow_budget_break,
            overwrite,
            localize,
            reference,
        )


def _openvino_export(
    src_dir: str | Path,
    dst_dir: str | Path,
    name: str,
    precision: str,
    convert: Callable[[Path, Path], dict[str, Any]],
    allow_budget_break: bool,
    overwrite: bool,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """SRC's graphs converted to IR by ``convert(onnx, xml)``, checked on OpenVINO
    against eager with the budget of ``precision``; SRC's passes are kept."""
    src = ExportDirectory(src_dir)
    dst = Path(dst_dir)
    # Weight compression reads IR as well (NNCF works on OpenVINO's model).
    check_source(src, dst, openvino_reads=name.endswith("-weight"))
    check_output_path(dst, overwrite)
    if reference is None:
        reference = load_reference(src)
    manifest = Manifest.from_dict(src.manifest.to_dict())
    graph_files = {g.file for g in manifest.graphs} | {
        g.external_data for g in manifest.graphs if g.external_data
    }
    with staging_directory(dst) as staging:
        for file in manifest.files:
            if file not in graph_files and file not in ("parity.json", GENAI_CONFIG):
                shutil.copy2(src.path / file, staging / file)
        start = time.perf_counter()
        for graph in manifest.graphs:
            details = convert(src.path / graph.file, staging / f"{graph.name}.xml")
            # A decoder's IR is stateful, in openvino-genai's layout (export/openvino.py).
            graph.file = details.get("file", f"{graph.name}.xml")
            graph.external_data = str(Path(graph.file).with_suffix(".bin"))
        genai_files(staging)
        cosine = BUDGETS[precision]
        manifest.format, manifest.target = "openvino", "openvino"
        manifest.tolerance = {**manifest.tolerance, "min_cosine": cosine}
        if precision == "int4":  # against its own int4 weights, as the ONNX int4 pass
            manifest.tolerance["reference"] = INT4_REFERENCE
        manifest.files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest.write(staging)
        report = validate_export(
            ExportDirectory(staging), ["openvino"], reference_model=reference, localize=localize
        )
        report.export_dir = str(dst)
        manifest.passes.append(
            {
                "name": name,
                "modified": True,
                "seconds": round(time.perf_counter() - start, 3),
                "budget": {"min_cosine": cosine},
                "parity": {"passed": report.passed, **report.summary()["worst"]},
                **details,
            }
        )
        place(staging, dst, manifest, report)
    check_budget(report, dst, f"the {precision} budget on OpenVINO", allow_budget_break)
    return TransformResult(dst, manifest.passes, report)

"""Optimization pipelines over export directories, and the transforms' public names.

``optimize_export`` runs graph passes (cleanup, onnxruntime fusions, GroupQueryAttention,
offline optimizations) through the checked pipeline of api/steps.py. Quantization lives
in api/quantize.py (onnxruntime), api/quantize_openvino.py (NNCF, IR) and
api/quantize_search.py (a search within an accuracy budget); their entry points are named
here too, where callers have always imported them from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphport.api.calibration import calibration_feeds
from graphport.api.quantize import quantize_export
from graphport.api.quantize_openvino import compress_openvino_export, quantize_openvino_static
from graphport.api.steps import (
    BUDGETS,
    TARGETS,
    Step,
    TransformResult,
    ir_step,
    run_steps,
)
from graphport.errors import UsageError
from graphport.graphs.cleanup import CleanupPass
from graphport.graphs.fusion import OrtCpuKernelsPass, OrtFusionPass, PackAttentionPass
from graphport.graphs.gqa import FAMILIES, GroupQueryAttentionPass
from graphport.manifest import ExportDirectory
from graphport.models.rotary import attention_shape

logger = logging.getLogger(__name__)

__all__ = [
    "BUDGETS",
    "TransformResult",
    "calibration_feeds",
    "compress_openvino_export",
    "optimize_export",
    "quantize_export",
    "quantize_openvino_static",
]


def _ort_offline_step(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
    """onnxruntime's full graph optimizations applied once and saved (O3)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return True, {"level": "extended"}


def optimize_export(
    src: str | Path,
    dst: str | Path,
    level: int = 2,
    target: str = "onnxruntime",
    runtimes: Sequence[str] | None = None,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    localize: bool = False,
    reference: Any = None,
) -> TransformResult:
    """O1: cleanup. O2: + onnxruntime fusions, then fused attention packed for the int8
    quantizer and the raw-mask kernels, and the fused norms and GELUs that onnxruntime's
    CPU provider runs slower traded back (onnxruntime target only; OpenVINO fuses at
    compile time itself). O3: + onnxruntime's extended optimizations saved offline.
    ``reference`` is the eager model every pass is checked against (default: loaded from
    the source checkpoint; ``export_model`` hands over the one it traced)."""
    if level not in (1, 2, 3):
        raise UsageError(f"Optimization level {level} does not exist; use 1, 2 or 3.")
    if target not in TARGETS:
        raise UsageError(f"Unknown target {target!r}; use one of {', '.join(TARGETS)}.")
    family = ExportDirectory(src).manifest.family
    steps: list[tuple[str, str, Step]] = [("cleanup", "fp32", ir_step(CleanupPass))]
    if target == "onnxruntime" and level >= 2:
        gqa = _gqa_step(ExportDirectory(src))
        if gqa is not None:  # before the fusions, while every node carries its scope
            steps.append(("group-query-attention", "fp32", gqa))
        steps.append(
            (
                "ort-fusion",
                "fp32",
                ir_step(
                    lambda: OrtFusionPass(family),
                    lambda p: {"fusions": p.report.to_dict()},
                    must_load=True,
                ),
            )
        )
        steps.append(
            (
                "pack-attention",
                "fp32",
                ir_step(lambda: PackAttentionPass(family), lambda p: {"attention": p.counts}),
            )
        )
        steps.append(
            (
                "ort-cpu-kernels",
                "fp32",
                ir_step(OrtCpuKernelsPass, lambda p: {"rewrites": p.counts}),
            )
        )
    if target == "onnxruntime" and level >= 3:
        steps.append(("ort-offline", "fp32", _ort_offline_step))
    return run_steps(
        src,
        dst,
        steps,
        "onnxruntime" if len(steps) > 1 else None,
        runtimes,
        allow_budget_break,
        overwrite,
        localize,
        reference,
    )


def _gqa_step(src: ExportDirectory) -> Step | None:
    """The GroupQueryAttention rewrite of a Llama-layout decoder with a KV cache that
    keeps every position (graphs/gqa.py), or None where it does not apply."""
    from transformers import AutoConfig

    manifest = src.manifest
    contract = manifest.kv_cache or {}
    windows = [layer.get("sliding_window") for layer in contract.get("layers") or []]
    if manifest.family not in FAMILIES or not contract or any(windows):
        return None
    if manifest.task != "text-generation" or len(manifest.graphs) != 1:
        return None
    shape = attention_shape(AutoConfig.from_pretrained(src.path, local_files_only=True))
    if shape is None:
        return None

    def details(p: GroupQueryAttentionPass) -> dict[str, Any]:
        info: dict[str, Any] = {
            "layers": len(p.layers),
            "skipped": {str(k): v for k, v in p.skipped.items()},
        }
        if p.shared_buffer:  # the runtime may bind one buffer as past and present
            info["kv_cache"] = {"shared_buffer": True, "max_length": len(shape.cos)}
        return info

    return ir_step(lambda: GroupQueryAttentionPass(shape), details, must_load=True)

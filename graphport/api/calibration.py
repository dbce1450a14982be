"""Calibration inputs for the quantizers, and the fp32 steps that measure activations on
them (split-outliers, smooth-activations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx_ir as ir

from graphport.api.pipeline import Step
from graphport.errors import UsageError
from graphport.graphs.outliers import SplitOutliersPass, feed_forward_blocks
from graphport.graphs.smooth import SmoothActivationsPass, activation_ranges, smoothable
from graphport.manifest import ExportDirectory
from graphport.runtimes.predict import prepare_inputs


def split_step(feeds: list[dict]) -> Step:
    def step(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
        model = ir.load(src)
        names = [b["act"].outputs[0].name for b in feed_forward_blocks(model.graph)]
        graph_pass = SplitOutliersPass(activation_ranges(src, feeds, names))
        result = graph_pass(model)
        ir.save(result.model, dst)
        details = {
            "ratio": graph_pass.ratio,
            "blocks": len(names),
            "split_channels": sum(graph_pass.split.values()),
            "split_blocks": len(graph_pass.split),
        }
        return result.modified, details

    return step


def smooth_step(feeds: list[dict]) -> Step:
    def step(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
        model = ir.load(src)
        ranges = activation_ranges(src, feeds, list(smoothable(model.graph)))
        graph_pass = SmoothActivationsPass(ranges)
        result = graph_pass(model)
        ir.save(result.model, dst)
        details = {
            "alpha": graph_pass.alpha,
            "calibration_samples": len(feeds),
            "smoothed": len(graph_pass.smoothed),
        }
        return result.modified, details

    return step


def calibration_feeds(export_dir: str | Path, calibration: str | Path) -> list[dict]:
    """Feeds from a text file (one sentence per line) or a directory of images."""
    path = Path(calibration)
    if not path.exists():
        raise UsageError(f"Calibration data {path} does not exist.")
    directory = ExportDirectory(export_dir)
    if len(directory.manifest.graphs) > 1:
        raise UsageError(
            f"Calibration inputs feed single-graph exports, and {directory.path} has "
            f"{len(directory.manifest.graphs)} graphs "
            f"({', '.join(g.name for g in directory.manifest.graphs)}); quantize it without "
            "--calibration (int8-dynamic, or int4-weight with rtn or hqq)."
        )
    if path.is_dir():
        items = sorted(str(p) for p in path.iterdir() if p.is_file())
    else:
        items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        items = [line for line in items if line]
    if not items:
        raise UsageError(f"Calibration data {path} is empty.")
    return [prepare_inputs(directory, [item])[0] for item in items]

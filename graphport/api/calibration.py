"""Calibration inputs for the quantizers, and the fp32 steps that measure activations on
them (split-outliers, smooth-activations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from graphport.api.evaluate_data import default_data
from graphport.api.steps import Step
from graphport.errors import UsageError
from graphport.graphs.outliers import SplitOutliersPass, feed_forward_blocks
from graphport.graphs.smooth import SmoothActivationsPass, activation_ranges, smoothable
from graphport.manifest import ExportDirectory
from graphport.runtimes.model import empty_past
from graphport.runtimes.predict import prepare_inputs

# Paragraphs of the built-in text a calibration without --calibration reads.
DEFAULT_SAMPLES = 64


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


def calibration_feeds(export_dir: str | Path, calibration: str | Path | None) -> list[dict]:
    """Feeds from a text file (one sentence per line), a directory of images, or (None)
    the built-in text: the last ``DEFAULT_SAMPLES`` paragraphs of the English prose
    ``graphport evaluate`` reads by default (api/evaluate_data.py). The last, because an
    evaluation with a token limit reads the first: calibration and evaluation data stay
    apart. A decoder's feeds start with an empty KV cache."""
    directory = ExportDirectory(export_dir)
    if len(directory.manifest.graphs) > 1:
        raise UsageError(
            f"Calibration inputs feed single-graph exports, and {directory.path} has "
            f"{len(directory.manifest.graphs)} graphs "
            f"({', '.join(g.name for g in directory.manifest.graphs)}); quantize it without "
            "--calibration (int8-dynamic, or int4-weight with rtn or hqq)."
        )
    if calibration is None:
        items = default_data().columns["text"][-DEFAULT_SAMPLES:]
    else:
        path = Path(calibration)
        if not path.exists():
            raise UsageError(f"Calibration data {path} does not exist.")
        if path.is_dir():
            items = sorted(str(p) for p in path.iterdir() if p.is_file())
        else:
            items = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            items = [line for line in items if line]
        if not items:
            raise UsageError(f"Calibration data {path} is empty.")
    return [_with_past(directory, prepare_inputs(directory, [item])[0]) for item in items]


def _with_past(directory: ExportDirectory, feeds: dict[str, np.ndarray]) -> dict:
    """A decoder's feeds completed as a first forward call: positions from 0 and an empty
    KV cache (the tokenizer gives ids and mask only)."""
    names = {t.name for t in directory.manifest.graphs[0].inputs}
    contract = directory.manifest.kv_cache
    ids = feeds.get("input_ids")
    if ids is None:
        return feeds
    if "position_ids" in names and "position_ids" not in feeds:
        positions = np.arange(ids.shape[1], dtype=np.int64)
        feeds["position_ids"] = np.broadcast_to(positions, ids.shape).copy()
    if contract and any(n.startswith("past_key_values") for n in names):
        feeds.update({k: v for k, v in empty_past(contract, ids.shape[0]).items() if k in names})
    return feeds

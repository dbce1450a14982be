"""``graphport quantize --mode auto``: the fastest int4 export within an accuracy budget.

Rules:

1. The candidates are a small fixed set of int4-weight configurations (method, block
   size, an int8 lm_head, a share of layers kept in int8 by sensitivity), ``CANDIDATES``;
   the caller may pass its own.
2. Each candidate is quantized into a scratch directory beside DST by ``quantize_export``
   (so checked against eager with its own int4 weights); a candidate that fails is a row
   with its reason, not the end of the search.
3. All candidates are evaluated in one ``graphport evaluate`` run (eager once, the same
   batches for each) on the evaluation data (default: the built-in English text, the
   first ``limit`` tokens; the built-in calibration reads its last paragraphs). The loss
   is the relative change of the task's first absolute metric against eager, in its bad
   direction (perplexity up, accuracy down).
4. Speed is each export's forward-pass seconds in that same run, side by side; the
   fastest candidate within the budget is moved to DST. When none is within it, DST is
   not written and ``BudgetError`` names the best loss reached (exit code 1).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphport.api.evaluate import evaluate
from graphport.api.quantize import quantize_export
from graphport.errors import BudgetError, GraphportError, UsageError
from graphport.manifest import ExportDirectory, check_output_path, move_into_place
from graphport.validators.evaluation import EvalReport, Metric
from graphport.validators.reference import load_reference

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One int4-weight configuration the search tries."""

    method: str
    block_size: int
    int8_head: bool = False
    ratio: float = 1.0

    @property
    def name(self) -> str:
        parts = [self.method, f"block {self.block_size}"]
        if self.int8_head:
            parts.append("int8 head")
        if self.ratio < 1.0:
            parts.append(f"{self.ratio:.0%} int4")
        return ", ".join(parts)


# Rule 1: the fast data-free rounding first, then the calibrated methods, then int8 layers.
CANDIDATES = (
    Candidate("rtn", 128),
    Candidate("rtn", 32),
    Candidate("awq+scale-estimation", 128),
    Candidate("awq+scale-estimation", 32),
    Candidate("awq+scale-estimation", 32, int8_head=True),
    Candidate("awq+scale-estimation", 32, int8_head=True, ratio=0.8),
)


@dataclasses.dataclass
class Trial:
    """A candidate's outcome: its metric, loss against eager and seconds, or why it failed."""

    candidate: Candidate
    value: float | None = None
    loss: float | None = None
    seconds: float | None = None
    error: str | None = None
    within: bool = False
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.candidate),
            "name": self.candidate.name,
            "value": self.value,
            "loss": self.loss,
            "seconds": self.seconds,
            "error": self.error,
            "within_budget": self.within,
            "chosen": self.chosen,
        }


@dataclasses.dataclass
class AutoResult:
    """The search: every trial, the metric judged, eager's value, and the export kept."""

    path: Path
    metric: str
    eager: float
    max_metric_loss: float
    trials: list[Trial]
    evaluation: EvalReport | None

    @property
    def chosen(self) -> Trial | None:
        return next((t for t in self.trials if t.chosen), None)

    def table(self) -> str:
        width = max(len("configuration"), *(len(t.candidate.name) for t in self.trials))
        lines = [
            f"{'configuration':<{width}} {self.metric:>12} {'loss':>8} {'seconds':>8}  verdict",
            f"{'eager':<{width}} {self.eager:>12.4f}",
        ]
        for trial in self.trials:
            name = trial.candidate.name
            if trial.error is not None:
                lines.append(f"{name:<{width}} failed: {trial.error}")
                continue
            verdict = "chosen" if trial.chosen else "within" if trial.within else "over"
            lines.append(
                f"{name:<{width}} {trial.value:>12.4f} {trial.loss:>8.2%} "
                f"{trial.seconds:>8.2f}  {verdict}"
            )
        lines.append(f"budget: {self.metric} loss at most {self.max_metric_loss:.2%}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "metric": self.metric,
            "eager": self.eager,
            "max_metric_loss": self.max_metric_loss,
            "trials": [t.to_dict() for t in self.trials],
        }


def parse_budget(text: str | float) -> float:
    """``2%`` or ``0.02`` -> 0.02: the largest relative metric loss accepted."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(
            f"The metric loss budget {raw!r} is not a number; pass e.g. 2% or 0.02."
        ) from None
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise UsageError(f"The metric loss budget must lie in [0%, 100%), not {raw}.")
    return value


def quantize_auto(
    src: str | Path,
    dst: str | Path,
    max_metric_loss: float | str = 0.02,
    calibration: str | Path | None = None,
    data: str | Path | None = None,
    limit: int | None = 4096,
    candidates: Sequence[Candidate] | None = None,
    overwrite: bool = False,
    reference: Any = None,
) -> AutoResult:
    """Try each of ``candidates`` on export SRC, evaluate them against eager on ``data``
    (``limit`` tokens or rows) and keep in DST the fastest whose metric loss is at most
    ``max_metric_loss`` (a fraction, or text such as ``"2%"``). ``calibration`` feeds the
    calibrated methods (default: the built-in text); ``candidates`` default to
    ``CANDIDATES``."""
    budget = parse_budget(max_metric_loss)
    dst = Path(dst)
    check_output_path(dst, overwrite)
    candidates = CANDIDATES if candidates is None else tuple(candidates)
    if not candidates:
        raise UsageError("Pass at least one candidate configuration to search.")
    if reference is None:  # one eager model checks every candidate
        reference = load_reference(ExportDirectory(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.auto-", dir=dst.parent) as scratch:
        trials, paths = _quantize_all(src, Path(scratch), candidates, calibration, reference)
        if not paths:
            reasons = "; ".join(f"{t.candidate.name}: {t.error}" for t in trials)
            raise BudgetError(f"No int4 configuration could be written ({reasons}).")
        report = evaluate(list(paths.values()), data=data, limit=limit)
        metric = _judged_metric(report.metrics)
        eager = report.rows[0].values[metric.name]
        for trial in trials:
            if trial.error is None:
                row = report.row(str(paths[trial.candidate]))
                trial.value = row.values[metric.name]
                trial.loss = _loss(metric, eager, trial.value)
                trial.seconds = row.seconds
                trial.within = trial.loss <= budget
        result = AutoResult(dst, metric.name, eager, budget, trials, report)
        within = [t for t in trials if t.within]
        if not within:
            best = min((t for t in trials if t.loss is not None), key=lambda t: t.loss)
            raise BudgetError(
                f"No int4 configuration of {src} keeps the {metric.name} loss within "
                f"{budget:.2%}; the best reached {best.loss:.2%} ({best.candidate.name}): "
                "raise --max-metric-loss, or keep more layers in int8.",
                result,
            )
        chosen = min(within, key=lambda t: t.seconds)
        chosen.chosen = True
        _name_destination(paths[chosen.candidate], dst)
        move_into_place(paths[chosen.candidate], dst)
    logger.info("Kept %s (%s loss %.2f%%)", chosen.candidate.name, metric.name, chosen.loss * 100)
    return result


def _quantize_all(
    src: str | Path,
    scratch: Path,
    candidates: Sequence[Candidate],
    calibration: str | Path | None,
    reference: Any,
) -> tuple[list[Trial], dict[Candidate, Path]]:
    """Each candidate quantized into ``scratch`` (rule 2)."""
    trials, paths = [], {}
    for index, candidate in enumerate(candidates):
        trial = Trial(candidate)
        trials.append(trial)
        path = scratch / f"candidate-{index}"
        logger.info("Trying int4 %s", candidate.name)
        try:
            quantize_export(
                src,
                path,
                "int4-weight",
                calibration,
                candidate.block_size,
                candidate.method,
                runtimes=["onnxruntime"],
                reference=reference,
                ratio=candidate.ratio,
                int8_head=candidate.int8_head,
            )
        except GraphportError as e:
            trial.error = str(e).splitlines()[0]
            continue
        paths[candidate] = path
    return trials, paths


def _name_destination(path: Path, dst: Path) -> None:
    """The kept candidate's parity report names DST, where it goes, not its scratch."""
    report = path / "parity.json"
    if report.exists():
        data = json.loads(report.read_text())
        data["export_dir"] = str(dst)
        report.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def _judged_metric(metrics: Sequence[Metric]) -> Metric:
    """The first metric with a value of its own (perplexity, accuracy), else the first."""
    return next((m for m in metrics if not m.against_eager), metrics[0])


def _loss(metric: Metric, eager: float, value: float) -> float:
    """The relative change from ``eager`` to ``value`` in the metric's bad direction."""
    worse = eager - value if metric.higher_is_better else value - eager
    return worse / abs(eager) if eager else worse

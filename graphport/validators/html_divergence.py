"""The localisation sections of the HTML parity report, as data.

A report written with ``--localize`` matches the graph's intermediate tensors to the eager
model's modules. From it the page shows (``templates/report.html.j2``):

1. The first divergent module: the one most failing (runtime, case) results name first,
   with every failing result's row (``divergence``); for a passing report, the module
   with the largest error instead, where a user would look first to keep a layer in float.
2. One chart per localised (runtime, case) of each matched module's error
   (``figures``; the geometry comes from ``graphport.validators.chart``).
3. The counts of matched modules (``localised``).

Every localisation field is optional: a report without them gives an empty section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from graphport.validators.chart import ONE_MINUS_COSINE, Chart, error_chart


@dataclasses.dataclass
class LargestError:
    """For a passing localised report: the module with the largest error."""

    layer: Mapping[str, Any]
    metric: str
    error: float
    where: str


@dataclasses.dataclass
class Divergence:
    """The first divergent module: the one most failing results name, with every failing
    result's row; ``module`` None when no failing result names one (then ``why`` says
    why: ``passed``, ``unmatched`` or ``not localised``)."""

    module: str | None = None
    first: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    count: int = 0
    rows: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = dataclasses.field(
        default_factory=list
    )
    why: str = ""
    largest: LargestError | None = None


@dataclasses.dataclass
class Figure:
    """One localised (runtime, case): its chart (None: every value is 0) and its rows."""

    runtime: str
    case: str
    chart: Chart | None
    layers: list[Mapping[str, Any]]
    failing: int
    open: bool  # shown, not folded: the runtime's first failing case, else its first


def localised(report: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """(matched, modules) over the localised results (empty: not localised; rule 3)."""
    counts = [r["localized"] for r in report.get("results") or [] if r.get("localized")]
    return sorted({(c.get("matched"), c.get("modules")) for c in counts}, key=str)


def divergence(report: Mapping[str, Any]) -> Divergence:
    """The first divergent module (rule 1)."""
    results = report.get("results") or []
    rows = [
        (r, r["first_divergence"]) for r in results if r.get("first_divergence") and not r["passed"]
    ]
    if not rows:
        if report["passed"]:
            return Divergence(why="passed", largest=largest_error(report))
        if any(r.get("localized") for r in results):
            return Divergence(why="unmatched")
        return Divergence(why="not localised")
    # The headline is the module most (runtime, case) results name first.
    tally: dict[str, int] = {}
    for _, d in rows:
        tally[str(d.get("module"))] = tally.get(str(d.get("module")), 0) + 1
    module = max(tally, key=lambda k: tally[k])
    first = next(d for _, d in rows if str(d.get("module")) == module)
    return Divergence(module, first, tally[module], rows)


def largest_error(report: Mapping[str, Any]) -> LargestError | None:
    """For a passing localised report (a quantized export within its budget): the module
    with the largest error, where a user would look first to keep a layer in float."""
    cosine = report.get("cosine") is not None
    key = "cosine" if cosine else "max_abs"
    worst: LargestError | None = None
    for r in report.get("results") or []:
        for layer in r.get("layers") or []:
            if layer.get(key) is None:
                continue
            error = 1.0 - layer[key] if cosine else layer[key]
            if worst is None or error > worst.error:
                metric = ONE_MINUS_COSINE if cosine else "max abs"
                worst = LargestError(layer, metric, error, f"{r['runtime']} / {r['case']}")
    return worst


def figures(report: Mapping[str, Any], metric: str) -> list[Figure]:
    """One chart per localised (runtime, case) (rule 2)."""
    results = [r for r in report.get("results") or [] if r.get("layers")]
    # Cosine-judged (quantized) reports are about direction, so 1 - cosine is their error.
    cosine = report.get("cosine")
    threshold = (1.0 - cosine) if cosine is not None else report.get("atol")
    # One chart open per runtime (its first failing case, else its first case).
    shown: dict[str, Mapping[str, Any]] = {}
    for r in results:
        if r["runtime"] not in shown or (shown[r["runtime"]]["passed"] and not r["passed"]):
            shown[r["runtime"]] = r
    return [
        Figure(
            r["runtime"],
            r["case"],
            error_chart(
                r["layers"], metric, threshold, (r.get("first_divergence") or {}).get("module")
            ),
            r["layers"],
            sum(1 for layer in r["layers"] if not layer.get("passed", True)),
            shown[r["runtime"]] is r,
        )
        for r in results
    ]

"""The data the HTML parity report shows, assembled from the report and the manifest.

``page_data`` turns the JSON form of a ``ParityReport`` (``ParityReport.to_dict()``, or a
``parity.json`` read back) and optionally the export's manifest into a ``Page``: the
verdict, the export, the failures, the runtime x case matrix, every output's differences,
the generation checks and the graph passes with their parity; the localisation sections
(first divergent module, per-module charts) come from
``graphport.validators.html_divergence``. ``graphport.validators.html`` renders the page.

Verdicts are the report's own (``passed`` of the report, each result, output and
generation check), never judged again here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphport.errors import UsageError
from graphport.validators.chart import FAIL_COLOUR, ONE_MINUS_COSINE, PASS_COLOUR
from graphport.validators.html_divergence import (
    Divergence,
    Figure,
    divergence,
    figures,
    localised,
)

# Keys of a pass record shown in their own columns; the others are the pass's details.
PASS_COLUMNS = ("name", "modified", "seconds", "budget", "parity")


@dataclasses.dataclass(frozen=True)
class Column:
    """A measure of ``OutputDiff`` in the outputs table: its header, its key in the
    report's data (the attribute's name) and its number format."""

    header: str
    key: str
    spec: str = ".2e"
    title: str | None = None  # on hover over the header


# The outputs table's measures, in order: a new OutputDiff measure is one line here.
OUTPUT_COLUMNS = (
    Column("max abs", "max_abs"),
    Column("mean abs", "mean_abs"),
    Column("max rel", "max_rel"),
    Column(
        "padding max abs", "padding_max_abs", title="differences at padding positions, not judged"
    ),
    Column("min cosine", "min_cosine", ".6f"),
    Column("max / rms", "norm_max", title="largest difference in units of the output's RMS"),
    Column(
        "max KL",
        "kl_max",
        title="logits: largest KL divergence of eager's next-token distribution from the graph's",
    ),
    Column(
        "top-1",
        "top1_agreement",
        ".1%",
        title="logits: share of positions whose top token is eager's (teacher-forced)",
    ),
)


@dataclasses.dataclass
class Failure:
    """One line of the failures list, as ``ParityReport.failures()`` words it."""

    what: str
    where: str | None = None  # shown in bold before ``what``


@dataclasses.dataclass
class Cell:
    """A (runtime, case) result in the matrix."""

    passed: bool
    error: str | None
    max_abs: float | None
    min_cosine: float | None


@dataclasses.dataclass
class Matrix:
    runtimes: list[str]
    cases: list[str]
    cells: dict[tuple[str, str], Cell]


@dataclasses.dataclass
class OutputRow:
    """A row of the outputs table: one output, or a result that has none (``error``)."""

    runtime: str
    case: str
    passed: bool
    output: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    shape: str = ""
    tolerance: str = ""
    error: str | None = None


@dataclasses.dataclass
class GenerationRow:
    runtime: str
    case: str
    tokens: str
    result: str
    passed: bool


@dataclasses.dataclass
class PassRow:
    name: Any
    modified: Any
    seconds: Any
    budget: list[tuple[str, Any]]
    passed: bool | None
    worst: list[tuple[str, Mapping[str, Any]]]
    details: list[tuple[str, str]]


@dataclasses.dataclass
class Page:
    """Everything the template shows, assembled from the report and the manifest."""

    report: Mapping[str, Any]
    manifest: Mapping[str, Any] | None
    heading: str
    passed: bool
    title: str
    graph: str
    summary: str
    failures: list[Failure]
    divergence: Divergence
    matrix: Matrix | None
    metric: str
    figures: list[Figure]
    outputs: list[OutputRow]
    generation: list[GenerationRow]
    passes: list[PassRow] | None  # None: no manifest to read them from
    localised: list[tuple[Any, Any]]  # (matched, modules) of the localised results
    columns: tuple[Column, ...]  # the outputs table's measures
    pass_colour: str = PASS_COLOUR
    fail_colour: str = FAIL_COLOUR

    @property
    def source(self) -> dict[str, Any] | None:
        """The checkpoint, shown by its name (the whole path on hover): reports get
        shared, and the directory layout of the machine that exported it is noise."""
        source = (self.manifest or {}).get("source") or {}
        if not source:
            return None
        model = str(source.get("model") or source.get("path") or "")
        shown = Path(model).name if Path(model).is_absolute() else model
        sha = source.get("weights_sha256")
        return {"model": model, "shown": shown, "sha": sha[:12] if sha else None}


def number(value: Any, spec: str = ".2e") -> str:
    """A number in ``spec`` (None or not finite: an en dash)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format(value, spec)


def compact(value: Any, limit: int = 220) -> str:
    """Text or JSON data in at most ``limit`` characters (an ellipsis ends a cut)."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _require_verdicts(report: Mapping[str, Any]) -> None:
    """Refuse data without the verdicts ``ParityReport.to_dict()`` writes."""
    results = report.get("results") or []
    unjudged = (
        "passed" not in report
        or any("passed" not in r for r in results)
        or any("passed" not in o for r in results for o in r.get("outputs") or [])
        or any("passed" not in g for g in report.get("generation") or [])
    )
    if unjudged:
        raise UsageError(
            "The parity report carries no verdict for each result and output (it was written "
            "by an older graphport); validate the export again to render its HTML page."
        )


# ---- sections ------------------------------------------------------------------------------


def _header(report: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> tuple[str, ...]:
    """(title, graph line, summary) of the page's header."""
    results = report.get("results") or []
    failing = [r for r in results if not r["passed"]]
    source = (manifest or {}).get("source", {})
    model = source.get("model_type") or "export"
    architectures = ", ".join(source.get("architectures") or [])
    title = f"{model} ({architectures})" if architectures else model
    if report["passed"]:
        summary = f"All {len(results)} runtime × case results within tolerance"
    elif failing:
        summary = f"{len(failing)} of {len(results)} runtime × case results out of tolerance"
    else:
        summary = "The export does not meet its contract"
    graph = [report.get("task")]
    if manifest:
        graph += [f"{manifest.get('format')} {manifest.get('dtype')}"]
        graph += [f"opset {manifest['opset']}"] if manifest.get("opset") else []
        count = len(manifest.get("passes") or [])
        graph += [f"{count} graph pass{'es' if count > 1 else ''}"] if count else []
    return title, " · ".join(str(g) for g in graph), summary


def _failures(report: Mapping[str, Any]) -> list[Failure]:
    """One line per failure, as ``ParityReport.failures()`` words them."""
    lines = [Failure(p) for p in report.get("contract_problems") or []]
    for r in report.get("results") or []:
        where = f"{r['runtime']} / {r['case']}"
        if r.get("error"):
            lines.append(Failure(r["error"], where))
        for o in r.get("outputs") or []:
            if o["passed"]:
                continue
            what = o.get("failure") or o.get("problem") or "outside tolerance"
            lines.append(Failure(what, f"{where} / {o['name']}"))
    for g in report.get("generation") or []:
        if not g["passed"]:
            step = g.get("first_difference")
            why = g.get("error") or f"tokens differ from transformers' generate() from step {step}"
            lines.append(Failure(why, f"{g['runtime']} / generation {g['case']}"))
    for c in report.get("cross_runtime") or []:
        if not c.get("passed", True):
            lines.append(
                Failure(
                    f"the runtimes disagree by max abs {number(c.get('max_abs'), '.3g')}",
                    f"{c.get('a')} vs {c.get('b')} / {c.get('case')}",
                )
            )
    return lines


def _matrix(report: Mapping[str, Any]) -> Matrix | None:
    results = report.get("results") or []
    if not results:
        return None
    cells = {}
    for r in results:
        outputs = r.get("outputs") or []
        abs_values = [o["max_abs"] for o in outputs if o.get("max_abs") is not None]
        cosines = [o["min_cosine"] for o in outputs if o.get("min_cosine") is not None]
        cells[r["runtime"], r["case"]] = Cell(
            r["passed"],
            r.get("error"),
            max(abs_values) if abs_values else None,
            min(cosines) if cosines else None,
        )
    return Matrix(
        list(dict.fromkeys(r["runtime"] for r in results)),
        list(dict.fromkeys(r["case"] for r in results)),
        cells,
    )


def _outputs(report: Mapping[str, Any]) -> list[OutputRow]:
    rows = []
    for r in report.get("results") or []:
        if r.get("error"):
            rows.append(OutputRow(r["runtime"], r["case"], False, error=r["error"]))
        for o in r.get("outputs") or []:
            tolerance = (
                f"cos ≥ {number(o['cosine'], 'g')}"
                if o.get("cosine") is not None
                else f"atol {number(o.get('atol'), 'g')}"
                + (f" rtol {number(o['rtol'], 'g')}" if o.get("rtol") else "")
                + (f" + {number(o['norm_tol'], 'g')}×rms" if o.get("norm_tol") else "")
            )
            shape = "×".join(str(d) for d in o.get("expected_shape") or [])
            rows.append(OutputRow(r["runtime"], r["case"], o["passed"], o, shape, tolerance))
    return rows


def _generation(report: Mapping[str, Any]) -> list[GenerationRow]:
    rows = []
    for g in report.get("generation") or []:
        expected = g.get("expected") or []
        tokens = f"{len(expected)} × {len(expected[0]) if expected else 0}"
        step = g.get("first_difference")
        result = (
            g["error"]
            if g.get("error")
            else "identical"
            if step is None
            else f"differs from step {step}"
        )
        rows.append(GenerationRow(g.get("runtime"), g.get("case"), tokens, result, g["passed"]))
    return rows


def _passes(manifest: Mapping[str, Any] | None) -> list[PassRow] | None:
    if manifest is None:
        return None
    rows = []
    for record in manifest.get("passes") or []:
        parity = record.get("parity") or {}
        rows.append(
            PassRow(
                record.get("name"),
                record.get("modified"),
                record.get("seconds"),
                [(k.replace("_", " "), v) for k, v in (record.get("budget") or {}).items()],
                parity.get("passed"),
                [
                    (runtime, worst)
                    for runtime, worst in parity.items()
                    if runtime != "passed" and isinstance(worst, Mapping)
                ],
                [(k, compact(v)) for k, v in record.items() if k not in PASS_COLUMNS],
            )
        )
    return rows


# ---- the page ------------------------------------------------------------------------------


def page_data(
    report: Mapping[str, Any], manifest: Mapping[str, Any] | None = None, title: str | None = None
) -> Page:
    """What the page shows, from the report (``ParityReport.to_dict()``) and manifest."""
    _require_verdicts(report)
    passed = bool(report["passed"])
    metric = ONE_MINUS_COSINE if report.get("cosine") is not None else "max abs"
    heading, graph, summary = _header(report, manifest)
    return Page(
        report=report,
        manifest=manifest,
        heading=title or f"graphport parity report: {'PASS' if passed else 'FAIL'}",
        passed=passed,
        title=heading,
        graph=graph,
        summary=summary,
        failures=_failures(report),
        divergence=divergence(report),
        matrix=_matrix(report),
        metric=metric,
        figures=figures(report, metric),
        outputs=_outputs(report),
        generation=_generation(report),
        passes=_passes(manifest),
        localised=localised(report),
        columns=OUTPUT_COLUMNS,
    )

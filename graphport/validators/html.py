"""A parity report as one self-contained static HTML file.

``render_html`` turns the JSON form of a ``ParityReport`` (``ParityReport.to_dict()``, or
a ``parity.json`` read back) and optionally the export's manifest into one page: the
verdict, the export, the runtime x case matrix, the first divergent module and a
per-layer error chart (when the report was localised), every output's differences, the
runtimes against each other, and the graph passes with their parity. Every localisation
field is optional, so reports written without ``--localize`` render too.

This module only assembles the data the page shows (``Page``); the markup is the jinja2
template ``templates/report.html.j2`` (autoescaped: text from a report is never markup)
and the chart's geometry comes from ``graphport.validators.chart``. Verdicts are the
report's own (``passed`` of the report, each result, output and generation check), never
judged again here.

The page loads nothing: inline CSS, inline SVG, no scripts, no fonts, and a content
security policy that forbids the browser to fetch anything, so it can be mailed, attached
to CI runs or opened offline.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from graphport.errors import UsageError
from graphport.manifest import MANIFEST_NAME
from graphport.validators.chart import (
    FAIL_COLOUR,
    ONE_MINUS_COSINE,
    PASS_COLOUR,
    Chart,
    error_chart,
)

logger = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
MAX_FAILURES = 12  # lines in the failures list; the rest are counted

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
class Figure:
    """One localised (runtime, case): its chart (None: every value is 0) and its rows."""

    runtime: str
    case: str
    chart: Chart | None
    layers: list[Mapping[str, Any]]
    failing: int
    open: bool  # shown, not folded: the runtime's first failing case, else its first


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


def _num(value: Any, spec: str = ".2e") -> str:
    """A number in ``spec`` (None or not finite: an en dash)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format(value, spec)


def _px(value: float) -> str:
    """An SVG coordinate: one decimal for computed ones, integers as they are."""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _finalize(value: Any) -> Any:
    """Every ``{{ }}`` of the template: None shows as an en dash, and text is escaped
    with ``html.escape`` (the entities the page always had, ``&quot;`` among them)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("–" if value is None else str(value), quote=True))


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("graphport.validators", "templates"),
        autoescape=True,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = _num
    env.filters["px"] = _px
    env.filters["compact"] = _compact
    return env


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


def _localised(report: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """(matched, modules) over the localised results (empty: not localised)."""
    counts = [r["localized"] for r in report.get("results") or [] if r.get("localized")]
    return sorted({(c.get("matched"), c.get("modules")) for c in counts}, key=str)


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
                    f"the runtimes disagree by max abs {_num(c.get('max_abs'), '.3g')}",
                    f"{c.get('a')} vs {c.get('b')} / {c.get('case')}",
                )
            )
    return lines


def _divergence(report: Mapping[str, Any]) -> Divergence:
    results = report.get("results") or []
    rows = [
        (r, r["first_divergence"]) for r in results if r.get("first_divergence") and not r["passed"]
    ]
    if not rows:
        if report["passed"]:
            return Divergence(why="passed", largest=_largest_error(report))
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


def _largest_error(report: Mapping[str, Any]) -> LargestError | None:
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


def _figures(report: Mapping[str, Any], metric: str) -> list[Figure]:
    localised = [r for r in report.get("results") or [] if r.get("layers")]
    # Cosine-judged (quantized) reports are about direction, so 1 - cosine is their error.
    cosine = report.get("cosine")
    threshold = (1.0 - cosine) if cosine is not None else report.get("atol")
    # One chart open per runtime (its first failing case, else its first case).
    shown: dict[str, Mapping[str, Any]] = {}
    for r in localised:
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
        for r in localised
    ]


def _outputs(report: Mapping[str, Any]) -> list[OutputRow]:
    rows = []
    for r in report.get("results") or []:
        if r.get("error"):
            rows.append(OutputRow(r["runtime"], r["case"], False, error=r["error"]))
        for o in r.get("outputs") or []:
            tolerance = (
                f"cos ≥ {_num(o['cosine'], 'g')}"
                if o.get("cosine") is not None
                else f"atol {_num(o.get('atol'), 'g')}"
                + (f" rtol {_num(o['rtol'], 'g')}" if o.get("rtol") else "")
                + (f" + {_num(o['norm_tol'], 'g')}×rms" if o.get("norm_tol") else "")
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


def _compact(value: Any, limit: int = 220) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
                [(k, _compact(v)) for k, v in record.items() if k not in PASS_COLUMNS],
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
        divergence=_divergence(report),
        matrix=_matrix(report),
        metric=metric,
        figures=_figures(report, metric),
        outputs=_outputs(report),
        generation=_generation(report),
        passes=_passes(manifest),
        localised=_localised(report),
        columns=OUTPUT_COLUMNS,
    )


def render_html(
    report: Mapping[str, Any],
    manifest: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> str:
    """The report (``ParityReport.to_dict()``) as one self-contained HTML page.

    ``manifest`` (``Manifest.to_dict()``) adds the export's source, format, versions and
    graph passes; without it the page shows what the report holds.
    """
    page = page_data(report, manifest, title)
    return _environment().get_template(TEMPLATE).render(page=page, max_failures=MAX_FAILURES)


def check_html_path(path: str | Path) -> Path:
    """Refuse an HTML report path that cannot be written, before any long work."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(
            f"HTML report path {path} is a directory; pass a file path, such as "
            f"{path / 'parity.html'}."
        )
    if not path.parent.is_dir():
        raise UsageError(
            f"Cannot write the HTML report to {path}: directory {path.parent} does not exist; "
            "create it or choose another path."
        )
    return path


def load_manifest(export_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of ``export_dir`` as JSON data, or None when there is none to read."""
    path = Path(export_dir) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_html(report: Any, path: str | Path, manifest: Mapping[str, Any] | None = None) -> Path:
    """Render ``report`` (a ``ParityReport`` or its ``to_dict()``) into the file ``path``.

    The manifest defaults to the one in the report's export directory. The page is written
    to a temporary file beside ``path`` and renamed over it, so ``path`` is either the old
    file or the whole new page, never half of one.
    """
    path = check_html_path(path)
    data = report.to_dict() if hasattr(report, "to_dict") else report
    if manifest is None and data.get("export_dir"):
        manifest = load_manifest(data["export_dir"])
    page = render_html(data, manifest)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    scratch = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        scratch.chmod(0o644)  # mkstemp makes it private; a report is an ordinary file
        scratch.replace(path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    logger.info("Wrote the HTML parity report to %s", path)
    return path

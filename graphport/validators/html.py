"""A parity report as one self-contained static HTML file.

``render_html`` turns the JSON form of a ``ParityReport`` (``ParityReport.to_dict()``, or
a ``parity.json`` read back) and optionally the export's manifest into one page: the
verdict, the export, the runtime x case matrix, the first divergent module and a
per-layer error chart (when the report was localised), every output's differences, the
runtimes against each other, and the graph passes with their parity. Every localisation
field is optional, so reports written without ``--localize`` render too.

The page loads nothing: inline CSS, inline SVG, no scripts, no fonts, and a content
security policy that forbids the browser to fetch anything, so it can be mailed, attached
to CI runs or opened offline. It is built with ``html.escape`` and f-strings rather than a
template engine or a plotting library: a handful of tables and one bar chart do not
justify a dependency, and every piece of text from the report goes through ``_e``.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graphport.errors import UsageError
from graphport.manifest import MANIFEST_NAME

logger = logging.getLogger(__name__)

PASS_COLOUR = "#3f7fbf"
FAIL_COLOUR = "#d64541"

# Chart geometry (SVG user units; the SVG scales to the page width).
CHART_WIDTH, CHART_HEIGHT = 1100, 300
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 64, 84, 44, 48

# Keys of a pass record shown in their own columns; the others are the pass's details.
PASS_COLUMNS = ("name", "modified", "seconds", "budget", "parity")

CSS = """
:root { --pass: #1e7b4a; --fail: #c0392b; --ink: #1d2330; --muted: #5c6677;
        --line: #dfe3ea; --bg: #f5f6f8; --card: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
       Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
header { display: flex; align-items: center; gap: 24px; margin-bottom: 16px; }
header h1 { font-size: 22px; margin: 0; }
header .sub { color: var(--muted); margin-top: 2px; }
.verdict { font-size: 30px; font-weight: 800; letter-spacing: .06em; color: #fff;
           padding: 10px 26px; border-radius: 10px; min-width: 130px; text-align: center; }
.verdict.pass { background: var(--pass); }
.verdict.fail { background: var(--fail); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
          padding: 14px 18px; margin: 14px 0; }
h2 { font-size: 16px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
p { margin: 6px 0; }
.muted { color: var(--muted); }
dl.info { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 0; }
dl.info dt { color: var(--muted); }
dl.info dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; background: #fafbfc; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.nw { white-space: nowrap; }
td.mono { overflow-wrap: anywhere; }
td.nw.mono { overflow-wrap: normal; }
.matrix th:first-child { width: 150px; }
tr.bad td { background: #fdf0ef; }
.ok { color: var(--pass); font-weight: 700; }
.no { color: var(--fail); font-weight: 700; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
              font-size: 12.5px; }
ul.failures { margin: 0; padding-left: 20px; }
ul.failures li { margin: 2px 0; }
.matrix td.cell { text-align: center; border-radius: 6px; border: 3px solid var(--card);
                  font-variant-numeric: tabular-nums; }
.matrix td.cell.pass { background: #e3f3ea; }
.matrix td.cell.fail { background: #fbe2df; }
.matrix td.cell.none { background: #f0f1f3; color: var(--muted); }
.matrix .mark { font-weight: 800; font-size: 15px; }
.matrix .fig { font-size: 12px; color: var(--muted); display: block; }
.divergence { border-left: 5px solid var(--fail); padding: 6px 12px; background: #fdf4f3;
              border-radius: 4px; margin: 6px 0 10px; }
.divergence .module { font-size: 17px; font-weight: 700; }
figure { margin: 8px 0 4px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 2px; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
details { margin: 6px 0; }
summary { cursor: pointer; color: var(--muted); }
.legend span { display: inline-block; width: 11px; height: 11px; border-radius: 2px;
               margin: 0 4px 0 12px; vertical-align: -1px; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 18px; }
"""


def _e(value: Any) -> str:
    """Escaped text of any value (None: an en dash)."""
    return "–" if value is None else html.escape(str(value), quote=True)


def _num(value: Any, spec: str = ".2e") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    return format(value, spec)


def _yes(passed: bool | None) -> str:
    if passed is None:
        return '<span class="muted">–</span>'
    return '<span class="ok">yes</span>' if passed else '<span class="no">NO</span>'


def output_passed(output: Mapping[str, Any]) -> bool:
    """An output's verdict from its JSON form (``OutputDiff.passed``)."""
    if "passed" in output:
        return bool(output["passed"])
    return output.get("problem") is None and not output.get("mismatched")


def result_passed(result: Mapping[str, Any]) -> bool:
    """A (runtime, case) result's verdict from its JSON form (``CaseResult.passed``)."""
    if "passed" in result:
        return bool(result["passed"])
    return result.get("error") is None and all(output_passed(o) for o in result["outputs"])


def _generation_first_difference(check: Mapping[str, Any]) -> int | None:
    """``GenerationCheck.first_difference`` from its JSON form."""
    if check.get("error"):
        return 0
    expected, actual = check.get("expected") or [], check.get("actual") or []
    width = max([len(row) for row in expected + actual] or [0])
    for step in range(width):
        for want, got in zip(expected, actual, strict=False):
            if (want[step] if step < len(want) else None) != (
                got[step] if step < len(got) else None
            ):
                return step
    return None if len(expected) == len(actual) else 0


def _report_passed(report: Mapping[str, Any]) -> bool:
    if "passed" in report:
        return bool(report["passed"])
    results = report.get("results") or []
    return (
        bool(results)
        and not report.get("contract_problems")
        and all(result_passed(r) for r in results)
        and all(_generation_first_difference(g) is None for g in report.get("generation", []))
    )


# ---- sections ------------------------------------------------------------------------------


def _header(report: Mapping[str, Any], manifest: Mapping[str, Any] | None, passed: bool) -> str:
    results = report.get("results") or []
    failing = [r for r in results if not result_passed(r)]
    source = (manifest or {}).get("source", {})
    model = source.get("model_type") or "export"
    architectures = ", ".join(source.get("architectures") or [])
    title = f"{model} ({architectures})" if architectures else model
    if passed:
        summary = f"All {len(results)} runtime × case results within tolerance"
    elif failing:
        summary = f"{len(failing)} of {len(results)} runtime × case results out of tolerance"
    else:
        summary = "The export does not meet its contract"
    verdict = "PASS" if passed else "FAIL"
    graph = [report.get("task")]
    if manifest:
        graph += [f"{manifest.get('format')} {manifest.get('dtype')}"]
        graph += [f"opset {manifest['opset']}"] if manifest.get("opset") else []
        count = len(manifest.get("passes") or [])
        graph += [f"{count} graph pass{'es' if count > 1 else ''}"] if count else []
    return (
        f'<header><div id="verdict" class="verdict {verdict.lower()}">{verdict}</div>'
        f"<div><h1>Parity report: {_e(title)}</h1>"
        f'<div class="sub">{_e(" · ".join(str(g) for g in graph))}</div>'
        f'<div class="sub">{_e(summary)} against '
        f"{_e(report.get('reference', 'the eager model'))}</div></div></header>"
    )


def _info(report: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> str:
    rows: list[tuple[str, str]] = []
    m = manifest or {}
    source = m.get("source", {})
    if source:
        model = str(source.get("model") or source.get("path") or "")
        # A checkpoint path is shown by its name (the whole path on hover): reports get
        # shared, and the directory layout of the machine that exported it is noise.
        shown = Path(model).name if Path(model).is_absolute() else model
        sha = source.get("weights_sha256")
        rows.append(
            (
                "Source",
                f'<span title="{_e(model)}">{_e(shown)}</span>'
                + (f' <span class="muted mono">sha256 {_e(sha[:12])}…</span>' if sha else ""),
            )
        )
    export_dir = str(report.get("export_dir") or "")
    rows.append(("Export", f"<code>{_e(export_dir)}</code>"))
    if m:
        opset = f", opset {m['opset']}" if m.get("opset") else ""
        family = f" · family {_e(m.get('family'))}" if m.get("family") else ""
        rows.append(
            (
                "Graph",
                f"{_e(m.get('format'))}, {_e(m.get('dtype'))}{_e(opset)}{family}"
                + (f" · target {_e(m['target'])}" if m.get("target") else ""),
            )
        )
        exporter = m.get("exporter") or {}
        if exporter.get("strategy"):
            fallback = exporter.get("fallback_reason")
            rows.append(
                (
                    "Exporter",
                    _e(exporter["strategy"]) + (f" (fallback: {_e(fallback)})" if fallback else ""),
                )
            )
    else:
        rows.append(("Graph", _e(report.get("dtype"))))
    tolerance = f"atol {_num(report.get('atol'), 'g')}, rtol {_num(report.get('rtol'), 'g')}"
    if report.get("cosine") is not None:
        tolerance += f"; judged by min cosine ≥ {_num(report['cosine'], 'g')} per output vector"
    per_output = report.get("per_output_atol") or {}
    if per_output:
        tolerance += "; " + ", ".join(f"{_e(k)} atol {_num(v, 'g')}" for k, v in per_output.items())
    rows.append(("Tolerance", tolerance))
    runtimes = report.get("runtimes") or {}
    if runtimes:
        rows.append(("Runtimes", "<br>".join(_e(v) for v in runtimes.values())))
    localized = _localized(report)
    if localized:
        rows.append(("Localised", localized))
    versions = m.get("versions") or {}
    if versions:
        rows.append(("Versions", _e(" · ".join(f"{k} {v}" for k, v in versions.items()))))
    if m.get("created"):
        rows.append(("Exported", _e(m["created"])))
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<section id="export"><h2>Export</h2><dl class="info">{body}</dl></section>'


def _localized(report: Mapping[str, Any]) -> str:
    """'N of M modules matched' over the localised results (empty: not localised)."""
    counts = [r["localized"] for r in report.get("results") or [] if r.get("localized")]
    if not counts:
        return ""
    parts = sorted({(c.get("matched"), c.get("modules")) for c in counts}, key=str)
    return "; ".join(
        f"{_e(matched)} of {_e(modules)} eager modules matched to graph values"
        for matched, modules in parts
    )


def _failures(report: Mapping[str, Any]) -> str:
    """One line per failure, as ``ParityReport.failures()`` words them."""
    lines = [_e(p) for p in report.get("contract_problems") or []]
    for r in report.get("results") or []:
        where = f"{r['runtime']} / {r['case']}"
        if r.get("error"):
            lines.append(f"<b>{_e(where)}</b>: {_e(r['error'])}")
        for o in r.get("outputs") or []:
            if output_passed(o):
                continue
            if o.get("problem"):
                what = o["problem"]
            elif o.get("cosine") is None:
                what = (
                    f"{o.get('mismatched')}/{o.get('total')} values off, max abs diff "
                    f"{_num(o.get('max_abs'), '.3g')} > atol {_num(o.get('atol'), 'g')}"
                )
            else:
                what = (
                    f"{o.get('mismatched')}/{o.get('total')} vectors below cosine "
                    f"{_num(o.get('cosine'), 'g')} (min {_num(o.get('min_cosine'), '.4f')})"
                )
            lines.append(f"<b>{_e(where)} / {_e(o['name'])}</b>: {_e(what)}")
    for g in report.get("generation") or []:
        step = _generation_first_difference(g)
        if step is not None:
            why = g.get("error") or f"tokens differ from transformers' generate() from step {step}"
            lines.append(f"<b>{_e(g['runtime'])} / generation {_e(g['case'])}</b>: {_e(why)}")
    for c in report.get("cross_runtime") or []:
        if not c.get("passed", True):
            lines.append(
                f"<b>{_e(c.get('a'))} vs {_e(c.get('b'))} / {_e(c.get('case'))}</b>: the runtimes "
                f"disagree by max abs {_num(c.get('max_abs'), '.3g')}"
            )
    if not lines:
        return ""
    shown = "".join(f"<li>{line}</li>" for line in lines[:12])
    more = f'<p class="muted">and {len(lines) - 12} more</p>' if len(lines) > 12 else ""
    return (
        f'<section id="failures"><h2>Failures</h2><ul class="failures">{shown}</ul>{more}</section>'
    )


def _first_divergence(report: Mapping[str, Any], passed: bool) -> str:
    rows = [
        (r, r["first_divergence"])
        for r in report.get("results") or []
        if r.get("first_divergence") and not result_passed(r)
    ]
    if not rows:
        if passed:
            text = "None: every output is within tolerance." + _largest_error(report)
        elif any(r.get("localized") for r in report.get("results") or []):
            text = "No matched module leaves tolerance before the outputs do."
        else:
            text = (
                "Not localised: run <code>graphport validate OUT --localize</code> to find "
                "the first PyTorch module whose output leaves tolerance."
            )
        return (
            '<section><h2>First divergent module</h2><p id="first-divergence" class="muted">'
            f"{text}</p></section>"
        )
    # The headline is the module most (runtime, case) results name first.
    tally: dict[str, int] = {}
    for _, d in rows:
        tally[str(d.get("module"))] = tally.get(str(d.get("module")), 0) + 1
    module = max(tally, key=lambda k: tally[k])
    first = next(d for _, d in rows if str(d.get("module")) == module)
    headline = (
        f'<div class="divergence"><div class="module mono">{_e(module)}</div>'
        f'<div class="muted">{_e(first.get("module_type"))} · ONNX node '
        f"<code>{_e(first.get('onnx_node'))}</code> · first divergence in {tally[module]} of "
        f"{len(rows)} failing runtime × case results</div></div>"
    )
    body = "".join(
        f'<tr><td class="nw">{_e(r["runtime"])}</td><td class="nw">{_e(r["case"])}</td>'
        '<td class="mono">'
        f"{_e(d.get('module'))}</td><td>{_e(d.get('module_type'))}</td>"
        f'<td class="mono">{_e(d.get("onnx_node"))}</td>'
        f'<td class="num">{_num(d.get("max_abs"))}</td>'
        f'<td class="num">{_num(d.get("mean_abs"))}</td>'
        f'<td class="num">{_num(d.get("cosine"), ".6f")}</td></tr>'
        for r, d in rows
    )
    return (
        f'<section><h2>First divergent module</h2><div id="first-divergence">{headline}'
        "<table><thead><tr><th>runtime</th><th>case</th><th>module</th><th>type</th>"
        '<th>ONNX node</th><th class="num">max abs</th><th class="num">mean abs</th>'
        f'<th class="num">cosine</th></tr></thead><tbody>{body}</tbody></table></div></section>'
    )


def _largest_error(report: Mapping[str, Any]) -> str:
    """For a passing localised report (a quantized export within its budget): the module
    with the largest error, where a user would look first to keep a layer in float."""
    cosine = report.get("cosine") is not None
    worst, where = None, None
    for r in report.get("results") or []:
        for layer in r.get("layers") or []:
            key = "cosine" if cosine else "max_abs"
            if layer.get(key) is None:
                continue
            error = 1.0 - layer[key] if cosine else layer[key]
            if worst is None or error > worst[0]:
                worst, where = (error, layer), r
    if worst is None or where is None:
        return ""
    error, layer = worst
    metric = "1 − cosine" if cosine else "max abs"
    return (
        f" Largest module error: <code>{_e(layer.get('module'))}</code> "
        f"({_e(layer.get('module_type'))}), {metric} {_num(error, '.3g')} on "
        f"{_e(where['runtime'])} / {_e(where['case'])}."
    )


def _matrix(report: Mapping[str, Any]) -> str:
    results = report.get("results") or []
    if not results:
        return ""
    runtimes = list(dict.fromkeys(r["runtime"] for r in results))
    cases = list(dict.fromkeys(r["case"] for r in results))
    cells = {(r["runtime"], r["case"]): r for r in results}
    head = "".join(f"<th>{_e(c)}</th>" for c in cases)
    rows = []
    for runtime in runtimes:
        tds = []
        for case in cases:
            r = cells.get((runtime, case))
            if r is None:
                tds.append('<td class="cell none">–</td>')
                continue
            ok = result_passed(r)
            outputs = r.get("outputs") or []
            abs_values = [o["max_abs"] for o in outputs if o.get("max_abs") is not None]
            cosines = [o["min_cosine"] for o in outputs if o.get("min_cosine") is not None]
            fig = (
                _e(r["error"][:60])
                if r.get("error")
                else f"max abs {_num(max(abs_values))}"
                if abs_values
                else ""
            )
            if cosines and not r.get("error"):
                fig += f"<br>min cos {_num(min(cosines), '.6f')}"
            tds.append(
                f'<td class="cell {"pass" if ok else "fail"}"><span class="mark">'
                f'{"✓ pass" if ok else "✗ fail"}</span><span class="fig">{fig}</span></td>'
            )
        rows.append(f"<tr><th>{_e(runtime)}</th>{''.join(tds)}</tr>")
    return (
        '<section id="matrix"><h2>Runtime × case</h2><table class="matrix"><thead><tr>'
        f"<th></th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _outputs(report: Mapping[str, Any]) -> str:
    rows = []
    for r in report.get("results") or []:
        if r.get("error"):
            rows.append(
                f'<tr class="bad"><td>{_e(r["runtime"])}</td><td>{_e(r["case"])}</td>'
                f'<td colspan="8">{_e(r["error"])}</td><td>{_yes(False)}</td></tr>'
            )
        for o in r.get("outputs") or []:
            ok = output_passed(o)
            judged = (
                f"cos ≥ {_num(o['cosine'], 'g')}"
                if o.get("cosine") is not None
                else f"atol {_num(o.get('atol'), 'g')}"
                + (f" rtol {_num(o['rtol'], 'g')}" if o.get("rtol") else "")
            )
            shape = "×".join(str(d) for d in o.get("expected_shape") or [])
            rows.append(
                f'<tr{"" if ok else " class=bad"}><td class="nw">{_e(r["runtime"])}</td>'
                f'<td class="nw">{_e(r["case"])}</td><td class="nw mono">{_e(o["name"])}</td>'
                f'<td class="num">{_e(shape)}</td>'
                f'<td class="num">{_num(o.get("max_abs"))}</td>'
                f'<td class="num">{_num(o.get("mean_abs"))}</td>'
                f'<td class="num">{_num(o.get("max_rel"))}</td>'
                f'<td class="num">{_num(o.get("padding_max_abs"))}</td>'
                f'<td class="num">{_num(o.get("min_cosine"), ".6f")}</td>'
                f'<td class="num">{_e(judged)}</td><td>{_yes(ok)}</td></tr>'
            )
    if not rows:
        return ""
    return (
        '<section id="outputs"><h2>Outputs</h2><table><thead><tr><th>runtime</th><th>case</th>'
        '<th>output</th><th class="num">shape</th><th class="num">max abs</th>'
        '<th class="num">mean abs</th><th class="num">max rel</th>'
        '<th class="num" title="differences at padding positions, not judged">padding max abs'
        '</th><th class="num">min cosine</th><th class="num">tolerance</th><th>pass</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="muted">Padding positions (masked by every consumer) are shown but not '
        "judged.</p></section>"
    )


def _group(module: str) -> str:
    """The block a module belongs to, for the chart's axis: its path up to the first
    numbered component (``encoder.layer.3``), else its first component."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def _chart(
    layers: Sequence[Mapping[str, Any]], metric: str, threshold: float | None, first: str | None
) -> str:
    """An inline SVG bar chart of ``metric`` per module in execution order, log scale.

    Written by hand: a bar chart is a few dozen rectangles, and a plotting library would be
    a heavy dependency for it."""

    def value(layer: Mapping[str, Any]) -> float | None:
        if metric == "1 − cosine":
            cos = layer.get("cosine")
            return None if cos is None else max(0.0, 1.0 - float(cos))
        v = layer.get("max_abs")
        return None if v is None else float(v)

    values = [value(layer) for layer in layers]
    positive = [v for v in values if v is not None and v > 0]
    if threshold is not None and threshold > 0:
        positive.append(threshold)
    if not positive:
        return f'<p class="muted">Every matched module has {_e(metric)} 0.</p>'
    low = math.floor(math.log10(min(positive)))
    high = math.ceil(math.log10(max(positive)))
    if high <= low:
        high = low + 1
    plot_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    bottom = CHART_TOP + plot_h

    def y(v: float) -> float:
        return bottom - (math.log10(v) - low) / (high - low) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="100%" '
        f'role="img" aria-label="{_e(metric)} per module" xmlns="http://www.w3.org/2000/svg">'
    ]
    for decade in range(low, high + 1):
        gy = y(10.0**decade)
        parts.append(
            f'<line x1="{CHART_LEFT}" x2="{CHART_WIDTH - CHART_RIGHT}" y1="{gy:.1f}" '
            f'y2="{gy:.1f}" stroke="#e6e8ec"/><text x="{CHART_LEFT - 6}" y="{gy + 4:.1f}" '
            f'font-size="11" text-anchor="end" fill="#5c6677">1e{decade}</text>'
        )
    step = plot_w / len(layers)
    width = max(1.0, step * 0.8)
    previous_group = None
    for i, (layer, v) in enumerate(zip(layers, values, strict=True)):
        x = CHART_LEFT + i * step
        module = str(layer.get("module"))
        group = _group(module)
        if group != previous_group:  # a tick and label where a block starts
            previous_group = group
            chars = max(3, int((step * _group_size(layers, i) - 8) / 6.6))
            label = group if len(group) <= chars else group[: chars - 1] + "…"
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 8}" '
                f'stroke="#9aa3b2"/><text x="{x + 2:.1f}" y="{bottom + 20}" font-size="11" '
                f'fill="#5c6677"><title>{_e(group)}</title>{_e(label)}</text>'
            )
        tip = (
            f"{module} ({layer.get('module_type') or '?'}): max abs {_num(layer.get('max_abs'))}, "
            f"mean abs {_num(layer.get('mean_abs'))}, cosine {_num(layer.get('cosine'), '.6f')}"
        )
        if v is None:
            continue
        top = y(v) if v > 0 else bottom - 1
        colour = PASS_COLOUR if layer.get("passed", True) else FAIL_COLOUR
        parts.append(
            f'<rect x="{x + (step - width) / 2:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{max(1.0, bottom - top):.1f}" fill="{colour}" '
            f'class="{"pass" if layer.get("passed", True) else "fail"}">'
            f"<title>{_e(tip)}</title></rect>"
        )
        if first is not None and module == first:
            cx = x + step / 2
            label = f"first divergence: {module}"
            # In the top margin, above every bar, with a leader down to this one. Rough
            # text width at 12 px: the label turns left where it would leave the plot.
            anchor = "end" if cx + 7 * len(label) > CHART_WIDTH - CHART_RIGHT else "start"
            parts.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="20" y2="{top - 12:.1f}" '
                f'stroke="{FAIL_COLOUR}" stroke-dasharray="2 2"/>'
                f'<path d="M{cx - 5:.1f},{top - 12:.1f} L{cx + 5:.1f},{top - 12:.1f} '
                f'L{cx:.1f},{top - 4:.1f} Z" fill="{FAIL_COLOUR}"/>'
                f'<text x="{cx + (4 if anchor == "end" else -4):.1f}" y="15" font-size="12" '
                f'font-weight="700" fill="{FAIL_COLOUR}" text-anchor="{anchor}">'
                f"{_e(label)}</text>"
            )
    if threshold is not None and threshold > 0:
        ty = y(threshold)
        parts.append(
            f'<line x1="{CHART_LEFT}" x2="{CHART_WIDTH - CHART_RIGHT}" y1="{ty:.1f}" '
            f'y2="{ty:.1f}" stroke="#333" stroke-dasharray="5 4"/>'
            f'<text x="{CHART_WIDTH - CHART_RIGHT + 6}" y="{ty + 4:.1f}" font-size="11" '
            f'fill="#333">tolerance</text><text x="{CHART_WIDTH - CHART_RIGHT + 6}" '
            f'y="{ty + 17:.1f}" font-size="11" fill="#333">{_num(threshold, "g")}</text>'
        )
    parts.append(
        f'<line x1="{CHART_LEFT}" x2="{CHART_WIDTH - CHART_RIGHT}" y1="{bottom}" y2="{bottom}" '
        f'stroke="#9aa3b2"/><text x="14" y="{CHART_TOP + plot_h / 2:.1f}" font-size="11" '
        f'fill="#5c6677" transform="rotate(-90 14 {CHART_TOP + plot_h / 2:.1f})" '
        f'text-anchor="middle">{_e(metric)} (log)</text>'
        f'<text x="{CHART_LEFT + plot_w / 2:.1f}" y="{CHART_HEIGHT - 6}" font-size="11" '
        f'fill="#5c6677" text-anchor="middle">modules in execution order</text></svg>'
    )
    return "".join(parts)


def _group_size(layers: Sequence[Mapping[str, Any]], start: int) -> int:
    group = _group(str(layers[start].get("module")))
    size = 0
    for layer in layers[start:]:
        if _group(str(layer.get("module"))) != group:
            break
        size += 1
    return size


def _layer_table(layers: Sequence[Mapping[str, Any]]) -> str:
    body = "".join(
        f'<tr{"" if layer.get("passed", True) else " class=bad"}><td class="num">{i}</td>'
        f'<td class="mono">{_e(layer.get("module"))}</td><td>{_e(layer.get("module_type"))}</td>'
        f'<td class="mono">{_e(layer.get("onnx_node"))}</td>'
        f'<td class="num">{_num(layer.get("max_abs"))}</td>'
        f'<td class="num">{_num(layer.get("mean_abs"))}</td>'
        f'<td class="num">{_num(layer.get("cosine"), ".6f")}</td>'
        f"<td>{_yes(layer.get('passed'))}</td></tr>"
        for i, layer in enumerate(layers)
    )
    return (
        f"<details><summary>All {len(layers)} matched modules</summary><table><thead><tr>"
        '<th class="num">#</th><th>module</th><th>type</th><th>ONNX node</th>'
        '<th class="num">max abs</th><th class="num">mean abs</th><th class="num">cosine</th>'
        f"<th>pass</th></tr></thead><tbody>{body}</tbody></table></details>"
    )


def _layers(report: Mapping[str, Any]) -> str:
    localised = [r for r in report.get("results") or [] if r.get("layers")]
    if not localised:
        return ""
    # Cosine-judged (quantized) reports are about direction, so 1 - cosine is their error.
    cosine = report.get("cosine")
    metric = "1 − cosine" if cosine is not None else "max abs"
    threshold = (1.0 - cosine) if cosine is not None else report.get("atol")
    # One chart open per runtime (its first failing case, else its first case).
    shown: dict[str, Mapping[str, Any]] = {}
    for r in localised:
        if r["runtime"] not in shown or (
            result_passed(shown[r["runtime"]]) and not result_passed(r)
        ):
            shown[r["runtime"]] = r
    figures = []
    for r in localised:
        first = (r.get("first_divergence") or {}).get("module")
        failing = sum(1 for layer in r["layers"] if not layer.get("passed", True))
        caption = (
            f"{_e(r['runtime'])} / {_e(r['case'])}: {_e(metric)} of each matched module's "
            f"output against eager, {len(r['layers'])} modules, {failing} out of tolerance"
        )
        figure = (
            f"<figure>{_chart(r['layers'], metric, threshold, first)}"
            f"<figcaption>{caption}</figcaption></figure>{_layer_table(r['layers'])}"
        )
        if shown[r["runtime"]] is r:
            figures.append(f"<h3>{_e(r['runtime'])} / {_e(r['case'])}</h3>{figure}")
        else:
            figures.append(
                f"<details><summary>{_e(r['runtime'])} / {_e(r['case'])}</summary>{figure}"
                "</details>"
            )
    legend = (
        f'<p class="legend muted"><span style="background:{PASS_COLOUR}"></span>within '
        f'tolerance<span style="background:{FAIL_COLOUR}"></span>out of tolerance'
        " · hover a bar for the module</p>"
    )
    return f'<section id="layers"><h2>Error per module</h2>{legend}{"".join(figures)}</section>'


def _cross_runtime(report: Mapping[str, Any]) -> str:
    rows = report.get("cross_runtime") or []
    if not rows:
        return ""
    body = "".join(
        f"<tr{'' if c.get('passed', True) else ' class=bad'}><td>{_e(c.get('a'))}</td>"
        f"<td>{_e(c.get('b'))}</td><td>{_e(c.get('case'))}</td>"
        f'<td class="num">{_num(c.get("max_abs"))}</td><td>{_yes(c.get("passed"))}</td></tr>'
        for c in rows
    )
    return (
        '<section id="cross-runtime"><h2>Runtimes against each other</h2><table><thead><tr>'
        '<th>runtime</th><th>against</th><th>case</th><th class="num">max abs</th>'
        f"<th>agree</th></tr></thead><tbody>{body}</tbody></table></section>"
    )


def _generation(report: Mapping[str, Any]) -> str:
    checks = report.get("generation") or []
    if not checks:
        return ""
    rows = []
    for g in checks:
        step = _generation_first_difference(g)
        expected = g.get("expected") or []
        tokens = f"{len(expected)} × {len(expected[0]) if expected else 0}"
        verdict = (
            _e(g["error"])
            if g.get("error")
            else "identical"
            if step is None
            else f"differs from step {step}"
        )
        rows.append(
            f"<tr{'' if step is None else ' class=bad'}><td>{_e(g.get('runtime'))}</td>"
            f'<td>{_e(g.get("case"))}</td><td class="num">{tokens}</td><td>{verdict}</td>'
            f"<td>{_yes(step is None)}</td></tr>"
        )
    return (
        '<section id="generation"><h2>Generation</h2><p class="muted">Greedy tokens of '
        "graphport.load(...).generate() against transformers' generate() on eager.</p>"
        "<table><thead><tr><th>runtime</th><th>case</th><th class='num'>prompts × tokens</th>"
        f"<th>result</th><th>pass</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "</section>"
    )


def _compact(value: Any, limit: int = 220) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _passes(manifest: Mapping[str, Any] | None) -> str:
    if manifest is None:
        return ""
    passes = manifest.get("passes") or []
    if not passes:
        return (
            '<section id="passes"><h2>Graph passes</h2><p class="muted">None: the graph is '
            "the exporter's output (<code>graphport optimize</code> and "
            "<code>graphport quantize</code> record their passes here).</p></section>"
        )
    rows = []
    for record in passes:
        parity = record.get("parity") or {}
        ok = parity.get("passed")
        worst = "<br>".join(
            f"{_e(runtime)}: max abs {_num(w.get('max_abs'))}, min cos "
            f"{_num(w.get('min_cosine'), '.6f')}"
            for runtime, w in parity.items()
            if runtime != "passed" and isinstance(w, Mapping)
        )
        budget = ", ".join(
            f"{_e(k.replace('_', ' '))} {_num(v, 'g')}"
            for k, v in (record.get("budget") or {}).items()
        )
        details = "<br>".join(
            f"<b>{_e(k)}</b>: {_e(_compact(v))}" for k, v in record.items() if k not in PASS_COLUMNS
        )
        rows.append(
            f'<tr{"" if ok is not False else " class=bad"}><td class="nw mono">'
            f"{_e(record.get('name'))}</td><td>{_e(record.get('modified'))}</td>"
            f'<td class="num">{_num(record.get("seconds"), ".2f")}</td><td class="nw">{budget}</td>'
            f'<td>{_yes(ok)}</td><td class="num">{worst}</td><td class="mono">{details}</td></tr>'
        )
    return (
        '<section id="passes"><h2>Graph passes</h2><p class="muted">Each pass was checked '
        "against eager with its budget before the next one ran.</p><table><thead><tr>"
        '<th>pass</th><th>modified</th><th class="num">seconds</th><th>budget</th>'
        '<th>parity</th><th class="num">worst</th><th>details</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


# ---- the page ------------------------------------------------------------------------------


def render_html(
    report: Mapping[str, Any],
    manifest: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> str:
    """The report (``ParityReport.to_dict()``) as one self-contained HTML page.

    ``manifest`` (``Manifest.to_dict()``) adds the export's source, format, versions and
    graph passes; without it the page shows what the report holds.
    """
    passed = _report_passed(report)
    version = ((manifest or {}).get("versions") or {}).get("graphport")
    heading = title or f"graphport parity report: {'PASS' if passed else 'FAIL'}"
    body = "".join(
        (
            _header(report, manifest, passed),
            _failures(report),
            _first_divergence(report, passed),
            _matrix(report),
            _layers(report),
            _outputs(report),
            _cross_runtime(report),
            _generation(report),
            _passes(manifest),
            _info(report, manifest),
        )
    )
    footer = f"graphport {_e(version)}" if version else "graphport"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # Nothing may be fetched: the page is complete as it is.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(heading)}</title><style>{CSS}</style></head><body><main>{body}"
        f"<footer>{footer} · parity of the export against the eager PyTorch model</footer>"
        "</main></body></html>\n"
    )


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

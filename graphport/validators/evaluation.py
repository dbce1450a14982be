"""The record of ``graphport evaluate``: task metrics of eager and of each export.

Data first: an ``EvalReport`` holds one ``EvalRow`` per model (eager first) with its
metric values, its difference to eager where the metric is absolute (perplexity,
accuracy; a metric that already compares with eager, such as KL divergence, has none),
and the seconds its forward passes took. Rendering (``table``, ``to_dict``, ``to_html``)
only formats those numbers.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric's name (its key in the rows), whether more is better, and whether it is
    measured against eager (then eager's own value is the ideal and there is no delta)."""

    name: str
    higher_is_better: bool = True
    against_eager: bool = False


@dataclasses.dataclass
class EvalRow:
    """One model's results: ``model`` is ``eager`` or the export directory."""

    model: str
    runtime: str
    values: dict[str, float]
    seconds: float
    deltas: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EvalReport:
    """Task metrics of eager and of each export on one dataset."""

    task: str
    data: str
    examples: int  # windows for a language model, rows otherwise
    tokens: int | None
    metrics: list[Metric]
    rows: list[EvalRow]
    seconds: float = 0.0

    def __post_init__(self) -> None:
        eager = self.rows[0].values if self.rows else {}
        for row in self.rows[1:]:
            row.deltas = {
                m.name: row.values[m.name] - eager[m.name]
                for m in self.metrics
                if not m.against_eager and m.name in row.values and m.name in eager
            }

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    def row(self, model: str) -> EvalRow:
        return next(r for r in self.rows if r.model == model)

    def to_dict(self) -> dict[str, Any]:
        """JSON data (non-finite numbers as None)."""
        return _finite(dataclasses.asdict(self))

    def table(self) -> str:
        """Per model: each metric (with its delta to eager where it has one) and time."""
        headers = ["model", "runtime"]
        for m in self.metrics:
            headers.append(m.name)
            if not m.against_eager:
                headers.append("delta")
        headers.append("time")
        lines = [headers]
        for row in self.rows:
            cells = [row.model, row.runtime]
            for m in self.metrics:
                cells.append(_num(row.values.get(m.name)))
                if not m.against_eager:
                    delta = row.deltas.get(m.name)
                    cells.append("-" if delta is None else _num(delta, signed=True))
            cells.append(f"{row.seconds:.1f} s")
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
        # names left-aligned, numbers right-aligned
        rendered = [
            "  ".join(
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in lines
        ]
        size = f"{self.examples} examples" + (f", {self.tokens} tokens" if self.tokens else "")
        title = f"{self.task} on {self.data} ({size}, {self.seconds:.1f} s in all)"
        return "\n".join([title, *rendered])

    def to_html(self) -> str:
        """One self-contained HTML page with the table (autoescaped)."""
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.PackageLoader("graphport.validators", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.filters["num"] = _num
        return env.get_template("evaluation.html.j2").render(report=self)

    def write_html(self, path: str | Path) -> Path:
        """Write ``to_html()`` to ``path`` in one step (a page is complete or absent)."""
        path = Path(path)
        staging = path.with_name(f".{path.name}.partial")
        staging.write_text(self.to_html(), encoding="utf-8")
        staging.replace(path)
        return path


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    text = f"{value:+.4g}" if signed else f"{value:.4g}"
    if magnitude < 1e-3:
        text = f"{value:+.2e}" if signed else f"{value:.2e}"
    return text


def _finite(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data

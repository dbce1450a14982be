"""The per-module error chart of the HTML parity report, as geometry.

``error_chart`` lays out one bar per matched module in execution order on a log scale:
decade gridlines, a tick and label where a block (``encoder.layer.3``) starts, the bars
coloured by their verdict, a marker over the first divergent module and the tolerance
line. It returns numbers and strings only; ``templates/report.html.j2`` draws them as
inline SVG (and escapes every string). A bar chart is a few dozen rectangles, so a
plotting library would be a heavy dependency for it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

PASS_COLOUR = "#3f7fbf"
FAIL_COLOUR = "#d64541"

# Geometry in SVG user units; the SVG scales to the page width.
WIDTH, HEIGHT = 1100, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 84, 44, 48

ONE_MINUS_COSINE = "1 − cosine"


@dataclasses.dataclass
class Gridline:
    y: float
    label: str  # the decade, "1e-3"


@dataclasses.dataclass
class GroupLabel:
    """A tick and a label where a block of modules starts."""

    x: float
    label: str  # shortened to fit the block's width
    name: str  # the whole name, on hover


@dataclasses.dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    passed: bool
    tip: str

    @property
    def colour(self) -> str:
        return PASS_COLOUR if self.passed else FAIL_COLOUR


@dataclasses.dataclass
class Marker:
    """The first divergent module: a label in the top margin and a leader to its bar."""

    x: float
    top: float  # the bar's top
    label: str
    anchor: str  # "start", or "end" where the label would leave the plot


@dataclasses.dataclass
class Column:
    """One module: what is drawn for it, in drawing order."""

    group: GroupLabel | None
    bar: Bar | None  # None: no value to draw
    marker: Marker | None


@dataclasses.dataclass
class Threshold:
    y: float
    value: float


@dataclasses.dataclass
class Chart:
    metric: str
    gridlines: list[Gridline]
    columns: list[Column]
    threshold: Threshold | None
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT  # the plot's right edge
    bottom: int = HEIGHT - BOTTOM  # the plot's baseline
    middle: float = TOP + (HEIGHT - TOP - BOTTOM) / 2  # the plot's vertical middle
    centre: float = LEFT + (WIDTH - LEFT - RIGHT) / 2  # the plot's horizontal middle


def group_of(module: str) -> str:
    """The block a module belongs to: its path up to the first numbered component
    (``encoder.layer.3``), else its first component."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def _group_size(layers: Sequence[Mapping[str, Any]], start: int) -> int:
    group = group_of(str(layers[start].get("module")))
    size = 0
    for layer in layers[start:]:
        if group_of(str(layer.get("module"))) != group:
            break
        size += 1
    return size


def _value(layer: Mapping[str, Any], metric: str) -> float | None:
    if metric == ONE_MINUS_COSINE:
        cos = layer.get("cosine")
        return None if cos is None else max(0.0, 1.0 - float(cos))
    v = layer.get("max_abs")
    return None if v is None else float(v)


def _num(value: Any, spec: str = ".2e") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def error_chart(
    layers: Sequence[Mapping[str, Any]], metric: str, threshold: float | None, first: str | None
) -> Chart | None:
    """``metric`` (``max abs`` or ``1 − cosine``) of each layer (``LayerDiff`` data) on a
    log scale, ``threshold`` as a line, ``first`` (a module path) marked; None when no
    layer has a positive value to draw."""
    values = [_value(layer, metric) for layer in layers]
    positive = [v for v in values if v is not None and v > 0]
    if threshold is not None and threshold > 0:
        positive.append(threshold)
    if not positive:
        return None
    low = math.floor(math.log10(min(positive)))
    high = math.ceil(math.log10(max(positive)))
    if high <= low:
        high = low + 1
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h

    def y(v: float) -> float:
        return bottom - (math.log10(v) - low) / (high - low) * plot_h

    gridlines = [Gridline(y(10.0**decade), f"1e{decade}") for decade in range(low, high + 1)]
    step = plot_w / len(layers)
    width = max(1.0, step * 0.8)
    columns = []
    previous_group = None
    for i, (layer, v) in enumerate(zip(layers, values, strict=True)):
        x = LEFT + i * step
        module = str(layer.get("module"))
        group = group_of(module)
        label = None
        if group != previous_group:  # a tick and label where a block starts
            previous_group = group
            # Rough text width at 11 px: the label is cut to the block's width.
            chars = max(3, int((step * _group_size(layers, i) - 8) / 6.6))
            short = group if len(group) <= chars else group[: chars - 1] + "…"
            label = GroupLabel(x, short, group)
        if v is None:
            columns.append(Column(label, None, None))
            continue
        top = y(v) if v > 0 else bottom - 1
        passed = bool(layer.get("passed", True))
        tip = (
            f"{module} ({layer.get('module_type') or '?'}): max abs {_num(layer.get('max_abs'))}, "
            f"mean abs {_num(layer.get('mean_abs'))}, cosine {_num(layer.get('cosine'), '.6f')}"
        )
        bar = Bar(x + (step - width) / 2, top, width, max(1.0, bottom - top), passed, tip)
        marker = None
        if first is not None and module == first:
            cx = x + step / 2
            text = f"first divergence: {module}"
            # Rough text width at 12 px: the label turns left where it would leave the plot.
            anchor = "end" if cx + 7 * len(text) > WIDTH - RIGHT else "start"
            marker = Marker(cx, top, text, anchor)
        columns.append(Column(label, bar, marker))
    line = Threshold(y(threshold), threshold) if threshold is not None and threshold > 0 else None
    return Chart(metric, gridlines, columns, line)

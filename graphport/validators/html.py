"""A parity report as one self-contained static HTML file.

``render_html`` turns the JSON form of a ``ParityReport`` (``ParityReport.to_dict()``, or
a ``parity.json`` read back) and optionally the export's manifest into one page: the
verdict, the export, the runtime x case matrix, the first divergent module and a
per-layer error chart (when the report was localised), every output's differences, the
runtimes against each other, and the graph passes with their parity. Every localisation
field is optional, so reports written without ``--localize`` render too.

This module renders and writes the page. What it shows is assembled as data
(``graphport.validators.html_page``, with the localisation sections in
``graphport.validators.html_divergence`` and the chart's geometry in
``graphport.validators.chart``); the markup is the jinja2 template
``templates/report.html.j2`` (autoescaped: text from a report is never markup).

The page loads nothing: inline CSS, inline SVG, no scripts, no fonts, and a content
security policy that forbids the browser to fetch anything, so it can be mailed, attached
to CI runs or opened offline.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from graphport.errors import UsageError
from graphport.manifest import MANIFEST_NAME
from graphport.validators.html_page import compact, number, page_data

logger = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
MAX_FAILURES = 12  # lines in the failures list; the rest are counted


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
    env.filters["num"] = number
    env.filters["px"] = _px
    env.filters["compact"] = compact
    return env


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

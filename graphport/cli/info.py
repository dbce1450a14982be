"""``graphport inspect``, ``list`` and ``env``: an export, the architectures and formats,
and this machine's packages and runtimes."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import click

from graphport import __version__
from graphport.errors import RuntimeUnavailableError
from graphport.formats import formats


@click.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest.")
def inspect(export_dir: Path, as_json: bool) -> None:
    """Describe an export directory: source, task, graphs, tensors, validation."""
    from graphport.manifest import ExportDirectory

    directory = ExportDirectory(export_dir)
    m = directory.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    lines = [
        f"source      {m.source.get('model')} ({m.source.get('model_type')})",
        f"task        {m.task}  family {m.family}{'  (generic)' if m.generic else ''}",
        f"format      {m.format}  dtype {m.dtype}  opset {m.opset}",
        f"exporter    {m.exporter.get('strategy')}"
        + (
            f"  fallback: {m.exporter['fallback_reason']}"
            if m.exporter.get("fallback_reason")
            else ""
        ),
    ]
    for graph in m.graphs:
        lines.append(
            f"graph       {graph.name}: {graph.file}"
            + (f" (+ {graph.external_data})" if graph.external_data else "")
        )
        for kind, tensors in (("input", graph.inputs), ("output", graph.outputs)):
            for t in tensors:
                lines.append(f"  {kind:<7} {t.name:<24} {t.dtype:<8} {t.shape}")
    if m.validation:
        verdict = "passed" if m.validation.get("passed") else "FAILED"
        worst = ", ".join(
            f"{rt} max abs {w['max_abs']:.2e}" for rt, w in m.validation.get("worst", {}).items()
        )
        lines.append(f"validation  {verdict}  ({worst})")
    else:
        lines.append("validation  not run")
    files = []
    for name in m.files:
        path = directory.path / name
        files.append(
            f"{name} ({path.stat().st_size / 1e6:.2f} MB)" if path.exists() else f"{name} (MISSING)"
        )
    lines.append("files       " + ", ".join(files))
    click.echo("\n".join(lines))


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--formats",
    "show_formats",
    is_flag=True,
    help="List the export formats instead: the runtimes that run each (the default first), "
    "the deploy targets that take it and the extra it needs.",
)
def list_(as_json: bool, show_formats: bool) -> None:
    """Architectures graphport can export, with their tasks (or, --formats, the formats)."""
    if show_formats:
        _list_formats(as_json)
        return
    from graphport.models import registrations

    rows = [(r.family, r.model_type, [t.value for t in r.tasks]) for r in registrations()]
    if as_json:
        click.echo(json.dumps([{"family": f, "model_type": m, "tasks": t} for f, m, t in rows]))
        return
    width = max(len(m) for _, m, _ in rows)
    for family, model_type, tasks in rows:
        click.echo(f"{family:<10} {model_type:<{width}}  {', '.join(tasks)}")


def _list_formats(as_json: bool) -> None:
    rows = [
        {
            "format": f.name,
            "writes": list(f.writes),
            "runtimes": list(f.runtimes),
            "deploy_targets": sorted(f.deploy_targets),
            "passes": f.takes_passes,
            "extra": f.extra,
            "available": f.is_available(),
        }
        for f in formats()
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    width = max(len(r["format"]) for r in rows)
    for r in rows:
        details = [
            f"runtimes {', '.join(r['runtimes']) or '-'}",
            f"deploy {', '.join(r['deploy_targets']) or '-'}",
            *(["passes"] if r["passes"] else []),
            *([f"extra [{r['extra']}]"] if r["extra"] else []),
            *([] if r["available"] else ["not installed"]),
        ]
        click.echo(f"{r['format']:<{width}}  {'; '.join(details)}")


@click.command()
@click.option("--json", "as_json", is_flag=True)
def env(as_json: bool) -> None:
    """Versions, runtimes and providers found on this machine."""
    from graphport.api.export import package_versions
    from graphport.runtimes import runtime_names

    info: dict[str, Any] = {
        "graphport": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": package_versions(),
        "runtimes": {},
    }
    for name in runtime_names():
        info["runtimes"][name] = _runtime_info(name)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"graphport {info['graphport']}  python {info['python']}  {info['platform']}")
    click.echo(f"cpus {info['cpus']}")
    for pkg, ver in info["packages"].items():
        click.echo(f"  {pkg:<14} {ver}")
    for name, details in info["runtimes"].items():
        click.echo(f"runtime {name:<12} {details}")


def _runtime_info(name: str) -> str:
    from graphport.runtimes import get_runtime_class

    try:
        runtime = get_runtime_class(name)
    except RuntimeUnavailableError:
        return "not installed"
    if name == "onnxruntime":
        import onnxruntime

        return f"{runtime.version()} providers: {', '.join(onnxruntime.get_available_providers())}"
    if name == "openvino":
        import openvino

        return f"{runtime.version()} devices: {', '.join(openvino.Core().available_devices)}"
    return f"{runtime.version()} (eager reference)"

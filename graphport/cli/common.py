"""What several commands share: runtime, HTML and transform options, and the pass table.

The commands import graphport's torch-loading modules (``graphport.api``, the validators,
the families) and those that load onnx-ir (``graphport.manifest``, ``graphport.runtimes``)
inside their functions, so that ``graphport --help`` starts without them: in about 0.3 s
instead of 2 s, and with no torch (docs/DEVELOPING.md, rule 4).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from graphport.errors import ParityError

providers_option = click.option(
    "--providers",
    default=None,
    help="onnxruntime execution providers, comma-separated (default CPUExecutionProvider).",
)


def runtime_options(providers: str | None) -> dict[str, dict[str, Any]]:
    return {"onnxruntime": {"providers": providers}} if providers else {}


def split_names(names: str | None) -> list[str] | None:
    return names.split(",") if names else None


def transform_options(command: Any) -> Any:
    """Options shared by the commands that write a new export from an old one."""
    for option in reversed(
        [
            runtimes_option(),
            click.option(
                "--allow-budget-break",
                is_flag=True,
                help="Keep going when a pass breaks its parity budget (it is recorded).",
            ),
            click.option("--overwrite", is_flag=True, help="Replace DST if it exists."),
            html_option,
            localize_option,
        ]
    ):
        command = option(command)
    return command


localize_option = click.option(
    "--localize",
    is_flag=True,
    help="Compare every module's output too: name the first PyTorch module whose output "
    "leaves tolerance, and each module's error (one more run per runtime and case).",
)


def runtimes_option() -> Any:
    return click.option(
        "--runtime",
        "runtimes",
        default=None,
        help="Comma-separated runtimes (onnxruntime, openvino, torchscript, aoti, tensorrt, "
        "torch); default: every installed runtime that runs the export's format.",
    )


html_option = click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the parity report as one self-contained HTML page to this file.",
)


def check_html(html_file: Path | None) -> None:
    if html_file is not None:
        from graphport.validators.html import check_html_path  # loads torch: see above

        check_html_path(html_file)  # before the long work, not after it


def write_html(html_file: Path | None, report: Any) -> None:
    if html_file is not None and report is not None:
        from graphport.validators.html import write_html  # loads torch: see above

        write_html(report, html_file)


@contextlib.contextmanager
def html_on_parity_error(html_file: Path | None) -> Iterator[None]:
    """A failed report is the one most worth reading: write it before the error exits."""
    try:
        yield
    except ParityError as e:
        write_html(html_file, e.report)
        raise


def print_passes(result: Any) -> None:
    for record in result.passes:
        parity = record.get("parity", {})  # none: a streamed export written unvalidated
        runtimes = [k for k in parity if k != "passed"]
        worst = parity[runtimes[0]] if runtimes else {}
        verdict = "not validated" if not parity else "ok" if parity["passed"] else "BROKEN"
        click.echo(
            f"pass {record['name']:<13} modified={record['modified']!s:<5} "
            f"{record['seconds']:6.2f} s  parity {verdict}: max abs "
            f"{worst.get('max_abs', float('nan')):.2e}, min cosine "
            f"{worst.get('min_cosine', float('nan')):.6f} (budget {record['budget']})"
        )
        graphs = [record, *record.get("graphs", {}).values()]
        for kernel in (g["kernel"] for g in graphs if "kernel" in g):
            click.echo(f"  {kernel['summary']}")
    if result.report is not None:
        click.echo(result.report.table())
    click.echo(f"Wrote {result.path}")

"""``graphport validate``: an export against the eager model, as a parity report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from graphport.cli.common import (
    check_html,
    html_option,
    localize_option,
    providers_option,
    runtime_options,
    runtimes_option,
    write_html,
)
from graphport.errors import ParityError


@click.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@runtimes_option()
@providers_option
@click.option(
    "--atol",
    type=float,
    default=None,
    help="Override the absolute tolerance (with --atol or --rtol the budget is absolute: no "
    "term for the output's magnitude).",
)
@click.option("--rtol", type=float, default=None, help="Override the relative tolerance.")
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the JSON parity report to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@html_option
@localize_option
def validate(
    export_dir: Path,
    runtimes: str | None,
    providers: str | None,
    atol: float | None,
    rtol: float | None,
    report_file: Path | None,
    as_json: bool,
    html_file: Path | None,
    localize: bool,
) -> None:
    """Check an export against the eager model; exits 1 when a tolerance is exceeded."""
    from graphport.manifest import ExportDirectory
    from graphport.runtimes import default_runtimes, parse_runtimes
    from graphport.validators.parity import validate_export

    directory = ExportDirectory(export_dir)
    check_html(html_file)
    names = runtimes or default_runtimes(directory.manifest)
    report = validate_export(
        directory,
        parse_runtimes(names, runtime_options(providers)),
        atol=atol,
        rtol=rtol,
        runtime_options=runtime_options(providers),
        localize=localize,
    )
    directory.manifest.validation = report.summary()
    directory.save_manifest()
    if report_file:
        report.write(report_file)
    write_html(html_file, report)
    click.echo(
        json.dumps(report.to_dict(), indent=2, allow_nan=False) if as_json else report.table()
    )
    if not report.passed:
        raise ParityError("Parity failed: " + "; ".join(report.failures()[:5]), report)
    if not as_json:
        click.echo(f"Parity passed on {', '.join(report.runtimes)}.")

"""``graphport evaluate``: task accuracy of exports against eager on a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import click

from graphport.cli.common import check_html, providers_option, runtime_options


@click.command()
@click.argument("exports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="A jsonl, csv, parquet or text file, or a saved dataset directory (default: "
    "English prose from Python's own help topics).",
)
@click.option(
    "--runtime",
    default=None,
    help="Default: onnxruntime for ONNX graphs, the export's own runtime otherwise.",
)
@providers_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens for a language model, rows otherwise (default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the results as one self-contained HTML page to this file.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Evaluate each export as a task of the Ray cluster at ADDRESS (alone: a local "
    "instance); needs the ray extra.",
)
def evaluate(
    exports: tuple[Path, ...],
    data: Path | None,
    runtime: str | None,
    providers: str | None,
    limit: int | None,
    as_json: bool,
    html_file: Path | None,
    ray_address: str | None,
) -> None:
    """Task accuracy of one or more exports of a model against eager on a dataset:
    perplexity, KL divergence and top-1 agreement for language models; accuracy, F1,
    cosine, Spearman or agreement with eager for the other tasks."""
    from graphport.api.evaluate import evaluate as run_evaluate

    check_html(html_file)
    options = runtime_options(providers).get(runtime or "onnxruntime", {})
    ray = False if ray_address is None else (ray_address or True)
    report = run_evaluate(list(exports), data, runtime, limit, runtime_options=options, ray=ray)
    if html_file is not None:
        report.write_html(html_file)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())

"""``graphport bench``: latency and throughput of an export, runtimes interleaved."""

from __future__ import annotations

from pathlib import Path

import click

from graphport.cli.common import runtimes_option


@click.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@runtimes_option()
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--sequence-length",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens for text (default 128), samples for raw audio (default: the trace's).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads per runtime (default: the runtime's own choice).",
)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
def bench(
    export_dir: Path,
    runtimes: str | None,
    batch_size: int,
    sequence_length: int | None,
    threads: int | None,
    runs: int,
) -> None:
    """p50/p90 latency and throughput of an export, runtimes interleaved."""
    from graphport.api.bench import bench_export
    from graphport.manifest import ExportDirectory
    from graphport.runtimes import default_runtimes, parse_runtimes
    from graphport.runtimes.bench import render

    names = parse_runtimes(runtimes or default_runtimes(ExportDirectory(export_dir).manifest))
    click.echo(
        render(bench_export(export_dir, names, batch_size, sequence_length, threads, runs=runs))
    )

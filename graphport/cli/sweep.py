"""``graphport sweep``: every model type transformers knows, as a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from graphport.cli.common import split_names
from graphport.sweep import GENERATION_TASKS, Status, counts, run_sweep


@click.command()
@click.option(
    "--only",
    default=None,
    help="Comma-separated model types to (re-)run; default: every type not in the cache.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Model types run at a time, each in its own process (0: in this process, to debug).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds a model type may take before its process is killed.",
)
@click.option(
    "--max-memory",
    type=click.FloatRange(min=0.5),
    default=6.0,
    show_default=True,
    help="GiB of resident memory a model type's process may use before it is killed.",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=".graphport-sweep.json",
    show_default=True,
    help="JSON file of results per model type (a sweep resumes from it).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=Path("docs") / "SUPPORTED.md",
    show_default=True,
    help="The support matrix to write (from every result in the cache).",
)
@click.option("--rerun", is_flag=True, help="Re-run the model types already in the cache.")
@click.option(
    "--task",
    "tasks",
    type=click.Choice(["feature-extraction", *GENERATION_TASKS]),
    multiple=True,
    help="Only these of each model type's tasks (repeatable; default: all it has).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Run the rows as tasks of the Ray cluster at ADDRESS (alone: a local instance of "
    "--jobs CPUs), with the same timeout and memory cap per row; needs the ray extra.",
)
def sweep(
    only: str | None,
    jobs: int,
    timeout: float,
    max_memory: float,
    cache: Path,
    output: Path,
    rerun: bool,
    tasks: tuple[str, ...],
    ray_address: str | None,
) -> None:
    """Export and validate a tiny model of every model type; write the support matrix."""

    def progress(done: int, total: int, result: Any) -> None:
        why = f": {result.category}" if result.category else ""
        click.echo(
            f"[{done}/{total}] {result.model_type} {result.task}: {result.status}{why} "
            f"({result.seconds:.0f} s)",
            err=True,
        )

    results = run_sweep(
        output,
        cache,
        split_names(only),
        jobs,
        timeout,
        max_memory,
        rerun,
        progress=progress,
        tasks=tasks or None,
        ray=False if ray_address is None else (ray_address or True),
    )
    rows = [r for rows in results.values() for r in rows]
    table = counts(rows)
    summary = ", ".join(f"{status.value} {sum(table[status].values())}" for status in Status)
    click.echo(f"Wrote {output} ({len(results)} model types, {len(rows)} tasks: {summary})")

"""``graphport deploy``: an export into a C++ project or a Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from graphport.deploy import deploy as run_deploy


@click.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--target",
    type=click.Choice(["cpp", "triton"]),
    required=True,
    help="cpp: CMake project with graphport_infer; triton: model repository.",
)
@click.option(
    "--model-name", default=None, help="triton: the model's name (default: the export's)."
)
@click.option(
    "--max-batch-size",
    type=int,
    default=8,
    show_default=True,
    help="triton: max_batch_size (0 disables batching).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="cpp: replace DEST; triton: replace DEST/<model>, keeping other models.",
)
def deploy(
    export_dir: Path,
    dest: Path,
    target: str,
    model_name: str | None,
    max_batch_size: int,
    overwrite: bool,
) -> None:
    """Turn an export directory into a deployable C++ project or Triton model repository."""
    options: dict[str, Any] = {"overwrite": overwrite}
    if target == "triton":
        options.update(model_name=model_name, max_batch_size=max_batch_size)
    click.echo(f"Wrote {run_deploy(export_dir, dest, target, **options)}")

"""``deploy_triton``: an export directory written as a model of a Triton model repository.

The repository is built beside ``DEST`` and moved in by renames, so Triton (polling the
repository) never sees half a model; the graph is hard-linked from the export where the
file system allows (layout in ``graphport.deploy.triton``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from graphport.deploy.triton.config import (
    VERSION,
    TritonConfig,
    model_config,
    model_config_schema,
)
from graphport.deploy.triton.readme import repository_readme
from graphport.deploy.triton.text import text_model_names, write_text_models
from graphport.errors import UsageError
from graphport.manifest import MANIFEST_NAME, ExportDirectory

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def deploy_triton(
    export_dir: Path,
    dest: Path,
    model_name: str | None = None,
    max_batch_size: int = 8,
    overwrite: bool = False,
) -> Path:
    """Write ``export_dir`` as model ``model_name`` (default: the export directory's name)
    into the Triton model repository ``dest``; returns the model's directory.

    Other models already in ``dest`` are kept; ``overwrite`` is needed to write into a
    non-empty ``dest`` and replaces only this model's directory and the README.
    """
    export = ExportDirectory(export_dir)
    name = model_name if model_name is not None else _default_name(export.path)
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a usable Triton model name; use letters, digits, '_', '-' and "
            "'.', not starting with '.' or '-'."
        )
    config = model_config(export.manifest, name, max_batch_size)
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file; pass a directory for the model repository.")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise UsageError(
            f"Model repository {dest} is not empty; pass --overwrite to write model {name} "
            f"into it (replacing {dest / name} if present; other models are kept), or choose "
            "an empty directory."
        )
    model_config_schema()  # before anything is written
    dest.mkdir(parents=True, exist_ok=True)
    # Built beside the repository and moved in by renames, so Triton (polling the
    # repository) never sees half a model, nor a scratch directory to try loading.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=dest.parent))
    try:
        (staging / name).mkdir(mode=0o755)
        _write_model(export, config, staging / name)
        written = [name, *write_text_models(export, config, staging)]
        for index, model in enumerate([name, *text_model_names(name)]):
            if (dest / model).exists():  # names never start with "."
                (dest / model).rename(staging / f".replaced-{index}")
        for model in written:
            (staging / model).rename(dest / model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (dest / "README.md").write_text(repository_readme(dest), encoding="utf-8")
    logger.info("Wrote Triton model %s (%s) into %s", name, config.backend.backend, dest)
    return dest / name


def _default_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.resolve().name).lstrip(".-")
    return name or "model"


def _write_model(export: ExportDirectory, config: TritonConfig, directory: Path) -> None:
    manifest, graph = export.manifest, export.manifest.graphs[0]
    version = directory / VERSION
    version.mkdir()
    _link_or_copy(export.path / graph.file, version / config.backend.model_file)
    if graph.external_data and config.backend.backend in ("onnxruntime", "openvino"):
        # ONNX finds its data file by the name stored in the graph; OpenVINO wants model.bin.
        _link_or_copy(export.path / graph.external_data, version / graph.external_data)
    # Small files are copied, not linked: the export rewrites its manifest in place.
    graph_files = {graph.file, graph.external_data}
    for file in manifest.files:  # preprocessing files, for clients; not the tensorrt ONNX
        if file not in graph_files and not file.endswith(".onnx"):
            shutil.copy2(export.path / file, directory / file)
    shutil.copy2(export.path / MANIFEST_NAME, directory / MANIFEST_NAME)
    (directory / "config.pbtxt").write_text(config.to_pbtxt(), encoding="utf-8")


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no copy of gigabytes of weights), else a copy across file systems.

    Exports are replaced by renames, never rewritten in place, so a link stays valid."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)

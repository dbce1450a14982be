"""The eager PyTorch reference: the source checkpoint, loaded as the export was traced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import ModelLoadError
from graphport.manifest import ExportDirectory
from graphport.runtimes.base import Runtime


class TorchRuntime(Runtime):
    """Runs the eager model the manifest's source names (or one given as ``model=``)."""

    name = "torch"
    module = "torch"
    formats = frozenset()  # the eager reference runs the source model, not an artifact

    def _load(self) -> None:
        self.model = self.options.get("model")
        if self.model is None:
            self.model = load_reference(self.export_dir)

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_eager(self.model, feeds, self.output_names)


def load_reference(directory: ExportDirectory) -> Any:
    """The eager model an export was traced from, as it was loaded for tracing (the whole
    model: a composite export's graphs are its sub-modules)."""
    from graphport.exporters.tasks import Task
    from graphport.models.loader import load_checkpoint, load_model
    from graphport.models.registry import get_onnx_config

    manifest = directory.manifest
    source = Path(manifest.source["path"])
    if not source.is_dir():
        raise ModelLoadError(
            f"The eager reference needs the source checkpoint {source}, which is gone; "
            "restore it, or validate on other runtimes only."
        )
    checkpoint = load_checkpoint(source)
    task = Task(manifest.task)
    overrides = get_onnx_config(checkpoint.config, task).values_override
    return load_model(checkpoint, task, manifest.dtype, dict(overrides or {}))


def run_eager(model: Any, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict:
    """Run an eager model on numpy feeds; return the named outputs as numpy arrays."""
    import torch

    from graphport.exporters.onnx import call_module, named_output_tensors

    dtype = next(model.parameters()).dtype
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype)
        if np.issubdtype(v.dtype, np.floating)
        else torch.from_numpy(np.ascontiguousarray(v))
        for k, v in feeds.items()
    }
    with torch.no_grad():
        output = call_module(model, tensors)
    leaves = named_output_tensors(output)
    return {
        name: leaves[name].float().numpy()
        if leaves[name].dtype == torch.bfloat16
        else leaves[name].numpy()
        for name in output_names
    }

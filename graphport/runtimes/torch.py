"""The eager PyTorch model as a runtime: it runs the model it is handed on an export's feeds.

The eager reference itself (the export's source checkpoint, loaded as it was traced) is
loaded by ``graphport.validators.reference.load_reference``: runtimes never read a
checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphport.errors import UsageError
from graphport.runtimes.base import Runtime


class TorchRuntime(Runtime):
    """Runs the eager model given as ``model=`` (validation hands over the reference)."""

    name = "torch"
    module = "torch"

    def _load(self) -> None:
        self.model = self.options.get("model")
        if self.model is None:
            raise UsageError(
                "The torch runtime runs an eager model it is handed and never reads a "
                "checkpoint; compare against the eager reference with `graphport validate`, "
                "or pass model=load_reference(export) from graphport.validators.reference."
            )

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_eager(self.model, feeds, self.output_names)


def run_eager(model: Any, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict:
    """Run an eager model on numpy feeds; return the named outputs as numpy arrays."""
    import torch

    from graphport.export.onnx import call_module, named_output_tensors

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

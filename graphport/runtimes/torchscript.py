"""TorchScript adapter: loads model.pt with torch.jit.load and calls it positionally."""

from __future__ import annotations

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.runtimes.base import Runtime


class TorchScriptRuntime(Runtime):
    name = "torchscript"
    module = "torch"

    def _load(self) -> None:
        import torch

        try:
            self.module_ = torch.jit.load(str(self.export_dir.graph_path(self.spec.name)))
        except Exception as e:
            raise RuntimeUnavailableError(f"torch.jit could not load the module: {e}") from e

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            outputs = self.module_(*(torch.from_numpy(feeds[n]) for n in self.input_names))
        return _named(self.output_names, outputs)

    def describe(self) -> str:
        return f"torchscript (torch {self.version()})"


def _named(names: list[str], outputs: object) -> dict[str, np.ndarray]:
    import torch

    values = outputs if isinstance(outputs, list | tuple) else [outputs]
    return {
        name: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().numpy()
        for name, v in zip(names, values, strict=True)
    }

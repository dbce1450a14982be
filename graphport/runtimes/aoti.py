"""AOTInductor adapter: loads model.pt2 with torch._inductor.aoti_load_package."""

from __future__ import annotations

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.runtimes.base import Runtime
from graphport.runtimes.torchscript import _named


class AotiRuntime(Runtime):
    name = "aoti"
    module = "torch"

    def _load(self) -> None:
        import torch

        try:
            self.runner = torch._inductor.aoti_load_package(
                str(self.export_dir.graph_path(self.spec.name))
            )
        except Exception as e:
            raise RuntimeUnavailableError(f"AOTInductor could not load the package: {e}") from e

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            outputs = self.runner(*(torch.from_numpy(feeds[n]) for n in self.input_names))
        return _named(self.output_names, outputs)

    def describe(self) -> str:
        return f"aoti (torch {self.version()})"

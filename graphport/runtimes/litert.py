"""LiteRT adapter: runs a .tflite on ai-edge-litert's interpreter.

Inputs are set positionally in the manifest's order; the interpreter's inputs are resized
to each feed's shape before its tensors are allocated.
"""

from __future__ import annotations

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.runtimes.base import Runtime


class LiteRtRuntime(Runtime):
    name = "litert"
    module = "ai_edge_litert"
    formats = frozenset({"litert"})

    def _load(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(
                model_path=str(self.export_dir.graph_path(self.spec.name)),
                num_threads=self.options.get("threads"),
            )
        except Exception as e:
            raise RuntimeUnavailableError(f"LiteRT could not load the model: {e}") from e
        self.shapes: tuple[tuple[int, ...], ...] | None = None

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = self.interpreter.get_input_details()
        arrays = [feeds[n] for n in self.input_names]
        shapes = tuple(a.shape for a in arrays)
        if shapes != self.shapes:
            for detail, array in zip(inputs, arrays, strict=True):
                self.interpreter.resize_tensor_input(detail["index"], array.shape, strict=False)
            self.interpreter.allocate_tensors()
            self.shapes = shapes
        for detail, array in zip(inputs, arrays, strict=True):
            self.interpreter.set_tensor(detail["index"], array.astype(detail["dtype"]))
        self.interpreter.invoke()
        outputs = self.interpreter.get_output_details()
        return {
            name: self.interpreter.get_tensor(detail["index"]).copy()
            for name, detail in zip(self.output_names, outputs, strict=True)
        }

    def describe(self) -> str:
        return f"litert (ai-edge-litert {self.version()})"

"""OpenVINO adapter: reads the ONNX graph (or IR) and compiles it for a device (CPU)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.runtimes.base import Runtime


class OpenVinoRuntime(Runtime):
    """Options: ``device`` (default CPU), ``threads``, ``precision`` (inference precision).

    On CPUs with bf16 units OpenVINO computes fp32 graphs in bf16 unless told otherwise;
    graphport asks for the export's own precision so parity means what it says. Pass
    ``precision="bf16"`` to trade accuracy for speed.
    """

    name = "openvino"
    module = "openvino"
    formats = frozenset({"onnx", "openvino"})

    def _load(self) -> None:
        import openvino as ov

        if self.export_dir.manifest.dtype == "bf16" and self.export_dir.manifest.format == "onnx":
            # Seen with openvino 2026.4: bfloat16 ONNX tensors come back as float16 garbage.
            raise RuntimeUnavailableError(
                "OpenVINO misreads bfloat16 ONNX graphs (its results are far from eager); "
                "run bf16 exports on a runtime with bfloat16 kernels."
            )
        self.core = ov.Core()
        self.request = self._compile(self._read()).create_infer_request()
        self._exposed: dict[Any, Any] = {}  # the graph with intermediates exposed, by values

    def _read(self) -> Any:
        try:
            return self.core.read_model(str(self.export_dir.graph_path(self.spec.name)))
        except Exception as e:
            raise RuntimeUnavailableError(f"OpenVINO could not read the graph: {e}") from e

    def _compile(self, model: Any) -> Any:
        device = self.options.get("device", "CPU")
        default = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}[self.export_dir.manifest.dtype]
        config = {"INFERENCE_PRECISION_HINT": self.options.get("precision") or default}
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        try:
            return self.core.compile_model(model, device, config)
        except Exception as e:
            raise RuntimeUnavailableError(f"OpenVINO could not compile the graph: {e}") from e

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._collect(self.request.infer(feeds, share_inputs=True), self.output_names)

    @staticmethod
    def _collect(results: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
        # A compiled output can carry several names (a fused bias add keeps its MatMul's),
        # and get_any_name() may return the other one.
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        return {name: np.array(by_name[name], copy=True) for name in names if name in by_name}

    def run_with_intermediates(
        self, feeds: Mapping[str, Any], values: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The model read again with a result added for every tensor named in ``values``
        (tensor names survive OpenVINO's conversion; folded ones are gone), compiled and
        run once."""
        wanted = frozenset(values) - set(self.output_names)
        cache = self._exposed  # every case asks for the same values: compiled once
        if wanted not in cache:
            model = self._read()
            ports = [
                port
                for op in model.get_ops()
                if op.get_type_name() not in ("Result", "Constant", "Parameter")
                for port in op.outputs()
                if port.get_names() & wanted
            ]
            if ports:
                model.add_outputs(ports)
            cache.clear()
            cache[wanted] = self._compile(model).create_infer_request()
        results = cache[wanted].infer(self.check_feeds(feeds))
        return self._collect(results, [*self.output_names, *wanted])

    def describe(self) -> str:
        return f"openvino {self.version()} ({self.options.get('device', 'CPU')})"

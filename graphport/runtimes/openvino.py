"""OpenVINO adapter: reads the ONNX graph (or IR) and compiles it for a device (CPU)."""

from __future__ import annotations

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
        device = self.options.get("device", "CPU")
        default = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}[self.export_dir.manifest.dtype]
        config = {"INFERENCE_PRECISION_HINT": self.options.get("precision") or default}
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        core = ov.Core()
        try:
            model = core.read_model(str(self.export_dir.graph_path(self.spec.name)))
            self.compiled = core.compile_model(model, device, config)
        except Exception as e:
            raise RuntimeUnavailableError(f"OpenVINO could not compile the graph: {e}") from e
        self.request = self.compiled.create_infer_request()

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer(feeds, share_inputs=True)
        # A compiled output can carry several names (a fused bias add keeps its MatMul's),
        # and get_any_name() may return the other one.
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        return {name: np.array(by_name[name], copy=True) for name in self.output_names}

    def describe(self) -> str:
        return f"openvino {self.version()} ({self.options.get('device', 'CPU')})"

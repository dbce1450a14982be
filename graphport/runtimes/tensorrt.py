"""TensorRT adapter: runs a serialized engine on the GPU, with torch CUDA tensors as buffers.

Only exercised where TensorRT and an NVIDIA GPU exist; elsewhere loading fails with the
one-sentence error of ``require_tensorrt``.
"""

from __future__ import annotations

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.runtimes.base import Runtime


class TensorRtRuntime(Runtime):
    name = "tensorrt"
    module = "tensorrt"

    def _load(self) -> None:
        # Inside: the exporters package loads torch, which this adapter does not need.
        from graphport.export.tensorrt import require_tensorrt

        trt, _, _ = require_tensorrt()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        data = self.export_dir.graph_path(self.spec.name).read_bytes()
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise RuntimeUnavailableError(
                "TensorRT could not deserialize the engine; it was built for another GPU or "
                "TensorRT version: re-export on this machine."
            )
        self.context = self.engine.create_execution_context()

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        stream = torch.cuda.current_stream()
        buffers = {}
        for name in self.input_names:
            buffers[name] = torch.from_numpy(feeds[name]).cuda()
            self.context.set_input_shape(name, tuple(buffers[name].shape))
        for spec in self.spec.outputs:
            shape = tuple(self.context.get_tensor_shape(spec.name))
            dtype = getattr(torch, np.dtype(spec.dtype).name)
            buffers[spec.name] = torch.empty(shape, dtype=dtype, device="cuda")
        for name, tensor in buffers.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeUnavailableError("TensorRT failed to execute the engine.")
        stream.synchronize()
        return {name: buffers[name].cpu().numpy() for name in self.output_names}

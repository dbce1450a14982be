"""Triton's ``ModelConfig`` for an export's graph (rules 1-6 of ``graphport.deploy.triton``).

``config.pbtxt`` is a ``ModelConfig`` message of Triton's own schema (tritonclient's
``model_config_pb2``, the ``triton`` extra) written with protobuf's text format, so it is
what Triton parses by construction. ``model_config`` decides the backend, the batching and
the tensors' dims from the manifest, or refuses in one sentence where Triton cannot serve
the export.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from graphport.errors import RuntimeUnavailableError, UsageError
from graphport.export.openvino import GENAI_MODEL_FILE
from graphport.formats import formats_for_target, get_format
from graphport.manifest import GraphSpec, Manifest, TensorSpec

logger = logging.getLogger(__name__)

VERSION = "1"  # the version directory every model is written in
MAX_QUEUE_DELAY_US = 100  # a short wait lets concurrent requests join one batch


@dataclasses.dataclass(frozen=True)
class Backend:
    platform: str | None
    backend: str
    model_file: str
    # Written only where the file is not the backend's default name.
    default_model_filename: str | None = None


# Rule 1: by the backend a format names for the triton target (graphport/formats/).
BACKENDS = {
    "onnxruntime": Backend("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "openvino": Backend(None, "openvino", "model.xml"),
    "tensorrt": Backend("tensorrt_plan", "tensorrt", "model.plan"),
    "pytorch": Backend("pytorch_libtorch", "pytorch", "model.pt"),
}
OPENVINO_ONNX = Backend(None, "openvino", "model.onnx", default_model_filename="model.onnx")
ENSEMBLE = Backend("ensemble", "", "")
DATA_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "object": "TYPE_STRING",
}


@dataclasses.dataclass
class TritonTensor:
    name: str
    data_type: str
    dims: list[int]
    reshape: list[int] | None = None


@dataclasses.dataclass
class TritonConfig:
    """The fields of Triton's ModelConfig that graphport writes."""

    name: str
    backend: Backend
    max_batch_size: int
    inputs: list[TritonTensor]
    outputs: list[TritonTensor]
    parameters: dict[str, str] = dataclasses.field(default_factory=dict)
    cpu_only: bool = False
    op_library: str | None = None  # model_operations' custom-op library (rule 7)
    # An ensemble's steps: (model name, {model input: ensemble tensor}, {output: tensor}).
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = dataclasses.field(
        default_factory=list
    )

    def to_message(self) -> Any:
        """The config as Triton's ``ModelConfig`` protobuf message."""
        schema = model_config_schema()
        config = schema.ModelConfig(
            name=self.name,
            platform=self.backend.platform or "",
            backend=self.backend.backend,  # an ensemble has a platform only
            # Written only where the file is not the backend's default name.
            default_model_filename=self.backend.default_model_filename or "",
            max_batch_size=self.max_batch_size,
        )
        for tensors, entries in ((self.inputs, config.input), (self.outputs, config.output)):
            for tensor in tensors:
                entry = entries.add(
                    name=tensor.name,
                    data_type=schema.DataType.Value(tensor.data_type),
                    dims=tensor.dims,
                )
                if tensor.reshape is not None:  # rule 3: present even when empty
                    entry.reshape.SetInParent()
                    entry.reshape.shape.extend(tensor.reshape)
        if self.max_batch_size > 0:
            config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
        if self.cpu_only:
            config.instance_group.add(kind=schema.ModelInstanceGroup.KIND_CPU)
        for key, value in self.parameters.items():
            config.parameters[key].string_value = value
        if self.op_library:
            config.model_operations.op_library_filename.append(self.op_library)
        for model, inputs, outputs in self.steps:
            config.ensemble_scheduling.step.add(
                model_name=model, model_version=-1, input_map=inputs, output_map=outputs
            )
        return config

    def to_pbtxt(self) -> str:
        """``config.pbtxt``: the message in protobuf text format."""
        from google.protobuf import text_format

        return text_format.MessageToString(self.to_message())


def model_config_schema() -> Any:
    """Triton's model-config protobuf module (tritonclient's), or one clear error."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise RuntimeUnavailableError(
            "Triton deployment writes config.pbtxt with Triton's own model-config schema, "
            "which tritonclient ships; install it with pip install 'graphport[triton]'."
        ) from None
    return model_config_pb2


def backend_for(manifest: Manifest) -> Backend:
    """The Triton backend that serves the export (rule 1), or one clear ``UsageError``."""
    key = get_format(manifest.format).deploy_targets.get("triton")
    if key is None:
        taken = {f.deploy_targets["triton"]: f.name for f in formats_for_target("triton")}
        names = [taken[b] for b in BACKENDS if b in taken]  # in the order of the backends
        raise UsageError(
            f"Triton has no backend for the {manifest.format} format; deploy an export made "
            f"with --format {', '.join(names)} instead."
        )
    backend = BACKENDS[key]
    if backend.backend == "onnxruntime" and manifest.target == "openvino":
        return OPENVINO_ONNX  # an ONNX graph optimized for OpenVINO
    return backend


def model_config(manifest: Manifest, name: str, max_batch_size: int = 8) -> TritonConfig:
    """The ModelConfig for the export's graph; raises ``UsageError`` where Triton cannot
    serve it."""
    backend = backend_for(manifest)
    if max_batch_size < 0:
        raise UsageError(f"--max-batch-size must be 0 or more, not {max_batch_size}.")
    graph = _single_graph(manifest)
    if graph.file == GENAI_MODEL_FILE:
        raise UsageError(
            "This OpenVINO decoder keeps its KV cache as state, which the model config "
            "cannot describe; deploy a --format onnx export of the model to Triton, or serve "
            "this one with openvino_genai.LLMPipeline."
        )
    tensors = [*graph.inputs, *graph.outputs]
    batched = max_batch_size > 0
    if batched and not all(t.shape and t.shape[0] == "batch" for t in tensors):  # rule 2
        logger.warning(
            "Writing max_batch_size 0 for %s: not every input and output has the dynamic "
            "batch axis first, so Triton cannot batch requests; clients send full shapes.",
            name,
        )
        batched = False
    parameters: dict[str, str] = {}
    if batched and backend.backend == "openvino":  # rule 4
        if any(not isinstance(d, int) for t in tensors for d in t.shape[1:]):
            logger.warning(
                "Writing max_batch_size 0 for %s: Triton's OpenVINO backend pads every batch "
                "to max_batch_size, which needs static non-batch axes; clients send full shapes.",
                name,
            )
            batched = False
        else:
            parameters["ENABLE_BATCH_PADDING"] = "YES"
    if batched and backend.backend == "tensorrt":  # rule 5
        _check_engine_batch(manifest, max_batch_size)

    def tensor(spec: TensorSpec, index: int) -> TritonTensor:
        if spec.dtype not in DATA_TYPES:
            raise UsageError(
                f"Graph tensor {spec.name} has dtype {spec.dtype}, which Triton has no data "
                f"type for; it takes {', '.join(DATA_TYPES)}."
            )
        dims = [d if isinstance(d, int) else -1 for d in spec.shape[1 if batched else 0 :]]
        if batched and not dims:  # rule 3
            return TritonTensor(tensor_name(backend, spec, index), DATA_TYPES[spec.dtype], [1], [])
        return TritonTensor(tensor_name(backend, spec, index), DATA_TYPES[spec.dtype], dims)

    return TritonConfig(
        name,
        backend,
        max_batch_size if batched else 0,
        [tensor(s, i) for i, s in enumerate(graph.inputs)],
        [tensor(s, i) for i, s in enumerate(graph.outputs)],
        parameters,
        cpu_only=backend.backend == "openvino",
    )


def tensor_name(backend: Backend, spec: TensorSpec, index: int) -> str:
    """The name a client uses for the tensor (rule 6)."""
    return f"{spec.name}__{index}" if backend.backend == "pytorch" else spec.name


def _single_graph(manifest: Manifest) -> GraphSpec:
    if len(manifest.graphs) != 1:
        names = ", ".join(g.name for g in manifest.graphs)
        raise UsageError(
            f"The export has {len(manifest.graphs)} graphs ({names}); Triton deployment serves "
            "single-graph exports only."
        )
    return manifest.graphs[0]


def _check_engine_batch(manifest: Manifest, max_batch_size: int) -> None:
    profile = manifest.exporter.get("profile") or []
    limit = min((p["max"][0] for p in profile), default=None)
    if limit is not None and max_batch_size > limit:
        raise UsageError(
            f"--max-batch-size {max_batch_size} exceeds the TensorRT engine's profile, which "
            f"serves batches up to {limit}; pass --max-batch-size {limit} or less, or re-export "
            f"with --trt-profile batch=1:{max_batch_size}:{max_batch_size}."
        )

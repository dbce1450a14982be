"""Triton Inference Server model repositories.

Layout: ``DEST/<model>/config.pbtxt`` and ``DEST/<model>/1/<artifact>``, plus the export's
tokenizer and config files beside config.pbtxt so a client can prepare inputs. With
``max_batch_size > 0`` Triton owns the batch axis: it is dropped from the dims and
dynamic batching is enabled; dynamic axes are -1.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from graphport.errors import UsageError
from graphport.exporters.pipeline import check_output_path, move_into_place, staging_directory
from graphport.manifest import ExportDirectory, TensorSpec

logger = logging.getLogger(__name__)

# export format -> (config key, value, artifact name in the version directory)
BACKENDS = {
    "onnx": ("platform", "onnxruntime_onnx", "model.onnx"),
    "openvino": ("backend", "openvino", "model.xml"),
    "tensorrt": ("platform", "tensorrt_plan", "model.plan"),
    "torchscript": ("platform", "pytorch_libtorch", "model.pt"),
}
DATA_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _tensor(spec: TensorSpec, batched: bool) -> str:
    dims = [-1 if not isinstance(d, int) else d for d in spec.shape]
    if batched:
        dims = dims[1:]
    return (
        f'  {{\n    name: "{spec.name}"\n    data_type: {DATA_TYPES[spec.dtype]}\n'
        f"    dims: [ {', '.join(map(str, dims))} ]\n  }}"
    )


def model_config(directory: ExportDirectory, name: str, max_batch_size: int) -> str:
    """config.pbtxt text for an export directory."""
    manifest = directory.manifest
    key, value, _ = BACKENDS[manifest.format]
    graph = manifest.graph()
    tensors = [*graph.inputs, *graph.outputs]
    batched = max_batch_size > 0 and all(t.shape and t.shape[0] == "batch" for t in tensors)
    if max_batch_size > 0 and not batched:
        logger.warning("Axis 0 is not a dynamic batch axis everywhere: max_batch_size set to 0.")
        max_batch_size = 0
    inputs = ",\n".join(_tensor(t, batched) for t in graph.inputs)
    outputs = ",\n".join(_tensor(t, batched) for t in graph.outputs)
    text = (
        f'name: "{name}"\n{key}: "{value}"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
    )
    if batched:
        text += "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n"
    return text


def deploy_triton(
    export_dir: Path,
    dest: Path,
    model_name: str | None = None,
    max_batch_size: int = 8,
    overwrite: bool = False,
) -> Path:
    directory = ExportDirectory(export_dir)
    manifest = directory.manifest
    if manifest.format not in BACKENDS:
        raise UsageError(
            f"Triton has no backend for {manifest.format} exports; deploy one of "
            f"{', '.join(BACKENDS)} (re-export with --format)."
        )
    if manifest.target and manifest.target != "onnxruntime":
        raise UsageError(f"The export targets {manifest.target}, which Triton does not run.")
    name = model_name or dest.name
    if not _NAME.match(name):
        raise UsageError(
            f"Model name {name!r} is not valid for Triton; use letters, digits, '_', '-', '.'."
        )
    if max_batch_size < 0:
        raise UsageError("--max-batch-size must be 0 (no batching) or positive.")
    check_output_path(dest, overwrite)
    graph = manifest.graph()
    _, _, artifact = BACKENDS[manifest.format]
    with staging_directory(dest) as staging:
        model_dir = staging / name
        version = model_dir / "1"
        version.mkdir(parents=True)
        shutil.copy2(directory.path / graph.file, version / artifact)
        if graph.external_data:
            data_name = "model.bin" if manifest.format == "openvino" else graph.external_data
            shutil.copy2(directory.path / graph.external_data, version / data_name)
        for file in manifest.files:
            if not file.startswith("model"):
                shutil.copy2(directory.path / file, model_dir / file)
        (model_dir / "config.pbtxt").write_text(model_config(directory, name, max_batch_size))
        (staging / "README.md").write_text(
            f"# Triton model repository\n\n`{name}` ({manifest.task}, {manifest.format}) "
            f"exported by graphport from {manifest.source.get('model')}.\n\n"
            f"    tritonserver --model-repository {dest.resolve()}\n\n"
            "Tokenizer and config files sit beside config.pbtxt for clients.\n"
        )
        move_into_place(staging, dest)
    return dest

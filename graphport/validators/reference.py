"""The eager reference: the source checkpoint of an export, loaded as it was traced.

Validation compares every graph with this model. It lives with the validators, not with
the runtimes, because loading it reads the checkpoint (models/loader.py, and for a GPTQ
checkpoint the streamed reader of export/streaming.py), which runtimes never do: the
``torch`` runtime runs the model it is handed (``TorchRuntime(..., model=...)``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from graphport.errors import ModelLoadError
from graphport.export.streaming import CheckpointReader, checkpoint_keys
from graphport.export.tasks import Task
from graphport.graphs.gptq import GptqSpec, dequantize_gptq
from graphport.manifest import ExportDirectory
from graphport.models.loader import (
    DTYPES,
    Checkpoint,
    load_checkpoint,
    load_meta_model,
    load_model,
)
from graphport.models.registry import get_onnx_config
from graphport.resources import available_memory, gigabytes

logger = logging.getLogger(__name__)


def load_reference(directory: ExportDirectory, dtype: str | None = None) -> Any:
    """The eager model an export was traced from, as it was loaded for tracing (the whole
    model: a composite export's graphs are its sub-modules), in ``dtype`` (default: the
    export's, unless that does not fit in memory: see ``reference_dtype``)."""
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
    dtype = dtype or reference_dtype(checkpoint, manifest.dtype)
    if GptqSpec.from_config(checkpoint.config) is not None:
        return dequantized_gptq_model(checkpoint, task, dtype, dict(overrides or {}))
    return load_model(checkpoint, task, dtype, dict(overrides or {}))


def dequantized_gptq_model(
    checkpoint: Checkpoint, task: Task, dtype: str, overrides: dict[str, Any]
) -> Any:
    """A GPTQ checkpoint as the float model its blocks stand for (each Linear's weight
    dequantized), the reference its MatMulNBits export is validated against; loading it
    through transformers would need a GPTQ kernel package."""
    spec = GptqSpec.from_config(checkpoint.config)
    model = load_meta_model(checkpoint, task, dtype, overrides)
    reader = CheckpointReader(checkpoint.weight_files)
    keys = checkpoint_keys(model, reader)
    linears = {
        f"{prefix}.weight": module
        for prefix, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and f"{prefix}.qweight" in reader
    }
    state = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if name in linears:
            prefix, linear = name.removesuffix(".weight"), linears[name]

            def read(part: str, prefix: str = prefix) -> Any:
                key = f"{prefix}.{part}"
                return reader.read(key).numpy() if key in reader else None

            weight = dequantize_gptq(
                read("qweight"),
                read("qzeros"),
                read("scales"),
                read("g_idx"),
                spec,
                linear.in_features,
                linear.out_features,
            )
            state[name] = torch.from_numpy(weight.T.copy())
        elif id(param) in keys:
            state[name] = reader.read(keys[id(param)])
    state = {k: v.to(DTYPES[dtype]) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=True)
    left = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if left:
        raise ModelLoadError(
            f"The GPTQ checkpoint {checkpoint.path} has no tensor for {', '.join(left[:3])}; "
            "re-save it with every weight."
        )
    return model.eval()


def reference_dtype(checkpoint: Checkpoint, export_dtype: str) -> str:
    """The precision to load an eager reference in: the export's, or the checkpoint's
    own (half) precision when the export's would take more than 70 % of the memory
    available (the 7B-shaped Llama of benchmarks/llm.py: 23.7 GB in fp32, 11.9 GB as its
    bf16 checkpoint stores it)."""
    stored = checkpoint.stored_dtype()
    width = {"fp32": 4, "fp16": 2, "bf16": 2}
    need = checkpoint.parameter_count() * width[export_dtype]
    if width[stored] >= width[export_dtype] or need < 0.7 * available_memory():
        return export_dtype
    logger.warning(
        "The %s eager reference would take %s of the %s available; comparing against it in "
        "its stored %s instead.",
        export_dtype,
        gigabytes(need),
        gigabytes(available_memory()),
        stored,
    )
    return stored

"""Streamed exports: whether an export must stream its weights, and writing one.

An export in memory holds the eager model and its traced graph (and a quantized export a
second graph): its peak is about ``IN_MEMORY_FACTOR`` times the float weights. A
checkpoint whose weights do not fit that way is exported by streaming
(export/streaming.py): traced on the meta device, each weight read from the
checkpoint, quantized if asked (graphs/weight_only.py) and written, one at a time. The
validation after it loads the eager model in the checkpoint's own precision and frees
it before any runtime loads the graph (validators/parity.py ``release_reference``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from graphport.errors import ExportError, UsageError
from graphport.export.artifacts import Artifact
from graphport.export.config import SubGraph
from graphport.export.onnx import export_to_onnx, tensor_bytes
from graphport.export.streaming import CheckpointReader, bind_checkpoint
from graphport.formats import get_format
from graphport.graphs.cleanup import optimize_graph
from graphport.graphs.gptq import GptqSpec, gptq_to_nbits
from graphport.graphs.weight_only import MatMulNBitsPass, NBitsBlocks, NBitsShape
from graphport.manifest import GraphSpec
from graphport.models.loader import Checkpoint
from graphport.resources import GIB, available_memory, free_disk, gigabytes

logger = logging.getLogger(__name__)

# Peak memory of an in-memory export over its float weights (the eager model, the traced
# graph, the copy torch.onnx serializes, and validation with the eager model and two
# runtimes loaded), measured by benchmarks/llm.py: 24031 MiB (25.2 GB) for the 4.40 GB fp32
# 1.1B Llama (5.7x), 3686 MiB for its 0.50 GB 125M one (7.7x, where the libraries' own
# memory weighs more); rounded up.
IN_MEMORY_FACTOR = 6.0
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
STREAMED_QUANT_MODES = ("int4-weight",)
# What the interpreter, torch and the runtime libraries hold before any weight.
BASE_MEMORY = 1 * GIB


def should_stream(
    checkpoint: Checkpoint,
    gptq: GptqSpec | None,
    dtype: str,
    fmt: str,
    quantize: str | None,
    requested: bool | None,
) -> bool:
    """Whether to export ``checkpoint`` (GPTQ with settings ``gptq``) by streaming: as
    ``requested``, else when the in-memory export would not fit in the memory available
    now, and for an int4 export of a causal LM (which streaming writes straight from the
    checkpoint, where the in-memory export writes, validates and re-reads an fp32 graph
    first). The export plan (api/plan.py) asks once."""
    if requested is False:
        if gptq is not None:
            raise UsageError(
                f"{checkpoint.path} is a GPTQ checkpoint, which graphport exports only by "
                "streaming its int blocks into MatMulNBits; drop --no-streaming."
            )
        return False
    if requested is None and gptq is None:
        if not checkpoint.safetensors or not get_format(fmt).streams:
            return False
        need = checkpoint.parameter_count() * DTYPE_BYTES[dtype] * IN_MEMORY_FACTOR
        if need + BASE_MEMORY < available_memory():
            causal = any(a.endswith("ForCausalLM") for a in checkpoint.architectures)
            if quantize == "int4-weight" and causal and dtype == "fp32":
                logger.info("Streaming %s's weights into int4 blocks", checkpoint.source)
                return True
            return False
        logger.warning(
            "Exporting %s in memory would need about %s and %s is available: streaming its "
            "weights from the checkpoint instead (--no-streaming to override).",
            checkpoint.source,
            gigabytes(int(need)),
            gigabytes(available_memory()),
        )
    if not get_format(fmt).streams:
        raise UsageError(
            f"A streamed export writes ONNX, not {fmt}; export with --format onnx (convert "
            "it afterwards), or with --no-streaming on a machine with more memory."
        )
    if not checkpoint.safetensors:
        raise UsageError(
            f"{checkpoint.path} stores its weights as pickled .bin files, which cannot be read "
            "one tensor at a time; re-save it with safetensors (save_pretrained does by "
            "default), or export with --no-streaming."
        )
    if quantize is not None and quantize not in STREAMED_QUANT_MODES:
        raise UsageError(
            f"A streamed export quantizes in mode {', '.join(STREAMED_QUANT_MODES)} only, not "
            f"{quantize}: the other modes need the whole graph in memory; use --quantize "
            "int4-weight, or --no-streaming on a machine with more memory."
        )
    return True


def peak_memory(checkpoint: Checkpoint, dtype: str, stream: bool, validate: bool) -> int:
    """Bytes an export of ``checkpoint`` is expected to need at its peak: in memory,
    ``IN_MEMORY_FACTOR`` times its float weights; streamed, the eager model validation
    loads in the checkpoint's own precision, or (unvalidated) the largest tensor."""
    if not stream:
        parameters = checkpoint.parameter_count() or checkpoint.weight_bytes // 4
        return int(BASE_MEMORY + parameters * DTYPE_BYTES[dtype] * IN_MEMORY_FACTOR)
    if validate:
        return BASE_MEMORY + checkpoint.weight_bytes
    return BASE_MEMORY + _largest_tensor(checkpoint) * 4


def check_memory(checkpoint: Checkpoint, validate: bool) -> None:
    """Refuse before any work when even the streamed export cannot fit: validation
    needs the eager model in the checkpoint's own precision."""
    need = BASE_MEMORY + (checkpoint.weight_bytes if validate else 0)
    available = available_memory()
    if need > available:
        raise UsageError(
            f"Exporting {checkpoint.source} needs about {gigabytes(need)} of memory even "
            f"streamed (its eager model for validation), and {gigabytes(available)} is "
            "available; free memory, export on a larger machine, or pass --no-validate "
            f"(then about {gigabytes(BASE_MEMORY + _largest_tensor(checkpoint) * 4)})."
        )


def _largest_tensor(checkpoint: Checkpoint) -> int:
    tensors = CheckpointReader(checkpoint.weight_files).tensors.values()
    return max((t.nbytes for t in tensors), default=0)


def write_streamed(
    graph: SubGraph,
    eager: Any,
    checkpoint: Checkpoint,
    staging: Path,
    opset: int | None,
    quantize: str | None,
    gptq_spec: GptqSpec | None = None,
    block_size: int = 32,
) -> Artifact:
    """Trace ``graph`` (of a model on the meta device) and write it with its weights read
    from ``checkpoint``, int4-quantized on the way for ``quantize="int4-weight"``; the
    Linear layers of a GPTQ checkpoint (settings ``gptq_spec``) keep their blocks."""
    start = time.perf_counter()
    reader = CheckpointReader(checkpoint.weight_files)
    gptq = gptq_linears(eager, gptq_spec, reader)
    logger.info("Tracing %s on the meta device", graph.name)
    exported = export_to_onnx(graph.module, graph.config, opset)
    model = exported.model
    weights = bind_checkpoint(model, graph.module, eager, reader, provided=gptq)
    optimize_graph(model)
    details: dict[str, Any] = {}
    if quantize == "int4-weight" or gptq:
        prequantized = {weights[name]: blocks for name, blocks in gptq.items()}
        nbits = MatMulNBitsPass(
            block_size=block_size,
            prequantized=prequantized,
            float_weights=quantize == "int4-weight",
        )
        nbits(model)
        unused = set(prequantized) & set(model.graph.initializers)
        if unused:
            raise ExportError(
                f"GPTQ weights {', '.join(sorted(unused)[:3])} are not read by a MatMul in "
                "the traced graph, so they cannot become MatMulNBits; export this checkpoint "
                "after dequantizing it."
            )
        bits = next(iter(gptq.values()))[0].bits if gptq else 4
        details = {"bits": bits, "block_size": block_size, "method": "rtn", "matmuls": nbits.count}
        if gptq:
            details.update(
                method="gptq" if quantize is None else "gptq, rtn for the float weights",
                gptq_linears=len(gptq),
            )
    size = tensor_bytes(model)  # from the lazy tensors' shapes: nothing is read
    free = free_disk(staging)
    if size > free:
        raise UsageError(
            f"The export needs {gigabytes(size)} on disk and {staging.parent} has "
            f"{gigabytes(free)} free; free space or choose another output directory."
        )
    file, data = f"{graph.name}.onnx", f"{graph.name}.onnx_data"
    logger.info("Writing %s (%s of weights, read from the checkpoint)", file, gigabytes(size))
    ir.save(model, staging / file, external_data=data, callback=_progress(size))
    info = {
        "strategy": exported.strategy,
        "fallback_reason": None,
        "attempts": [dataclasses.asdict(a) for a in exported.attempts],
        "streamed": {"seconds": round(time.perf_counter() - start, 1), **details},
    }
    spec = GraphSpec.from_ir(graph.name, file, model, data)
    return Artifact(spec, [file, data], info, exported.opset)


def gptq_linears(
    eager: Any, spec: GptqSpec | None, reader: CheckpointReader
) -> dict[str, tuple[NBitsShape, Any]]:
    """For a GPTQ checkpoint (settings ``spec``): eager weight name -> (its MatMulNBits
    shape, a function repacking its stored blocks) for every Linear stored as
    qweight/qzeros/scales."""
    import torch

    if spec is None:
        return {}
    found = {}
    for prefix, module in eager.named_modules():
        if not isinstance(module, torch.nn.Linear) or f"{prefix}.qweight" not in reader:
            continue
        k, n = module.in_features, module.out_features
        g_idx = reader.read(f"{prefix}.g_idx").numpy() if f"{prefix}.g_idx" in reader else None
        group = spec.group(k)
        perm = g_idx is not None and not np.array_equal(g_idx, np.arange(k) // group)
        shape = NBitsShape(k, n, spec.bits, spec.block_size(k), perm=bool(perm))
        found[f"{prefix}.weight"] = (shape, _gptq_blocks(reader, prefix, spec, k, n))
    logger.info("GPTQ checkpoint: %d Linear layers keep their int%d blocks", len(found), spec.bits)
    return found


def _gptq_blocks(reader: CheckpointReader, prefix: str, spec: GptqSpec, k: int, n: int) -> Any:
    def compute() -> NBitsBlocks:
        def read(name: str) -> np.ndarray | None:
            key = f"{prefix}.{name}"
            return reader.read(key).numpy() if key in reader else None

        weight = gptq_to_nbits(
            read("qweight"), read("qzeros"), read("scales"), read("g_idx"), spec, k, n
        )
        zero_points = weight.zero_points
        if zero_points is None:  # the default zero point, written out: the fast kernel
            blocks = weight.scales.shape[1]
            middle, width = (0x88, -(-blocks // 2)) if spec.bits == 4 else (128, blocks)
            zero_points = np.full((n, width), middle, dtype=np.uint8)
        return NBitsBlocks(weight.b, weight.scales, zero_points, perm=weight.perm)

    return compute


def _progress(total: int) -> Any:
    """An ``ir.save`` callback logging every tenth of the bytes written."""
    state = {"next": 0.1}

    def callback(tensor: Any, info: Any) -> None:
        done = (info.offset + tensor.nbytes) / max(total, 1)
        if done >= state["next"]:
            logger.info("  %3.0f%% written", min(done, 1.0) * 100)
            state["next"] = done + 0.1

    return callback

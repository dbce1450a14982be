"""ExecuTorch programs (.pte) lowered to XNNPACK, PyTorch's on-device runtime.

Steps (the path executorch's own XNNPACK recipes take, executorch/backends/xnnpack/recipes):

1. Quantization, when asked, is a torchao source transform of a copy of the eager model
   (the original stays the validation reference): ``Int8DynamicActivationIntxWeightConfig``
   with int8 per-channel weights (``int8-dynamic``: dynamic int8 linear) or int4 weights in
   groups of 32 (``int4-weight``). XNNPACK has no fp32-activation kernel for grouped int4
   weights, so int4 weights run with int8 dynamic activations, as executorch's
   ``TORCHAO_INT8_DYNAMIC_ACT_INT4_WEIGHT_PER_TENSOR`` recipe does.
2. ``torch.export`` with every dynamic axis bounded (ExecuTorch plans memory for the upper
   bound): the ranges TensorRT profiles use (batch up to 16, sequence up to 512 or the
   model's positions).
3. ``to_edge_transform_and_lower`` with ``XnnpackPartitioner``, then ``to_executorch``. The
   operators left outside the XNNPACK delegate run on ExecuTorch's portable kernels; they
   are counted in the manifest and logged.

A decoder is exported with a static KV cache (transformers'
``TorchExportableModuleForDecoderOnlyLM``): the cache lives in the program's mutable
buffers, ``forward(input_ids, cache_position) -> logits`` for batch 1, and the cache length
is fixed at export (``max_cache_len``). The runtime adapter (graphport/runtimes/executorch.py)
keeps the program's cache and feeds only the tokens it has not seen.
"""

from __future__ import annotations

import collections
import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from graphport.errors import ExportError, UsageError
from graphport.export.config import OnnxConfig
from graphport.export.signature import wrap_for_tracing
from graphport.export.tensorrt import axis_ranges

logger = logging.getLogger(__name__)

# --quantize modes this format takes -> the weight dtype of torchao's int8-dynamic config.
QUANT_MODES = {"int8-dynamic": "int8", "int4-weight": "int4"}
INT4_GROUP_SIZE = 32
DEFAULT_MAX_CACHE_LEN = 256
# Graph nodes that are bookkeeping, not operators that compute on portable kernels.
_BOOKKEEPING = {"executorch_call_delegate", "getitem"}


def check_quantize(mode: str | None) -> None:
    if mode is not None and mode not in QUANT_MODES:
        raise UsageError(
            f"--format executorch quantizes with {' or '.join(QUANT_MODES)} (torchao's "
            f"XNNPACK configs), not {mode}; pick one of those or export to onnx."
        )


def quantized_copy(model: torch.nn.Module, mode: str | None) -> torch.nn.Module:
    """``model`` itself (no mode), or a quantized copy through torchao's source transform."""
    if mode is None:
        return model
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig
    from torchao.utils import unwrap_tensor_subclass

    weights = QUANT_MODES[mode]
    config = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int8 if weights == "int8" else torch.int4,
        weight_granularity=PerAxis(0) if weights == "int8" else PerGroup(INT4_GROUP_SIZE),
    )
    quantized = copy.deepcopy(model)
    if weights == "int4":
        small = [
            name
            for name, m in quantized.named_modules()
            if isinstance(m, torch.nn.Linear) and m.in_features % INT4_GROUP_SIZE
        ]
        if small:
            raise ExportError(
                f"int4 weights are quantized in groups of {INT4_GROUP_SIZE} input features, "
                f"and {small[0]} has {quantized.get_submodule(small[0]).in_features}; use "
                "--quantize int8-dynamic for this model."
            )
    quantize_(quantized, config)
    unwrap_tensor_subclass(quantized)
    return quantized


def export_executorch(
    model: torch.nn.Module, config: OnnxConfig, path: Path, quantize: str | None = None
) -> dict[str, Any]:
    """Lower the config's graph of ``model`` to XNNPACK into ``path``; returns details.

    Inputs are positional in the config's order, outputs a list in its order.
    """
    wrapper, inputs = wrap_for_tracing(quantized_copy(model, quantize), config)
    ranges = axis_ranges(config)
    dims = {name: torch.export.Dim(name, min=1, max=high) for name, (_, _, high) in ranges.items()}
    shapes = {
        "inputs": tuple({a: dims[n] for a, n in axes.items()} for axes in config.inputs.values())
    }
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(wrapper, inputs, dynamic_shapes=shapes, strict=False)
    except Exception as e:
        raise ExportError(f"torch.export could not capture the model for ExecuTorch: {e}") from e
    details = lower_to_pte(program, path)
    details["bounds"] = {name: high for name, (_, _, high) in ranges.items()}
    return details


def export_executorch_decoder(
    model: torch.nn.Module, path: Path, max_cache_len: int, quantize: str | None = None
) -> dict[str, Any]:
    """A decoder with its static KV cache in the program: ``forward(input_ids [1, S],
    cache_position [S]) -> logits [1, S, vocab]``, S up to ``max_cache_len``."""
    from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM

    source = quantized_copy(model, quantize)
    if source is model:  # the static cache setting must not leak into the reference
        source = copy.copy(model)
    source.generation_config = copy.deepcopy(model.generation_config)
    source.generation_config.use_cache = True
    source.generation_config.cache_implementation = "static"
    try:
        wrapper = TorchExportableModuleForDecoderOnlyLM(
            source, batch_size=1, max_cache_len=max_cache_len
        )
        sequence = torch.export.Dim("sequence", min=1, max=max_cache_len - 1)
        ids = torch.zeros((1, 4), dtype=torch.long)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # strict (dynamo) capture: the non-strict program of the cache's in-place
            # updates fails in run_decompositions under torch 2.13.
            program = wrapper.export(
                input_ids=ids,
                cache_position=torch.arange(4),
                dynamic_shapes={"input_ids": {1: sequence}, "cache_position": {0: sequence}},
                strict=True,
            )
    except Exception as e:
        raise ExportError(
            f"The decoder could not be captured with a static KV cache for ExecuTorch: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}."
        ) from e
    details = lower_to_pte(program, path)
    details["static_cache"] = {"max_cache_len": max_cache_len, "batch": 1}
    return details


def lower_to_pte(program: torch.export.ExportedProgram, path: Path) -> dict[str, Any]:
    """XNNPACK lowering of an exported program into ``path``; the operators left on the
    portable kernels are returned (and logged)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.configs import (
        get_xnnpack_edge_compile_config,
        get_xnnpack_executorch_backend_config,
    )
    from executorch.exir import to_edge_transform_and_lower

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edge = to_edge_transform_and_lower(
                program,
                partitioner=[XnnpackPartitioner()],
                compile_config=get_xnnpack_edge_compile_config(),
            )
            portable = portable_operators(edge.exported_program())
            delegated = sum(
                1
                for node in edge.exported_program().graph.nodes
                if node.op == "call_function" and _name(node.target) == "executorch_call_delegate"
            )
            executorch = edge.to_executorch(get_xnnpack_executorch_backend_config())
    except Exception as e:
        raise ExportError(
            f"ExecuTorch could not lower the model to XNNPACK: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}."
        ) from e
    if delegated == 0:
        raise ExportError(
            "XNNPACK took none of the model's operators, so the program would run entirely on "
            "ExecuTorch's portable kernels; export to onnx instead."
        )
    if portable:
        logger.warning(
            "Not delegated to XNNPACK (they run on ExecuTorch's portable kernels): %s",
            ", ".join(f"{op} x{n}" for op, n in portable.items()),
        )
    path.write_bytes(executorch.buffer)
    return {
        "backend": "xnnpack",
        "delegated_subgraphs": delegated,
        "portable_operators": portable,
    }


def portable_operators(program: torch.export.ExportedProgram) -> dict[str, int]:
    """Operators outside any delegate, by name, with their counts."""
    counts: collections.Counter[str] = collections.Counter()
    for node in program.graph.nodes:
        if node.op == "call_function" and _name(node.target) not in _BOOKKEEPING:
            counts[_name(node.target)] += 1
    return dict(sorted(counts.items()))


def _name(target: Any) -> str:
    op = getattr(target, "_op", target)  # an EdgeOpOverload wraps the aten OpOverload
    if isinstance(op, torch._ops.OpOverload):
        return op.name().removeprefix("aten::")
    name = getattr(target, "__name__", "")
    if name:
        return name
    # executorch's symbolic-size operators are pybind functions without a __name__.
    return (getattr(target, "__doc__", None) and str(target.__doc__).split("(")[0]) or str(target)

"""Calibrated and mixed-precision int4 weights: NNCF's weight compression on the ONNX
graph, and onnxruntime's 8-bit MatMulNBits for the layers kept out of int4.

Rules:

1. ``awq`` and ``scale-estimation`` (and both) are NNCF's (``nncf.compress_weights``,
   ONNX backend): asymmetric int4 in blocks of ``block_size``, uint8 zero points, written
   as MatMulNBits (the export's opset is below 21). They need calibration feeds; so does a
   sensitivity metric measured on activations. NNCF's ONNX backend has no GPTQ:
   onnxruntime's (graphs/quantize.py) serves ``gptq``.
2. ``ratio`` < 1 keeps the most sensitive layers out of int4 (NNCF's mixed precision:
   ``ratio`` is the share of the eligible weights, by size, that goes to int4, and
   ``sensitivity`` ranks the layers). rtn with a ratio goes through NNCF too (the same
   min-max blocks as onnxruntime's rtn).
3. NNCF's backup precision is "none": the layers it keeps out of int4, the embedding and
   the last MatMul stay float, and onnxruntime's quantizer then writes those MatMuls as
   8-bit MatMulNBits (blocks of ``block_size``, uint8 zero points), which MLAS runs packed.
   NNCF's own int8 (a per-channel DequantizeLinear before a float MatMul) would dequantize
   on every call, and the int4 reference (validators/quantized.py) maps MatMulNBits blocks
   back to modules, not DequantizeLinear.
4. The last MatMul with a weight (lm_head of a language model; ``head_matmul``) is 8-bit
   with ``int8_head``, else int4 by onnxruntime's rtn (a head tied to the embedding, read
   through a Transpose, stays float then, as neither quantizer takes it). The embedding (a
   Gather) stays float.
5. Every MatMulNBits gets ``accuracy_level`` (NNCF writes 0): a compute hint for the kernel.
6. NNCF 3.4 writes 4-bit zero points one per byte, [N, blocks]; onnxruntime's kernel reads
   them packed two per byte (the even block in the low nibble), [N, ceil(blocks / 2)], and
   refuses the graph otherwise: they are repacked.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphport.errors import PassError, UsageError
from graphport.graphs import SENSITIVITY_METRICS

logger = logging.getLogger(__name__)

NNCF_METHODS = {  # rule 1: method -> nncf.compress_weights options
    "awq": {"awq": True},
    "scale-estimation": {"scale_estimation": True},
    "awq+scale-estimation": {"awq": True, "scale_estimation": True},
}
DEFAULT_SENSITIVITY = "max-variance"  # NNCF's default when it has data


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose second input is a 2-D constant (a Linear's weight),
    in graph (topological) order."""
    constants = {t.name: t for t in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul"
        and len(n.input) > 1
        and n.input[1] in constants
        and len(constants[n.input[1]].dims) == 2
    ]


def head_matmul(model: onnx.ModelProto, fold: bool = True) -> str | None:
    """Rule 4: the last MatMul whose weight is a 2-D constant, read directly or through a
    Transpose (a language model whose lm_head is tied to its embedding reads the table
    transposed, which neither quantizer takes: with ``fold`` the transposed copy is made
    the MatMul's own initializer, as an untied head; without, None is returned for it).
    None when there is no such MatMul."""
    from onnx import numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    producers = {out: n for n in model.graph.node for out in n.output}
    for node in reversed(model.graph.node):
        if node.op_type != "MatMul" or len(node.input) < 2:
            continue
        weight = node.input[1]
        if weight in constants and len(constants[weight].dims) == 2:
            return node.name
        transpose = producers.get(weight)
        if transpose is None or transpose.op_type != "Transpose":
            continue
        table = constants.get(transpose.input[0])
        perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"]
        if table is None or len(table.dims) != 2 or perm not in ([], [[1, 0]]):
            continue
        if not fold:
            return None
        name = f"{transpose.input[0]}.T"
        folded = numpy_helper.to_array(table).T.copy()
        model.graph.initializer.append(numpy_helper.from_array(folded, name))
        node.input[1] = name
        return node.name
    return None


def quantize_int4_nncf(
    model: onnx.ModelProto,
    block_size: int,
    method: str,
    feeds: Sequence[dict[str, np.ndarray]] | None,
    ratio: float = 1.0,
    sensitivity: str | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """NNCF's int4 (rules 1-3) of ``model``; the layers it leaves float are still MatMul.
    Returns the model and the details (``int4_layers``, ``float_layers``)."""
    import nncf

    if method not in (*NNCF_METHODS, "rtn"):
        raise UsageError(f"NNCF's int4 takes rtn, {', '.join(NNCF_METHODS)}, not {method!r}.")
    metric = sensitivity or (DEFAULT_SENSITIVITY if feeds else "weight-error")
    needs_data = method in NNCF_METHODS or (ratio < 1.0 and metric != "weight-error")
    if needs_data and not feeds:
        raise UsageError(f"int4 {method} needs calibration inputs; pass --calibration FILE.")
    before = set(weight_matmuls(model))
    options: dict[str, Any] = dict(NNCF_METHODS.get(method, {}))
    if ratio < 1.0:
        options["sensitivity_metric"] = nncf.SensitivityMetric(SENSITIVITY_METRICS[metric])
    dataset = None
    if needs_data:
        names = {i.name for i in model.graph.input}
        samples = [{k: v for k, v in f.items() if k in names} for f in feeds or ()]
        dataset = nncf.Dataset(samples)
        options["subset_size"] = len(samples)
    with quiet_nncf():
        try:
            compressed = nncf.compress_weights(
                model,
                mode=nncf.CompressWeightsMode.INT4_ASYM,
                group_size=block_size,
                ratio=ratio,
                backup_mode=nncf.BackupMode.NONE,  # rule 3
                dataset=dataset,
                # A layer whose input size the block does not divide gets the largest
                # power-of-two block that does (down to 16), else stays float (rule 3).
                advanced_parameters=nncf.AdvancedCompressionParameters(
                    group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST,
                    min_adjusted_group_size=16,
                ),
                **options,
            )
        except nncf.errors.ParameterNotSupportedError as e:
            raise UsageError(f"NNCF cannot compress this graph with {method}: {e}") from e
        except Exception as e:  # NNCF raises many types from deep inside
            raise PassError(f"NNCF could not compress the weights ({method}): {e}") from e
    pack_zero_points(compressed)
    left = weight_matmuls(compressed)
    details = {
        "tool": "nncf",
        "int4_layers": len(before - set(left)),
        "float_layers": left,
    }
    if ratio < 1.0:
        details.update({"ratio": ratio, "sensitivity": metric})
    return compressed, details


def pack_zero_points(model: onnx.ModelProto) -> int:
    """Rule 6: 4-bit zero points written one per byte, packed two per byte; returns how
    many nodes' zero points were repacked."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    count = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) < 4 or not node.input[3]:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        blocks = -(-int(attrs["K"]) // int(attrs["block_size"]))
        tensor = initializers.get(node.input[3])
        if int(attrs.get("bits", 4)) != 4 or tensor is None or blocks < 2:
            continue
        zeros = numpy_helper.to_array(tensor)
        if zeros.dtype != np.uint8 or zeros.shape != (int(attrs["N"]), blocks):
            continue  # packed already
        padded = np.pad(zeros, ((0, 0), (0, blocks % 2)))
        packed = (padded[:, 0::2] & 0x0F) | ((padded[:, 1::2] & 0x0F) << 4)
        tensor.CopyFrom(numpy_helper.from_array(packed.astype(np.uint8), tensor.name))
        count += 1
    return count


def quantize_nbits(
    model: onnx.ModelProto,
    nodes: Sequence[str],
    bits: int,
    block_size: int,
    accuracy_level: int,
) -> onnx.ModelProto:
    """The MatMuls named in ``nodes`` as onnxruntime's ``bits``-bit rtn MatMulNBits (uint8
    zero points, rule 3); every other node as it was."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if not nodes:
        return model
    chosen = set(nodes)
    others = [n.name for n in model.graph.node if n.name not in chosen]
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=False, accuracy_level=accuracy_level, bits=bits
    )
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=False,
        accuracy_level=accuracy_level,
        nodes_to_exclude=others,
        algo_config=config,
    )
    quantizer.process()
    return quantizer.model.model


def set_accuracy_level(model: onnx.ModelProto, accuracy_level: int) -> None:
    """Rule 5: the kernel's compute hint on every MatMulNBits, whoever wrote it."""
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        kept = [a for a in node.attribute if a.name != "accuracy_level"]
        del node.attribute[:]
        node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", accuracy_level)])


def save_model(model: onnx.ModelProto, dst: Path, large: bool) -> None:
    """``model`` at ``dst``; a large one with its weights in one data file beside it."""
    if large:
        onnx.save(model, dst, save_as_external_data=True, location=f"{dst.name}_data")
    else:
        onnx.save(model, dst)


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs a table and progress bars per call; graphport reports its passes itself."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nncf_logger.setLevel(level)

"""int4 weight-only quantization as an onnx-ir pass whose new weights are lazy.

graphs/quantize.py runs onnxruntime's ``MatMulNBitsQuantizer``, which reads a whole
ModelProto into memory and holds the float and the quantized weights together: right
for graphs that fit, not for a 7B decoder. ``MatMulNBitsPass`` makes the same rewrite
(``MatMul(X, W)`` with a constant 2-D float ``W`` -> ``com.microsoft.MatMulNBits``, the
blocks min-max rounded with uint8 zero points by onnxruntime's own C++ kernel, which is
what the quantizer's rtn mode calls) on an ``ir.Model`` without reading any weight: the
packed blocks, scales and zero points are ``ir.LazyTensor``s computed from ``W`` when the
graph is saved, then dropped. On a streamed export (export/streaming.py) ``W`` itself
is lazy, so each weight goes from the checkpoint to its int4 blocks in the output file
without the graph ever holding more than a few tensors.

A Linear whose checkpoint is already quantized (GPTQ) passes its blocks in through
``prequantized`` and is never dequantized.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"


@dataclasses.dataclass
class NBitsBlocks:
    """A MatMulNBits weight: ``packed`` uint8 [N, blocks, block_size * bits / 8],
    ``scales`` [N, blocks] in the graph's float type, ``zero_points`` uint8 [N,
    ceil(blocks * bits / 8)] (None: symmetric), ``g_idx`` int32 [K] (None: in order)."""

    packed: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    g_idx: np.ndarray | None = None
    # int64 [K]: the node reads ``x[..., perm]`` (a GPTQ act-order weight regrouped).
    perm: np.ndarray | None = None


def quantize_blocks(weight: np.ndarray, block_size: int) -> NBitsBlocks:
    """``weight`` [K, N] (fp32 or fp16) -> asymmetric 4-bit blocks along K, by
    onnxruntime's kernel (the one its quantizer's rtn mode runs)."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    rows, cols = weight.shape
    blocks = -(-rows // block_size)
    weight = np.ascontiguousarray(weight)
    if blocks * block_size != rows:
        weight = np.pad(weight, ((0, blocks * block_size - rows), (0, 0)))
    packed = np.zeros((cols, blocks, block_size // 2), dtype=np.uint8)
    zero_points = np.zeros((cols, (blocks + 1) // 2), dtype=np.uint8)
    scales = np.zeros((cols, blocks), dtype=weight.dtype)
    quantize_matmul_4bits(packed, weight, scales, zero_points, block_size, cols, rows, False)
    return NBitsBlocks(packed, scales, zero_points)


@dataclasses.dataclass
class NBitsShape:
    """What a MatMulNBits node's attributes and lazy inputs need to know up front."""

    k: int
    n: int
    bits: int
    block_size: int
    symmetric: bool = False
    g_idx: bool = False
    perm: bool = False

    @property
    def blocks(self) -> int:
        return -(-self.k // self.block_size)


class MatMulNBitsPass(ir.passes.InPlacePass):
    """Constant-weight MatMuls -> MatMulNBits, with lazily computed weights.

    Rules:
      1. a MatMul of the main graph whose second input is a 2-D float initializer with
         at least ``block_size`` rows becomes MatMulNBits (bits 4, ``block_size``,
         ``accuracy_level``); the embedding Gather and other consumers are left alone;
      2. a weight in ``prequantized`` (value name -> its shape and a function returning
         its blocks) takes those blocks instead of being quantized;
      3. the float initializer is dropped once nothing reads it;
      4. the new node keeps the MatMul's name, output and metadata (module scope).
    """

    def __init__(
        self,
        block_size: int = 32,
        accuracy_level: int = 4,
        prequantized: Mapping[str, tuple[NBitsShape, Callable[[], NBitsBlocks]]] | None = None,
        float_weights: bool = True,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.accuracy_level = accuracy_level
        self.prequantized = dict(prequantized or {})
        self.float_weights = float_weights  # False: only the prequantized weights
        self.count = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for node in list(graph):
            if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
                continue
            weight = node.inputs[1]
            blocks = self._blocks(weight)
            if blocks is None:
                continue
            shape, compute = blocks
            self._replace(graph, node, shape, compute)
            if not weight.uses() and weight.name in graph.initializers:  # rule 3
                graph.initializers.pop(weight.name)
        if self.count:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        return ir.passes.PassResult(model, modified=bool(self.count))

    def _blocks(
        self, weight: ir.Value | None
    ) -> tuple[NBitsShape, Callable[[], NBitsBlocks]] | None:
        if weight is None or not weight.is_initializer() or weight.const_value is None:
            return None
        if weight.name in self.prequantized:  # rule 2
            return self.prequantized[weight.name]
        if not self.float_weights:
            return None
        tensor = weight.const_value
        if len(tensor.shape) != 2 or tensor.dtype not in (
            ir.DataType.FLOAT,
            ir.DataType.FLOAT16,
        ):
            return None
        k, n = (int(d) for d in tensor.shape)
        if k < self.block_size:
            return None
        block_size = self.block_size
        return NBitsShape(k, n, 4, block_size), lambda: quantize_blocks(tensor.numpy(), block_size)

    def _replace(
        self,
        graph: ir.Graph,
        node: ir.Node,
        shape: NBitsShape,
        compute: Callable[[], NBitsBlocks],
    ) -> None:
        base = node.inputs[1].name
        float_type = node.inputs[0].dtype or ir.DataType.FLOAT
        parts = 2 + (not shape.symmetric) + shape.g_idx + shape.perm
        shared = SharedResult(compute, parts)
        per_byte = 8 // shape.bits
        activations = node.inputs[0]
        if shape.perm:  # the weight's rows were regrouped: permute the inputs alike
            perm = self._initializer(
                graph, f"{base}_perm", lambda: shared.take().perm, ir.DataType.INT64, (shape.k,)
            )
            gather = ir.node("Gather", inputs=[activations, perm], attributes={"axis": -1})
            gather.outputs[0].name = f"{base}_x_perm"
            gather.outputs[0].type = activations.type
            graph.insert_before(node, gather)
            activations = gather.outputs[0]
        inputs: list[ir.Value | None] = [
            activations,
            self._initializer(
                graph,
                f"{base}_Q{shape.bits}",
                lambda: shared.take().packed,
                ir.DataType.UINT8,
                (shape.n, shape.blocks, shape.block_size // per_byte),
            ),
            self._initializer(
                graph,
                f"{base}_scales",
                lambda: shared.take().scales.astype(float_type.numpy()),
                float_type,
                (shape.n, shape.blocks),
            ),
        ]
        if not shape.symmetric:
            inputs.append(
                self._initializer(
                    graph,
                    f"{base}_zero_points",
                    lambda: shared.take().zero_points,
                    ir.DataType.UINT8,
                    (shape.n, -(-shape.blocks // per_byte)),
                )
            )
        if shape.g_idx:
            if shape.symmetric:
                inputs.append(None)
            inputs.append(
                self._initializer(
                    graph,
                    f"{base}_g_idx",
                    lambda: shared.take().g_idx,
                    ir.DataType.INT32,
                    (shape.k,),
                )
            )
        output = node.outputs[0]
        replacement = ir.node(
            "MatMulNBits",
            inputs=inputs,
            attributes={
                "K": shape.k,
                "N": shape.n,
                "bits": shape.bits,
                "block_size": shape.block_size,
                "accuracy_level": self.accuracy_level,
            },
            domain=MS_DOMAIN,
            name=node.name,
            metadata_props=dict(node.metadata_props),  # rule 4
        )
        new_output = replacement.outputs[0]
        new_output.shape, new_output.type = output.shape, output.type
        ir.convenience.replace_nodes_and_values(
            graph, node, [node], [replacement], [output], [new_output]
        )
        self.count += 1

    @staticmethod
    def _initializer(
        graph: ir.Graph,
        name: str,
        func: Callable[[], np.ndarray],
        dtype: ir.DataType,
        shape: tuple[int, ...],
    ) -> ir.Value:
        value = ir.Value(
            name=name,
            shape=ir.Shape(shape),
            type=ir.TensorType(dtype),
            const_value=numpy_lazy(func, dtype, shape, name),
        )
        graph.register_initializer(value)
        return value


class SharedResult:
    """A value several lazy tensors are cut from (a weight's packed blocks, scales and
    zero points), computed once by whichever of them is written first and dropped after
    the last one has been written. Thread-safe: onnx_ir writes tensors in parallel."""

    def __init__(self, compute: Callable[[], Any], consumers: int) -> None:
        self._compute = compute
        self._left = consumers
        self._value: Any = None
        self._lock = threading.Lock()

    def take(self) -> Any:
        with self._lock:
            if self._value is None:
                self._value = self._compute()
            value = self._value
            self._left -= 1
            if self._left == 0:
                self._value = None  # every consumer has its part: free it
        return value


def numpy_lazy(
    func: Callable[[], np.ndarray], dtype: ir.DataType, shape: tuple[int, ...], name: str
) -> ir.LazyTensor:
    """A lazy initializer from a function returning a numpy array."""
    return ir.LazyTensor(
        lambda: ir.tensor(func(), name=name), dtype=dtype, shape=ir.Shape(shape), name=name
    )

"""Which onnxruntime CPU kernel a graph's MatMulNBits nodes take, read from the graph.

onnxruntime's MatMulNBits CPU kernel (``contrib_ops/cpu/quantization/matmul_nbits.cc``)
prepacks a node's weights for MLAS's n-bit GEMM kernels, and runs those, only when the
node allows it:

  1. its zero points are absent or uint8 (4-bit values packed two per byte). Float zero
     points, which onnxruntime's HQQ quantizer writes, turn the prepacking off;
  2. it has no ``g_idx`` input (act-order block indices);
  3. MLAS has a kernel for its ``bits`` and ``block_size``: 4 or 8 bits, blocks of 16,
     32, 64, 128 or 256;
  4. ``accuracy_level`` 4 then selects the int8-activation kernel (activations quantized
     per block at run time, integer dot products); lower levels select the
     fp32-activation kernel, which MLAS has for 4 bits only.

Any other node dequantizes its whole weight to fp32 on every call and runs an fp32 GEMM
(with a naive loop for float zero points). On the 125M Llama-style decoder of
benchmarks/generation.py, HQQ's graph decoded 5.4 tokens/s where the fp32 graph decoded
40 and a uint8-zero-point graph 101. MLAS picks the CPU's variant of a kernel at run
time; these rules are the graph's side of the choice.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import onnx

MLAS_BLOCK_SIZES = (16, 32, 64, 128, 256)
# MatMulNBits input positions.
ZERO_POINTS, G_IDX = 3, 4

PACKED_INT8 = "packed-int8"
PACKED_FP32 = "packed-fp32"
DEQUANTIZE = "dequantize"
KERNEL_TEXT = {
    PACKED_INT8: "onnxruntime's packed int8-activation kernel (fast path)",
    PACKED_FP32: "onnxruntime's packed fp32-activation kernel (accuracy level 4 would take "
    "the int8-activation one)",
}


def kernel_path(
    bits: int, block_size: int, accuracy_level: int, zero_points: str, g_idx: bool
) -> tuple[str, str]:
    """(path, reason) for one node: ``PACKED_INT8``, ``PACKED_FP32`` or ``DEQUANTIZE``,
    the reason saying why a node dequantizes (empty otherwise). ``zero_points`` is
    ``"none"`` or the element type's numpy name (``"uint8"``, ``"float32"``, ...)."""
    # Rule 1; a zero-point type the graph does not record, the kernel treats as uint8.
    if zero_points not in ("none", "uint8", "unknown"):
        return DEQUANTIZE, "zero points not uint8"
    if g_idx:  # rule 2
        return DEQUANTIZE, "a g_idx input"
    if bits not in (4, 8) or block_size not in MLAS_BLOCK_SIZES:  # rule 3
        return DEQUANTIZE, f"no MLAS kernel for {bits} bits in blocks of {block_size}"
    if accuracy_level == 4:  # rule 4
        return PACKED_INT8, ""
    if bits == 4:
        return PACKED_FP32, ""
    return DEQUANTIZE, (
        f"no fp32-activation MLAS kernel for 8 bits (accuracy level {accuracy_level})"
    )


@dataclasses.dataclass(frozen=True)
class NBitsNodes:
    """MatMulNBits nodes of one graph that share the settings their kernel depends on."""

    count: int
    bits: int
    block_size: int
    accuracy_level: int
    zero_points: str  # "none", "unknown" or the element type's numpy name
    g_idx: bool

    @property
    def path(self) -> str:
        return self._kernel()[0]

    @property
    def fast(self) -> bool:
        return self.path != DEQUANTIZE

    def _kernel(self) -> tuple[str, str]:
        return kernel_path(
            self.bits, self.block_size, self.accuracy_level, self.zero_points, self.g_idx
        )

    def describe(self) -> str:
        path, reason = self._kernel()
        zero_points = {"none": "no zero points (symmetric)"}
        kernel = KERNEL_TEXT.get(
            path, f"weights dequantized to fp32 on every call (slow path: {reason})"
        )
        return (
            f"{self.count} int{self.bits} node{'s' if self.count != 1 else ''}, block "
            f"{self.block_size}, accuracy level {self.accuracy_level}"
            f"{', with g_idx' if self.g_idx else ''}, "
            f"{zero_points.get(self.zero_points, f'{self.zero_points} zero points')} -> {kernel}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": self.path, "fast": self.fast}


@dataclasses.dataclass
class KernelReport:
    """The MatMulNBits nodes of a graph, grouped by the kernel path they take."""

    groups: list[NBitsNodes]

    @property
    def fast(self) -> bool:
        """Every MatMulNBits node runs a packed MLAS kernel (and there is at least one)."""
        return bool(self.groups) and all(g.fast for g in self.groups)

    def summary(self) -> str:
        if not self.groups:
            return "MatMulNBits: none (no weight was quantized)"
        return "MatMulNBits: " + "; ".join(g.describe() for g in self.groups)

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "fast": self.fast,
            "groups": [g.to_dict() for g in self.groups],
        }


def kernel_report(model: onnx.ModelProto) -> KernelReport:
    """Group the main graph's MatMulNBits nodes by attributes and zero-point type."""
    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for info in [*graph.input, *graph.value_info]:
        types.setdefault(info.name, info.type.tensor_type.elem_type)
    keys: Counter[tuple[int, int, int, str, bool]] = Counter()
    for node in graph.node:
        if node.op_type != "MatMulNBits" or node.domain != "com.microsoft":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inputs = [*node.input, "", ""]
        zero_points = "none"
        if inputs[ZERO_POINTS]:
            elem_type = types.get(inputs[ZERO_POINTS], onnx.TensorProto.UNDEFINED)
            zero_points = (
                onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
                if elem_type != onnx.TensorProto.UNDEFINED
                else "unknown"
            )
        keys[
            (
                int(attrs.get("bits", 4)),
                int(attrs["block_size"]),
                int(attrs.get("accuracy_level", 0)),
                zero_points,
                bool(inputs[G_IDX]),
            )
        ] += 1
    return KernelReport([NBitsNodes(count, *key) for key, count in keys.most_common()])

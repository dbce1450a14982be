"""GPTQ checkpoint tensors -> onnxruntime MatMulNBits weights, by integer repacking alone.

A GPTQ-quantized Linear (Hugging Face's ``quant_method: gptq``, written by GPTQModel,
AutoGPTQ or optimum) stores, for a weight ``W`` of ``K`` inputs by ``N`` outputs:

- ``qweight`` int32 ``[K * bits / 32, N]``: codes packed along K, low bits first;
- ``qzeros`` int32 ``[n_groups, N * bits / 32]``: zero points packed along N, low first;
- ``scales`` float16 ``[n_groups, N]``;
- ``g_idx`` int32 ``[K]``: the group of each input row (``arange(K) // group_size``
  unless the checkpoint was quantized in act order).

and ``W[k, n] = scales[g, n] * (code[k, n] - zero[g, n])`` with ``g = g_idx[k]``.
onnxruntime's ``com.microsoft.MatMulNBits`` stores the transposed weight blockwise along
K: ``B`` uint8 ``[N, n_blocks, block_size * bits / 8]`` packed low bits first, ``scales``
``[N, n_blocks]``, ``zero_points`` uint8 ``[N, ceil(n_blocks * bits / 8)]`` packed the same
way (absent: ``2 ** (bits - 1)``), ``y = x @ dequant(B).T``. The conversion rules:

  1. Codes are never dequantized: a little-endian int32 holding ``32 / bits`` codes along
     K, low first, *is* MatMulNBits's byte layout, so ``B`` is ``qweight``'s transpose
     reinterpreted as bytes. Scales are only widened to float32 (exact).
  2. Bits: 4 and 8, the widths MLAS has kernels for (graphs/nbits.py rule 3). 2 bits has
     no MLAS kernel, and 3-bit codes straddle int32 words; both are refused.
  3. Block size: MatMulNBits's blocks must be one of MLAS's sizes (16 ... 256) for the
     fast kernel. A GPTQ group of ``group_size`` rows maps to blocks of the largest MLAS
     size dividing it, each block repeating its group's scale and zero point, which is
     exact: 128 -> 128, 512 -> 256 (two blocks per group), 48 -> 16, and ``-1``
     (per-column, one group of K rows) -> the largest MLAS size dividing K. A group size
     that is not a multiple of 16, or that does not divide K, is refused.
  4. Zero points: ``gptq`` (v1) checkpoints store ``zero - 1`` (AutoGPTQ's convention,
     read back per code as GPTQ's own kernels do); ``gptq_v2`` stores ``zero``. When every
     zero point equals MatMulNBits's default ``2 ** (bits - 1)`` (symmetric
     quantization) the input is dropped. A v1 zero point that reads back as
     ``2 ** bits`` (v1's packer cannot write a zero point of 0) has no uint8 code and is
     refused.
  5. ``g_idx`` equal to ``arange(K) // group_size`` (every checkpoint without act order,
     and many with ``desc_act: true``) is dropped: a ``g_idx`` input makes onnxruntime
     dequantize the whole weight on every call (graphs/nbits.py rule 2).
  6. Act order (any other ``g_idx``): the K rows are sorted by group, so that groups are
     contiguous blocks again, and the permutation is returned as ``NBitsWeight.perm``:
     the node computes ``x[..., perm] @ W[perm]``, one Gather of the activations in front
     of a fast-kernel MatMulNBits. This needs every group to hold exactly ``group_size``
     rows (what GPTQ's act order writes); other layouts are refused. MatMulNBits's own
     ``g_idx`` input is not used: it is deprecated, dequantizes the weight on every call,
     and onnxruntime 1.32's CPU kernel ignores uint8 zero points when it is given (every
     block computes with zero point 8; measured on a 128 x 32 asymmetric act-order weight,
     max error 11.7 against GPTQ's dequantization) and refuses 8 bits.

``pack_gptq`` goes the other way for tests and tools: round-to-nearest quantization of a
float weight into GPTQ's tensors, so a test can write a GPTQ checkpoint without GPTQModel.
``dequantize_gptq`` is the float reference the tests compare MatMulNBits against.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from graphport.errors import UsageError
from graphport.graphs.nbits import MLAS_BLOCK_SIZES

logger = logging.getLogger(__name__)

SUPPORTED_BITS = (4, 8)
CHECKPOINT_FORMATS = ("gptq", "gptq_v2")


@dataclasses.dataclass(frozen=True)
class GptqSpec:
    """The GPTQ settings of a checkpoint that decide how its tensors are laid out.

    Constructing one checks them (rules 2 and 3 of the module docstring) and raises
    ``UsageError`` for settings the conversion does not take.
    """

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    desc_act: bool = False
    checkpoint_format: str = "gptq"

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise UsageError(
                f"GPTQ bits={self.bits} cannot be converted to MatMulNBits: onnxruntime's "
                f"fast kernels take {' or '.join(map(str, SUPPORTED_BITS))} bits; "
                "requantize the model with bits=4."
            )
        if self.group_size != -1 and (self.group_size <= 0 or self.group_size % 16):
            raise UsageError(
                f"GPTQ group_size={self.group_size} cannot be converted to MatMulNBits: "
                "its blocks are powers of two from 16 to 256, so a group must be a "
                "positive multiple of 16 (or -1, per column); requantize with "
                "group_size=128."
            )
        if self.checkpoint_format not in CHECKPOINT_FORMATS:
            raise UsageError(
                f"GPTQ checkpoint format {self.checkpoint_format!r} is not supported: only "
                f"{' and '.join(CHECKPOINT_FORMATS)} tensors are read; convert the "
                "checkpoint to gptq_v2 with GPTQModel."
            )

    @property
    def pack(self) -> int:
        """Codes per int32 word."""
        return 32 // self.bits

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1

    def group(self, K: int) -> int:
        """Rows per group of a weight with K inputs; refuses a group that does not divide K."""
        group = K if self.group_size == -1 else self.group_size
        if K <= 0 or K % group:
            raise UsageError(
                f"GPTQ group_size={self.group_size} does not divide the layer's {K} inputs, "
                "so its groups are not whole MatMulNBits blocks; requantize with a group "
                "size that divides every layer's input size."
            )
        return group

    def block_size(self, K: int) -> int:
        """The MatMulNBits block size for a weight with K inputs (rule 3)."""
        group = self.group(K)
        block = max((b for b in MLAS_BLOCK_SIZES if group % b == 0), default=0)
        if not block:
            raise UsageError(
                f"GPTQ groups of {group} rows (K={K}) are not a multiple of 16, the "
                "smallest MatMulNBits block; requantize with group_size=128."
            )
        return block

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> GptqSpec | None:
        """The spec of a model config (a ``PretrainedConfig``, its dict, or the
        ``quantization_config`` dict itself); None when the checkpoint is not GPTQ."""
        if isinstance(config, Mapping):
            qc = config.get("quantization_config", config if "quant_method" in config else None)
        else:
            qc = getattr(config, "quantization_config", None)
        if qc is None:
            return None
        if not isinstance(qc, Mapping):  # transformers' GPTQConfig and friends
            qc = qc.to_dict() if hasattr(qc, "to_dict") else vars(qc)
        method = qc.get("quant_method", "")
        method = str(getattr(method, "value", method)).lower()  # transformers' enum or str
        if method != "gptq":
            return None
        # transformers 5 names it "format" and writes "checkpoint_format" for older readers.
        fmt = qc.get("format") or qc.get("checkpoint_format") or "gptq"
        return cls(
            bits=int(qc.get("bits", 4)),
            group_size=int(qc.get("group_size", 128)),
            sym=bool(qc.get("sym", True)),
            desc_act=bool(qc.get("desc_act", False)),
            checkpoint_format=str(fmt).lower(),
        )


@dataclasses.dataclass
class NBitsWeight:
    """One Linear's weight in MatMulNBits's layout (inputs 1 to 3: B, scales, zero_points;
    no g_idx; bias is the caller's). ``perm`` (int64 ``[K]``), when set, is the activation
    permutation of rule 6: the node's input is ``Gather(x, perm, axis=-1)``."""

    b: np.ndarray  # uint8 [N, n_blocks, block_size * bits / 8]
    scales: np.ndarray  # float32 [N, n_blocks]
    zero_points: np.ndarray | None  # uint8 [N, ceil(n_blocks * bits / 8)]; None: 2**(bits-1)
    perm: np.ndarray | None  # int64 [K]
    K: int
    N: int
    bits: int
    block_size: int

    def attributes(self, accuracy_level: int = 4) -> dict[str, int]:
        """MatMulNBits's attributes; accuracy level 4 takes the int8-activation kernel
        (the only fast one for 8 bits), 0 the fp32-activation one (4 bits)."""
        return {
            "K": self.K,
            "N": self.N,
            "bits": self.bits,
            "block_size": self.block_size,
            "accuracy_level": accuracy_level,
        }

    def to_onnx(
        self,
        x: str,
        y: str,
        prefix: str,
        bias: np.ndarray | None = None,
        accuracy_level: int = 4,
    ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        """Nodes computing ``y = x @ W (+ bias)`` and their initializers (named
        ``prefix.B`` and so on), with the Gather of rule 6 when ``perm`` is set."""
        arrays = {
            f"{prefix}.B": self.b,
            f"{prefix}.scales": self.scales,
            f"{prefix}.zero_points": self.zero_points,
            f"{prefix}.g_idx": None,  # rule 6
            f"{prefix}.bias": None if bias is None else np.asarray(bias, np.float32),
        }
        inputs = [name if value is not None else "" for name, value in arrays.items()]
        nodes = []
        if self.perm is not None:
            arrays[f"{prefix}.perm"] = self.perm
            nodes.append(
                onnx.helper.make_node(
                    "Gather", [x, f"{prefix}.perm"], [f"{prefix}.x_perm"], axis=-1
                )
            )
            x = f"{prefix}.x_perm"
        while inputs and not inputs[-1]:
            inputs.pop()
        nodes.append(
            onnx.helper.make_node(
                "MatMulNBits",
                [x, *inputs],
                [y],
                name=f"{prefix}.MatMulNBits",
                domain="com.microsoft",
                **self.attributes(accuracy_level),
            )
        )
        initializers = [
            numpy_helper.from_array(value, name)
            for name, value in arrays.items()
            if value is not None
        ]
        return nodes, initializers


def _words(array: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    """A packed int32 checkpoint tensor as little-endian uint32 words (bit-identical)."""
    array = np.asarray(array)
    if array.dtype.kind not in "iu" or array.dtype.itemsize != 4:
        raise UsageError(
            f"GPTQ tensor {name} is {array.dtype}, not int32, so it is not GPTQ's packing; "
            "check that the checkpoint's quantization_config matches its tensors."
        )
    if array.shape != shape:
        raise UsageError(
            f"GPTQ tensor {name} has shape {list(array.shape)} where the layer's sizes and "
            f"quantization_config give {list(shape)}; check bits and group_size."
        )
    little = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    return little.view("<u4")


def _unpack(words: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """uint32 words -> uint8 codes, each word's codes (low first) laid out along ``axis``."""
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    codes = ((words[..., None] >> shifts) & np.uint32((1 << bits) - 1)).astype(np.uint8)
    if axis == 0:  # [rows, cols, pack] -> [rows, pack, cols] -> [rows * pack, cols]
        return codes.transpose(0, 2, 1).reshape(-1, words.shape[1])
    return codes.reshape(words.shape[0], -1)


def _pack(codes: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """The inverse of ``_unpack``: uint8 codes -> uint32 words."""
    pack = 32 // bits
    if axis == 0:
        grouped = codes.reshape(-1, pack, codes.shape[1]).transpose(0, 2, 1)
    else:
        grouped = codes.reshape(codes.shape[0], -1, pack)
    shifts = np.arange(0, 32, bits, dtype=np.uint32)
    return np.bitwise_or.reduce(grouped.astype(np.uint32) << shifts, axis=-1)


def _zeros(qzeros: Any, spec: GptqSpec, n_groups: int, N: int) -> np.ndarray:
    """Zero points as int16 ``[n_groups, N]``, v1's ``- 1`` undone (rule 4)."""
    words = _words(qzeros, "qzeros", (n_groups, N // spec.pack))
    zeros = _unpack(words, spec.bits, axis=1).astype(np.int16)
    if spec.checkpoint_format == "gptq":
        zeros += 1
        if (zeros > spec.maxq).any():
            raise UsageError(
                f"GPTQ v1 qzeros hold a zero point of {spec.maxq + 1}, which has no "
                f"{spec.bits}-bit code (v1's packer cannot store a zero point of 0); "
                "requantize the model in the gptq_v2 format."
            )
    return zeros


def _group_index(g_idx: Any, K: int, group: int, n_groups: int) -> np.ndarray | None:
    """The checkpoint's g_idx as int64, or None when it is the trivial one (rule 5)."""
    if g_idx is None:
        return None
    g = np.asarray(g_idx).astype(np.int64).reshape(-1)
    if g.shape != (K,):
        raise UsageError(
            f"GPTQ tensor g_idx has {g.size} entries for a layer with {K} inputs; check "
            "that the checkpoint's tensors belong to this layer."
        )
    if g.min() < 0 or g.max() >= n_groups:
        raise UsageError(
            f"GPTQ g_idx names groups {int(g.min())}..{int(g.max())} but the layer has "
            f"{n_groups}; check group_size in quantization_config."
        )
    if np.array_equal(g, np.arange(K) // group):
        return None
    return g


def gptq_to_nbits(
    qweight: Any,
    qzeros: Any,
    scales: Any,
    g_idx: Any,
    spec: GptqSpec,
    K: int,
    N: int,
) -> NBitsWeight:
    """Repack one GPTQ Linear's tensors (numpy arrays, e.g. from safetensors with
    ``framework="np"``; ``g_idx`` may be None) into MatMulNBits's, with integer ops only."""
    if K % spec.pack or N % spec.pack:
        raise UsageError(
            f"A {K} x {N} weight cannot hold GPTQ's {spec.bits}-bit packing, which needs "
            f"both sizes to be multiples of {spec.pack}; check the layer and its bits."
        )
    group, block = spec.group(K), spec.block_size(K)
    n_groups, repeat = K // group, group // block
    words = _words(qweight, "qweight", (K // spec.pack, N))
    zeros = _zeros(qzeros, spec, n_groups, N)
    scale = np.asarray(scales)
    if scale.shape != (n_groups, N):
        raise UsageError(
            f"GPTQ tensor scales has shape {list(scale.shape)} where the layer's sizes and "
            f"quantization_config give {[n_groups, N]}; check group_size."
        )
    g = _group_index(g_idx, K, group, n_groups)

    perm = None
    if g is not None:
        perm = np.argsort(g, kind="stable")
        if not np.array_equal(g[perm], np.arange(K) // group):
            raise UsageError(
                f"GPTQ g_idx does not give every group exactly {group} rows, so the act-"
                "order rows cannot be regrouped into MatMulNBits blocks; requantize the "
                "model with GPTQModel (desc_act or not, it writes whole groups)."
            )
        # Rule 6: the only unpacking on this path, integer codes moved as they are.
        words = _pack(_unpack(words, spec.bits, axis=0)[perm], spec.bits, axis=0)
        logger.debug("GPTQ act order: %d x %d weight regrouped by g_idx", K, N)

    # Rule 1: [K / pack, N] words -> [N, K / pack] words -> [N, K * bits / 8] bytes.
    b = np.ascontiguousarray(words.T).view(np.uint8)
    b = b.reshape(N, K // block, block * spec.bits // 8)
    scales_out = np.repeat(scale.astype(np.float32).T, repeat, axis=1)
    zero_points = None
    if (zeros != 1 << (spec.bits - 1)).any():
        z = np.repeat(zeros.astype(np.uint8).T, repeat, axis=1)
        if spec.bits == 4:
            if z.shape[1] % 2:
                z = np.pad(z, ((0, 0), (0, 1)))
            z = z[:, 0::2] | (z[:, 1::2] << 4)
        zero_points = np.ascontiguousarray(z)
    return NBitsWeight(
        b=b,
        scales=np.ascontiguousarray(scales_out),
        zero_points=zero_points,
        perm=perm,
        K=K,
        N=N,
        bits=spec.bits,
        block_size=block,
    )


def dequantize_gptq(
    qweight: Any,
    qzeros: Any,
    scales: Any,
    g_idx: Any,
    spec: GptqSpec,
    K: int,
    N: int,
) -> np.ndarray:
    """The float32 ``[K, N]`` weight GPTQ's own kernels compute (a reference for tests:
    the export path never calls it). It unpacks word by word, as GPTQ's kernels do,
    rather than through the repacking helpers, so that tests compare two readings."""
    group, pack, maxq = spec.group(K), spec.pack, spec.maxq
    qweight = np.asarray(qweight).astype(np.int64) & 0xFFFFFFFF
    qzeros = np.asarray(qzeros).astype(np.int64) & 0xFFFFFFFF
    k, n = np.arange(K), np.arange(N)
    codes = (qweight[k // pack] >> (spec.bits * (k % pack))[:, None]) & maxq
    zeros = (qzeros[:, n // pack] >> (spec.bits * (n % pack))) & maxq
    zeros = zeros + (spec.checkpoint_format == "gptq")  # v1 stores zero - 1
    g = k // group if g_idx is None else np.asarray(g_idx).astype(np.int64)
    scale = np.asarray(scales).astype(np.float32)
    return ((codes - zeros[g]).astype(np.float32) * scale[g]).astype(np.float32)


def pack_gptq(
    weight: np.ndarray, spec: GptqSpec, perm: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """GPTQ tensors (``qweight``, ``qzeros``, ``scales``, ``g_idx``) for a float ``[K, N]``
    weight (the transpose of a Linear's), by round-to-nearest: a writer for tests and
    tools, not a GPTQ quantizer. ``perm`` (a permutation of K) writes act order: row
    ``perm[i]`` goes to group ``i // group_size``. A v1 zero point is kept at 1 or more,
    as v1 cannot store 0 (rule 4)."""
    weight = np.asarray(weight, np.float32)
    K, N = weight.shape
    group = spec.group(K)
    n_groups = K // group
    rank = np.arange(K) if perm is None else np.argsort(np.asarray(perm))
    g = (rank // group).astype(np.int32)  # g[perm[i]] = i // group
    grouped = weight[np.argsort(g, kind="stable")].reshape(n_groups, group, N)
    wmin = np.minimum(grouped.min(axis=1), 0)
    wmax = np.maximum(grouped.max(axis=1), 0)
    if spec.sym:
        wmax = np.maximum(-wmin, wmax)
        wmin = -wmax
    scale = ((wmax - wmin) / spec.maxq).astype(np.float16)
    scale[scale == 0] = 1
    if spec.sym:
        zero = np.full((n_groups, N), (spec.maxq + 1) // 2, np.int64)
    else:
        zero = np.round(-wmin / scale.astype(np.float32)).astype(np.int64)
        zero = np.clip(zero, 1 if spec.checkpoint_format == "gptq" else 0, spec.maxq)
    codes = np.round(weight / scale[g].astype(np.float32)) + zero[g]
    codes = np.clip(codes, 0, spec.maxq).astype(np.uint8)
    stored = zero - 1 if spec.checkpoint_format == "gptq" else zero
    return {
        "qweight": _pack(codes, spec.bits, axis=0).astype("<u4").view("<i4"),
        "qzeros": _pack(stored.astype(np.uint8), spec.bits, axis=1).astype("<u4").view("<i4"),
        "scales": scale,
        "g_idx": g,
    }

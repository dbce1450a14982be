"""Quantization and precision conversion, through onnxruntime's own tools.

onnxruntime's quantizers and fp16 converter read and write ModelProto files rather than
onnx-ir models, so these are functions from one graph file to another. What graphport
adds: the settings (per-channel int8 weights for VNNI, MatMulNBits block sizes), the
calibration data from real inputs, and fp32 islands where fp16 would overflow.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx

from graphport.errors import PassError, UsageError
from graphport.graphs import DEFAULT_INT4_METHOD, INT4_METHODS, SENSITIVITY_METRICS
from graphport.graphs.int4 import (
    NNCF_METHODS,
    head_matmul,
    quantize_int4_nncf,
    quantize_nbits,
    save_model,
    set_accuracy_level,
)
from graphport.graphs.nbits import kernel_report
from graphport.graphs.outliers import FP32_PREFIX
from graphport.metrics import row_cosines

logger = logging.getLogger(__name__)

FP16_MAX = 65504.0
NBITS_LOGGER = "onnxruntime.quantization.matmul_nbits_quantizer"


@contextlib.contextmanager
def quiet_onnxruntime_tools() -> Iterator[None]:
    """onnxruntime's quantizers log every node at INFO on the root logger; keep them to
    errors unless graphport itself runs at debug."""
    # The MatMulNBits quantizer logs on a logger of its own at INFO.
    loggers = [logging.getLogger(), logging.getLogger(NBITS_LOGGER)]
    saved = [each.level for each in loggers]
    if not logging.getLogger("graphport").isEnabledFor(logging.DEBUG):
        for each in loggers:
            each.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for each, level in zip(loggers, saved, strict=True):
            each.setLevel(level)


class FeedReader:
    """An onnxruntime ``CalibrationDataReader`` over a list of feed dicts."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:  # GPTQ iterates the reader
        return iter(self._feeds)


def quantize_int8_dynamic(src: Path, dst: Path, exclude: Iterable[str] = ()) -> dict[str, object]:
    """Dynamic int8: per-channel signed int8 weights, activations quantized at run time;
    the nodes named in ``exclude``, and the outlier side paths (``FP32_PREFIX``), stay fp32.

    Full-range int8 weights (no reduce_range) suit CPUs with VNNI (u8 x s8 dot products
    accumulate without overflow there); older CPUs may prefer reduce_range.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(src, load_external_data=False)
    exclude = [*exclude, *(n.name for n in model.graph.node if n.name.startswith(FP32_PREFIX))]
    quantize_dynamic(
        src,
        dst,
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        extra_options={"MatMulConstBOnly": True},
        use_external_data_format=_is_large(src),
    )
    return {"weights": "int8 per-channel symmetric", "activations": "uint8 dynamic"}


def int8_candidates(model: onnx.ModelProto) -> list[str]:
    """Nodes dynamic int8 quantizes: MatMul and fused Attention with a constant weight."""
    constants = {t.name for t in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("MatMul", "Attention")
        and len(n.input) > 1
        and n.input[1] in constants
        and not n.name.startswith(FP32_PREFIX)
    ]


def min_vector_cosine(path: Path, feeds: list[dict], reference: list[list[np.ndarray]]) -> float:
    """The smallest cosine between any output vector (last axis) of the graph at ``path``
    and the matching vector of ``reference`` (outputs per feed), over all feeds."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 1.0
    for feed, expected in zip(feeds, reference, strict=True):
        for got, want in zip(session.run(None, feed), expected, strict=True):
            a = got.reshape(-1, got.shape[-1]).astype(np.float64)
            b = want.reshape(-1, want.shape[-1]).astype(np.float64)
            if a.size:
                worst = min(worst, float(row_cosines(a, b).min()))
    return worst


def quantize_int8_dynamic_to_target(
    src: Path, dst: Path, feeds: list[dict], target: float, max_fp32_nodes: int = 4
) -> dict[str, object]:
    """Dynamic int8 that keeps the most sensitive nodes in fp32 until the outputs on the
    calibration ``feeds`` reach ``target`` min cosine against the fp32 graph.

    Sensitivity is measured, not guessed: each candidate is left fp32 alone and the graph
    quantized and run; candidates are then added in the order of the cosine they
    recovered. A node's own quantization error predicts this badly (errors in early
    layers grow through the later ones), which is why it costs one quantization per
    candidate (about 40 s on MiniLM-L6). onnxruntime's quantizer has no accuracy-driven
    mode to use instead.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    accepted = {i.name for i in session.get_inputs()}
    feeds = [{k: v for k, v in f.items() if k in accepted} for f in feeds]
    reference = [session.run(None, f) for f in feeds]
    details = quantize_int8_dynamic(src, dst)
    reached = min_vector_cosine(dst, feeds, reference)
    kept: list[str] = []
    if reached < target:
        with tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
            trial = Path(scratch) / "trial.onnx"
            gains = []
            for name in int8_candidates(onnx.load(src, load_external_data=False)):
                quantize_int8_dynamic(src, trial, [name])
                gains.append((min_vector_cosine(trial, feeds, reference), name))
            ranked = [name for _, name in sorted(gains, reverse=True)]
            while reached < target and len(kept) < min(max_fp32_nodes, len(ranked)):
                kept.append(ranked[len(kept)])
                quantize_int8_dynamic(src, dst, kept)
                reached = min_vector_cosine(dst, feeds, reference)
        if reached < target:
            logger.warning(
                "int8 reached min cosine %.4f on the calibration inputs with %d nodes kept in "
                "fp32, short of the target %.4f",
                reached,
                len(kept),
                target,
            )
    return {
        **details,
        "fp32_nodes": kept,
        "target_cosine": target,
        "calibration_min_cosine": round(reached, 6),
    }


def after_gelu_matmuls(model: onnx.ModelProto, depth: int = 5) -> list[str]:
    """MatMuls fed (within ``depth`` nodes) by a GELU: the FFN down-projections.

    Post-GELU activations have long tails; one per-tensor int8 range over them costs most
    of static quantization's error (on MiniLM, min per-token cosine 0.79 with them
    quantized, 0.95 without), so static quantization keeps them in fp32.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    gelu_ops = {"Gelu", "BiasGelu", "FastGelu", "Erf", "Tanh"}

    def near_gelu(name: str, left: int) -> bool:
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type in gelu_ops:
            return True
        return left > 1 and any(near_gelu(i, left - 1) for i in node.input)

    return [
        n.name for n in model.graph.node if n.op_type == "MatMul" and near_gelu(n.input[0], depth)
    ]


def quantize_int8_static(src: Path, dst: Path, reader: FeedReader) -> dict[str, object]:
    """Static int8 in QDQ format, activation ranges calibrated on real inputs; the FFN
    down-projections after GELU stay fp32 (see ``after_gelu_matmuls``)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not len(reader):
        raise UsageError("Static quantization needs calibration inputs; pass --calibration.")
    excluded = after_gelu_matmuls(onnx.load(src, load_external_data=False))
    quantize_static(
        src,
        dst,
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
        nodes_to_exclude=excluded,
        extra_options={"MatMulConstBOnly": True},
        use_external_data_format=_is_large(src),
    )
    return {
        "format": "QDQ",
        "calibration_samples": len(reader),
        "calibration": "minmax",
        "fp32_nodes": excluded,
    }


def quantize_int4_weights(
    src: Path,
    dst: Path,
    block_size: int = 32,
    method: str = DEFAULT_INT4_METHOD,
    reader: FeedReader | None = None,
    accuracy_level: int = 4,
    ratio: float = 1.0,
    sensitivity: str | None = None,
    int8_head: bool = False,
) -> dict[str, object]:
    """Weight-only int4 MatMulNBits: ``rtn`` and ``hqq`` are data-free, ``gptq``, ``awq``
    and ``scale-estimation`` use data (``reader``). ``awq``, ``scale-estimation`` and a
    ``ratio`` below 1 (the most sensitive layers, by ``sensitivity``, in int8) go through
    NNCF (graphs/int4.py); ``int8_head`` writes the last MatMul (lm_head) in 8 bits.

    ``rtn`` (the default) rounds each block to its min-max range with a uint8 zero point;
    ``hqq`` writes float zero points, which onnxruntime's CPU kernel does not prepack, so
    every call dequantizes the weights (graphs/nbits.py): more accurate, far slower. On the
    125M Llama-style decoder of benchmarks/generation.py (block 32), relative weight error
    against fp32: rtn 0.0808, hqq 0.0756, symmetric rtn 0.0859; HQQ with its zero points
    rounded to uint8 (to reach the fast kernel) gave 0.0808 too, min-max rtn's figure,
    because the rounding undoes what HQQ optimizes. The details name the kernel path the
    written graph takes (``kernel``).

    ``accuracy_level`` 4 lets onnxruntime quantize activations to int8 on the fly and use
    its integer kernels; lower levels run its fp32-activation kernel (0.6x as fast in
    decoding, measured once).
    """
    check_int4_options(method, block_size, ratio, sensitivity, int8_head)
    model = onnx.load(src)
    last = head_matmul(model, fold=int8_head)  # a tied head is folded only to be int8
    head = [last] if last and int8_head else []
    details: dict[str, object] = {}
    if method in NNCF_METHODS or ratio < 1.0:
        feeds = list(reader) if reader is not None else None
        model, details = quantize_int4_nncf(model, block_size, method, feeds, ratio, sensitivity)
        # The layers NNCF left float: int8, but the last MatMul int8 only when asked.
        left = details.pop("float_layers")
        tail = [n for n in left if n == last and not int8_head]  # the head NNCF left out
        int8_layers = [n for n in left if n not in tail]
        model = quantize_nbits(model, int8_layers, 8, block_size, accuracy_level)
        model = quantize_nbits(model, tail, 4, block_size, accuracy_level)
        set_accuracy_level(model, accuracy_level)
    else:
        model = _quantize_int4_ort(model, block_size, method, reader, accuracy_level, head)
        int8_layers = head
        model = quantize_nbits(model, head, 8, block_size, accuracy_level)
    kernels = kernel_report(model)
    save_model(model, dst, _is_large(src))
    if not kernels.fast:
        logger.warning("int4 %s: %s; that path decodes slower than fp32", method, kernels.summary())
    return {
        "bits": 4,
        "block_size": block_size,
        "method": method,
        "accuracy_level": accuracy_level,
        **details,
        "int8_layers": int8_layers,
        "kernel": kernels.to_dict(),
    }


def check_int4_options(
    method: str,
    block_size: int = 32,
    ratio: float = 1.0,
    sensitivity: str | None = None,
    int8_head: bool = False,
) -> None:
    """One sentence (``UsageError``) for int4 options that do not go together, before any
    work."""
    if method not in INT4_METHODS:
        raise UsageError(f"Unknown int4 method {method!r}; use one of {', '.join(INT4_METHODS)}.")
    if block_size < 16 or block_size & (block_size - 1):
        raise UsageError(f"Block size {block_size} must be a power of two of at least 16.")
    if not 0.0 < ratio <= 1.0:
        raise UsageError(f"The int4 ratio must lie in (0, 1], not {ratio}.")
    if sensitivity is not None and sensitivity not in SENSITIVITY_METRICS:
        raise UsageError(
            f"Unknown sensitivity metric {sensitivity!r}; use one of "
            f"{', '.join(SENSITIVITY_METRICS)}."
        )
    if ratio < 1.0 and method in ("hqq", "gptq"):
        raise UsageError(
            f"Layers kept in int8 by sensitivity (a ratio below 1) go with rtn, awq or "
            f"scale-estimation, not {method}; pick one of those, or leave the ratio at 1."
        )
    if sensitivity is not None and ratio == 1.0:
        raise UsageError("A sensitivity metric ranks the layers a ratio below 1 keeps in int8.")
    if int8_head and method == "gptq":
        raise UsageError(
            "onnxruntime's gptq quantizes every MatMul, the last one too; drop the int8 "
            "head, or use rtn, awq or scale-estimation with it."
        )


def _quantize_int4_ort(
    model: onnx.ModelProto,
    block_size: int,
    method: str,
    reader: FeedReader | None,
    accuracy_level: int,
    exclude: list[str],
) -> onnx.ModelProto:
    """onnxruntime's MatMulNBits quantizer with rtn, hqq or gptq; ``exclude`` stays float."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if method == "rtn":
        config = nbits.DefaultWeightOnlyQuantConfig(
            block_size=block_size, is_symmetric=False, accuracy_level=accuracy_level
        )
    elif method == "hqq":
        config = nbits.HQQWeightOnlyQuantConfig(block_size=block_size)
    else:
        if reader is None or not len(reader):
            raise UsageError("int4 with gptq needs calibration inputs; pass --calibration.")
        config = nbits.GPTQWeightOnlyQuantConfig(
            calibration_data_reader=reader, block_size=block_size
        )
    quantizer = nbits.MatMulNBitsQuantizer(
        model,
        block_size=block_size,
        is_symmetric=False,
        accuracy_level=accuracy_level,
        nodes_to_exclude=exclude,
        algo_config=config,
    )
    quantizer.process()
    # The HQQ and GPTQ paths write MatMulNBits without the attribute; it is a compute hint
    # for the kernel, independent of how the weights were quantized.
    for node in quantizer.model.model.graph.node:
        if node.op_type == "MatMulNBits" and not any(
            a.name == "accuracy_level" for a in node.attribute
        ):
            node.attribute.append(onnx.helper.make_attribute("accuracy_level", accuracy_level))
    return quantizer.model.model


def fp16_overflow_nodes(src: Path, feeds: list[dict[str, np.ndarray]]) -> list[str]:
    """Nodes whose fp32 outputs exceed half the fp16 range on the given inputs."""
    import onnxruntime as ort

    model = onnx.load(src)
    inferred = onnx.shape_inference.infer_shapes(model)
    float_values = {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == 1}
    outputs = {o.name for o in model.graph.output}
    producers = {}
    for node in model.graph.node:
        for name in node.output:
            if name in float_values and name not in outputs:
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
                producers[name] = node.name
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    peak: dict[str, float] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            if name in producers and value.size:
                peak[name] = max(peak.get(name, 0.0), float(np.abs(value).max()))
    return sorted({producers[n] for n, v in peak.items() if v > FP16_MAX / 2})


def convert_fp16(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, object]:
    """fp16 weights and compute with fp32 islands around values that would overflow;
    inputs and outputs keep their types so callers feed the graph as before."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    islands = fp16_overflow_nodes(src, feeds)
    try:
        model = convert_float_to_float16(
            onnx.load(src), keep_io_types=True, node_block_list=islands
        )
    except Exception as e:
        raise PassError(f"fp16 conversion failed: {e}") from e
    onnx.save(model, dst, save_as_external_data=_is_large(src))
    return {"fp32_islands": islands}


def _is_large(path: Path) -> bool:
    return Path(path).stat().st_size > 2**31 - 2**26 or Path(f"{path}_data").exists()

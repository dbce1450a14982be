"""``quantize_export`` for onnxruntime: int8 (dynamic, static) and int4 weight-only graphs.

Each mode is a list of steps run by the checked pipeline (api/steps.py); OpenVINO
modes go to api/quantize_openvino.py. int4 weights come from onnxruntime's MatMulNBits
quantizer (rtn, hqq, gptq) or NNCF's weight compression on the ONNX graph (awq,
scale-estimation, and layers kept in int8 by measured sensitivity; graphs/int4.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphport.api.calibration import calibration_feeds, smooth_step, split_step
from graphport.api.quantize_openvino import compress_openvino_export, quantize_openvino_static
from graphport.api.steps import TransformResult, run_steps
from graphport.errors import UsageError
from graphport.graphs import DEFAULT_INT4_METHOD, QUANT_MODES
from graphport.graphs.quantize import (
    FeedReader,
    check_int4_options,
    quantize_int4_weights,
    quantize_int8_dynamic,
    quantize_int8_dynamic_to_target,
    quantize_int8_static,
)

logger = logging.getLogger(__name__)

DATA_FREE_METHODS = ("rtn", "hqq")


def quantize_export(
    src: str | Path,
    dst: str | Path,
    mode: str,
    calibration: str | Path | None = None,
    block_size: int = 32,
    method: str = DEFAULT_INT4_METHOD,
    runtimes: Sequence[str] | None = None,
    allow_budget_break: bool = False,
    overwrite: bool = False,
    target_cosine: float | None = None,
    localize: bool = False,
    reference: Any = None,
    ratio: float = 1.0,
    sensitivity: str | None = None,
    int8_head: bool = False,
) -> TransformResult:
    """int8-dynamic, int8-static (QDQ, needs --calibration) or int4-weight (MatMulNBits)
    for onnxruntime; openvino-int8-static (needs --calibration), openvino-int8-weight and
    openvino-int4-weight (NNCF, IR) for OpenVINO.
    With calibration data, int8-dynamic first computes the outlier channels of
    feed-forward activations in a small fp32 side path (graphs/outliers.py) and smooths
    the remaining activation outliers into the weights (graphs/smooth.py); given
    ``target_cosine``, it then keeps the most sensitive nodes in fp32 until its outputs
    on the calibration inputs reach that cosine. ``localize`` adds every module's error
    against fp32 eager to the report: where the quantization error accumulates.
    ``reference``: the eager model to check against, as in ``optimize_export``.

    int4-weight's ``method`` is rtn or hqq (data-free), gptq, awq, scale-estimation or
    awq+scale-estimation (calibrated on ``calibration``, by default the built-in English
    text of ``graphport evaluate``); ``ratio`` below 1 keeps the most sensitive layers (by
    NNCF's ``sensitivity`` metric) in int8, ``int8_head`` the last MatMul (lm_head)
    (graphs/int4.py). ``quantize_auto`` (api/quantize_search.py) searches these within an
    accuracy budget."""
    if mode == "auto":
        raise UsageError("--mode auto searches int4 configurations: call quantize_auto.")
    if mode not in QUANT_MODES:
        raise UsageError(f"Unknown mode {mode!r}; use one of {', '.join(QUANT_MODES)}.")
    if mode == "openvino-int8-static":
        if calibration is None:
            raise UsageError(f"{mode} needs calibration inputs; pass --calibration FILE.")
        return quantize_openvino_static(
            src, dst, calibration, allow_budget_break, overwrite, localize, reference
        )
    if mode.startswith("openvino-"):
        bits = 8 if mode == "openvino-int8-weight" else 4
        return compress_openvino_export(
            src, dst, bits, block_size, allow_budget_break, overwrite, localize, reference
        )
    if target_cosine is not None:
        if mode != "int8-dynamic" or calibration is None:
            raise UsageError("A target cosine needs --mode int8-dynamic and --calibration.")
        if not 0.0 < target_cosine < 1.0:
            raise UsageError(f"The target cosine must lie between 0 and 1, not {target_cosine}.")
    if mode != "int4-weight" and (ratio != 1.0 or sensitivity or int8_head):
        raise UsageError("A ratio, a sensitivity metric and an int8 head go with int4-weight.")
    if mode == "int4-weight":
        check_int4_options(method, block_size, ratio, sensitivity, int8_head)
    reader = FeedReader(calibration_feeds(src, calibration)) if calibration else None
    if reader is None and mode == "int4-weight" and _needs_data(method, ratio, sensitivity):
        reader = FeedReader(calibration_feeds(src, None))  # the built-in text
    if mode == "int8-dynamic":
        steps = [("int8-dynamic", "int8", lambda s, d: (True, quantize_int8_dynamic(s, d)))]
        if reader is not None:  # data to measure activations with: tame their outliers
            feeds = list(reader)
            steps[:0] = [
                ("split-outliers", "fp32", split_step(feeds)),
                ("smooth-activations", "fp32", smooth_step(feeds)),
            ]
            if target_cosine is not None:
                steps[-1] = (
                    "int8-dynamic",
                    "int8",
                    lambda s, d: (
                        True,
                        quantize_int8_dynamic_to_target(s, d, feeds, target_cosine),
                    ),
                )
    elif mode == "int8-static":
        if reader is None:
            raise UsageError("int8-static needs calibration inputs; pass --calibration FILE.")
        steps = [("int8-static", "int8", lambda s, d: (True, quantize_int8_static(s, d, reader)))]
    else:
        steps = [
            (
                "int4-weight",
                "int4",
                lambda s, d: (
                    True,
                    quantize_int4_weights(
                        s,
                        d,
                        block_size,
                        method,
                        reader,
                        ratio=ratio,
                        sensitivity=sensitivity,
                        int8_head=int8_head,
                    ),
                ),
            )
        ]
    return run_steps(
        src, dst, steps, "onnxruntime", runtimes, allow_budget_break, overwrite, localize, reference
    )


def _needs_data(method: str, ratio: float, sensitivity: str | None) -> bool:
    """Whether int4 ``method`` with ``ratio`` and ``sensitivity`` calibrates on data."""
    if method in DATA_FREE_METHODS:
        return ratio < 1.0 and sensitivity != "weight-error"
    return True

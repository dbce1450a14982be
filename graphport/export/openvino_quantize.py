"""Quantization for the OpenVINO runtime, through NNCF.

onnxruntime's quantizers write com.microsoft operators (MatMulNBits, QLinear*) OpenVINO
does not read, so an export meant for OpenVINO is quantized on OpenVINO's own model: the
ONNX graph is read into OpenVINO, NNCF works on it, and the result is saved as IR.

- ``compress_weights``: MatMul and embedding weights stored in int8 (per output channel,
  asymmetric) or int4 (symmetric, in groups); OpenVINO decompresses inside its kernels,
  so activations stay in the export's precision: weight-only, data-free.
- ``quantize_static``: int8 weights and int8 activations with ranges calibrated on real
  inputs (NNCF's post-training quantization, transformer preset), so OpenVINO's CPU
  plugin runs int8 kernels with the norms and activations fused around them. Its
  accuracy rests on the graph having no outlier channels left: the pipeline runs
  graphport's split-outliers and smoothing passes first and NNCF's own SmoothQuant is
  off. The split-off side paths (``FP32_PREFIX``) stay fp32.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import PassError, RuntimeUnavailableError, UsageError
from graphport.export.openvino import save_ir
from graphport.graphs.int4 import quiet_nncf
from graphport.graphs.outliers import FP32_PREFIX

logger = logging.getLogger(__name__)

WEIGHT_BITS = (8, 4)


def compress_weights(
    onnx_path: Path, xml_path: Path, bits: int = 8, group_size: int = 64
) -> dict[str, Any]:
    """Read ``onnx_path`` (ONNX or IR) into OpenVINO, compress its weights, save IR at
    ``xml_path`` (a decoder stateful, as ``openvino_model.xml`` beside it: ``file``)."""
    if bits not in WEIGHT_BITS:
        raise UsageError(f"OpenVINO weight compression takes 8 or 4 bits, not {bits}.")
    if bits == 4 and (group_size < 16 or group_size & (group_size - 1)):
        raise UsageError(f"Group size {group_size} must be a power of two of at least 16.")
    try:
        import nncf
        import openvino as ov
    except ImportError as e:  # pragma: no cover - both are dependencies
        raise RuntimeUnavailableError(f"OpenVINO weight compression needs {e.name}.") from e

    model = ov.Core().read_model(str(onnx_path))
    if bits == 8:
        options: dict[str, Any] = {"mode": nncf.CompressWeightsMode.INT8_ASYM}
    else:
        # ratio 1.0: every eligible layer in int4 (NNCF's default keeps a share in int8).
        options = {
            "mode": nncf.CompressWeightsMode.INT4_SYM,
            "group_size": group_size,
            "ratio": 1.0,
        }
    with quiet_nncf():
        try:
            compressed = nncf.compress_weights(model, **options)
        except Exception as e:
            raise PassError(f"NNCF could not compress the weights: {e}") from e
    written = save_ir(compressed, xml_path)  # a decoder stays (or becomes) stateful
    details: dict[str, Any] = {"bits": bits, "scheme": options["mode"].value, "tool": "nncf"}
    details["file"] = written.name
    if bits == 4:
        details["group_size"] = group_size
    return details


def quantize_static(
    onnx_path: Path, xml_path: Path, feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Read ``onnx_path`` into OpenVINO, quantize weights and activations to int8 with
    ranges calibrated on ``feeds``, save IR at ``xml_path``."""
    try:
        import nncf
        import openvino as ov
    except ImportError as e:  # pragma: no cover - both are dependencies
        raise RuntimeUnavailableError(f"OpenVINO quantization needs {e.name}.") from e

    model = ov.Core().read_model(str(onnx_path))
    names = {name for port in model.inputs for name in port.get_names()}
    samples = [{k: v for k, v in feed.items() if k in names} for feed in feeds]
    with quiet_nncf():
        try:
            quantized = nncf.quantize(
                model,
                nncf.Dataset(samples),
                subset_size=len(samples),
                model_type=nncf.ModelType.TRANSFORMER,
                # graphport's smooth-activations ran already, on outlier activations only.
                advanced_parameters=nncf.AdvancedQuantizationParameters(smooth_quant_alpha=-1),
                ignored_scope=nncf.IgnoredScope(
                    patterns=[f"{re.escape(FP32_PREFIX)}.*"], validate=False
                ),
            )
        except Exception as e:
            raise PassError(f"NNCF could not quantize the graph: {e}") from e
    written = save_ir(quantized, xml_path)
    return {
        "file": written.name,
        "weights": "int8 per-channel symmetric",
        "activations": "int8 static (calibrated)",
        "calibration_samples": len(samples),
        "tool": "nncf",
    }

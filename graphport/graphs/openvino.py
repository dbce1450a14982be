"""Weight compression for the OpenVINO runtime, through NNCF.

onnxruntime's quantizers write com.microsoft operators (MatMulNBits, QLinear*) OpenVINO
does not read, so an export meant for OpenVINO is compressed on OpenVINO's own model:
the ONNX graph is read into OpenVINO, NNCF's ``compress_weights`` stores MatMul and
embedding weights in int8 (per output channel, asymmetric) or int4 (symmetric, in groups),
and the result is saved as IR. OpenVINO decompresses inside its kernels, so activations
stay in the export's precision: a weight-only scheme, data-free.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from graphport.errors import PassError, RuntimeUnavailableError, UsageError

logger = logging.getLogger(__name__)

WEIGHT_BITS = (8, 4)


def compress_weights(
    onnx_path: Path, xml_path: Path, bits: int = 8, group_size: int = 64
) -> dict[str, Any]:
    """Read ``onnx_path`` into OpenVINO, compress its weights, save IR at ``xml_path``."""
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
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)  # NNCF prints a progress table per call
    try:
        compressed = nncf.compress_weights(model, **options)
    except Exception as e:
        raise PassError(f"NNCF could not compress the weights: {e}") from e
    finally:
        nncf_logger.setLevel(level)
    ov.save_model(compressed, str(xml_path), compress_to_fp16=False)
    details: dict[str, Any] = {"bits": bits, "scheme": options["mode"].value, "tool": "nncf"}
    if bits == 4:
        details["group_size"] = group_size
    return details

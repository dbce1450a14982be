"""OpenVINO IR (.xml + .bin), converted from the exported ONNX graph by OpenVINO itself."""

from __future__ import annotations

from pathlib import Path

from graphport.errors import ExportError


def onnx_to_openvino(onnx_path: Path, xml_path: Path, compress_to_fp16: bool = False) -> None:
    """Convert with OpenVINO's converter; ``compress_to_fp16`` stores weights in fp16
    (OpenVINO decompresses them at load, so compute precision is unchanged)."""
    import openvino as ov

    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(xml_path), compress_to_fp16=compress_to_fp16)
    except Exception as e:
        raise ExportError(f"OpenVINO could not convert the ONNX graph: {e}") from e

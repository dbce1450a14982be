"""The onnxruntime mobile format (.ort) and its required-operators config.

onnxruntime's own converter applies the graph optimizations for the target platform,
serializes to the flatbuffer format that minimal (mobile) builds load, and writes the
list of operators a reduced onnxruntime build must include.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from graphport.errors import ExportError


def onnx_to_ort(onnx_path: Path, directory: Path, target_platform: str | None = None) -> None:
    """Write ``<stem>.ort`` and ``<stem>.required_operators.config`` into ``directory``,
    where ``<stem>`` is the graph's name (``model`` for single-graph exports)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    with tempfile.TemporaryDirectory(prefix="graphport-ort-") as tmp:
        stem = Path(onnx_path).stem
        source = Path(tmp) / f"{stem}.onnx"
        shutil.copy2(onnx_path, source)
        out = Path(tmp) / "out"
        quiet = logging.getLogger("ort_format_model")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(
                    source,
                    output_dir=out,
                    optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=target_platform,
                )
        except Exception as e:
            raise ExportError(f"onnxruntime could not convert to the .ort format: {e}") from e
        finally:
            quiet.setLevel(level)
        produced = out / f"{stem}.ort"
        if not produced.is_file():
            raise ExportError(f"onnxruntime's converter wrote no {stem}.ort.")
        shutil.copy2(produced, directory / produced.name)
        operators = required_operators(stem)
        shutil.copy2(out / operators, directory / operators)


def required_operators(stem: str = "model") -> str:
    """The operator list the converter writes beside ``<stem>.ort`` (for minimal builds)."""
    return f"{stem}.required_operators.config"

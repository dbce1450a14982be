"""``export`` and ``validate_model_outputs`` with the contracts of the removed transformers.onnx.

``export`` writes one ONNX file (not an export directory) and returns the graph's input
and output names. ``validate_model_outputs`` runs that file on onnxruntime at shapes other
than the trace shapes and raises ``ValueError`` (a ``ParityError``) when values, names or
shapes differ from the reference model beyond ``atol``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import onnx_ir as ir

from graphport.errors import ParityError
from graphport.export.config import OnnxConfig
from graphport.export.onnx import export_to_onnx, save_onnx
from graphport.manifest import ExportDirectory, GraphSpec, Manifest
from graphport.validators.parity import validate_export


def export(
    preprocessor: Any,
    model: Any,
    config: OnnxConfig,
    opset: int,
    output: Path,
    tokenizer: Any = None,
    device: str = "cpu",
) -> tuple[list[str], list[str]]:
    """Export ``model`` to ``output`` (an .onnx file); returns (input names, output names)."""
    if device != "cpu":
        model = model.to(device)
    exported = export_to_onnx(model.eval(), config, opset)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    save_onnx(exported.model, str(output))
    return (
        [v.name for v in exported.model.graph.inputs],
        [v.name for v in exported.model.graph.outputs],
    )


def validate_model_outputs(
    config: OnnxConfig,
    preprocessor: Any,
    reference_model: Any,
    onnx_model: Path,
    onnx_named_outputs: list[str],
    atol: float,
    tokenizer: Any = None,
) -> None:
    """Raise ``ValueError`` unless the ONNX file reproduces ``reference_model`` within atol."""
    onnx_model = Path(onnx_model)
    with tempfile.TemporaryDirectory(prefix="graphport-validate-") as tmp:
        # Lay the loose file out as an export directory so the runtime reads a manifest.
        directory = Path(tmp)
        graph = ir.load(onnx_model)
        (directory / "model.onnx").symlink_to(onnx_model.resolve())
        data = onnx_model.with_name(onnx_model.name + "_data")
        if data.exists():
            (directory / data.name).symlink_to(data.resolve())
        dtype = {"float16": "fp16", "bfloat16": "bf16"}.get(
            str(next(reference_model.parameters()).dtype).removeprefix("torch."), "fp32"
        )
        Manifest(
            source={"model": "in-memory", "path": "", "model_type": config.config.model_type},
            task=config.task.value,
            family="",
            modality=config.modality,
            format="onnx",
            dtype=dtype,
            opset=None,
            graphs=[GraphSpec.from_ir("model", "model.onnx", graph, None)],
            exporter={},
            tolerance={"atol": atol, "rtol": 0.0},
            versions={},
            files=["model.onnx"],
        ).write(directory)
        report = validate_export(
            ExportDirectory(directory),
            ("onnxruntime",),
            atol=atol,
            rtol=0.0,
            reference_model=reference_model,
            config=config,
        )
    unexpected = [n for n in onnx_named_outputs if n not in config.outputs]
    if unexpected:
        raise ParityError(f"Outputs {unexpected} are not among the config's outputs.", report)
    if not report.passed:
        raise ParityError(
            "Outputs values doesn't match between reference model and ONNX exported model: "
            + "; ".join(report.failures()),
            report,
        )

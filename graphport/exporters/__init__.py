"""The names of the removed ``transformers.onnx`` API, on graphport's top floor.

They live here, so a script written for it
runs after changing ``from transformers.onnx import ...`` to
``from graphport.exporters import ...``. Like that API they load models and validate, so
this package sits above everything but the CLI (docs/DEVELOPING.md); graphport's own
code imports the export machinery from ``graphport.export``.
"""

from graphport.export.config import DEFAULT_ONNX_OPSET, OnnxConfig, ShapeSet
from graphport.export.decoder import OnnxConfigWithPast
from graphport.export.modalities import AudioOnnxConfig, TextOnnxConfig, VisionOnnxConfig
from graphport.export.seq2seq import OnnxSeq2SeqConfigWithPast
from graphport.export.tasks import Task, infer_task, parse_task
from graphport.exporters.convert import export, validate_model_outputs
from graphport.exporters.features import FeaturesManager

__all__ = [
    "DEFAULT_ONNX_OPSET",
    "AudioOnnxConfig",
    "FeaturesManager",
    "OnnxConfig",
    "OnnxConfigWithPast",
    "OnnxSeq2SeqConfigWithPast",
    "ShapeSet",
    "Task",
    "TextOnnxConfig",
    "VisionOnnxConfig",
    "export",
    "infer_task",
    "parse_task",
    "validate_model_outputs",
]

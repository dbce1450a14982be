"""Export configs, the task registry and exporters.

The names of the removed ``transformers.onnx`` API live here, so a script written for it
runs after changing ``from transformers.onnx import ...`` to
``from graphport.exporters import ...``.
"""

from graphport.exporters.config import DEFAULT_ONNX_OPSET, OnnxConfig, ShapeSet
from graphport.exporters.convert import export, validate_model_outputs
from graphport.exporters.decoder import OnnxConfigWithPast
from graphport.exporters.features import FeaturesManager
from graphport.exporters.modalities import AudioOnnxConfig, TextOnnxConfig, VisionOnnxConfig
from graphport.exporters.seq2seq import OnnxSeq2SeqConfigWithPast
from graphport.exporters.tasks import Task, infer_task, parse_task

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

"""Passes over ONNX graphs (onnx-ir based): cleanup, fusion, precision, quantization.

The export itself already runs the exporter's own cleanup (constant folding, dead-code
removal) and graphport's output selection; the optimization and quantization pipelines
build on onnx-ir's pass infrastructure and onnxscript's rewriter.
"""

# Here rather than in pipeline.py so the CLI can offer them without importing the passes.
QUANT_MODES = (
    "int8-dynamic",
    "int8-static",
    "int4-weight",
    "openvino-int8-static",
    "openvino-int8-weight",
    "openvino-int4-weight",
)

__all__ = ["QUANT_MODES"]

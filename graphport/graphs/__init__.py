"""Passes over ONNX graphs (onnx-ir based): cleanup, fusion, precision, quantization.

The export itself already runs the exporter's own cleanup (constant folding, dead-code
removal) and graphport's output selection; the optimization and quantization pipelines
build on onnx-ir's pass infrastructure and onnxscript's rewriter.
"""

__all__: list[str] = []

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

INT4_METHODS = ("rtn", "hqq", "gptq", "awq", "scale-estimation", "awq+scale-estimation")
# rtn's uint8 zero points take onnxruntime's fast kernel, hqq's float ones do not
# (graphs/nbits.py); quantize_int4_weights has the measurements.
DEFAULT_INT4_METHOD = "rtn"
# NNCF's sensitivity metrics under graphport's names (graphs/int4.py ranks layers by them).
SENSITIVITY_METRICS = {
    "weight-error": "weight_quantization_error",
    "hessian": "hessian_input_activation",
    "mean-variance": "mean_activation_variance",
    "max-variance": "max_activation_variance",
    "mean-magnitude": "mean_activation_magnitude",
}

__all__ = ["DEFAULT_INT4_METHOD", "INT4_METHODS", "QUANT_MODES", "SENSITIVITY_METRICS"]

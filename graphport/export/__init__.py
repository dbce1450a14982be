"""The export machinery: export configs and their inputs, the task names, the tracer,
the KV-cache layouts, streamed export, and the writers of the formats other than ONNX.

Import its modules by name (``graphport.export.config``, ``graphport.export.onnx``, ...);
the package itself exports nothing. The removed ``transformers.onnx`` names, which load
models and validate, are the facade ``graphport.exporters`` on the top floor.
"""

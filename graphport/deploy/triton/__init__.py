"""A Triton Inference Server model repository from an export directory.

``deploy_triton`` (``repository.py``) writes the repository; ``config.py`` builds each
model's ``ModelConfig`` (rules 1-6 below), ``text.py`` the tokenizer and text ensemble
(rules 7 and 8), and ``readme.py`` the README that says how to serve and call them.

Layout written into the repository ``DEST`` (Triton reads only ``config.pbtxt`` and the
numbered version directories; other files beside ``config.pbtxt`` are ignored by it and
kept for clients)::

    DEST/README.md               how to serve and call every model in DEST
    DEST/<model>/config.pbtxt    the ModelConfig, protobuf text format
    DEST/<model>/graphport.json  the export's manifest; config.json, tokenizer files
    DEST/<model>/1/model.*       the graph, hard-linked from the export where possible

``config.pbtxt`` is a ``ModelConfig`` message of Triton's own schema (tritonclient's
``model_config_pb2``, the ``triton`` extra) written with protobuf's text format, so it is
what Triton parses by construction.

Rules, referred to by number below:

1. A format names its Triton backend (graphport/formats/), which has one file name: onnx ->
   onnxruntime ``model.onnx`` (+ its external data file, under the name the graph refers
   to), openvino -> openvino ``model.xml`` + ``model.bin``, tensorrt -> tensorrt_plan
   ``model.plan``, torchscript -> pytorch_libtorch ``model.pt``. An ONNX graph optimized or
   quantized for OpenVINO (manifest target ``openvino``) is served by the OpenVINO backend,
   which reads ONNX too.
   ort and pt2 have no Triton backend.
2. ``max_batch_size > 0`` tells Triton that axis 0 of every input and output is the batch
   axis, which the config's dims leave out. It is written only where axis 0 of every
   tensor is the export's dynamic ``batch`` axis; elsewhere it is 0, with a warning.
3. Dims: static sizes stay, symbolic axes become -1. A tensor whose only axis is the batch
   axis gets ``dims: [1]`` with ``reshape { shape: [] }``, as Triton needs non-empty dims.
4. Triton's OpenVINO backend fixes the batch at ``max_batch_size`` and zero-pads smaller
   batches (``ENABLE_BATCH_PADDING``), which needs every other axis static; with another
   dynamic axis (text, audio) it gets ``max_batch_size: 0``. It runs on CPU only.
5. A TensorRT engine serves batches up to its optimization profile's batch maximum.
6. The pytorch_libtorch backend binds tensors by position, named ``<name>__<index>``.
7. Raw text: where the export's graph takes token ids and onnxruntime-extensions converts
   its tokenizer (checked against the Python tokenizer, see ``graphport.deploy.tokenizer``),
   two more models are written: ``<model>_tokenizer``, that graph on the onnxruntime backend
   with the custom-op library the package ships (``model_operations``), and
   ``<model>_text``, an ensemble that takes a string ``TEXT`` and runs the tokenizer, then
   the model. The tokenizer encodes one text per request, so both have ``max_batch_size:
   0``; the model behind them keeps its own batching for id requests. Triton resolves
   ``op_library_filename`` in its own file system: the path is the one inside the container
   that the README's ``docker run`` mounts the repository at (``/models``).
8. The library onnxruntime-extensions' wheel ships is a CPython extension module: it loads
   only into a process that already has that Python's ``libpython`` (``tritonserver`` needs
   ``LD_PRELOAD`` of it), or a native build of onnxruntime-extensions replaces it. The
   README says so; graphport cannot check it without a Triton server.
"""

from graphport.deploy.triton.config import (
    BACKENDS,
    DATA_TYPES,
    Backend,
    TritonConfig,
    TritonTensor,
    backend_for,
    model_config,
    model_config_schema,
)
from graphport.deploy.triton.readme import repository_readme
from graphport.deploy.triton.repository import deploy_triton
from graphport.deploy.triton.text import text_model_names

__all__ = [
    "BACKENDS",
    "DATA_TYPES",
    "Backend",
    "TritonConfig",
    "TritonTensor",
    "backend_for",
    "deploy_triton",
    "model_config",
    "model_config_schema",
    "repository_readme",
    "text_model_names",
]

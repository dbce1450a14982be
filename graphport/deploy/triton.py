"""A Triton Inference Server model repository from an export directory.

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

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from graphport.deploy.tokenizer import TokenizerGraph, convert_onnxruntime
from graphport.errors import GraphportError, RuntimeUnavailableError, UsageError
from graphport.exporters.openvino import GENAI_MODEL_FILE
from graphport.formats import formats_for_target, get_format
from graphport.manifest import MANIFEST_NAME, ExportDirectory, GraphSpec, Manifest, TensorSpec

logger = logging.getLogger(__name__)

VERSION = "1"
CONTAINER_REPOSITORY = "/models"  # where the README's docker run mounts the repository
TEXT_INPUT = "TEXT"
MAX_QUEUE_DELAY_US = 100  # a short wait lets concurrent requests join one batch
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclasses.dataclass(frozen=True)
class Backend:
    platform: str | None
    backend: str
    model_file: str
    # Written only where the file is not the backend's default name.
    default_model_filename: str | None = None


# Rule 1: by the backend a format names for the triton target (graphport/formats/).
BACKENDS = {
    "onnxruntime": Backend("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "openvino": Backend(None, "openvino", "model.xml"),
    "tensorrt": Backend("tensorrt_plan", "tensorrt", "model.plan"),
    "pytorch": Backend("pytorch_libtorch", "pytorch", "model.pt"),
}
OPENVINO_ONNX = Backend(None, "openvino", "model.onnx", default_model_filename="model.onnx")
ENSEMBLE = Backend("ensemble", "", "")
DATA_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "object": "TYPE_STRING",
}


@dataclasses.dataclass
class TritonTensor:
    name: str
    data_type: str
    dims: list[int]
    reshape: list[int] | None = None


@dataclasses.dataclass
class TritonConfig:
    """The fields of Triton's ModelConfig that graphport writes."""

    name: str
    backend: Backend
    max_batch_size: int
    inputs: list[TritonTensor]
    outputs: list[TritonTensor]
    parameters: dict[str, str] = dataclasses.field(default_factory=dict)
    cpu_only: bool = False
    op_library: str | None = None  # model_operations' custom-op library (rule 7)
    # An ensemble's steps: (model name, {model input: ensemble tensor}, {output: tensor}).
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = dataclasses.field(
        default_factory=list
    )

    def to_message(self) -> Any:
        """The config as Triton's ``ModelConfig`` protobuf message."""
        schema = model_config_schema()
        config = schema.ModelConfig(
            name=self.name,
            platform=self.backend.platform or "",
            backend=self.backend.backend,  # an ensemble has a platform only
            # Written only where the file is not the backend's default name.
            default_model_filename=self.backend.default_model_filename or "",
            max_batch_size=self.max_batch_size,
        )
        for tensors, entries in ((self.inputs, config.input), (self.outputs, config.output)):
            for tensor in tensors:
                entry = entries.add(
                    name=tensor.name,
                    data_type=schema.DataType.Value(tensor.data_type),
                    dims=tensor.dims,
                )
                if tensor.reshape is not None:  # rule 3: present even when empty
                    entry.reshape.SetInParent()
                    entry.reshape.shape.extend(tensor.reshape)
        if self.max_batch_size > 0:
            config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
        if self.cpu_only:
            config.instance_group.add(kind=schema.ModelInstanceGroup.KIND_CPU)
        for key, value in self.parameters.items():
            config.parameters[key].string_value = value
        if self.op_library:
            config.model_operations.op_library_filename.append(self.op_library)
        for model, inputs, outputs in self.steps:
            config.ensemble_scheduling.step.add(
                model_name=model, model_version=-1, input_map=inputs, output_map=outputs
            )
        return config

    def to_pbtxt(self) -> str:
        """``config.pbtxt``: the message in protobuf text format."""
        from google.protobuf import text_format

        return text_format.MessageToString(self.to_message())


def model_config_schema() -> Any:
    """Triton's model-config protobuf module (tritonclient's), or one clear error."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise RuntimeUnavailableError(
            "Triton deployment writes config.pbtxt with Triton's own model-config schema, "
            "which tritonclient ships; install it with pip install 'graphport[triton]'."
        ) from None
    return model_config_pb2


def backend_for(manifest: Manifest) -> Backend:
    """The Triton backend that serves the export (rule 1), or one clear ``UsageError``."""
    key = get_format(manifest.format).deploy_targets.get("triton")
    if key is None:
        taken = {f.deploy_targets["triton"]: f.name for f in formats_for_target("triton")}
        names = [taken[b] for b in BACKENDS if b in taken]  # in the order of the backends
        raise UsageError(
            f"Triton has no backend for the {manifest.format} format; deploy an export made "
            f"with --format {', '.join(names)} instead."
        )
    backend = BACKENDS[key]
    if backend.backend == "onnxruntime" and manifest.target == "openvino":
        return OPENVINO_ONNX  # an ONNX graph optimized for OpenVINO
    return backend


def model_config(manifest: Manifest, name: str, max_batch_size: int = 8) -> TritonConfig:
    """The ModelConfig for the export's graph; raises ``UsageError`` where Triton cannot
    serve it."""
    backend = backend_for(manifest)
    if max_batch_size < 0:
        raise UsageError(f"--max-batch-size must be 0 or more, not {max_batch_size}.")
    graph = _single_graph(manifest)
    if graph.file == GENAI_MODEL_FILE:
        raise UsageError(
            "This OpenVINO decoder keeps its KV cache as state, which the model config "
            "cannot describe; deploy a --format onnx export of the model to Triton, or serve "
            "this one with openvino_genai.LLMPipeline."
        )
    tensors = [*graph.inputs, *graph.outputs]
    batched = max_batch_size > 0
    if batched and not all(t.shape and t.shape[0] == "batch" for t in tensors):  # rule 2
        logger.warning(
            "Writing max_batch_size 0 for %s: not every input and output has the dynamic "
            "batch axis first, so Triton cannot batch requests; clients send full shapes.",
            name,
        )
        batched = False
    parameters: dict[str, str] = {}
    if batched and backend.backend == "openvino":  # rule 4
        if any(not isinstance(d, int) for t in tensors for d in t.shape[1:]):
            logger.warning(
                "Writing max_batch_size 0 for %s: Triton's OpenVINO backend pads every batch "
                "to max_batch_size, which needs static non-batch axes; clients send full shapes.",
                name,
            )
            batched = False
        else:
            parameters["ENABLE_BATCH_PADDING"] = "YES"
    if batched and backend.backend == "tensorrt":  # rule 5
        _check_engine_batch(manifest, max_batch_size)

    def tensor(spec: TensorSpec, index: int) -> TritonTensor:
        if spec.dtype not in DATA_TYPES:
            raise UsageError(
                f"Graph tensor {spec.name} has dtype {spec.dtype}, which Triton has no data "
                f"type for; it takes {', '.join(DATA_TYPES)}."
            )
        dims = [d if isinstance(d, int) else -1 for d in spec.shape[1 if batched else 0 :]]
        if batched and not dims:  # rule 3
            return TritonTensor(tensor_name(backend, spec, index), DATA_TYPES[spec.dtype], [1], [])
        return TritonTensor(tensor_name(backend, spec, index), DATA_TYPES[spec.dtype], dims)

    return TritonConfig(
        name,
        backend,
        max_batch_size if batched else 0,
        [tensor(s, i) for i, s in enumerate(graph.inputs)],
        [tensor(s, i) for i, s in enumerate(graph.outputs)],
        parameters,
        cpu_only=backend.backend == "openvino",
    )


def tensor_name(backend: Backend, spec: TensorSpec, index: int) -> str:
    """The name a client uses for the tensor (rule 6)."""
    return f"{spec.name}__{index}" if backend.backend == "pytorch" else spec.name


def _single_graph(manifest: Manifest) -> GraphSpec:
    if len(manifest.graphs) != 1:
        names = ", ".join(g.name for g in manifest.graphs)
        raise UsageError(
            f"The export has {len(manifest.graphs)} graphs ({names}); Triton deployment serves "
            "single-graph exports only."
        )
    return manifest.graphs[0]


def _check_engine_batch(manifest: Manifest, max_batch_size: int) -> None:
    profile = manifest.exporter.get("profile") or []
    limit = min((p["max"][0] for p in profile), default=None)
    if limit is not None and max_batch_size > limit:
        raise UsageError(
            f"--max-batch-size {max_batch_size} exceeds the TensorRT engine's profile, which "
            f"serves batches up to {limit}; pass --max-batch-size {limit} or less, or re-export "
            f"with --trt-profile batch=1:{max_batch_size}:{max_batch_size}."
        )


def deploy_triton(
    export_dir: Path,
    dest: Path,
    model_name: str | None = None,
    max_batch_size: int = 8,
    overwrite: bool = False,
) -> Path:
    """Write ``export_dir`` as model ``model_name`` (default: the export directory's name)
    into the Triton model repository ``dest``; returns the model's directory.

    Other models already in ``dest`` are kept; ``overwrite`` is needed to write into a
    non-empty ``dest`` and replaces only this model's directory and the README.
    """
    export = ExportDirectory(export_dir)
    name = model_name if model_name is not None else _default_name(export.path)
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a usable Triton model name; use letters, digits, '_', '-' and "
            "'.', not starting with '.' or '-'."
        )
    config = model_config(export.manifest, name, max_batch_size)
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is a file; pass a directory for the model repository.")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise UsageError(
            f"Model repository {dest} is not empty; pass --overwrite to write model {name} "
            f"into it (replacing {dest / name} if present; other models are kept), or choose "
            "an empty directory."
        )
    model_config_schema()  # before anything is written
    dest.mkdir(parents=True, exist_ok=True)
    # Built beside the repository and moved in by renames, so Triton (polling the
    # repository) never sees half a model, nor a scratch directory to try loading.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=dest.parent))
    try:
        (staging / name).mkdir(mode=0o755)
        _write_model(export, config, staging / name)
        written = [name, *_write_text_models(export, config, staging)]
        for index, model in enumerate([name, *text_model_names(name)]):
            if (dest / model).exists():  # names never start with "."
                (dest / model).rename(staging / f".replaced-{index}")
        for model in written:
            (staging / model).rename(dest / model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (dest / "README.md").write_text(repository_readme(dest), encoding="utf-8")
    logger.info("Wrote Triton model %s (%s) into %s", name, config.backend.backend, dest)
    return dest / name


def text_model_names(name: str) -> tuple[str, str]:
    """The tokenizer's and the text ensemble's model names for model ``name`` (rule 7)."""
    return f"{name}_tokenizer", f"{name}_text"


def _write_text_models(export: ExportDirectory, model: TritonConfig, staging: Path) -> list[str]:
    """Write the tokenizer and text ensemble of rule 7 into ``staging``; their names, or
    none (with the reason logged) where the model cannot take text."""
    graph = export.manifest.graphs[0]
    if "input_ids" not in {t.name for t in graph.inputs} or not export.has_tokenizer():
        return []
    tokenizer_name, text_name = text_model_names(model.name)
    scratch = staging / ".tokenizer"
    scratch.mkdir()
    conversion = convert_onnxruntime(export, scratch)
    reason = conversion.reason
    if conversion.graph is not None:
        missing = [t for t in graph.inputs if t.name not in conversion.graph.outputs]
        wrong = [t for t in graph.inputs if t.dtype != "int64"]
        if missing:
            reason = f"its tokenizer graph returns no {missing[0].name}, which the model takes"
        elif wrong:
            reason = f"the model takes {wrong[0].name} as {wrong[0].dtype}, not int64"
    if conversion.graph is None or reason:
        logger.warning(
            "Writing no text ensemble for %s: %s; clients send token ids.", model.name, reason
        )
        return []
    tokenizer = _tokenizer_config(tokenizer_name, conversion.graph)
    directory = staging / tokenizer_name
    (directory / VERSION).mkdir(parents=True)
    (scratch / conversion.graph.files[0]).rename(directory / VERSION / TOKENIZER.model_file)
    shutil.copy2(conversion.graph.library, directory / conversion.graph.library.name)
    (directory / "config.pbtxt").write_text(tokenizer.to_pbtxt(), encoding="utf-8")

    backend = model.backend
    outputs = [
        TritonTensor(
            s.name, DATA_TYPES[s.dtype], [d if isinstance(d, int) else -1 for d in s.shape]
        )
        for s in graph.outputs
    ]
    ensemble = TritonConfig(
        text_name,
        ENSEMBLE,
        0,
        [TritonTensor(TEXT_INPUT, DATA_TYPES["object"], [1])],
        outputs,
        steps=[
            (tokenizer_name, {"text": TEXT_INPUT}, {n: n for n in conversion.graph.outputs}),
            (
                model.name,
                {tensor_name(backend, s, i): s.name for i, s in enumerate(graph.inputs)},
                {tensor_name(backend, s, i): s.name for i, s in enumerate(graph.outputs)},
            ),
        ],
    )
    (staging / text_name / VERSION).mkdir(parents=True)  # an ensemble's version is empty
    (staging / text_name / "config.pbtxt").write_text(ensemble.to_pbtxt(), encoding="utf-8")
    return [tokenizer_name, text_name]


TOKENIZER = Backend("onnxruntime_onnx", "onnxruntime", "model.onnx")


def _tokenizer_config(name: str, graph: TokenizerGraph) -> TritonConfig:
    """One text in, ``[1, sequence]`` int64 encodings out (rule 7)."""
    return TritonConfig(
        name,
        TOKENIZER,
        0,
        [TritonTensor("text", DATA_TYPES["object"], [1])],
        [TritonTensor(n, DATA_TYPES["int64"], [1, -1]) for n in graph.outputs],
        cpu_only=True,
        op_library=f"{CONTAINER_REPOSITORY}/{name}/{graph.library.name}",
    )


def _default_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.resolve().name).lstrip(".-")
    return name or "model"


def _write_model(export: ExportDirectory, config: TritonConfig, directory: Path) -> None:
    manifest, graph = export.manifest, export.manifest.graphs[0]
    version = directory / VERSION
    version.mkdir()
    _link_or_copy(export.path / graph.file, version / config.backend.model_file)
    if graph.external_data and config.backend.backend in ("onnxruntime", "openvino"):
        # ONNX finds its data file by the name stored in the graph; OpenVINO wants model.bin.
        _link_or_copy(export.path / graph.external_data, version / graph.external_data)
    # Small files are copied, not linked: the export rewrites its manifest in place.
    graph_files = {graph.file, graph.external_data}
    for file in manifest.files:  # preprocessing files, for clients; not the tensorrt ONNX
        if file not in graph_files and not file.endswith(".onnx"):
            shutil.copy2(export.path / file, directory / file)
    shutil.copy2(export.path / MANIFEST_NAME, directory / MANIFEST_NAME)
    (directory / "config.pbtxt").write_text(config.to_pbtxt(), encoding="utf-8")


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no copy of gigabytes of weights), else a copy across file systems.

    Exports are replaced by renames, never rewritten in place, so a link stays valid."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def repository_readme(dest: Path) -> str:
    """README of the repository: how to serve it and what each model takes and returns."""
    lines = [
        "# Triton model repository",
        "",
        "Written by `graphport deploy --target triton`. Serve it with Triton Inference Server:",
        "",
        "```sh",
        f"docker run --rm -p 8000:8000 -p 8001:8001 -v {dest.resolve()}:{CONTAINER_REPOSITORY} \\",
        f"  nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver "
        f"--model-repository={CONTAINER_REPOSITORY}",
        "```",
        "",
        "Each model directory holds `config.pbtxt`, the graph in version directory `1/`, and "
        "the export's `graphport.json`, `config.json` and tokenizer or processor files, so a "
        "client can preprocess with `AutoTokenizer.from_pretrained(<model directory>)` (or "
        "`AutoProcessor`). Shapes below are the graph's, batch axis included: a client sends "
        "it whether or not Triton batches requests together.",
    ]
    for config_file in sorted(dest.glob(f"*/{MANIFEST_NAME}")):
        with contextlib.suppress(GraphportError, OSError, KeyError):
            lines += _model_section(config_file.parent.name, ExportDirectory(config_file.parent))
    return "\n".join(lines) + "\n"


def _model_section(name: str, export: ExportDirectory) -> list[str]:
    manifest = export.manifest
    graph = manifest.graphs[0]
    backend = backend_for(manifest)

    def rows(specs: list[TensorSpec]) -> list[str]:
        return [
            f"  - `{tensor_name(backend, s, i)}`: {s.dtype} {json.dumps(s.shape)}"
            for i, s in enumerate(specs)
        ]

    config = (export.path / "config.pbtxt").read_text(encoding="utf-8")
    found = re.search(r"^max_batch_size: (\d+)", config, re.MULTILINE)
    batching = (
        f"Triton batches requests up to {found.group(1)} rows."
        if found and int(found.group(1)) > 0
        else "Triton does not batch requests (max_batch_size 0)."
    )
    lines = [
        "",
        f"## {name}",
        "",
        f"{manifest.task} ({manifest.family}, from {manifest.source.get('model')}), "
        f"{manifest.format} on Triton's {backend.backend} backend. {batching}",
        "",
        "- inputs:",
        *rows(graph.inputs),
        "- outputs:",
        *rows(graph.outputs),
    ]
    tokenizer_name, text_name = text_model_names(name)
    if (export.path.parent / text_name / "config.pbtxt").is_file():  # rule 7
        library = next((export.path.parent / tokenizer_name).glob("*.so"), None)
        lines.append(
            f"- raw text: `{text_name}` takes `{TEXT_INPUT}` (one string, shape [1]) and returns "
            f"these outputs: an ensemble of `{tokenizer_name}` (the tokenizer as "
            "onnxruntime-extensions' ONNX graph, encoding as the Python tokenizer does) and "
            f"this model. `{tokenizer_name}` loads the custom-op library "
            f"`{library.name if library else '(missing)'}` from the repository mounted at "
            f"`{CONTAINER_REPOSITORY}`; the wheel builds it as a CPython extension, so start "
            "tritonserver with that Python's libpython in `LD_PRELOAD`, or put a native build "
            "of onnxruntime-extensions in its place."
        )
    if backend.backend == "tensorrt":
        built = manifest.exporter.get("tensorrt") or {}
        lines.append(
            f"- The engine runs only with TensorRT {built.get('tensorrt', 'of the build')} on "
            f"a {built.get('gpu', 'GPU like the one it was built on')}; pick the Triton "
            "release that ships that TensorRT."
        )
    return lines


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

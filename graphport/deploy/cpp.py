"""A CMake project with ``graphport_infer``, a small C++17 program embedding a runtime.

Layout written into ``DEST`` (sources from ``graphport/deploy/templates/cpp``)::

    DEST/CMakeLists.txt   finds the runtime from -DOpenVINO_DIR or -DCMAKE_PREFIX_PATH
    DEST/build.sh         computes that path with the deploying Python, configures, builds
    DEST/main.cpp         arguments, feeds, JSON output; runtime.h + runtime.cpp: the backend
    DEST/model_io.h       the graph's file, inputs and outputs in order, from the manifest
    DEST/model/           the export, hard-linked where possible (itself an export directory)
    DEST/README.md        how to build and run

Rules, referred to by number below:

1. A format names its backend for the cpp target (graphport/formats/): onnx and openvino
   run on OpenVINO's C++ API (``ov::Core::read_model`` of ``model.onnx`` or ``model.xml``),
   pt2 on libtorch's ``torch::inductor::AOTIModelPackageLoader``. The wheels ship headers,
   libraries and CMake config, so the build needs no separate SDK.
2. The graph must run on that backend: no onnxruntime-only operators (an export optimized
   for onnxruntime), and no bf16 ONNX graph, which OpenVINO misreads (as the Python
   OpenVINO runtime refuses it). OpenVINO compiles with the export's dtype as inference
   precision, so an fp32 export is computed in fp32 even on CPUs with bf16 units.
3. The program takes token ids: the graph's inputs are ``input_ids`` and optionally
   ``attention_mask`` (fed ones) and ``token_type_ids`` (fed zeros), each an int32 or int64
   ``[batch, sequence]`` tensor. Other exports are refused at deploy time.
6. It takes raw text where the backend runs a tokenizer graph: on OpenVINO, the export's
   tokenizer converted by openvino-tokenizers (``model/openvino_tokenizer.xml``, checked
   against the Python tokenizer, see ``graphport.deploy.tokenizer``) and the extension
   library the package ships, copied to ``lib/`` so the program needs no Python. An export
   whose tokenizer cannot be converted is deployed for ``--ids`` only, with a warning
   saying why; libtorch (pt2) runs no tokenizer graph.
4. Inputs are fed in the manifest's order (the .pt2 package takes them positionally) and
   outputs printed in its order, with names generated into ``model_io.h``.
5. Nothing machine-specific goes into ``CMakeLists.txt``; ``build.sh`` records the Python
   that deployed (``sys.executable``), as it is generated per machine.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import sys
import textwrap
from importlib import resources
from pathlib import Path

from graphport.deploy.tokenizer import convert_openvino
from graphport.errors import UsageError
from graphport.formats import get_format
from graphport.manifest import (
    MANIFEST_NAME,
    ExportDirectory,
    GraphSpec,
    Manifest,
    check_output_path,
    move_into_place,
    staging_directory,
)

FEEDS = {
    "input_ids": "the ids given",
    "attention_mask": "ones",
    "token_type_ids": "zeros (one segment)",
}
INPUT_BITS = {"int32": 32, "int64": 64}
PRECISIONS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}  # OpenVINO's element type names
PLACEHOLDER = re.compile(r"@[A-Z_]+@")
LIBRARY_DIR = "lib"  # the tokenizer graph's extension library (rule 6)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Backend:
    """How one runtime's C++ API is found and built (rule 1)."""

    name: str  # its sources are templates/cpp/<name>/
    runtime: str
    package: str  # the Python package shipping headers, libraries and CMake config
    prefix_variable: str  # the CMake variable pointing at that config
    locate: str  # Python printing the value of prefix_variable
    note: str = ""  # for the README


OPENVINO = Backend(
    "openvino",
    "OpenVINO",
    "openvino",
    "OpenVINO_DIR",
    "import openvino, pathlib; print(pathlib.Path(openvino.__file__).parent / 'cmake')",
)
AOTI = Backend(
    "aoti",
    "libtorch AOTInductor",
    "torch",
    "CMAKE_PREFIX_PATH",
    "import torch; print(torch.utils.cmake_prefix_path)",
    note="Build with the torch release that compiled `model/model.pt2`: an AOTInductor "
    "package targets one libtorch release. The torch wheel's CMake config warns that it found "
    "no kineto library; the program does not need it.",
)
# By the backend a format names for the cpp target (graphport/formats/).
BACKENDS = {"openvino": OPENVINO, "aoti": AOTI}


def deploy_cpp(export_dir: Path, dest: Path, overwrite: bool = False) -> Path:
    """Write a CMake project running ``export_dir`` with ``graphport_infer`` into ``dest``."""
    directory = ExportDirectory(export_dir)
    manifest = directory.manifest
    backend = check_deployable(manifest)
    check_output_path(dest, overwrite)
    graph = manifest.graph()
    values = {
        "PYTHON": shlex.quote(sys.executable),
        "RUNTIME": backend.runtime,
        "RUNTIME_PACKAGE": f"the `{backend.package}` Python package",
        "PACKAGE": backend.package,
        "PREFIX_VARIABLE": backend.prefix_variable,
        "LOCATE": backend.locate,
        "MODEL": f"`{manifest.source.get('model') or directory.path.name}`",
        "FORMAT": manifest.format,
        "DTYPE": manifest.dtype,
        "TASK": manifest.task,
        "FEEDS": "\n".join(f"- `{t.name}`: {FEEDS[t.name]}" for t in graph.inputs),
        "FIRST_OUTPUT": graph.outputs[0].name,
        "RUNTIME_NOTE": textwrap.fill(backend.note, 88) + "\n\n" if backend.note else "",
    }
    with staging_directory(dest) as staging:
        _copy_export(directory, staging / "model")
        values["TEXT"] = textwrap.fill(_add_tokenizer(directory, backend, staging), 88)
        _write(staging / "main.cpp", _template("main.cpp"))
        _write(staging / "runtime.h", _template("runtime.h"))
        _write(staging / "model_io.h", _render(_template("model_io.h.in"), _model_io(manifest)))
        _write(staging / "runtime.cpp", _template(f"{backend.name}/runtime.cpp"))
        _write(staging / "CMakeLists.txt", _template(f"{backend.name}/CMakeLists.txt"))
        _write(staging / "build.sh", _render(_template("build.sh.in"), values))
        (staging / "build.sh").chmod(0o755)
        _write(staging / "README.md", _render(_template("README.md.in"), values))
        move_into_place(staging, dest)
    return dest


def _add_tokenizer(directory: ExportDirectory, backend: Backend, staging: Path) -> str:
    """Write the tokenizer graph and its library (rule 6); the README's words on --text."""
    if backend is not OPENVINO:
        return f"{backend.runtime} runs no tokenizer graph, so this program takes `--ids` only."
    conversion = convert_openvino(directory, staging / "model")
    if conversion.graph is None:
        if directory.has_tokenizer():
            logger.warning(
                "Deploying for --ids only: %s, so graphport_infer cannot take --text.",
                conversion.reason,
            )
        return f"This program takes `--ids` only: {conversion.reason}."
    library = staging / LIBRARY_DIR / conversion.graph.library.name
    library.parent.mkdir()
    shutil.copy2(conversion.graph.library, library)
    return (
        "`--text` encodes the text with `model/openvino_tokenizer.xml`, the export's tokenizer "
        "converted by openvino-tokenizers (it ran on the extension library "
        f"`{LIBRARY_DIR}/{library.name}`), exactly as the Python tokenizer does: special tokens "
        f"added, truncated at {conversion.graph.max_length} tokens. It was checked against "
        "the Python tokenizer on unicode text at deploy time."
    )


def check_deployable(manifest: Manifest) -> Backend:
    """The backend that runs ``manifest``'s export, or a UsageError saying why none does."""
    key = get_format(manifest.format).deploy_targets.get("cpp")
    backend = BACKENDS.get(key) if key is not None else None
    if backend is None:  # rule 1
        raise UsageError(
            f"The cpp target cannot run {manifest.format} exports; it runs onnx and openvino "
            "exports (on OpenVINO) and pt2 packages (on libtorch AOTInductor), so re-export "
            "with --format onnx, openvino or pt2."
        )
    if manifest.target not in (None, "openvino"):  # rule 2
        raise UsageError(
            f"This export was optimized for {manifest.target} and uses its own operators, "
            "which OpenVINO cannot run; deploy the export it was optimized from."
        )
    onnx_graphs = any(g.file.endswith(".onnx") for g in manifest.graphs)
    if onnx_graphs and manifest.dtype == "bf16":  # rule 2
        raise UsageError(
            "OpenVINO misreads bfloat16 ONNX graphs (its results are far from eager); "
            "deploy an fp32 or fp16 export, or a bf16 pt2 package."
        )
    if len(manifest.graphs) != 1:
        names = ", ".join(g.name for g in manifest.graphs)
        raise UsageError(
            f"graphport_infer runs a single-graph export; this one has graphs {names}."
        )
    graph = manifest.graph()
    bad = [t for t in graph.inputs if t.name not in FEEDS or t.dtype not in INPUT_BITS]
    bad += [t for t in graph.inputs if len(t.shape) != 2]
    if bad or "input_ids" not in {t.name for t in graph.inputs}:  # rule 3
        found = ", ".join(f"{t.name} ({t.dtype}, rank {len(t.shape)})" for t in graph.inputs)
        raise UsageError(
            "graphport_infer takes one sequence of token ids (input_ids, with optional "
            f"attention_mask and token_type_ids, int32 or int64 [batch, sequence]); this export's "
            f"inputs are {found}."
        )
    return backend


def _model_io(manifest: Manifest) -> dict[str, str]:
    """The values of model_io.h (rule 4): JSON strings are valid C string literals here."""
    graph: GraphSpec = manifest.graph()
    return {
        "MODEL_FILE": json.dumps(Path(graph.file).name),
        "PRECISION": json.dumps(PRECISIONS[manifest.dtype]),
        "INPUTS": ", ".join(json.dumps(t.name) for t in graph.inputs),
        "INPUT_BITS": ", ".join(str(INPUT_BITS[t.dtype]) for t in graph.inputs),
        "OUTPUTS": ", ".join(json.dumps(t.name) for t in graph.outputs),
    }


def _copy_export(directory: ExportDirectory, model_dir: Path) -> None:
    """Hard-link (or copy, across file systems) the export's files and manifest."""
    model_dir.mkdir()
    for name in [*directory.manifest.files, MANIFEST_NAME]:
        source, target = directory.path / name, model_dir / name
        if not source.is_file():
            raise UsageError(
                f"The export lists {name} but {source} is missing; re-export the model."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def _template(name: str) -> str:
    path = resources.files("graphport.deploy") / "templates" / "cpp"
    for part in name.split("/"):
        path = path / part
    return path.read_text(encoding="utf-8")


def _render(text: str, values: dict[str, str]) -> str:
    """Replace each ``@NAME@`` by ``values[NAME]`` (every placeholder must have a value)."""
    return PLACEHOLDER.sub(lambda m: values[m.group(0).strip("@")], text)


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")

"""The README of a Triton model repository: how to serve it, and what each model in it
takes and returns (its tensors, batching, raw-text ensemble and engine requirements)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from graphport.deploy.triton.config import backend_for, tensor_name
from graphport.deploy.triton.text import CONTAINER_REPOSITORY, TEXT_INPUT, text_model_names
from graphport.errors import GraphportError
from graphport.manifest import MANIFEST_NAME, ExportDirectory, TensorSpec


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

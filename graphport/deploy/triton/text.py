"""Raw text in: a tokenizer model and a text ensemble (rules 7 and 8 of
``graphport.deploy.triton``).

Where the export's graph takes token ids and onnxruntime-extensions converts its tokenizer,
``write_text_models`` writes ``<model>_tokenizer`` (that graph on the onnxruntime backend,
with the custom-op library) and ``<model>_text`` (an ensemble from a string ``TEXT`` to the
model's outputs) beside the model.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from graphport.deploy.tokenizer import TokenizerGraph, convert_onnxruntime
from graphport.deploy.triton.config import (
    DATA_TYPES,
    ENSEMBLE,
    VERSION,
    Backend,
    TritonConfig,
    TritonTensor,
    tensor_name,
)
from graphport.manifest import ExportDirectory

logger = logging.getLogger(__name__)

CONTAINER_REPOSITORY = "/models"  # where the README's docker run mounts the repository
TEXT_INPUT = "TEXT"
TOKENIZER = Backend("onnxruntime_onnx", "onnxruntime", "model.onnx")


def text_model_names(name: str) -> tuple[str, str]:
    """The tokenizer's and the text ensemble's model names for model ``name`` (rule 7)."""
    return f"{name}_tokenizer", f"{name}_text"


def write_text_models(export: ExportDirectory, model: TritonConfig, staging: Path) -> list[str]:
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

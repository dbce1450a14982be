"""Which runtime model class runs an export, and loading it: ``load_model``.

The classes live below this module (``RuntimeModel`` and ``RuntimeModelForCausalLM`` in
model.py, the encoder-decoders in model_seq2seq.py, the two-tower models in
model_towers.py, the vision-language models in model_vlm.py), each importing only the
base class; the choice among them is made here, above them all, so no class module
imports a subclass.
"""

from __future__ import annotations

from typing import Any

from graphport.errors import UnsupportedModelError
from graphport.manifest import ExportDirectory
from graphport.runtimes.model import RuntimeModel, RuntimeModelForCausalLM
from graphport.runtimes.model_seq2seq import seq2seq_class
from graphport.runtimes.model_towers import RuntimeModelForTwoTowers
from graphport.runtimes.model_vlm import RuntimeModelForImageTextToText


def model_class(directory: ExportDirectory) -> type[RuntimeModel]:
    """The runtime model class for an export, or the error that says why there is none."""
    manifest = directory.manifest
    names = [g.name for g in manifest.graphs]
    if names != ["model"]:
        return multi_graph_class(directory)
    if manifest.task == "text-generation":
        return RuntimeModelForCausalLM
    return RuntimeModel


def load_model(
    export_dir: ExportDirectory | str, runtime: str = "onnxruntime", **options: Any
) -> RuntimeModel:
    """The export as a transformers model on ``runtime`` (see graphport/runtimes/model.py)."""
    directory = (
        export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
    )
    return model_class(directory).from_export(directory, runtime, **options)


def multi_graph_class(directory: ExportDirectory) -> type[RuntimeModel]:
    """The runtime model class for an export of several graphs, or why there is none."""
    manifest = directory.manifest
    names = [g.name for g in manifest.graphs]
    contract = manifest.kv_cache or {}
    if contract.get("embed_graph") and contract.get("vision_graph"):
        return RuntimeModelForImageTextToText
    if {"encoder", "decoder"} <= set(names) and contract.get("encoder_graph"):
        return seq2seq_class(directory)
    if set(names) in ({"text", "vision"}, {"text", "audio"}):
        return RuntimeModelForTwoTowers
    raise UnsupportedModelError(
        f"{directory.path} is a {manifest.task} export with graphs {', '.join(names)}, "
        "which graphport.load cannot run (it runs one graph, an encoder and a decoder with "
        "its KV cache, or two towers); use `graphport run` or `graphport generate` for it."
    )

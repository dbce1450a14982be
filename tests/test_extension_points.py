"""The extension points of docs/DEVELOPING.md take one place each: a family is its
decorated config class, a runtime is its adapter class plus one line in ``_ADAPTERS``.
(A format is tested the same way in tests/formats/test_format_registry.py; a pass is a
step of the pipeline that runs it, as every pass in api/transform.py is.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphport.models  # noqa: F401  (every family registered before the registry is copied)
from graphport.api.export import export_model
from graphport.export.modalities import TextOnnxConfig
from graphport.manifest import ExportDirectory
from graphport.models import registry
from graphport.models.tiny import save_tiny_checkpoint
from graphport.runtimes import get_runtime_class
from graphport.runtimes import onnxruntime as onnxruntime_adapter


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as it is, restored after the test (a registration is global)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_a_family_is_its_decorated_config(fresh_registry, tmp_path: Path):
    # What graphport/models/<family>.py would hold, and nothing else: nystromformer exports
    # through the generic path until a family claims it.
    assert registry.get_registration("nystromformer").generic

    @registry.register("nystromformer", family="dry-family")
    class DryOnnxConfig(TextOnnxConfig):
        pass

    assert registry.get_registration("nystromformer").config_class is DryOnnxConfig
    checkpoint = save_tiny_checkpoint("nystromformer", tmp_path / "checkpoint")
    result = export_model(checkpoint, tmp_path / "out", runtimes=["onnxruntime"])
    assert result.report.passed
    assert ExportDirectory(tmp_path / "out").manifest.family == "dry-family"


class DoublingRuntime(onnxruntime_adapter.OnnxRuntime):
    """A runtime that is onnxruntime with every float output doubled: the base class does
    the manifest's checks, the adapter only runs."""

    name = "doubling"

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = super()._run_impl(feeds)
        return {k: v * 2 if v.dtype.kind == "f" else v for k, v in outputs.items()}


def test_a_runtime_is_its_adapter_and_one_registry_line(bert_export, monkeypatch):
    from graphport import runtimes

    line = f"{__name__}:DoublingRuntime"
    monkeypatch.setitem(runtimes._ADAPTERS, "doubling", line)
    doubled = get_runtime_class("doubling")(bert_export)
    plain = get_runtime_class("onnxruntime")(bert_export)
    feeds = {
        "input_ids": np.array([[11, 42, 7, 99]], dtype=np.int64),
        "attention_mask": np.ones((1, 4), dtype=np.int64),
        "token_type_ids": np.zeros((1, 4), dtype=np.int64),
    }
    feeds = {k: v for k, v in feeds.items() if k in plain.input_names}
    name = plain.output_names[0]
    np.testing.assert_allclose(doubled.run(feeds)[name], 2 * plain.run(feeds)[name], rtol=1e-6)

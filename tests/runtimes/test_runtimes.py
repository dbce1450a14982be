"""Runtimes: the adapters agree with each other, and the base class checks every feed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphport.errors import ManifestError, RuntimeUnavailableError, UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes import Runtime, get_runtime_class, parse_runtimes
from graphport.runtimes.onnxruntime import OnnxRuntime
from graphport.runtimes.openvino import OpenVinoRuntime
from graphport.runtimes.torch import TorchRuntime
from graphport.validators.reference import load_reference

ADAPTERS = {"onnxruntime": OnnxRuntime, "openvino": OpenVinoRuntime, "torch": TorchRuntime}


def text_feeds(batch: int = 3, sequence: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids within the tiny vocabulary, right padding on every row but the first."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, sequence), dtype=np.int64)
    for row in range(1, batch):
        mask[row, sequence - row :] = 0
    return {
        "input_ids": rng.integers(5, 128, size=(batch, sequence), dtype=np.int64),
        "attention_mask": mask,
        "token_type_ids": np.zeros((batch, sequence), dtype=np.int64),
    }


@pytest.fixture(scope="module")
def runtimes(bert_export: Path) -> dict[str, Runtime]:
    # The torch runtime runs the eager reference it is handed (it never reads a checkpoint).
    eager = {"torch": {"model": load_reference(ExportDirectory(bert_export))}}
    return {name: cls(bert_export, **eager.get(name, {})) for name, cls in ADAPTERS.items()}


@pytest.mark.parametrize("graph_runtime", ["onnxruntime", "openvino"])
def test_graph_runtimes_match_eager(runtimes: dict[str, Runtime], graph_runtime: str):
    feeds = text_feeds()
    expected = runtimes["torch"].run(feeds)
    actual = runtimes[graph_runtime].run(feeds)
    assert list(actual) == list(expected) == ["last_hidden_state"]
    assert actual["last_hidden_state"].shape == (3, 7, 32)
    assert actual["last_hidden_state"].dtype == np.float32
    np.testing.assert_allclose(
        actual["last_hidden_state"], expected["last_hidden_state"], atol=1e-4, rtol=0
    )


def test_runtimes_describe_themselves(runtimes: dict[str, Runtime]):
    assert runtimes["onnxruntime"].describe().endswith("(CPUExecutionProvider)")
    assert runtimes["openvino"].describe().startswith("openvino ")
    assert runtimes["torch"].input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert runtimes["torch"].output_names == ["last_hidden_state"]


def test_the_torch_runtime_runs_the_model_it_is_handed_and_reads_no_checkpoint(
    bert_export: Path,
):
    with pytest.raises(UsageError, match=r"torch runtime runs an eager model it is handed"):
        TorchRuntime(bert_export)


def test_check_feeds_missing_input(runtimes: dict[str, Runtime]):
    feeds = text_feeds()
    del feeds["token_type_ids"]
    with pytest.raises(
        UsageError,
        match=r"takes input_ids, attention_mask, token_type_ids; "
        r"missing token_type_ids\.$",
    ):
        runtimes["onnxruntime"].check_feeds(feeds)


def test_check_feeds_unexpected_input(runtimes: dict[str, Runtime]):
    feeds = {**text_feeds(), "position_ids": np.zeros((3, 7), dtype=np.int64)}
    with pytest.raises(UsageError, match=r"; unexpected position_ids\.$"):
        runtimes["onnxruntime"].check_feeds(feeds)


def test_check_feeds_missing_and_unexpected(runtimes: dict[str, Runtime]):
    feeds = text_feeds()
    feeds["segment_ids"] = feeds.pop("token_type_ids")
    with pytest.raises(UsageError, match=r"missing token_type_ids; unexpected segment_ids\.$"):
        runtimes["openvino"].run(feeds)


def test_check_feeds_wrong_rank(runtimes: dict[str, Runtime]):
    feeds = text_feeds()
    feeds["input_ids"] = feeds["input_ids"][0]
    with pytest.raises(UsageError, match=r"Input input_ids has 1 dimensions; the graph expects 2"):
        runtimes["onnxruntime"].check_feeds(feeds)


def test_int32_ids_are_cast(runtimes: dict[str, Runtime]):
    feeds = text_feeds()
    narrow = {k: v.astype(np.int32) for k, v in feeds.items()}
    checked = runtimes["onnxruntime"].check_feeds(narrow)
    assert {v.dtype for v in checked.values()} == {np.dtype(np.int64)}
    np.testing.assert_array_equal(checked["input_ids"], feeds["input_ids"])
    np.testing.assert_array_equal(
        runtimes["onnxruntime"].run(narrow)["last_hidden_state"],
        runtimes["onnxruntime"].run(feeds)["last_hidden_state"],
    )


def test_float_ids_are_rejected(runtimes: dict[str, Runtime]):
    feeds = text_feeds()
    feeds["input_ids"] = feeds["input_ids"].astype(np.float32)
    with pytest.raises(UsageError, match=r"Input input_ids is float32; the graph expects int64\."):
        runtimes["onnxruntime"].check_feeds(feeds)


def test_get_runtime_class():
    assert get_runtime_class(" OpenVINO ") is OpenVinoRuntime
    with pytest.raises(
        UsageError,
        match=r"Unknown runtime 'nope'; choose from onnxruntime, openvino, .*torch\.",
    ):
        get_runtime_class("nope")


def test_missing_runtime_package(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(OpenVinoRuntime, "is_available", classmethod(lambda cls: False))
    with pytest.raises(RuntimeUnavailableError, match=r"install the `openvino` package"):
        get_runtime_class("openvino")
    assert OpenVinoRuntime.version() is None


def test_parse_runtimes():
    assert parse_runtimes("onnxruntime") == ["onnxruntime"]
    assert parse_runtimes(" OnnxRuntime, openvino ,") == ["onnxruntime", "openvino"]
    assert parse_runtimes(("torch", "openvino")) == ["torch", "openvino"]
    with pytest.raises(UsageError, match=r"Unknown runtime 'tensorflow'"):
        parse_runtimes("onnxruntime,tensorflow")


def test_onnxruntime_providers_as_a_string(bert_export: Path):
    runtime = OnnxRuntime(bert_export, providers="CPUExecutionProvider, ")
    assert runtime.providers == ["CPUExecutionProvider"]
    assert runtime.run(text_feeds(batch=1, sequence=5))["last_hidden_state"].shape == (1, 5, 32)


def test_onnxruntime_unavailable_provider(bert_export: Path):
    ort = pytest.importorskip("onnxruntime")
    available = ort.get_available_providers()
    missing = [p for p in ort.get_all_providers() if p not in available]
    if not missing:
        pytest.skip("every onnxruntime provider is available here")
    with pytest.raises(
        RuntimeUnavailableError,
        match=rf"onnxruntime has no {missing[0]} here; "
        r"available providers are .*CPUExecutionProvider",
    ):
        OnnxRuntime(bert_export, providers=[missing[0], "CPUExecutionProvider"])


def test_unknown_graph_name(bert_export: Path):
    with pytest.raises(ManifestError, match=r"The export has no graph 'decoder'; it has model\."):
        OnnxRuntime(bert_export, graph="decoder")

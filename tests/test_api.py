"""graphport.pipeline and graphport.load under transformers.pipeline: the same results as
the eager pipeline, on onnxruntime and OpenVINO, and one-sentence errors for bad input."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from conftest import add_causal_tokenizer, add_image_processor, add_word_tokenizer

import graphport
from graphport.api.export import export_model
from graphport.api.load import preprocessors
from graphport.errors import ManifestError, RuntimeUnavailableError, UsageError
from graphport.manifest import ExportDirectory

RUNTIMES = ["onnxruntime", "openvino"]


# name -> (model type, task, the preprocessor it gets, the pipeline input)
EXPORTS: dict[str, tuple[str, str, Callable[[Path], Path], str]] = {
    "feature-extraction": ("bert", "feature-extraction", add_word_tokenizer, "hello world a b"),
    "fill-mask": ("bert", "fill-mask", add_word_tokenizer, "hello [MASK] a"),
    "text-classification": ("bert", "text-classification", add_word_tokenizer, "hello a b"),
    "token-classification": ("bert", "token-classification", add_word_tokenizer, "hello world"),
    "image-classification": ("vit", "image-classification", add_image_processor, "image"),
    "text-generation": ("gpt2", "text-generation", add_causal_tokenizer, "w5 w6 w7"),
}


@pytest.fixture(scope="module")
def exports(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``exports(name)`` -> (checkpoint, export directory), built once per module."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            model_type, task, add_preprocessor, _ = EXPORTS[name]
            root = tmp_path_factory.mktemp(f"api-{name}")
            source = root / "checkpoint"
            shutil.copytree(tiny_checkpoint(model_type, task), source)
            add_preprocessor(source)
            # Validation is what this module does, against the eager pipeline.
            export_model(source, root / "out", validate=False)
            cache[name] = (source, root / "out")
        return cache[name]

    return get


@pytest.fixture(scope="module")
def image():
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))


def assert_same(actual: Any, expected: Any, path: str = "result") -> None:
    """Equal structure, labels, tokens and spans; numbers within 1e-3."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert isinstance(actual, list | tuple) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    elif isinstance(expected, float | np.floating):
        assert abs(float(actual) - float(expected)) <= 1e-3, f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def run(pipe: Any, name: str, image: Any) -> Any:
    inputs = image if EXPORTS[name][3] == "image" else EXPORTS[name][3]
    if name == "text-generation":
        torch.manual_seed(0)  # the pipeline samples by default: same seed, same draws
        return [pipe(inputs, max_new_tokens=8), pipe(inputs, max_new_tokens=8, do_sample=False)]
    return pipe(inputs)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(EXPORTS))
def test_pipelines_return_what_eager_returns(exports, image, name: str, runtime: str):
    source, out = exports(name)
    expected = run(transformers.pipeline(name, model=str(source), device="cpu"), name, image)

    assert_same(run(graphport.pipeline(out, runtime=runtime), name, image), expected)

    model = graphport.load(out, runtime=runtime)
    pipe = transformers.pipeline(
        name, model=model, device="cpu", **preprocessors(ExportDirectory(out))
    )
    assert_same(run(pipe, name, image), expected)


def test_the_task_comes_from_the_manifest_and_aliases_resolve(exports):
    _, out = exports("text-classification")
    assert graphport.pipeline(out).task == "text-classification"
    assert graphport.pipeline(out, task="sentiment-analysis").task == "text-classification"


def test_a_task_the_export_does_not_have_names_the_exports_task(exports):
    _, out = exports("fill-mask")
    with pytest.raises(UsageError, match="is a fill-mask export, so it cannot serve a text-"):
        graphport.pipeline(out, task="text-classification")


def test_not_an_export_directory(tmp_path: Path):
    with pytest.raises(ManifestError, match=r"has no graphport\.json"):
        graphport.load(tmp_path)
    with pytest.raises(ManifestError, match=r"has no graphport\.json"):
        graphport.pipeline(tmp_path)


def test_unknown_and_uninstalled_runtimes(exports, monkeypatch: pytest.MonkeyPatch):
    _, out = exports("fill-mask")
    with pytest.raises(UsageError, match="Unknown runtime 'onnx-runtime'; choose from"):
        graphport.load(out, runtime="onnx-runtime")
    from graphport.runtimes.openvino import OpenVinoRuntime

    monkeypatch.setattr(OpenVinoRuntime, "is_available", classmethod(lambda cls: False))
    with pytest.raises(RuntimeUnavailableError, match="openvino runtime is not installed"):
        graphport.pipeline(out, runtime="openvino")


def test_generate_on_an_export_that_does_not_generate(exports):
    _, out = exports("fill-mask")
    model = graphport.load(out)
    assert not model.can_generate()
    with pytest.raises(UsageError, match="is a fill-mask export, which does not generate"):
        model.generate(torch.tensor([[5, 6]]))


def test_public_names():
    assert {"load", "pipeline", "export_model", "validate_export"} <= set(graphport.__all__)
    from graphport import api

    assert graphport.load is api.load and graphport.pipeline is api.pipeline

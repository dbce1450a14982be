"""graphport.pipeline and graphport.load for the vision and audio pipelines, graphport's own
question-answering answer, multiple-choice forward, save_pretrained, and bad input: each
against eager on onnxruntime and OpenVINO, with tiny random models built offline."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from conftest import add_word_tokenizer

import graphport
from graphport.api.export import export_model
from graphport.api.load import preprocessors
from graphport.manifest import ExportDirectory

RUNTIMES = ["onnxruntime", "openvino"]


def add_yolos_processor(checkpoint: Path) -> Path:
    # The tiny YOLOS graph is fixed at its config's 32 x 48 image size.
    transformers.YolosImageProcessor(size={"height": 32, "width": 48}).save_pretrained(checkpoint)
    return checkpoint


def add_mobilevit_processor(checkpoint: Path) -> Path:
    transformers.MobileViTImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}
    ).save_pretrained(checkpoint)
    return checkpoint


def add_dpt_processor(checkpoint: Path) -> Path:
    transformers.DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(checkpoint)
    return checkpoint


def add_feature_extractor(checkpoint: Path) -> Path:
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(checkpoint)
    return checkpoint


def add_ctc_processor(checkpoint: Path) -> Path:
    """A wav2vec2 processor with a character CTC tokenizer over the tiny vocab (32 ids)."""
    letters = "abcdefghijklmnopqrstuvwxyz'"
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    vocab.update({ch: 5 + i for i, ch in enumerate(letters)})
    (checkpoint / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(checkpoint / "vocab.json"))
    transformers.Wav2Vec2Processor(
        feature_extractor=transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000),
        tokenizer=tokenizer,
    ).save_pretrained(checkpoint)
    return checkpoint


# pipeline task -> (model type, exported task, its preprocessor, the input, call keywords)
PIPELINES: dict[str, tuple[str, str, Callable[[Path], Path], str, dict[str, Any]]] = {
    "object-detection": (
        "yolos",
        "object-detection",
        add_yolos_processor,
        "image",
        {"threshold": 0.0},  # every detection, not only the random model's confident ones
    ),
    "image-segmentation": (
        "mobilevitv2",
        "semantic-segmentation",
        add_mobilevit_processor,
        "image",
        {"subtask": "semantic"},
    ),
    "depth-estimation": ("dpt", "depth-estimation", add_dpt_processor, "image", {}),
    "audio-classification": (
        "wav2vec2",
        "audio-classification",
        add_feature_extractor,
        "audio",
        {},
    ),
    "automatic-speech-recognition": (
        "wav2vec2",
        "automatic-speech-recognition",
        add_ctc_processor,
        "audio",
        {},
    ),
}
# name -> (model type, task, preprocessor) of the exports without a transformers pipeline
OTHERS: dict[str, tuple[str, str, Callable[[Path], Path]]] = {
    "question-answering": ("bert", "question-answering", add_word_tokenizer),
    "multiple-choice": ("bert", "multiple-choice", add_word_tokenizer),
    "fill-mask": ("bert", "fill-mask", add_word_tokenizer),
}


@pytest.fixture(scope="module")
def exports(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``exports(name)`` -> (checkpoint, export directory), built once per module."""
    cache: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            model_type, task, add_preprocessor = (PIPELINES.get(name) or OTHERS[name])[:3]
            root = tmp_path_factory.mktemp(f"api-{name}")
            source = root / "checkpoint"
            shutil.copytree(tiny_checkpoint(model_type, task), source)
            add_preprocessor(source)
            # Validation is what this module does, against eager.
            export_model(source, root / "out", validate=False)
            cache[name] = (source, root / "out")
        return cache[name]

    return get


@pytest.fixture(scope="module")
def media() -> dict[str, Any]:
    """A 40 x 48 random image and one second of a noisy 440 Hz tone at 16 kHz."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    t = np.arange(16000) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(16000)
    return {"image": image, "audio": audio.astype(np.float32)}


def assert_same(actual: Any, expected: Any, path: str = "result") -> None:
    """Equal structure, labels, tokens, spans and boxes; numbers and depth maps within
    1e-3; masks and 8-bit depth images equal to within one grey level."""
    from PIL import Image

    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert isinstance(actual, list | tuple) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
    elif isinstance(expected, Image.Image):
        assert isinstance(actual, Image.Image) and actual.size == expected.size, path
        difference = np.abs(np.asarray(actual, np.int32) - np.asarray(expected, np.int32))
        assert difference.max() <= 1, f"{path}: images differ by {difference.max()}"
    elif isinstance(expected, torch.Tensor | np.ndarray):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-3, rtol=1e-3)
    elif isinstance(expected, float | np.floating):
        assert abs(float(actual) - float(expected)) <= 1e-3, f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


# ---- 1. the pipelines Transformers 5 has ----------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("task", list(PIPELINES))
def test_pipelines_return_what_eager_returns(exports, media, task: str, runtime: str):
    source, out = exports(task)
    inputs, options = media[PIPELINES[task][3]], PIPELINES[task][4]
    expected = transformers.pipeline(task, model=str(source), device="cpu")(inputs, **options)

    assert_same(graphport.pipeline(out, runtime=runtime)(inputs, **options), expected)

    model = graphport.load(out, runtime=runtime)
    pipe = transformers.pipeline(
        task, model=model, device="cpu", **preprocessors(ExportDirectory(out))
    )
    assert_same(pipe(inputs, **options), expected)

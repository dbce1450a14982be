"""The heads transformers has beyond a family's tasks: one tiny model per task, exported and
validated on onnxruntime and OpenVINO, loaded with ``graphport.load`` (eager's output
class, eager's numbers) and run by the transformers pipeline where one exists, against
eager. Each export is made once per module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from conftest import add_causal_tokenizer, add_word_tokenizer

import graphport
from graphport.api.export import export_model
from graphport.errors import UnsupportedTaskError
from graphport.export.tasks import Task, parse_task
from graphport.models import get_onnx_config, supported_tasks
from graphport.models.tiny import save_tiny_checkpoint, tiny_config

RUNTIMES = ["onnxruntime", "openvino"]


def _whisper_features(checkpoint: Path) -> None:
    # The tiny whisper graph takes 16 mel bins x 32 frames (2 x max_source_positions): one
    # second in hops of 500 samples.
    transformers.WhisperFeatureExtractor(
        feature_size=16, chunk_length=1, hop_length=500, n_fft=1024
    ).save_pretrained(checkpoint)


def _glpn_processor(checkpoint: Path) -> None:
    transformers.GLPNImageProcessor(size_divisor=32).save_pretrained(checkpoint)


def _maskformer_processor(checkpoint: Path) -> None:
    transformers.MaskFormerImageProcessor(
        size={"height": 64, "width": 64}, size_divisor=0, do_reduce_labels=False
    ).save_pretrained(checkpoint)


def _siglip_processors(checkpoint: Path) -> None:
    add_word_tokenizer(checkpoint)
    transformers.SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(checkpoint)


def _owlvit_processors(checkpoint: Path) -> None:
    add_word_tokenizer(checkpoint)
    transformers.OwlViTImageProcessor(
        size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}
    ).save_pretrained(checkpoint)


def _swin2sr_processor(checkpoint: Path) -> None:
    # The tiny graph takes 64 x 64 images (its config's image_size); 8 divides it.
    transformers.Swin2SRImageProcessor(size_divisor=8).save_pretrained(checkpoint)


@dataclass(frozen=True)
class Case:
    model_type: str
    task: str  # with -with-past where the export takes a cache
    preprocessor: Callable[[Path], Any] | None = None
    pipeline: str | None = None  # the transformers pipeline task, where one exists
    media: str = "image"
    call: dict[str, Any] = field(default_factory=dict)


CASES = {
    "masked-im": Case("deit", "masked-im"),
    "audio-xvector": Case("wav2vec2", "audio-xvector"),
    "audio-frame-classification": Case("wav2vec2", "audio-frame-classification"),
    "audio-classification": Case(
        "whisper", "audio-classification", _whisper_features, "audio-classification", "audio"
    ),
    "text-classification": Case(
        "gemma", "text-classification", add_causal_tokenizer, "text-classification", "text"
    ),
    "depth-estimation": Case("glpn", "depth-estimation", _glpn_processor, "depth-estimation"),
    "instance-segmentation": Case(
        "maskformer",
        "instance-segmentation",
        _maskformer_processor,
        "image-segmentation",
        call={"subtask": "instance", "threshold": 0.0},
    ),
    "panoptic-segmentation": Case("detr", "panoptic-segmentation"),
    "zero-shot-image-classification": Case(
        "siglip",
        "zero-shot-image-classification",
        _siglip_processors,
        "zero-shot-image-classification",
        call={"candidate_labels": ["hello", "world", "text"]},
    ),
    "zero-shot-object-detection": Case(
        "owlvit",
        "zero-shot-object-detection",
        _owlvit_processors,
        "zero-shot-object-detection",
        call={"candidate_labels": ["hello", "world"], "threshold": 0.0, "top_k": 3},
    ),
    # Transformers 5 removed the image-to-image pipeline.
    "image-to-image": Case("swin2sr", "image-to-image", _swin2sr_processor),
    "reinforcement-learning": Case("decision_transformer", "reinforcement-learning"),
    "feature-extraction-with-past": Case("bloom", "feature-extraction-with-past"),
    "automatic-speech-recognition-with-past": Case(
        "speech_to_text", "automatic-speech-recognition-with-past"
    ),
}
PIPELINE_CASES = [name for name, case in CASES.items() if case.pipeline]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Any]]:
    """``exports(name)`` -> (checkpoint, export result), validated on both runtimes."""
    cache: dict[str, tuple[Path, Any]] = {}

    def get(name: str) -> tuple[Path, Any]:
        if name not in cache:
            case = CASES[name]
            root = tmp_path_factory.mktemp(name)
            head, _ = parse_task(case.task)
            source = save_tiny_checkpoint(case.model_type, root / "checkpoint", task=head)
            if case.preprocessor is not None:
                case.preprocessor(source)
            result = export_model(source, root / "out", task=case.task, runtimes=RUNTIMES)
            cache[name] = (source, result)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def media() -> dict[str, Any]:
    """A 64 x 64 random image, one second of a noisy 440 Hz tone at 16 kHz, a sentence."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    t = np.arange(16000) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(16000)
    return {"image": image, "audio": audio.astype(np.float32), "text": "w5 w9 w17 w33"}


def eager_and_feeds(source: Path, task: str) -> tuple[Any, torch.nn.Module, dict]:
    """The eager head, the module its graph traces, and validation-sized feeds."""
    head, _ = parse_task(task)
    model_type = transformers.AutoConfig.from_pretrained(source).model_type
    eager = head.auto_class(model_type).from_pretrained(source).eval()
    config = get_onnx_config(eager.config, task)
    graph = config.sub_graphs(eager)[0]
    feeds = dict(config.dummy_inputs(config.validation_shapes()[0]))
    if graph.name == "encoder":  # an encoder-decoder: its forward takes decoder tokens too
        start = eager.config.decoder_start_token_id
        batch = next(iter(feeds.values())).shape[0]
        feeds["decoder_input_ids"] = torch.tensor([[start, 7, 9]] * batch)
    return eager, graph.module, feeds


@pytest.mark.parametrize("name", list(CASES))
def test_export_validates_on_both_runtimes(exports, name: str):
    _, result = exports(name)
    case = CASES[name]
    head, with_past = parse_task(case.task)
    assert result.manifest.task == head.value
    assert bool(result.manifest.kv_cache) is with_past
    assert set(result.report.runtimes) == set(RUNTIMES)
    assert result.report.passed, "\n".join(result.report.failures())


@pytest.mark.parametrize("name", list(CASES))
def test_load_returns_eagers_output_class_and_numbers(exports, name: str):
    source, result = exports(name)
    eager, module, feeds = eager_and_feeds(source, CASES[name].task)
    with torch.no_grad():
        if "past_key_values.0.key" in feeds:  # the cache feeds go to the traced wrapper
            expected_class = type(eager(input_ids=feeds["input_ids"]))
            expected = module(*feeds.values())
        else:
            expected = eager(**feeds)
            expected_class = type(expected)
    for runtime in RUNTIMES:
        actual = graphport.load(result.path, runtime=runtime)(**feeds)
        assert type(actual) is expected_class, runtime
        for output in result.manifest.graphs[-1].outputs:
            if output.name.startswith("present."):
                continue
            torch.testing.assert_close(
                actual[output.name], expected[output.name], atol=1e-4, rtol=1e-4
            )


def _same(actual: Any, expected: Any, path: str = "result") -> None:
    """Equal structure and labels; scores and maps within 1e-3, masks to a grey level,
    boxes to a pixel."""
    from PIL import Image

    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            _same(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert isinstance(actual, list | tuple) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _same(a, e, f"{path}[{i}]")
    elif isinstance(expected, Image.Image):
        difference = np.abs(np.asarray(actual, np.int32) - np.asarray(expected, np.int32))
        assert difference.max() <= 1, f"{path}: images differ by {difference.max()}"
    elif isinstance(expected, torch.Tensor | np.ndarray):
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=1e-3, rtol=1e-3)
    elif isinstance(expected, float):
        assert abs(actual - expected) <= 1e-3, f"{path}: {actual} != {expected}"
    elif "['box']" in path:  # pixels rounded from float coordinates
        assert abs(actual - expected) <= 1, f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", PIPELINE_CASES)
def test_pipeline_returns_what_eager_returns(exports, media, name: str, runtime: str):
    source, result = exports(name)
    case = CASES[name]
    inputs = media[case.media]
    expected = transformers.pipeline(case.pipeline, model=str(source), device="cpu")(
        inputs, **case.call
    )
    pipe = graphport.pipeline(result.path, task=case.pipeline, runtime=runtime)
    _same(pipe(inputs, **case.call), expected)


# ---- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "task"),
    [
        ("deit", Task.MASKED_IM),
        ("rt_detr", Task.OBJECT_DETECTION),
        ("whisper", Task.AUDIO_CLASSIFICATION),
        ("siglip", Task.ZERO_SHOT_IMAGE_CLASSIFICATION),
        ("gemma", Task.TEXT_CLASSIFICATION),
        ("glpn", Task.DEPTH_ESTIMATION),
        ("maskformer", Task.INSTANCE_SEGMENTATION),
        ("maskformer", Task.UNIVERSAL_SEGMENTATION),
        ("detr", Task.PANOPTIC_SEGMENTATION),
        ("sam", Task.MASK_GENERATION),
        ("owlvit", Task.ZERO_SHOT_OBJECT_DETECTION),
        ("superpoint", Task.KEYPOINT_DETECTION),
        ("swin2sr", Task.IMAGE_TO_IMAGE),
        ("vits", Task.TEXT_TO_AUDIO),
        ("speecht5", Task.TEXT_TO_SPECTROGRAM),
        ("wavlm", Task.AUDIO_XVECTOR),
        ("wavlm", Task.AUDIO_FRAME_CLASSIFICATION),
        ("timesfm", Task.TIME_SERIES_FORECASTING),
        ("decision_transformer", Task.REINFORCEMENT_LEARNING),
    ],
)
def test_every_head_transformers_maps_is_a_supported_task(model_type: str, task: Task):
    assert task in supported_tasks(model_type)


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("masked-im", Task.MASKED_IM),
        ("image-segmentation", Task.SEMANTIC_SEGMENTATION),  # optimum's name, as before
        ("text-to-speech", Task.TEXT_TO_AUDIO),
        ("audio-xvector", Task.AUDIO_XVECTOR),
        ("reinforcement-learning", Task.REINFORCEMENT_LEARNING),
        ("summarization", Task.TEXT2TEXT_GENERATION),
    ],
)
def test_new_and_legacy_task_names_parse(name: str, task: Task):
    assert parse_task(name) == (task, False)


def test_a_task_without_a_head_names_the_tasks_the_type_has():
    with pytest.raises(
        UnsupportedTaskError,
        match=r"^Model type 'glpn' does not support the task 'fill-mask'; it supports "
        r"feature-extraction, depth-estimation: pass one of these with --task\.$",
    ) as raised:
        get_onnx_config(tiny_config("glpn"), "fill-mask")
    assert raised.value.exit_code == 2


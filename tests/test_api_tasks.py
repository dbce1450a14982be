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
from click.testing import CliRunner
from conftest import add_causal_tokenizer, add_word_tokenizer

import graphport
from graphport.api.export import export_model
from graphport.api.load import preprocessors
from graphport.cli import cli
from graphport.errors import UnsupportedModelError, UsageError
from graphport.manifest import ExportDirectory
from graphport.verbosity import set_verbosity

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


# name -> (model type, task, preprocessor) of the other exports this module uses
OTHERS: dict[str, tuple[str, str, Callable[[Path], Path]]] = {
    "question-answering": ("bert", "question-answering", add_word_tokenizer),
    "multiple-choice": ("bert", "multiple-choice", add_word_tokenizer),
    "fill-mask": ("bert", "fill-mask", add_word_tokenizer),
    "text-generation": ("gpt2", "text-generation", add_causal_tokenizer),
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


# ---- 2. graphport's own answers: question answering, multiple choice -------------------

QUESTION = "hello world"
CONTEXT = "a b text hello a world b text a hello world b a text"


def reference_answers(source: Path, question: str, context: str) -> list[dict[str, Any]]:
    """Every span of the removed pipeline's rules from eager logits, best first, written
    out plainly: a softmax over the context tokens and CLS, spans of context tokens with
    start <= end < start + 15, score p_start * p_end, characters from the offsets."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    encoding = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(source).eval()
    with torch.no_grad():
        outputs = model(**{k: v for k, v in encoding.items() if k != "offset_mapping"})
    tokens = [i for i, s in enumerate(encoding.sequence_ids(0)) if s == 1]

    def softmax(logits: torch.Tensor) -> dict[int, float]:
        kept = logits[0, [0, *tokens]].double()
        return dict(zip([0, *tokens], torch.softmax(kept, 0).tolist(), strict=True))

    p_start, p_end = softmax(outputs.start_logits), softmax(outputs.end_logits)
    offsets = encoding["offset_mapping"][0].tolist()
    spans = [
        (p_start[s] * p_end[e], offsets[s][0], offsets[e][1])
        for s in tokens
        for e in tokens
        if s <= e < s + 15
    ]
    spans.sort(key=lambda span: -span[0])
    return [{"score": score, "start": a, "end": b, "answer": context[a:b]} for score, a, b in spans]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_question_answering_keeps_the_removed_pipelines_span_rules(exports, runtime: str):
    source, out = exports("question-answering")
    expected = reference_answers(source, QUESTION, CONTEXT)
    pipe = graphport.pipeline(out, runtime=runtime)
    assert pipe.task == "question-answering"

    assert_same(pipe(question=QUESTION, context=CONTEXT), expected[0])
    assert_same(pipe({"question": QUESTION, "context": CONTEXT}), expected[0])
    assert_same(pipe(question=QUESTION, context=CONTEXT, top_k=3), expected[:3])
    assert_same(pipe(question=[QUESTION, QUESTION], context=CONTEXT), [expected[0]] * 2)
    short = pipe(question=QUESTION, context=CONTEXT, max_answer_len=1, top_k=50)
    assert short and all(len(a["answer"].split()) == 1 for a in short)


def test_question_answering_splits_a_long_context_into_features(exports):
    _, out = exports("question-answering")
    pipe = graphport.pipeline(out)
    context = " ".join([CONTEXT] * 12)  # 156 words: past 128 positions
    answer = pipe(question=QUESTION, context=context, max_seq_len=32, doc_stride=8)
    assert context[answer["start"] : answer["end"]] == answer["answer"] != ""
    assert 0 < answer["score"] <= 1


def test_question_answering_forward_matches_eager(exports):
    source, out = exports("question-answering")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    inputs = tokenizer(QUESTION, CONTEXT, return_tensors="pt")
    eager = transformers.AutoModelForQuestionAnswering.from_pretrained(source).eval()
    with torch.no_grad():
        expected = eager(**inputs)
    for runtime in RUNTIMES:
        actual = graphport.load(out, runtime=runtime)(**inputs)
        assert type(actual) is type(expected)
        torch.testing.assert_close(actual.start_logits, expected.start_logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(actual.end_logits, expected.end_logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_multiple_choice_forward_matches_eager(exports, runtime: str):
    source, out = exports("multiple-choice")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    choices = ["a b text", "world a", "b b hello text"]
    encoded = tokenizer(["hello world"] * 3, choices, padding=True, return_tensors="pt")
    inputs = {name: value[None] for name, value in encoded.items()}  # 1 x 3 choices x length
    eager = transformers.AutoModelForMultipleChoice.from_pretrained(source).eval()
    with torch.no_grad():
        expected = eager(**inputs)

    actual = graphport.load(out, runtime=runtime)(**inputs)
    assert type(actual) is type(expected) and actual.logits.shape == (1, 3)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    with pytest.raises(UnsupportedModelError, match="Transformers 5 has no multiple-choice"):
        graphport.pipeline(out, runtime=runtime)


# ---- 3. save_pretrained ----------------------------------------------------------------


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    set_verbosity("error")  # the CLI sets graphport's level for the whole process
    return result.exit_code, result.output + (f"\n{result.exception!r}" * bool(result.exception))


def test_save_pretrained_writes_an_export_directory(exports, tmp_path: Path):
    _, out = exports("fill-mask")
    model = graphport.load(out)
    saved = tmp_path / "saved"
    model.save_pretrained(saved)

    assert ExportDirectory(saved).manifest.files == ExportDirectory(out).manifest.files
    inputs = {"input_ids": torch.tensor([[2, 5, 4, 8, 3]])}
    for runtime in RUNTIMES:
        reloaded = graphport.load(saved, runtime=runtime)
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits)
    assert graphport.pipeline(saved)("hello [MASK] a") == graphport.pipeline(out)("hello [MASK] a")
    for command in (["inspect"], ["validate"], ["run", "--json"]):
        code, output = invoke(
            command[0], saved, *(["hello [MASK] a"] * (command[0] == "run")), *command[1:]
        )
        assert code == 0, output
    with pytest.raises(UsageError, match="do not push to the Hub"):
        model.save_pretrained(tmp_path / "hub", push_to_hub=True)


# ---- 4. bad input ----------------------------------------------------------------------


def test_an_image_for_a_text_export(exports, media):
    _, out = exports("fill-mask")
    with pytest.raises(UsageError, match=r"fill-mask export .*, which takes text, was given an "):
        graphport.pipeline(out)(media["image"])


def test_text_for_an_image_export(exports):
    _, out = exports("depth-estimation")
    with pytest.raises(UsageError, match="which takes images, was given the text 'hello'"):
        graphport.pipeline(out)("hello")


def test_audio_that_cannot_be_decoded(exports, media, tmp_path: Path):
    _, out = exports("audio-classification")
    pipe = graphport.pipeline(out)
    with pytest.raises(UsageError, match="16 bytes that cannot be decoded as audio"):
        pipe(b"not audio at all")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEnot really")
    with pytest.raises(UsageError, match=r"broken\.wav cannot be decoded"):
        pipe(str(broken))
    with pytest.raises(UsageError, match="which takes audio, was given an image"):
        pipe(media["image"])


def test_an_audio_file_is_decoded_and_resampled(exports, media, tmp_path: Path):
    import soundfile

    source, out = exports("audio-classification")
    path = tmp_path / "tone.wav"
    soundfile.write(path, media["audio"], 16000)
    expected = transformers.pipeline("audio-classification", model=str(source), device="cpu")(
        soundfile.read(path, dtype="float32")[0]
    )
    assert_same(graphport.pipeline(out)(str(path)), expected)
    assert_same(graphport.pipeline(out)(path.read_bytes()), expected)


def test_a_prompt_longer_than_the_models_positions(exports):
    _, out = exports("text-generation")
    model = graphport.load(out)
    positions = model.config.n_positions
    with pytest.raises(UsageError, match=f"exceeds the model's {positions} positions"):
        model.generate(torch.full((1, positions + 1), 5), max_new_tokens=1)
    with pytest.raises(UsageError, match=f"with 8 new tokens that exceeds the model's {positions}"):
        model.generate(torch.full((1, positions - 4), 5), max_new_tokens=8)
    assert model.generate(torch.full((1, 4), 5), max_new_tokens=2).shape == (1, 6)

"""Every CLI command on every kind of export, typed one after the other as a user would.

One tiny export of each graph layout (single-graph text, vision and audio encoders, the
generic path, a KV-cache decoder, an encoder-decoder, two towers, a bare encoder-decoder,
image-to-text, optimized, int8, int4, OpenVINO IR) goes through every command that reads
an export directory. A command either works (exit 0) or, where it does not apply to that
layout, says so in one sentence with exit code 2, no traceback and nothing written. Each
layout's ``expected`` says which; a layout's test runs all its commands and reports every
cell that broke, not only the first."""

from __future__ import annotations

import dataclasses
import json
import shutil
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import (
    add_causal_tokenizer,
    add_image_processor,
    add_seq2seq_tokenizer,
    add_word_tokenizer,
)

from graphport.cli import cli
from graphport.models.tiny import save_tiny_checkpoint, tiny_model
from graphport.verbosity import set_verbosity

OK, NA = "ok", "n/a"

COMMANDS = (
    "inspect",
    "validate",
    "run",
    "bench",
    "optimize",
    "quantize",
    "deploy-cpp",
    "deploy-triton",
    "generate",
)


@dataclasses.dataclass(frozen=True)
class Layout:
    name: str
    # ok or n/a per command; commands not named are ok.
    expected: dict[str, str]
    inputs: tuple[str, ...] = ("hello world", "a b text")  # what `run` gets


GENERATIVE = {"generate": OK}
NOT_GENERATIVE = {"generate": NA}
# graphport_infer, the C++ target, feeds token ids to an OpenVINO-readable single graph.
NO_CPP = {"deploy-cpp": NA}
# Triton's model repository holds one model per export: a single graph.
TWO_GRAPHS = {"deploy-cpp": NA, "deploy-triton": NA}

LAYOUTS = [
    Layout("encoder", NOT_GENERATIVE),
    Layout("vision", {**NOT_GENERATIVE, **NO_CPP}, inputs=("@image",)),
    Layout("audio", {**NOT_GENERATIVE, **NO_CPP}, inputs=("@audio",)),
    Layout("generic", NOT_GENERATIVE),
    Layout("decoder", {**GENERATIVE, **NO_CPP}, inputs=("w5 w9 w12",)),
    Layout("seq2seq", {**GENERATIVE, **TWO_GRAPHS}, inputs=("w5 w9 w12",)),
    Layout("two-towers", {**NOT_GENERATIVE, **TWO_GRAPHS}, inputs=("hello world", "@image")),
    # T5Model-like: one graph, encoder tokens and the decoder's start token.
    Layout("bare-seq2seq", {**NOT_GENERATIVE, **NO_CPP}, inputs=("w5 w9 w12", "w7")),
    Layout("image-to-text", {**GENERATIVE, **TWO_GRAPHS}, inputs=("@image",)),
    # onnxruntime's contrib operators: OpenVINO (under graphport_infer) cannot read them.
    Layout("optimized", {**NOT_GENERATIVE, **NO_CPP}),
    Layout("int8", {**NOT_GENERATIVE, **NO_CPP}),
    Layout("int4", {**GENERATIVE, **NO_CPP}, inputs=("w5 w9 w12",)),
    # Graph passes rewrite ONNX; an IR export is the end of that road.
    Layout("openvino", {**NOT_GENERATIVE, "optimize": NA, "quantize": NA}),
]


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    set_verbosity("error")  # the CLI sets graphport's level for the whole process
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += f"\n{type(result.exception).__name__}: {result.exception}"
        return 99, output  # an uncaught exception: a traceback for a user
    return result.exit_code, output


def ok(*args: str | Path) -> str:
    code, output = invoke(*args)
    assert code == 0, output
    return output


# ---- the exports ----------------------------------------------------------------------


def add_audio_feature_extractor(checkpoint: Path) -> Path:
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(checkpoint)
    return checkpoint


def dual_encoder_checkpoint(path: Path) -> Path:
    model = tiny_model("vision-text-dual-encoder")
    model.save_pretrained(path)
    add_word_tokenizer(path)
    return add_image_processor(path)


def export(root: Path, name: str, checkpoint: Path, *options: str) -> Path:
    out = root / name
    ok("export", checkpoint, out, *options)
    return out


def build(name: str, root: Path, built: Callable[[str], Path]) -> Path:
    """The export of layout ``name`` under ``root`` (derived layouts reuse ``built``)."""
    ckpt = root / f"{name}-checkpoint"
    if name == "encoder":
        return export(root, name, add_word_tokenizer(save_tiny_checkpoint("bert", ckpt)))
    if name == "vision":
        checkpoint = save_tiny_checkpoint("vit", ckpt, "image-classification")
        return export(root, name, add_image_processor(checkpoint))
    if name == "audio":
        checkpoint = save_tiny_checkpoint("wav2vec2", ckpt, "audio-classification")
        return export(root, name, add_audio_feature_extractor(checkpoint))
    if name == "generic":
        return export(root, name, add_word_tokenizer(save_tiny_checkpoint("bert-generation", ckpt)))
    if name == "decoder":
        checkpoint = save_tiny_checkpoint("gpt2", ckpt, "text-generation")
        return export(root, name, add_causal_tokenizer(checkpoint))
    if name == "seq2seq":
        checkpoint = save_tiny_checkpoint("bart", ckpt, "text2text-generation")
        return export(root, name, add_seq2seq_tokenizer(checkpoint))
    if name == "bare-seq2seq":
        checkpoint = save_tiny_checkpoint("bart", ckpt)
        return export(root, name, add_seq2seq_tokenizer(checkpoint))
    if name == "image-to-text":
        tiny_model("vision-encoder-decoder", "image-to-text").save_pretrained(ckpt)
        return export(root, name, add_image_processor(add_seq2seq_tokenizer(ckpt)))
    if name == "two-towers":
        return export(root, name, dual_encoder_checkpoint(ckpt))
    if name == "optimized":
        ok("optimize", built("encoder"), root / name)
        return root / name
    if name == "int8":
        ok("quantize", built("encoder"), root / name, "--mode", "int8-dynamic")
        return root / name
    if name == "int4":
        ok("quantize", built("decoder"), root / name, "--mode", "int4-weight")
        return root / name
    if name == "openvino":
        checkpoint = add_word_tokenizer(save_tiny_checkpoint("bert", ckpt))
        return export(root, name, checkpoint, "--format", "openvino")
    raise KeyError(name)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    root = tmp_path_factory.mktemp("layouts")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = build(name, root, get)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An image file and a one-second 8 kHz wav file (resampled to 16 kHz by `run`)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    image = root / "image.png"
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    audio = root / "audio.wav"
    t = np.arange(8000) / 8000
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(audio), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes(samples.tobytes())
    return {"@image": image, "@audio": audio}


# ---- the commands ---------------------------------------------------------------------


def command_args(command: str, layout: Layout, out: Path, work: Path, media: dict) -> list:
    inputs = [str(media.get(i, i)) for i in layout.inputs]
    return {
        "inspect": ["inspect", out],
        "validate": ["validate", out],
        "run": ["run", out, *inputs, "--json"],
        "bench": ["bench", out, "--runs", "2"],
        "optimize": ["optimize", out, work / "optimized"],
        "quantize": ["quantize", out, work / "quantized", "--mode", "int8-dynamic"],
        "deploy-cpp": ["deploy", out, work / "cpp", "--target", "cpp"],
        "deploy-triton": ["deploy", out, work / "triton", "--target", "triton"],
        "generate": ["generate", out, *inputs, "--max-new-tokens", "4", "--json"],
    }[command]


def check_cell(command: str, code: int, output: str, expected: str) -> str | None:
    """Why the cell is wrong, or None."""
    if code == 99:
        return f"uncaught exception: {output.strip().splitlines()[-1]}"
    if expected == OK:
        return None if code == 0 else f"exit {code}: {output.strip()[-300:]}"
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if code != 2:
        return f"should say it does not apply (exit 2), got exit {code}: {output.strip()[-300:]}"
    if len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in output:
        return f"should be one sentence, got: {output.strip()[-300:]}"
    return None


@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.name for layout in LAYOUTS])
def test_every_command_on_every_layout(layout: Layout, exports, media, tmp_path: Path):
    out = exports(layout.name)
    before = (out / "graphport.json").read_text()
    problems = []
    for command in COMMANDS:
        work = tmp_path / command
        work.mkdir()
        expected = layout.expected.get(command, OK)
        code, output = invoke(*command_args(command, layout, out, work, media))
        problem = check_cell(command, code, output, expected)
        if problem is None and expected == NA:
            leftovers = [p.name for p in work.iterdir()]
            if leftovers:
                problem = f"refused but left {leftovers} behind"
        if problem is None and expected == OK and command in ("run", "generate"):
            problem = check_json_result(command, layout, output)
        if problem:
            problems.append(f"{layout.name} x {command}: {problem}")
        shutil.rmtree(work, ignore_errors=True)
    assert json.loads((out / "graphport.json").read_text())["task"] == json.loads(before)["task"]
    assert not problems, "\n".join(problems)


def check_json_result(command: str, layout: Layout, output: str) -> str | None:
    """`run --json` and `generate --json` print one JSON document with a result per input."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError:
        return f"--json printed something that is not JSON: {output[:200]!r}"
    if command == "generate":
        rows = data if isinstance(data, list) else [data]
        if len(rows) != len(layout.inputs) or not all(r["token_ids"] for r in rows):
            return f"no tokens generated: {data}"
        return None
    # One result per input; a two-tower export given texts and files classifies each file
    # with the texts as its candidate labels.
    files = [i for i in layout.inputs if i.startswith("@")]
    zero_shot = layout.name == "two-towers" and len(files) < len(layout.inputs)
    expected = files if zero_shot else layout.inputs
    predictions = data.get("predictions", [])
    if len(predictions) != len(expected) or any(p is None for p in predictions):
        return f"expected one prediction per input of {expected}, got {predictions}"
    if zero_shot and predictions[0][0]["label"] != "hello world":
        return f"the zero-shot labels should be the texts, got {predictions}"
    return None

from __future__ import annotations

import numpy as np
import pytest

from graphport.errors import UnsupportedModelError
from graphport.export.config import ShapeSet
from graphport.models.registry import get_onnx_config
from graphport.models.tiny import tiny_config


def test_bert_declares_legacy_inputs_and_outputs():
    config = get_onnx_config(tiny_config("bert"), "default")
    assert list(config.inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert config.inputs["input_ids"] == {0: "batch", 1: "sequence"}
    assert dict(config.outputs) == {"last_hidden_state": {0: "batch", 1: "sequence"}}
    assert config.values_override == {"use_cache": False} or config.values_override is None
    assert config.default_onnx_opset == 18
    assert config.atol_for_validation == pytest.approx(1e-4)


def test_models_with_one_segment_type_take_no_token_type_ids():
    config = get_onnx_config(tiny_config("roberta", type_vocab_size=1), "fill-mask")
    assert list(config.inputs) == ["input_ids", "attention_mask"]


def test_multiple_choice_adds_a_choice_axis():
    config = get_onnx_config(tiny_config("bert"), "multiple-choice")
    assert config.inputs["input_ids"] == {0: "batch", 1: "choice", 2: "sequence"}
    inputs = config.dummy_inputs(ShapeSet({"batch": 2, "choice": 3, "sequence": 7}))
    assert inputs["input_ids"].shape == (2, 3, 7)


def test_trace_and_validation_sizes_differ_and_avoid_0_and_1_specialization():
    config = get_onnx_config(tiny_config("bert"), "default")
    trace = config.trace_shapes().sizes
    assert all(size > 1 for size in trace.values())
    validation = config.validation_shapes()
    assert len(validation) >= 2
    for shapes in validation:
        for axis in ("batch", "sequence"):
            assert shapes.sizes[axis] != trace[axis]


def test_dummy_inputs_are_seeded_and_padded():
    config = get_onnx_config(tiny_config("bert"), "default")
    shapes = ShapeSet({"batch": 4, "sequence": 12})
    first = config.dummy_inputs(shapes, seed=3)
    again = config.dummy_inputs(shapes, seed=3)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    mask = first["attention_mask"].numpy()
    assert mask[0].all(), "row 0 is never padded"
    assert (mask[:, 0] == 1).all()
    assert int(first["input_ids"].max()) < 128


def test_vision_and_audio_shapes():
    vision = get_onnx_config(tiny_config("vit"), "image-classification")
    assert vision.dummy_inputs(ShapeSet({"batch": 3}))["pixel_values"].shape == (3, 3, 32, 32)
    audio = get_onnx_config(tiny_config("wav2vec2"), "automatic-speech-recognition")
    wave = audio.dummy_inputs(ShapeSet({"batch": 2, "sequence": 1000}))["input_values"]
    assert wave.shape == (2, 1000)
    assert abs(float(wave.mean())) < 1e-3


def test_unsupported_task_names_the_supported_ones():
    with pytest.raises(UnsupportedModelError, match="supports feature-extraction, fill-mask"):
        get_onnx_config(tiny_config("bert"), "image-classification")

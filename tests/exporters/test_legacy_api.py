"""A script written for transformers.onnx runs with only its import changed."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from graphport.exporters import FeaturesManager, OnnxConfig, export, validate_model_outputs
from graphport.models.bert import BertOnnxConfig
from graphport.models.tiny import tiny_model


def test_legacy_export_and_validate(tmp_path: Path):
    model = tiny_model("bert", "fill-mask")
    model_kind, model_onnx_config = FeaturesManager.check_supported_model_or_raise(
        model, feature="masked-lm"
    )
    onnx_config = model_onnx_config(model.config)
    assert model_kind == "bert"
    assert isinstance(onnx_config, BertOnnxConfig)

    onnx_path = tmp_path / "model.onnx"
    onnx_inputs, onnx_outputs = export(
        None, model, onnx_config, onnx_config.default_onnx_opset, onnx_path
    )
    assert onnx_inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert onnx_outputs == ["logits"]
    graph = onnx.load(onnx_path)
    assert [o.name for o in graph.graph.output] == ["logits"]
    validate_model_outputs(
        onnx_config, None, model, onnx_path, onnx_outputs, onnx_config.atol_for_validation
    )


def test_validate_model_outputs_raises_value_error_on_mismatch(tmp_path: Path):
    model = tiny_model("bert", "text-classification")
    onnx_config = BertOnnxConfig.from_model_config(model.config, task="sequence-classification")
    onnx_path = tmp_path / "model.onnx"
    _, outputs = export(None, model, onnx_config, 18, onnx_path)
    other = tiny_model("bert", "text-classification", seed=1)  # same shapes, other weights
    with pytest.raises(ValueError, match="doesn't match"):
        validate_model_outputs(onnx_config, None, other, onnx_path, outputs, 1e-4)


def test_features_manager_lookups():
    features = FeaturesManager.get_supported_features_for_model_type("distilbert")
    assert "question-answering" in features
    assert "feature-extraction" in FeaturesManager.AVAILABLE_FEATURES
    assert FeaturesManager.feature_to_task("causal-lm") == "text-generation"
    assert FeaturesManager.get_model_class_for_feature("masked-lm").__name__ == (
        "AutoModelForMaskedLM"
    )
    model = tiny_model("vit")
    with pytest.raises(ValueError, match="does not support the feature 'masked-lm'"):
        FeaturesManager.check_supported_model_or_raise(model, feature="masked-lm")


def test_get_model_from_feature_loads_a_local_checkpoint(tiny_checkpoint):
    model = FeaturesManager.get_model_from_feature("token-classification", tiny_checkpoint("bert"))
    assert type(model).__name__ == "BertForTokenClassification"


def test_generate_dummy_inputs_honours_legacy_sizes():
    config = BertOnnxConfig(tiny_model("bert").config)
    inputs = config.generate_dummy_inputs(None, batch_size=3, seq_length=9)
    assert inputs["input_ids"].shape == (3, 9)
    assert inputs["input_ids"].dtype == torch.int64
    assert OnnxConfig.use_external_data_format(600_000_000)
    assert not OnnxConfig.use_external_data_format(100_000_000)

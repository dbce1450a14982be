"""The generic export path: model types no family registers are exported from their model
class's forward signature and config, validated like any family, and fail with a sentence
that names the model type and the step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from graphport.api.export import export_model
from graphport.errors import ExportError, Reason, UnsupportedModelError
from graphport.export.generic import GenericOnnxConfig, check_generic_support
from graphport.export.tasks import Task
from graphport.manifest import ExportDirectory
from graphport.models.registry import get_registration
from graphport.models.tiny import (
    build_generic_tiny_model,
    first_generic_tiny_config,
    generic_tiny_configs,
)

# Unregistered model types of three modalities that export fast (checked generic below).
GENERIC = {
    "bert-generation": "text",
    "aimv2_vision_model": "vision",
    "qwen2_audio_encoder": "audio",
}


@pytest.mark.parametrize(("model_type", "modality"), GENERIC.items(), ids=list(GENERIC))
def test_generic_export_validates(model_type: str, modality: str, tiny_checkpoint, tmp_path: Path):
    registration = get_registration(model_type)
    assert registration.generic and registration.family == "generic"
    result = export_model(tiny_checkpoint(model_type), tmp_path / "out")
    report = result.report
    assert report.passed, "\n".join(report.failures())
    assert set(report.runtimes) == {"onnxruntime", "openvino"}
    assert all(case.outputs for case in report.results)
    manifest = ExportDirectory(tmp_path / "out").manifest
    assert manifest.generic is True
    assert (manifest.family, manifest.modality) == ("generic", modality)


def test_a_family_export_is_not_generic(bert_export: Path):
    manifest = ExportDirectory(bert_export).manifest
    assert manifest.generic is False
    assert manifest.family == "bert"


def test_inputs_come_from_the_signature_and_the_config():
    text = GenericOnnxConfig(first_generic_tiny_config("big_bird"))
    assert list(text.inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    seq2seq = GenericOnnxConfig(first_generic_tiny_config("plbart"))
    assert seq2seq.inputs["decoder_input_ids"] == {0: "batch", 1: "decoder_sequence"}
    vision = GenericOnnxConfig(first_generic_tiny_config("aimv2_vision_model"))
    assert vision.modality == "vision"
    assert vision.input_shape("pixel_values", {"batch": 2}) == (2, 3, 64, 64)


def test_outputs_and_their_axes_are_read_off_the_model():
    _, model = build_generic_tiny_model("bert-generation")
    config = GenericOnnxConfig(model.config)
    config.resolve(model)
    assert config.outputs == {"last_hidden_state": {0: "batch", 1: "sequence"}}
    cases = [config.dummy_inputs(shapes) for shapes in config.validation_shapes()]
    assert any(feeds["attention_mask"].eq(0).any() for feeds in cases), "no padding validated"
    specials = {model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id}
    for feeds in cases:
        assert not set(feeds["input_ids"].unique().tolist()) & specials


def test_generic_tiny_configs_shrink_whatever_the_names():
    whisper = first_generic_tiny_config("whisper")  # d_model, encoder_layers, ...
    assert (whisper.d_model, whisper.encoder_layers, whisper.decoder_layers) == (32, 2, 2)
    assert whisper.decoder_start_token_id < whisper.vocab_size <= 256
    swin = first_generic_tiny_config("swin")  # per-stage lists
    assert swin.depths == [1, 1, 1, 1]
    assert swin.embed_dim == 32
    levels = [t.level for t in generic_tiny_configs("llama")]
    assert levels == ["tiny", "tiny-full-vocab", "shallow", "default"]


def test_tiny_models_are_seeded():
    _, first = build_generic_tiny_model("bert-generation", seed=3)
    _, again = build_generic_tiny_model("bert-generation", seed=3)
    for a, b in zip(first.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_unknown_and_removed_model_types_keep_their_errors():
    with pytest.raises(UnsupportedModelError, match=r"'bertish' has no model class in the"):
        get_registration("bertish")
    with pytest.raises(UnsupportedModelError, match=r"'blip_text_model' is a configuration"):
        get_registration("blip_text_model")
    with pytest.raises(UnsupportedModelError, match=r"Transformer-XL.*removed in Transformers 5"):
        get_registration("transfo-xl")


def test_inputs_the_generic_path_cannot_make_are_refused_by_name():
    with pytest.raises(
        UnsupportedModelError, match=r"'patchtst'.*main input is 'past_values'"
    ) as e:
        check_generic_support("patchtst")
    assert e.value.reason is Reason.MAIN_INPUT_UNSUPPORTED  # the sweep's category, as data
    with pytest.raises(
        UnsupportedModelError, match=r"'blip_2_qformer'.*requires query_embeds"
    ) as e:
        GenericOnnxConfig(AutoConfig.for_model("blip_2_qformer"))
    assert e.value.reason is Reason.INPUTS_NOT_DERIVED
    with pytest.raises(UnsupportedModelError, match=r"exports no KV cache"):
        GenericOnnxConfig(AutoConfig.for_model("bert-generation"), "feature-extraction-with-past")


def test_a_model_that_does_not_run_on_the_derived_inputs_names_the_step(
    tiny_checkpoint, tmp_path: Path
):
    # Bark's base class has no forward of its own; the export stops at its first step.
    with pytest.raises(
        ExportError, match=r"model type 'bark' failed at its first step, running"
    ) as e:
        export_model(tiny_checkpoint("bark"), tmp_path / "out")
    assert e.value.reason is Reason.EAGER_RUN_FAILED
    assert not (tmp_path / "out").exists()


def test_a_tracing_failure_names_the_model_type_and_the_step(
    tiny_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator aten::boom")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(
        ExportError,
        match=r"model type 'aimv2_vision_model' failed at tracing Aimv2VisionModel: Every export "
        r"strategy failed\. torch\.export: RuntimeError: unsupported operator aten::boom",
    ) as e:
        export_model(tiny_checkpoint("aimv2_vision_model"), tmp_path / "out")
    assert e.value.reason is Reason.TRACING_FAILED  # where, not why: the sweep reads the cause
    assert not (tmp_path / "out").exists(), "a failed export leaves no output directory"


def test_the_feature_extraction_output_falls_back_to_the_first_one():
    _, model = build_generic_tiny_model("clip")  # a dual encoder: no last_hidden_state
    config = GenericOnnxConfig(model.config, Task.FEATURE_EXTRACTION)
    config.resolve(model)
    assert list(config.inputs) == ["input_ids", "attention_mask", "pixel_values"]
    assert list(config.outputs) == ["logits_per_image"]


def test_token_sequences_stay_within_few_position_embeddings():
    config = GenericOnnxConfig(first_generic_tiny_config("owlvit"))  # 16 text positions
    shapes = [config.trace_shapes(), *config.validation_shapes()]
    lengths = [s.sizes["sequence"] for s in shapes]
    assert max(lengths) <= 16
    assert len(set(lengths)) == 3, "validation still differs from tracing on every axis"

"""CLAP's audio tower is fed the spectrogram its config takes: a model whose Swin is
smaller than the released one (a smaller ``spec_size``) exports and validates, with
dummy features sized from ``spec_size`` and ``num_mel_bins``."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphport.api.export import export_model
from graphport.export.tasks import Task
from graphport.models.clap import _TINY, ClapAudioOnnxConfig
from graphport.models.tiny import save_tiny_checkpoint, tiny_config

# A Swin over 64 x 64: 16 mel bins folded 4 times, so it takes 64 * 4 = 256 frames.
SMALL_AUDIO = {**_TINY["audio_config"], "spec_size": 64}


@pytest.mark.parametrize(
    ("audio", "frames", "mel_bins"),
    [
        ({}, 1001, 16),  # the tiny 128 / 16 Swin holds the extractor's 1001 frames
        ({"spec_size": 64}, 256, 16),
        ({"spec_size": 64, "num_mel_bins": 32}, 128, 32),
        ({"spec_size": 256, "num_mel_bins": 64}, 1001, 64),  # the released sizes
    ],
)
def test_audio_features_are_sized_from_the_config(audio, frames: int, mel_bins: int):
    config = tiny_config("clap", audio_config={**_TINY["audio_config"], **audio})
    audio_config = ClapAudioOnnxConfig(config.audio_config, Task.FEATURE_EXTRACTION)
    for shapes in (audio_config.trace_shapes(), *audio_config.validation_shapes()):
        features = audio_config.dummy_inputs(shapes)["input_features"]
        assert tuple(features.shape) == (shapes.sizes["batch"], 1, frames, mel_bins)


def test_small_spec_size_exports_and_validates(tmp_path: Path):
    checkpoint = save_tiny_checkpoint("clap", tmp_path / "checkpoint", audio_config=SMALL_AUDIO)
    result = export_model(checkpoint, tmp_path / "out")
    report = result.report
    assert result.manifest.task == "feature-extraction"
    assert report.passed, "\n".join(report.failures())
    assert {r.runtime for r in report.results} == {"onnxruntime", "openvino"}
    assert {r.case for r in report.results if r.case.startswith("audio / ")} >= {
        "audio / shape set 1",
        "audio / shape set 2",
    }
    (features,) = result.manifest.graph("audio").inputs
    assert features.shape[1:] == [1, 256, 16]

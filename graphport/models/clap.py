"""CLAP: contrastive language-audio pretraining, a text tower and an audio tower.

Exported as two graphs, as users run them apart (text prompts once, audio clips many
times):

* ``text``: ``input_ids``, ``attention_mask`` -> ``text_embeds`` (batch, projection_dim);
* ``audio``: ``input_features`` -> ``audio_embeds`` (batch, projection_dim).

Both embeddings are L2-normalized (``get_text_features`` / ``get_audio_features`` do it),
so the zero-shot audio classification logits are ``logit_scale_a.exp()`` times their dot
products.

``input_features`` is a log-mel spectrogram of shape (batch, channels, frames, mel bins),
as ``ClapFeatureExtractor`` makes it: it pads or truncates every clip to
``max_length_s * sampling_rate / hop_length + 1`` frames (1001 for its 10 s at 48 kHz,
hop 480), so frames are static; mel bins are the audio config's ``num_mel_bins``, and
channels are 1, or 4 (the fused crops) for ``enable_fusion`` models, which also take
``is_longer`` (batch, 1).

The Swin reads the spectrogram as a ``spec_size`` square image, folded ``freq_ratio``
(``spec_size // num_mel_bins``) times, so it takes at most ``spec_size * freq_ratio``
frames (1024 for the released 256 / 64 mel bins); a model configured smaller is fed that
many, the most its feature extractor may be set to give.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from graphport.export.config import Axes, OnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register
from graphport.models.tiny import TINY_TEXT, UNSET
from graphport.models.towers import CompositeOnnxConfig, TextTowerOnnxConfig, Tower

# ClapFeatureExtractor's defaults: 10 s clips at 48 kHz, hop 480.
MAX_LENGTH_S = 10
SAMPLING_RATE = 48_000
HOP_LENGTH = 480
FRAMES = MAX_LENGTH_S * SAMPLING_RATE // HOP_LENGTH + 1


class ClapAudioOnnxConfig(OnnxConfig):
    """The audio tower: a fixed-size log-mel spectrogram -> ``audio_embeds``."""

    modality: ClassVar[str] = "audio"

    @property
    def fused(self) -> bool:
        return bool(self._config.enable_fusion)

    @property
    def frames(self) -> int:
        """The feature extractor's window, or the most the Swin takes where that is less."""
        spec_size = int(self._config.spec_size)
        freq_ratio = spec_size // int(self._config.num_mel_bins)
        return min(FRAMES, spec_size * freq_ratio)

    @property
    def inputs(self) -> Mapping[str, Axes]:
        inputs: dict[str, Axes] = {"input_features": {0: "batch"}}
        if self.fused:
            inputs["is_longer"] = {0: "batch"}
        return inputs

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return {"audio_embeds": {0: "batch"}}

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if name == "is_longer":
            return (sizes["batch"], 1)
        channels = 4 if self.fused else 1
        return (sizes["batch"], channels, self.frames, int(self._config.num_mel_bins))

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "is_longer":
            longer = np.zeros(shape, dtype=bool)
            longer[0] = True  # one clip longer than 10 s, so fusion runs
            return longer
        # Log-mel power in dB, in the feature extractor's range (-100 dB floor).
        return np.clip(rng.normal(-40.0, 20.0, size=shape), -100.0, 40.0).astype(np.float32)


_TINY = {
    **dict.fromkeys(
        ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"), UNSET
    ),
    **dict.fromkeys(("intermediate_size", "max_position_embeddings"), UNSET),
    "projection_dim": 16,
    "text_config": {**TINY_TEXT, "projection_dim": 16},
    # spec_size * (spec_size // num_mel_bins) must hold the 1001 frames: 128 * 8 = 1024.
    "audio_config": {
        "spec_size": 128,
        "num_mel_bins": 16,
        "patch_embeds_hidden_size": 16,
        "depths": [1, 1],
        "num_attention_heads": [2, 4],
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "projection_dim": 16,
    },
}


@register("clap", family="clap", tiny=_TINY)
class ClapOnnxConfig(CompositeOnnxConfig):
    modality: ClassVar[str] = "audio"  # its processor is a feature extractor plus a tokenizer
    # The text tower's (normalized) embeddings; the audio tower's went through a Swin.
    ATOL_FOR_VALIDATION = 1e-4

    def graph_configs(self) -> dict[str, OnnxConfig]:
        return {
            "text": TextTowerOnnxConfig(self._config.text_config, Task.FEATURE_EXTRACTION),
            "audio": ClapAudioOnnxConfig(self._config.audio_config, Task.FEATURE_EXTRACTION),
        }

    def graph_modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        configs: dict[str, Any] = self.graph_configs()
        return {
            "text": Tower(model, list(configs["text"].inputs), "get_text_features", "text_embeds"),
            "audio": Tower(
                model, list(configs["audio"].inputs), "get_audio_features", "audio_embeds"
            ),
        }

"""Encoder-decoders: T5, BART and its relatives, Whisper, vision encoder-decoders.

Each is exported as an ``encoder`` graph and a ``decoder`` graph with a self-attention KV
cache (see ``OnnxSeq2SeqConfigWithPast``), whose layers, KV heads and head dims a dry run
of the eager model reads (a model type without a family generates the same way, see
``graphport.export.generic_seq2seq``). A family keeps only what that cannot infer:
what the encoder takes (tokens, log-mel features, pixels) and whether the decoder masks
the encoder's output (text encoders pad their input; Whisper's and images' are never
padded), the bare models (``T5Model``, ``BartModel``, ``WhisperModel``...) exported for
feature-extraction as one graph returning both hidden states, T5's tolerance, and the
tiny configs tests build.

The tiny overrides keep special tokens inside the tiny vocabulary and size every part the
common defaults do not reach (decoder stacks, T5's head width, Whisper's mel bins). Their
initialisation is wider than the models' own (std 0.02 on 32-wide layers makes random
models repeat one token forever): varied tokens are what makes generation parity a test of
positions and caching rather than of a constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from graphport.export.config import Axes
from graphport.export.seq2seq import OnnxSeq2SeqConfigWithPast
from graphport.export.tasks import Task
from graphport.models.registry import register

_BART_TINY: dict[str, Any] = {
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "init_std": 0.2,
    # Untied, because a tied random head mostly echoes the last token; mBART stays tied.
    "tie_word_embeddings": False,
}
_T5_TINY: dict[str, Any] = {
    "d_kv": 8,
    "d_ff": 64,
    "num_decoder_layers": 2,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "decoder_start_token_id": 0,
    "initializer_factor": 2.0,
}


# NLLB checkpoints are m2m_100.
@register("bart", family="bart", tiny=_BART_TINY)
@register(
    "mbart",
    family="bart",
    tiny={**_BART_TINY, "init_std": 0.5, "tie_word_embeddings": True, "decoder_start_token_id": 2},
)
# Marian starts decoding with its pad token, the last id of its vocabulary, and scales its
# embeddings under sinusoidal positions, as the OPUS-MT checkpoints do.
@register(
    "marian",
    family="bart",
    tiny={
        **_BART_TINY,
        "init_std": 0.1,
        "scale_embedding": True,
        "activation_function": "swish",
        "pad_token_id": 127,
        "decoder_start_token_id": 127,
    },
)
@register("m2m_100", family="bart", tiny=_BART_TINY)
@register("blenderbot-small", family="bart", tiny=_BART_TINY)
class Seq2SeqLMOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """Text-to-text models: tokens into the encoder, its padding masked in the decoder."""

    tasks = (Task.TEXT2TEXT_GENERATION, Task.FEATURE_EXTRACTION)


# T5 v1.1 (gated-gelu, untied embeddings) is the same model type with other config values;
# mT5 is v1.1 by default.
@register("t5", family="t5", tiny=_T5_TINY)
@register("mt5", family="t5", tiny=_T5_TINY)
class T5OnnxConfig(Seq2SeqLMOnnxConfig):
    """T5 normalises without centring and folds attention scaling into its weights, so its
    activations, and v1.1's untied logits, run an order of magnitude above BERT's: an
    absolute 5e-4 is about 1e-6 of them."""

    ATOL_FOR_VALIDATION = 5e-4


@register(
    "whisper",
    family="whisper",
    tiny={
        "vocab_size": 128,
        "num_mel_bins": 16,
        "max_source_positions": 16,
        "max_target_positions": 64,
        "decoder_layers": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "decoder_ffn_dim": 64,
        # Whisper's layout: end of text pads, and may not open a transcript.
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "decoder_start_token_id": 3,
        "suppress_tokens": [],
        "begin_suppress_tokens": [2],
        "init_std": 0.5,
    },
)
class WhisperOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """Speech recognition from log-mel features of a fixed 30 s window (``input_features``,
    batch x mel bins x 2 * max_source_positions frames)."""

    modality: ClassVar[str] = "audio"
    tasks = (Task.AUTOMATIC_SPEECH_RECOGNITION, Task.FEATURE_EXTRACTION)
    uses_encoder_attention_mask: ClassVar[bool] = False

    @property
    def encoder_inputs(self) -> Mapping[str, Axes]:
        return {"input_features": {0: "batch"}}

    @property
    def encoder_output_axes(self) -> Axes:
        return {0: "batch"}  # the window is fixed, so is the number of encoder positions

    @property
    def num_frames(self) -> int:
        return 2 * int(self._config.max_source_positions)  # two convolutions, one of stride 2

    def dummy_encoder_input(
        self, name: str, sizes: Mapping[str, int], rng: np.random.Generator
    ) -> np.ndarray:
        return self._features(sizes["batch"] * [self.num_frames], rng)

    def _features(self, lengths: list[int], rng: np.random.Generator) -> np.ndarray:
        """Features of clips with ``lengths`` frames of sound, the rest of the window
        silence (the floor value the feature extractor gives zero-padded audio)."""
        shape = (len(lengths), int(self._config.num_mel_bins), self.num_frames)
        features = rng.uniform(-0.5, 1.0, size=shape).astype(np.float32)
        for row, length in enumerate(lengths):
            features[row, :, length:] = -0.75
        return features

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        rng = np.random.default_rng(seed)
        frames = self.num_frames
        return [
            ("single input", {"input_features": self._features([frames], rng)}),
            (
                "padded batch of 3",
                {"input_features": self._features([frames // 2, frames // 4, frames], rng)},
            ),
        ]


@register(
    "vision-encoder-decoder",
    family="vision-encoder-decoder",
    tiny={
        # A ViT wider than its GPT-2 decoder, so the projection between them is exported.
        "encoder": {
            "model_type": "vit",
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "initializer_range": 0.5,
        },
        "decoder": {
            "model_type": "gpt2",
            "vocab_size": 128,
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 128,
            "add_cross_attention": True,
            "is_decoder": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "initializer_range": 0.3,
        },
        "decoder_start_token_id": 1,
        "pad_token_id": 0,
        "eos_token_id": 2,
    },
)
class VisionEncoderDecoderOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """Image to text (TrOCR, Donut, captioners): a vision encoder over ``pixel_values`` at
    the encoder's image size, a text decoder with cross-attention."""

    modality: ClassVar[str] = "vision"
    tasks = (Task.IMAGE_TO_TEXT,)
    uses_encoder_attention_mask: ClassVar[bool] = False

    @property
    def encoder_inputs(self) -> Mapping[str, Axes]:
        return {"pixel_values": {0: "batch"}}

    @property
    def encoder_output_axes(self) -> Axes:
        return {0: "batch"}

    @property
    def encoder_hidden_size(self) -> int:
        return int(self._config.encoder.hidden_size)

    def dummy_encoder_input(
        self, name: str, sizes: Mapping[str, int], rng: np.random.Generator
    ) -> np.ndarray:
        return self._pixels(sizes["batch"], rng)

    def _pixels(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        encoder = self._config.encoder
        size = getattr(encoder, "image_size", 224)
        height, width = (size, size) if isinstance(size, int) else size
        channels = int(getattr(encoder, "num_channels", 3))
        return rng.standard_normal((batch, channels, height, width), dtype=np.float32)

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        rng = np.random.default_rng(seed)
        return [
            ("single input", {"pixel_values": self._pixels(1, rng)}),
            ("batch of 3", {"pixel_values": self._pixels(3, rng)}),
        ]

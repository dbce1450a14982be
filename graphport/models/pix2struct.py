"""Pix2Struct: image-to-text over variable-resolution patches, an encoder-decoder.

Exported as every encoder-decoder is (see ``OnnxSeq2SeqConfigWithPast``): an ``encoder``
graph and a ``decoder`` graph with a self-attention KV cache. What is its own is the
encoder input: the image processor cuts the image into at most ``max_patches`` patches
at the aspect ratio it has and pads the rest, so the encoder takes

* ``flattened_patches`` (batch, encoder_sequence, 2 + patch_embed_hidden_size): per patch
  its 1-based row and column (0 in padding, which the position tables index) and its
  pixels, flattened;
* ``attention_mask`` (batch, encoder_sequence): 1 for real patches;

and the decoder masks the padded patches with ``encoder_attention_mask``. The number of
patches is a dynamic axis (processors use 2048 or 4096 and always pad to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from graphport.export.config import Axes
from graphport.export.seq2seq import OnnxSeq2SeqConfigWithPast
from graphport.export.tasks import Task
from graphport.models.registry import register
from graphport.models.tiny import UNSET

_TINY = {
    **dict.fromkeys(
        ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"), UNSET
    ),
    **dict.fromkeys(("intermediate_size", "max_position_embeddings"), UNSET),
    # Wider than the models' own initialization, so a random decoder does not repeat one
    # token and generation parity tests positions and the cache (as the seq2seq families).
    "initializer_factor": 2.0,
    "text_config": {
        "vocab_size": 128,
        "hidden_size": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "initializer_factor": 2.0,
    },
    "vision_config": {
        "hidden_size": 32,
        "patch_embed_hidden_size": 48,  # 4 x 4 patches of 3 channels
        "d_ff": 64,
        "d_kv": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "seq_len": 64,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "initializer_range": 0.5,
    },
}


@register("pix2struct", family="pix2struct", tiny=_TINY)
class Pix2StructOnnxConfig(OnnxSeq2SeqConfigWithPast):
    modality: ClassVar[str] = "vision"
    tasks = (Task.IMAGE_TO_TEXT,)
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        **OnnxSeq2SeqConfigWithPast.profile_ranges,
        "encoder_sequence": (1, 2048, 4096),  # the processors' max_patches
    }

    @property
    def decoder_config(self) -> Any:
        return self._config.text_config

    @property
    def encoder_hidden_size(self) -> int:
        return int(self._config.vision_config.hidden_size)

    @property
    def encoder_inputs(self) -> Mapping[str, Axes]:
        patches = {0: "batch", 1: "encoder_sequence"}
        return {"flattened_patches": patches, "attention_mask": dict(patches)}

    def dummy_encoder_input(
        self, name: str, sizes: Mapping[str, int], rng: np.random.Generator
    ) -> np.ndarray:
        """Patches of images of different sizes, each padded to the batch's patch count."""
        batch, length = sizes["batch"], sizes["encoder_sequence"]
        counts = [length, *(int(rng.integers(length // 2, length + 1)) for _ in range(batch - 1))]
        return self._patches(counts, length, rng)[name]

    def _patches(
        self, counts: list[int], length: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """``flattened_patches`` and ``attention_mask`` for images of ``counts`` patches,
        laid out in rows of a fixed width, padded to ``length``."""
        vision = self._config.vision_config
        width = max(1, int(np.sqrt(length)))
        patches = np.zeros((len(counts), length, 2 + vision.patch_embed_hidden_size), np.float32)
        mask = np.zeros((len(counts), length), dtype=np.int64)
        for row, count in enumerate(counts):
            index = np.arange(count)
            patches[row, :count, 0] = index // width + 1
            patches[row, :count, 1] = index % width + 1
            pixels = rng.standard_normal((count, vision.patch_embed_hidden_size))
            patches[row, :count, 2:] = pixels
            mask[row, :count] = 1
        return {"flattened_patches": patches, "attention_mask": mask}

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        rng = np.random.default_rng(seed)
        return [
            ("single image", self._patches([12], 12, rng)),
            ("padded batch of 3", self._patches([16, 9, 5], 16, rng)),
        ]

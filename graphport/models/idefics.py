"""IDEFICS: a LLaMA decoder with gated cross-attention to CLIP-encoded images.

The graph is the bare model without a KV cache (feature extraction): ``input_ids``,
``attention_mask``, ``pixel_values`` (batch, image, channels, height, width) and
``image_attention_mask`` (batch, sequence, image: which images a token may attend) ->
``last_hidden_state``. Generation with a cache (IdeficsForVisionText2Text, the head
every released checkpoint has) is not exported here, so such checkpoints are exported
with ``--task feature-extraction``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from graphport.export.config import Axes
from graphport.export.modalities import TextOnnxConfig, VisionOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

# The gates of the image cross-attention start at 0 (tanh(0) = 0: images ignored) unless
# initialized otherwise; a random tiny model must read its images for validation to test
# that path.
_TINY = {
    "cross_layer_interval": 1,
    "alpha_initializer": "ones",
    "vision_config": {
        "embed_dim": 32,
        "image_size": 32,
        "patch_size": 8,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    "perceiver_config": {
        "resampler_n_latents": 4,
        "resampler_depth": 1,
        "resampler_n_heads": 2,
        "resampler_head_dim": 8,
    },
}


@register("idefics", family="idefics", tiny=_TINY)
class IdeficsOnnxConfig(TextOnnxConfig):
    tasks = (Task.FEATURE_EXTRACTION,)
    trace_sizes: ClassVar[dict[str, int]] = {**TextOnnxConfig.trace_sizes, "image": 3}
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {**TextOnnxConfig.validation_sizes[0], "image": 1},
        {**TextOnnxConfig.validation_sizes[1], "image": 2},
    )
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        **TextOnnxConfig.profile_ranges,
        "image": (1, 1, 8),
    }

    def __init__(self, config: Any, task: str | Task = Task.FEATURE_EXTRACTION, **kwargs: Any):
        super().__init__(config, task, **kwargs)
        self._vision = VisionOnnxConfig(config.vision_config, Task.FEATURE_EXTRACTION)

    @property
    def takes_sentences(self) -> bool:
        """Sentences alone cannot feed the graph: it takes images and their mask too."""
        return False

    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "pixel_values": {0: "batch", 1: "image"},
            "image_attention_mask": {0: "batch", 1: "sequence", 2: "image"},
        }

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if name == "pixel_values":
            pixels = self._vision.input_shape(name, sizes)[1:]
            return (sizes["batch"], sizes["image"], *pixels)
        return super().input_shape(name, sizes)

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "pixel_values":
            return rng.standard_normal(shape, dtype=np.float32)
        if name == "image_attention_mask":
            # Image i is placed at some position; tokens from there on may attend it, as
            # the processor marks them (image 0 at the start, so no token sees none).
            batch, sequence, images = shape
            starts = rng.integers(0, sequence, size=(batch, images))
            starts[:, 0] = 0
            return (np.arange(sequence)[None, :, None] >= starts[:, None, :]).astype(np.int64)
        return super().dummy_input(name, shape, rng)

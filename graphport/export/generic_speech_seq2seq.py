"""The generic speech-to-text export: any speech seq2seq model (Speech2Text-like) whose
cache is an ``EncoderDecoderCache``, for ``automatic-speech-recognition-with-past``.

The graphs and the manifest's contract are every encoder-decoder's
(``OnnxSeq2SeqConfigWithPast``): an ``encoder`` graph over ``input_features`` (batch x
frames x the config's feature size) and one ``decoder`` graph with the self-attention
past. The encoder's convolutions subsample the frames (stride 2 each, so each of the
config's ``num_conv_layers`` halves them): its input has ``2 ** num_conv_layers`` frames per
encoder position. Every frame is valid (no feature mask), so the decoder attends to every
encoder position.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from graphport.errors import UnsupportedModelError
from graphport.export.config import Axes
from graphport.export.generic_decoder import CACHE_ARGUMENTS, takes_cache
from graphport.export.generic_inputs import FEATURE_SIZES, config_value
from graphport.export.seq2seq import OnnxSeq2SeqConfigWithPast
from graphport.export.tasks import Task


class GenericSpeechSeq2SeqOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """A speech seq2seq model without a family, with the KV cache its eager model returns."""

    modality: ClassVar[str] = "audio"
    tasks: ClassVar[tuple[Task, ...]] = (Task.AUTOMATIC_SPEECH_RECOGNITION,)
    uses_encoder_attention_mask: ClassVar[bool] = False

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.AUTOMATIC_SPEECH_RECOGNITION,
        patching_specs: list[Any] | None = None,
        use_past: bool = True,
    ) -> None:
        super().__init__(config, task, patching_specs, use_past)
        model_type = config.model_type
        if self.use_past and not takes_cache(model_type, Task.AUTOMATIC_SPEECH_RECOGNITION):
            raise UnsupportedModelError(
                f"Model type {model_type!r} has no family in graphport, and its speech "
                f"seq2seq class takes no cache ({' or '.join(CACHE_ARGUMENTS)}), so it cannot "
                "be exported with one; export automatic-speech-recognition without -with-past."
            )
        if self.feature_size is None:
            raise UnsupportedModelError(
                f"Model type {model_type!r} cannot be exported for speech recognition with a "
                f"cache: its config gives no feature size ({', '.join(FEATURE_SIZES)})."
            )

    @property
    def feature_size(self) -> int | None:
        per_channel = config_value(self._config, "input_feat_per_channel")
        channels = config_value(self._config, "input_channels") or 1
        if per_channel:
            return int(per_channel) * int(channels)
        size = config_value(self._config, *FEATURE_SIZES)
        return int(size) if size else None

    @property
    def subsampling(self) -> int:
        """Input frames per encoder position (2 per convolution of stride 2)."""
        return 2 ** int(config_value(self._config, "num_conv_layers") or 0)

    @property
    def encoder_inputs(self) -> Mapping[str, Axes]:
        return {"input_features": {0: "batch", 1: "encoder_frames"}}

    @property
    def encoder_hidden_size(self) -> int:
        return int(config_value(self._config, "d_model", "hidden_size"))

    @property
    def vocab_size(self) -> int:
        return int(self._config.vocab_size)

    def dummy_encoder_input(
        self, name: str, sizes: Mapping[str, int], rng: np.random.Generator
    ) -> np.ndarray:
        frames = sizes.get("sequence", sizes.get("encoder_sequence", 9)) * self.subsampling
        shape = (sizes["batch"], frames, int(self.feature_size or 0))
        return rng.standard_normal(shape, dtype=np.float32)

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        """Features of one clip, and a batch of three (every frame valid: no mask)."""
        rng = np.random.default_rng(seed)
        return [
            (label, {"input_features": self.dummy_encoder_input("", sizes, rng)})
            for label, sizes in (
                ("single input", {"batch": 1, "encoder_sequence": 9}),
                ("batch of 3", {"batch": 3, "encoder_sequence": 12}),
            )
        ]

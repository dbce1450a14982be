"""Speech encoders over raw waveforms: wav2vec 2.0, HuBERT, Data2Vec-Audio."""

from __future__ import annotations

from graphport.export.modalities import AudioOnnxConfig
from graphport.export.tasks import Task
from graphport.models.registry import register

_TINY = {
    "conv_dim": [16, 16, 16],
    "conv_stride": [5, 4, 4],
    "conv_kernel": [10, 8, 8],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "classifier_proj_size": 16,
    "vocab_size": 32,
}


@register("wav2vec2", "hubert", "data2vec-audio", family="wav2vec2", tiny=_TINY)
class Wav2Vec2OnnxConfig(AudioOnnxConfig):
    tasks = (
        Task.FEATURE_EXTRACTION,
        Task.AUDIO_CLASSIFICATION,
        Task.AUTOMATIC_SPEECH_RECOGNITION,
    )

"""Tiny random models built from configs in-process, for tests and examples.

Nothing is downloaded: a tiny config is the model type's default config with small sizes
(per modality, then the family's per-type overrides), and weights are seeded random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from graphport.exporters.tasks import Task, parse_task
from graphport.models.registry import get_registration

_MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": {
        "vocab_size": 128,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    },
    "vision": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "num_labels": 3,
    },
    "audio": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_labels": 3,
    },
}


def tiny_config(model_type: str, **overrides: Any) -> PretrainedConfig:
    registration = get_registration(model_type)
    kwargs = {
        **_MODALITY_DEFAULTS[registration.config_class.modality],
        **registration.tiny,
        **overrides,
    }
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(
    model_type: str, task: Task | str = Task.FEATURE_EXTRACTION, seed: int = 0, **overrides: Any
) -> PreTrainedModel:
    """A seeded random model of ``model_type`` with the head of ``task``, in eval mode."""
    parsed, _ = parse_task(task)
    config = tiny_config(model_type, **overrides)
    # Some heads map to several classes (DeiT has one with a distillation teacher); the
    # auto class picks by config.architectures, so name the task's first class.
    config.architectures = [parsed.model_class_name(model_type)]
    torch.manual_seed(seed)
    model = parsed.auto_class(model_type).from_config(config)
    return model.eval()


def save_tiny_checkpoint(
    model_type: str,
    path: str | Path,
    task: Task | str = Task.FEATURE_EXTRACTION,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Write a tiny checkpoint directory (config.json with architectures + safetensors)."""
    path = Path(path)
    tiny_model(model_type, task, seed, **overrides).save_pretrained(path)
    return path

"""Tiny random models built from configs in-process, for tests and examples.

Nothing is downloaded: a tiny config is the model type's default config with small sizes,
and weights are seeded random. A registered family gets its modality's sizes and its own
per-type overrides; any other model type is shrunk generically
(``graphport.models.tiny_shrink``, levels tried by ``graphport.models.tiny_generic``):
every size attribute the config already has is made small, whatever it is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from graphport.export.tasks import Task, parse_task
from graphport.models.registry import get_registration
from graphport.models.tiny_generic import (
    CONFIG_REFUSED,
    DOES_NOT_RUN,
    MODEL_REFUSED,
    TOO_LARGE,
    TinyModelError,
    build_generic_tiny_model,
    count_parameters,
    first_generic_tiny_config,
    generic_tiny_configs,
)

__all__ = [
    "CONFIG_REFUSED",
    "DOES_NOT_RUN",
    "MODEL_REFUSED",
    "TINY_TEXT",
    "TOO_LARGE",
    "UNSET",
    "TinyModelError",
    "build_generic_tiny_model",
    "count_parameters",
    "first_generic_tiny_config",
    "generic_tiny_configs",
    "save_tiny_checkpoint",
    "tiny_config",
    "tiny_model",
]

# A text model's tiny sizes (also the text towers' of composite families).
TINY_TEXT: dict[str, Any] = {
    "vocab_size": 128,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
}
_MODALITY_DEFAULTS: dict[str, dict[str, Any]] = {
    "text": TINY_TEXT,
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

# A family's ``tiny`` value that removes a modality default instead of overriding it, for
# configs that reject an attribute they do not have (BiT's validator fails on any
# ``num_hidden_layers``, because its ``layer_types`` lists block kinds, not attention).
UNSET: Any = object()


def tiny_config(model_type: str, **overrides: Any) -> PretrainedConfig:
    """The tiny config of ``model_type``: the family's sizes, or the generic shrink."""
    registration = get_registration(model_type)
    if registration.generic:
        return first_generic_tiny_config(model_type, **overrides)
    kwargs = {
        **_MODALITY_DEFAULTS[registration.config_class.modality],
        **registration.tiny,
        **overrides,
    }
    return AutoConfig.for_model(model_type, **{k: v for k, v in kwargs.items() if v is not UNSET})


def tiny_model(
    model_type: str, task: Task | str = Task.FEATURE_EXTRACTION, seed: int = 0, **overrides: Any
) -> PreTrainedModel:
    """A seeded random model of ``model_type`` with the head of ``task``, in eval mode."""
    parsed, _ = parse_task(task)
    if get_registration(model_type).generic:
        return build_generic_tiny_model(model_type, parsed, seed, **overrides)[1]
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

"""Generic tiny models: for a model type no family registers, the first shrink level
(``graphport.models.tiny_shrink``) whose config the class accepts and whose model builds,
stays under ``MAX_TINY_PARAMETERS`` and passes the caller's check; every level tried and
why it failed is in the error when none does (the sweep classifies them).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from graphport.errors import Reason, UnsupportedModelError
from graphport.export.tasks import Task, parse_task
from graphport.models.tiny_shrink import (
    MAX_TINY_PARAMETERS,
    SHRINK_LEVELS,
    SMALL_LEVELS,
    Shrinker,
    TinyConfig,
)


def generic_tiny_configs(model_type: str, **overrides: Any) -> list[TinyConfig]:
    """One config per shrink level, smallest first (or the reason its class refused it);
    the caller takes the first whose model builds and runs."""
    default = AutoConfig.for_model(model_type)
    configs = []
    for level in SHRINK_LEVELS:
        try:
            configs.append(TinyConfig(level.name, Shrinker(level).config(default, **overrides)))
        except Exception as e:  # the config's own validation refused the sizes
            configs.append(TinyConfig(level.name, None, _first_line(e)))
    return configs


def first_generic_tiny_config(model_type: str, **overrides: Any) -> PretrainedConfig:
    """The smallest generic tiny config the config class accepts."""
    configs = generic_tiny_configs(model_type, **overrides)
    for tiny in configs:
        if tiny.config is not None:
            return tiny.config
    raise UnsupportedModelError(
        f"No tiny config of model type {model_type!r} could be built: "
        + "; ".join(f"{t.level}: {t.error}" for t in configs)
        + ".",
        reason=Reason.CONFIG_REJECTS_SMALL_SIZES,
    )


def _first_line(error: BaseException) -> str:
    """The error's first line that says something (validation errors open with headers
    that end in a colon)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = next((x for x in lines if not x.endswith(":")), lines[0] if lines else "")
    return f"{type(error).__name__}: {line}"[:300]


def count_parameters(model_class: Any, config: PretrainedConfig) -> int:
    """Parameters a model would have, counted on the meta device (nothing allocated);
    raises what building the model raises."""
    with torch.device("meta"):
        model = model_class.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_generic_tiny_model(
    model_type: str,
    task: Task | str = Task.FEATURE_EXTRACTION,
    seed: int = 0,
    check: Any = None,
    **overrides: Any,
) -> tuple[str, PreTrainedModel]:
    """``(level, model)``: the first generic tiny config whose model builds and passes
    ``check(model)`` (a callable that raises when the model is unusable), seeded, in eval
    mode. Every level tried and why it failed is in the error when none works."""
    parsed, _ = parse_task(task)
    auto_class = parsed.auto_class(model_type)
    attempts: list[tuple[str, str, str]] = []
    for tiny in generic_tiny_configs(model_type, **overrides):
        if tiny.config is None:
            attempts.append((tiny.level, CONFIG_REFUSED, tiny.error or ""))
            continue
        config = tiny.config
        config.architectures = [parsed.model_class_name(model_type)]
        try:
            count = count_parameters(auto_class, config)
        except Exception as e:
            if tiny.level not in SMALL_LEVELS:  # unknown size: never build a large model
                attempts.append((tiny.level, MODEL_REFUSED, _first_line(e)))
                continue
            count = 0  # a model that cannot be built on the meta device; build it for real
        if count > MAX_TINY_PARAMETERS:
            attempts.append((tiny.level, TOO_LARGE, f"{count / 1e6:.0f}M parameters"))
            continue
        stage = MODEL_REFUSED
        try:
            torch.manual_seed(seed)
            model = auto_class.from_config(config).eval()
            stage = DOES_NOT_RUN
            if check is not None:
                check(model)
        except Exception as e:
            attempts.append((tiny.level, stage, _first_line(e)))
            continue
        return tiny.level, model
    raise TinyModelError(model_type, parsed, attempts)


# Why a shrink level gave no model (TinyModelError.attempts).
CONFIG_REFUSED = "config refused"
TOO_LARGE = "too large"
MODEL_REFUSED = "model refused"
DOES_NOT_RUN = "model does not run"


class TinyModelError(UnsupportedModelError):
    """No generic tiny model could be built; ``attempts`` holds (level, stage, reason)
    for each shrink level, so callers can tell a model that does not build from one that
    builds but does not run on the check's inputs."""

    def __init__(self, model_type: str, task: Task, attempts: list[tuple[str, str, str]]) -> None:
        tried = "; ".join(f"{level}: {stage}: {reason}" for level, stage, reason in attempts)
        super().__init__(
            f"No tiny {task.value} model of type {model_type!r} could be built: {tried}."
        )
        self.attempts = attempts

"""``FeaturesManager``: the task registry in the shape of the removed transformers.onnx one.

Features are task names (legacy feature names are aliases); a model type's supported
features map to constructors of its export config.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphport.errors import UnsupportedModelError
from graphport.export.config import OnnxConfig
from graphport.export.tasks import Task, parse_task
from graphport.models.loader import load_checkpoint, load_model
from graphport.models.registry import get_registration, registrations


def _feature_name(task: Task, with_past: bool) -> str:
    return task.value + ("-with-past" if with_past else "")


class _AvailableFeatures:
    """Class-level attribute computed from the registry when read (it fills on import)."""

    def __get__(self, obj: object, owner: type) -> list[str]:
        return sorted({t.value for r in registrations() for t in r.tasks})


class FeaturesManager:
    """Static helpers mapping (model type, feature) to model classes and export configs."""

    AVAILABLE_FEATURES = _AvailableFeatures()

    @staticmethod
    def _tasks_to_automodels() -> dict[str, tuple[str, ...]]:
        return {task.value: task.auto_classes for task in Task}

    @staticmethod
    def get_supported_features_for_model_type(
        model_type: str, model_name: str | None = None
    ) -> dict[str, Callable[[Any], OnnxConfig]]:
        model_type = model_type.lower().replace("_", "-")
        try:
            registration = get_registration(model_type)
        except UnsupportedModelError:
            # transformers' model types use '_' where graphport's keys may use '-'.
            registration = get_registration(model_type.replace("-", "_"))
        return {
            task.value: functools.partial(registration.config_class.from_model_config, task=task)
            for task in registration.tasks
        }

    @staticmethod
    def feature_to_task(feature: str) -> str:
        return parse_task(feature)[0].value

    @staticmethod
    def _validate_framework_choice(framework: str | None) -> None:
        if framework not in (None, "pt"):
            raise UnsupportedModelError(
                f"Framework {framework!r} is not supported; graphport exports PyTorch models."
            )

    @staticmethod
    def determine_framework(model: Any, framework: str | None = None) -> str:
        FeaturesManager._validate_framework_choice(framework)
        return "pt"

    @staticmethod
    def get_model_class_for_feature(feature: str, framework: str = "pt") -> type:
        """The auto class for a feature (the first, where a task has several)."""
        FeaturesManager._validate_framework_choice(framework)
        import transformers

        task, _ = parse_task(feature)
        return getattr(transformers, task.auto_classes[0])

    @staticmethod
    def get_model_from_feature(
        feature: str,
        model: str | Path,
        framework: str | None = None,
        cache_dir: str | None = None,
    ) -> Any:
        """Load ``model`` (a local checkpoint or cached hub id) with the feature's head."""
        FeaturesManager._validate_framework_choice(framework)
        task, _ = parse_task(feature)
        return load_model(load_checkpoint(model), task)

    @staticmethod
    def check_supported_model_or_raise(
        model: Any, feature: str = "default"
    ) -> tuple[str, Callable[[Any], OnnxConfig]]:
        """``(model_type, config constructor)``, or raise saying what is supported."""
        model_type = model.config.model_type
        task, with_past = parse_task(feature)
        supported = FeaturesManager.get_supported_features_for_model_type(model_type)
        name = _feature_name(task, with_past)
        if task.value not in supported:
            raise UnsupportedModelError(
                f"{model.config.__class__.__name__} does not support the feature {feature!r}; "
                f"it supports {', '.join(supported)}."
            )
        constructor = supported[task.value]
        if with_past:
            constructor = functools.partial(constructor.func, task=name)
        return model_type, constructor

    @staticmethod
    def get_config(model_type: str, feature: str) -> Callable[[Any], OnnxConfig]:
        task, _ = parse_task(feature)
        return FeaturesManager.get_supported_features_for_model_type(model_type)[task.value]

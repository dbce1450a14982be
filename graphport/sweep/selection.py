"""Which rows a sweep runs: the model types transformers has a model class for, and for
each the tasks it is swept for (its encoder task, and generation with the KV cache where
transformers has a causal-LM or seq2seq-LM class for it).

transformers and the registry are imported by the functions that ask them: ``graphport.cli``
imports this package at start, and ``graphport --help`` loads neither torch nor
transformers (docs/DEVELOPING.md, rule 4).
"""

from __future__ import annotations

from collections.abc import Iterable

from graphport.errors import UsageError


def all_model_types() -> list[str]:
    """Every model type transformers has a base model class for."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return sorted(MODEL_MAPPING_NAMES)


def select_model_types(
    only: Iterable[str] | None, cached: Iterable[str], rerun: bool = False
) -> list[str]:
    """``only`` (always re-run), else every model type not cached yet (all with rerun)."""
    if only:
        known = set(all_model_types())
        unknown = [m for m in only if m not in known]
        if unknown:
            raise UsageError(
                f"Unknown model type(s) {', '.join(unknown)}: a sweep covers the model types "
                "transformers has a model class for (transformers' MODEL_MAPPING_NAMES)."
            )
        return list(dict.fromkeys(only))
    done = set() if rerun else set(cached)
    return [m for m in all_model_types() if m not in done]


def sweep_task(model_type: str) -> str:
    """The encoder task a sweep exports: feature extraction, unless a family lacks it."""
    from graphport.export.tasks import Task
    from graphport.models.registry import get_registration

    tasks = get_registration(model_type).tasks
    if Task.FEATURE_EXTRACTION in tasks or not tasks:
        return Task.FEATURE_EXTRACTION.value
    return tasks[0].value


def sweep_tasks(model_type: str) -> list[str]:
    """Every task a sweep exports for ``model_type``: its encoder task, then generation with
    the KV cache where transformers has a causal-LM (or seq2seq-LM) class for the type."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    try:
        tasks = [sweep_task(model_type)]
    except Exception:  # the row says why; no generation row without a registration
        return ["feature-extraction"]
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        tasks.append("text-generation-with-past")
    if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        tasks.append("text2text-generation-with-past")
    return list(dict.fromkeys(tasks))

"""The registry of architecture families: model type -> export config class.

A family module declares a config class and registers it for the model types it covers::

    @register("bert", "roberta", family="bert", tiny={"type_vocab_size": 2})
    class BertOnnxConfig(TextOnnxConfig):
        pass

``tiny`` holds per-model-type overrides for the tiny random configs used by tests.

A model type transformers knows but no family registers gets the generic registration
(family ``generic``): its export config derives the graph's inputs from the model class's
forward signature (see ``graphport.export.generic``).

The tasks a model type supports are those transformers has a head for (its auto
mappings, ``graphport.export.tasks.head_tasks``), family and generic types alike: a
family exports the tasks it declares, and the generic path every other head the type has.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from graphport.errors import UnsupportedModelError, UnsupportedTaskError
from graphport.export.config import OnnxConfig
from graphport.export.decoder import OnnxConfigWithPast
from graphport.export.features_with_past import (
    GenericFeaturesWithPastOnnxConfig,
    with_features,
)
from graphport.export.generic import GenericOnnxConfig
from graphport.export.generic_decoder import GenericDecoderOnnxConfig, takes_cache
from graphport.export.generic_seq2seq import GenericSeq2SeqOnnxConfig
from graphport.export.generic_speech_seq2seq import GenericSpeechSeq2SeqOnnxConfig
from graphport.export.seq2seq import OnnxSeq2SeqConfigWithPast
from graphport.export.tasks import Task, head_tasks, infer_task, parse_task
from graphport.export.vlm import image_text_config

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Registration:
    model_type: str
    family: str
    config_class: type[OnnxConfig]
    tiny: Mapping[str, Any]
    generic: bool = False

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Every task transformers has a head for on this type: the family's own first
        (``family_tasks``), then the heads the generic path exports for it."""
        own = self.family_tasks
        return own + tuple(t for t in head_tasks(self.model_type) if self.generic_exports(t, own))

    @property
    def family_tasks(self) -> tuple[Task, ...]:
        """Tasks the config declares and transformers has a head for, for this type (and
        text generation where the family lends it to the generic KV-cache path)."""
        declared = tuple(
            t for t in self.config_class.tasks if t.model_class_name(self.model_type) is not None
        )
        if self.borrows_decoder:
            declared += (Task.TEXT_GENERATION,)
        vlm = image_text_config(self.model_type) is not None  # a VLM beside its other tasks
        if vlm and Task.IMAGE_TEXT_TO_TEXT not in declared:
            declared += (Task.IMAGE_TEXT_TO_TEXT,)
        return declared

    def generic_exports(self, task: Task, own: tuple[Task, ...] = ()) -> bool:
        """Whether the generic path exports ``task`` for this type, the family's own tasks
        aside (a family that lends no decoder keeps text generation to itself)."""
        if task in own or task not in GenericOnnxConfig.tasks:
            return False
        return self.generic or task is not Task.TEXT_GENERATION

    @property
    def borrows_decoder(self) -> bool:
        """Whether a family that declares no causal-LM head generates through the generic
        KV-cache path: an encoder family's decoder head (BertLMHeadModel, ErnieForCausalLM)
        or a seq2seq family's decoder alone (BartForCausalLM), where transformers' class
        takes a cache."""
        if self.generic or Task.TEXT_GENERATION in self.config_class.tasks:
            return False
        if not self.config_class.lends_decoder:
            return False
        return takes_cache(self.model_type)


_REGISTRY: dict[str, Registration] = {}

# Model types transformers no longer ships; a checkpoint of one gets this explanation.
REMOVED_MODEL_TYPES = {
    "transfo-xl": "Transformer-XL was deprecated in Transformers 4.35 and removed in "
    "Transformers 5, so it cannot be loaded or exported with this stack; pin "
    "transformers<5 and use its own tooling, or move to a maintained architecture",
}


def register(
    *model_types: str, family: str | None = None, tiny: Mapping[str, Any] | None = None
) -> Callable[[type[OnnxConfig]], type[OnnxConfig]]:
    def wrap(cls: type[OnnxConfig]) -> type[OnnxConfig]:
        for model_type in model_types:
            if model_type in _REGISTRY:
                raise ValueError(f"model type {model_type!r} is registered twice")
            _REGISTRY[model_type] = Registration(
                model_type, family or model_types[0], cls, dict(tiny or {})
            )
        return cls

    return wrap


def _ensure_loaded() -> None:
    # Importing the package imports every family module, which fills the registry. Inside:
    # a circle, as graphport/models/__init__.py imports this module.
    import graphport.models  # noqa: F401


def registrations() -> Iterator[Registration]:
    _ensure_loaded()
    yield from sorted(_REGISTRY.values(), key=lambda r: (r.family, r.model_type))


def get_registration(model_type: str) -> Registration:
    """The family registration of ``model_type``, else the generic one where transformers
    has a model class for it; unknown and removed types get a clear error."""
    _ensure_loaded()
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    if model_type in REMOVED_MODEL_TYPES:
        raise UnsupportedModelError(REMOVED_MODEL_TYPES[model_type] + ".")
    if has_model_class(model_type):
        return generic_registration(model_type)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type in CONFIG_MAPPING_NAMES:
        raise UnsupportedModelError(
            f"Model type {model_type!r} is a configuration transformers knows, but no model "
            "class (AutoModel or a task head) is mapped to it, so graphport cannot export it; "
            "export the model that contains it instead."
        )
    raise UnsupportedModelError(
        f"Model type {model_type!r} has no model class in the installed transformers, so "
        "graphport cannot export it, not even with its generic path; check the spelling, or "
        "upgrade transformers if it is a newer architecture (`graphport list` shows the "
        "families)."
    )


def has_model_class(model_type: str) -> bool:
    """Whether transformers maps ``model_type`` to a model class for any task."""
    return any(task.model_class_name(model_type) is not None for task in Task)


def generic_registration(model_type: str) -> Registration:
    """The registration of a model type no family covers: the generic export config."""
    return Registration(model_type, "generic", GenericOnnxConfig, {}, generic=True)


def supported_tasks(model_type: str) -> tuple[Task, ...]:
    return get_registration(model_type).tasks


def get_onnx_config(model_config: Any, task: Task | str) -> OnnxConfig:
    """Build the export config for a transformers config and task, or say what is supported."""
    registration = get_registration(model_config.model_type)
    parsed, with_past = parse_task(task)
    if parsed not in registration.tasks:
        raise UnsupportedTaskError(
            f"Model type {registration.model_type!r} does not support the task "
            f"{parsed.value!r}; it supports "
            f"{', '.join(t.value for t in registration.tasks)}: pass one of these with --task."
        )
    return config_class_for(registration, parsed, with_past)(
        model_config, task=parsed, use_past=with_past
    )


def config_class_for(registration: Registration, task: Task, with_past: bool) -> type[OnnxConfig]:
    """The export config class of ``task`` on a registered type: the family's for the tasks
    it declares, the generic path's for every other head (a KV cache where it has one)."""
    if task is Task.IMAGE_TEXT_TO_TEXT:
        vlm = image_text_config(registration.model_type)  # vision, embed, decoder graphs
        if vlm is not None:
            return vlm
    config_class = registration.config_class
    family = task in registration.config_class.tasks and not registration.generic
    if task is Task.FEATURE_EXTRACTION and with_past:
        # The base model with its cache: a decoder family's config traced on the base model
        # (an encoder-decoder family's says why it exports no cache for the bare model).
        if not family:
            return GenericFeaturesWithPastOnnxConfig
        if issubclass(config_class, OnnxConfigWithPast) and not issubclass(
            config_class, OnnxSeq2SeqConfigWithPast
        ):
            return with_features(config_class)
    if family:
        return config_class
    if task is Task.TEXT_GENERATION and with_past:
        return GenericDecoderOnnxConfig  # the cache layout a dry run reads
    if task is Task.TEXT2TEXT_GENERATION:
        return GenericSeq2SeqOnnxConfig  # an encoder and a decoder graph
    if task is Task.AUTOMATIC_SPEECH_RECOGNITION and with_past:
        return GenericSpeechSeq2SeqOnnxConfig  # the same, on audio features
    return GenericOnnxConfig


def export_config(directory: Any) -> OnnxConfig:
    """The export config an export directory was made with (its task, with the KV cache
    when the manifest records one), from the model config copied into the directory."""
    from transformers import AutoConfig

    manifest = directory.manifest
    model_config = AutoConfig.from_pretrained(directory.path, local_files_only=True)
    past = "-with-past" if manifest.kv_cache else ""
    config = get_onnx_config(model_config, f"{Task(manifest.task).value}{past}")
    if manifest.kv_cache and isinstance(config, OnnxConfigWithPast):
        config.adopt_kv_cache_contract(manifest.kv_cache)
    return config


GENERATIVE_TASKS = frozenset(
    {
        Task.TEXT_GENERATION,
        Task.TEXT2TEXT_GENERATION,
        Task.AUTOMATIC_SPEECH_RECOGNITION,
        Task.IMAGE_TO_TEXT,
    }
)


# The generative tasks the generic path exports with a cache, where the class takes one.
GENERIC_WITH_PAST = (
    Task.TEXT_GENERATION,
    Task.TEXT2TEXT_GENERATION,
    Task.AUTOMATIC_SPEECH_RECOGNITION,
)


def resolve_task(checkpoint: Any, task: str | Task | None) -> tuple[Task, bool]:
    """The task given, else the one ``config.architectures`` implies, else feature-extraction."""
    if task not in (None, "auto"):
        return parse_task(task)
    registration = get_registration(checkpoint.model_type)
    # A head that serves several tasks (BartForConditionalGeneration: text2text and
    # fill-mask) means the family's own task before one the generic path adds.
    inferred = infer_task(
        checkpoint.model_type, checkpoint.architectures, registration.family_tasks
    )
    if inferred not in registration.family_tasks:
        inferred = infer_task(checkpoint.model_type, checkpoint.architectures, registration.tasks)
    if registration.generic and inferred is Task.FILL_MASK:
        # A seq2seq head that also fills masks (MvpForConditionalGeneration) is exported
        # to generate, as the families' (BartForConditionalGeneration) are.
        seq2seq = Task.TEXT2TEXT_GENERATION
        if infer_task(checkpoint.model_type, checkpoint.architectures, [seq2seq]) is seq2seq:
            inferred = seq2seq
    if inferred is None:
        logger.info(
            "config.architectures (%s) names no known head; using feature-extraction.",
            checkpoint.architectures or "absent",
        )
        return Task.FEATURE_EXTRACTION, False
    if inferred not in registration.tasks:
        raise UnsupportedModelError(
            f"The checkpoint's architecture {checkpoint.architectures[0]} is a {inferred.value} "
            f"model, which graphport cannot export for {checkpoint.model_type!r} yet; pass "
            f"--task with one of {', '.join(t.value for t in registration.tasks)}."
        )
    logger.info("Task inferred from %s: %s", checkpoint.architectures[0], inferred.value)
    # A generative checkpoint is exported for generation: with its KV cache (a causal LM
    # without a family too, where its class takes a cache).
    with_past = inferred in GENERATIVE_TASKS and issubclass(
        registration.config_class, OnnxConfigWithPast
    )
    generic = registration.generic or (
        inferred is Task.TEXT_GENERATION and registration.borrows_decoder
    )
    if generic and inferred in GENERIC_WITH_PAST:
        with_past = takes_cache(checkpoint.model_type, inferred)
    return inferred, with_past

"""Tasks: the Hugging Face task vocabulary, legacy feature aliases, and task inference.

A task decides which head is loaded (through the transformers auto classes) and which
outputs the graph has. Task values are the Hugging Face pipeline task strings; the
feature names of the removed ``transformers.onnx`` API (``default``, ``causal-lm``,
``seq2seq-lm``, ...) and optimum's are accepted as aliases, with an optional
``-with-past`` suffix.

Which auto classes and mappings load each task is the table of
``graphport.export.task_heads``: the tasks a model type supports are those whose
mappings know it (``head_tasks``), read from transformers. Mappings no task names yet
(next-sentence prediction, video classification, document and table question answering,
backbones, ...) are not exported.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import transformers

from graphport.errors import UnsupportedModelError
from graphport.export.task_heads import HEADS, mapping


class Task(str, enum.Enum):
    FEATURE_EXTRACTION = "feature-extraction"
    FILL_MASK = "fill-mask"
    TEXT_CLASSIFICATION = "text-classification"
    TOKEN_CLASSIFICATION = "token-classification"
    QUESTION_ANSWERING = "question-answering"
    MULTIPLE_CHOICE = "multiple-choice"
    IMAGE_CLASSIFICATION = "image-classification"
    SEMANTIC_SEGMENTATION = "semantic-segmentation"
    AUDIO_CLASSIFICATION = "audio-classification"
    AUTOMATIC_SPEECH_RECOGNITION = "automatic-speech-recognition"
    TEXT_GENERATION = "text-generation"
    TEXT2TEXT_GENERATION = "text2text-generation"
    IMAGE_TO_TEXT = "image-to-text"
    IMAGE_TEXT_TO_TEXT = "image-text-to-text"
    OBJECT_DETECTION = "object-detection"
    DEPTH_ESTIMATION = "depth-estimation"
    ZERO_SHOT_IMAGE_CLASSIFICATION = "zero-shot-image-classification"
    INSTANCE_SEGMENTATION = "instance-segmentation"
    PANOPTIC_SEGMENTATION = "panoptic-segmentation"
    UNIVERSAL_SEGMENTATION = "universal-segmentation"
    MASK_GENERATION = "mask-generation"
    ZERO_SHOT_OBJECT_DETECTION = "zero-shot-object-detection"
    KEYPOINT_DETECTION = "keypoint-detection"
    IMAGE_TO_IMAGE = "image-to-image"
    TEXT_TO_AUDIO = "text-to-audio"
    TEXT_TO_SPECTROGRAM = "text-to-spectrogram"
    AUDIO_XVECTOR = "audio-xvector"
    AUDIO_FRAME_CLASSIFICATION = "audio-frame-classification"
    MASKED_IM = "masked-im"
    TIME_SERIES_FORECASTING = "time-series-forecasting"
    REINFORCEMENT_LEARNING = "reinforcement-learning"

    def __str__(self) -> str:
        return self.value

    @property
    def auto_classes(self) -> tuple[str, ...]:
        """Names of the transformers auto classes that load this task's head, in order."""
        return tuple(auto for auto, _ in HEADS[self.value])

    def model_class_name(self, model_type: str) -> str | None:
        """The transformers class that implements this task for ``model_type``, if any."""
        for _, name in HEADS[self.value]:
            names = mapping(name).get(model_type)
            if names:
                return names if isinstance(names, str) else names[0]
        return None

    def auto_class(self, model_type: str) -> type:
        """The auto class (``AutoModelForX``) whose mapping knows ``model_type``."""
        for auto, name in HEADS[self.value]:
            if model_type in mapping(name):
                return getattr(transformers, auto)
        raise UnsupportedModelError(
            f"transformers has no {self.value} head for model type {model_type!r}."
        )


def head_tasks(model_type: str) -> tuple[Task, ...]:
    """Every task transformers has a head for on ``model_type`` (its auto mappings), in the
    order of ``Task``."""
    return tuple(task for task in Task if task.model_class_name(model_type) is not None)


# Feature names of the removed transformers.onnx API and of optimum, and the pipeline
# names transformers and optimum give the same heads.
LEGACY_ALIASES: dict[str, Task] = {
    "default": Task.FEATURE_EXTRACTION,
    "sentence-similarity": Task.FEATURE_EXTRACTION,
    "masked-lm": Task.FILL_MASK,
    "sequence-classification": Task.TEXT_CLASSIFICATION,
    "zero-shot-classification": Task.TEXT_CLASSIFICATION,
    "causal-lm": Task.TEXT_GENERATION,
    "seq2seq-lm": Task.TEXT2TEXT_GENERATION,
    "summarization": Task.TEXT2TEXT_GENERATION,
    "translation": Task.TEXT2TEXT_GENERATION,
    "speech2seq-lm": Task.AUTOMATIC_SPEECH_RECOGNITION,
    "audio-ctc": Task.AUTOMATIC_SPEECH_RECOGNITION,
    "ctc": Task.AUTOMATIC_SPEECH_RECOGNITION,
    "vision2seq-lm": Task.IMAGE_TO_TEXT,
    "image-segmentation": Task.SEMANTIC_SEGMENTATION,
    "text-to-speech": Task.TEXT_TO_AUDIO,
    "masked-image-modeling": Task.MASKED_IM,
}

WITH_PAST_SUFFIX = "-with-past"


def parse_task(name: str | Task) -> tuple[Task, bool]:
    """Parse a task or legacy feature name into ``(task, with_past)``."""
    if isinstance(name, Task):
        return name, False
    text = name.strip().lower()
    with_past = text.endswith(WITH_PAST_SUFFIX)
    if with_past:
        text = text[: -len(WITH_PAST_SUFFIX)]
    try:
        return Task(text), with_past
    except ValueError:
        pass
    if text in LEGACY_ALIASES:
        return LEGACY_ALIASES[text], with_past
    known = ", ".join(t.value for t in Task)
    raise UnsupportedModelError(
        f"Unknown task {name!r}; use one of {known} (legacy names such as 'default' or "
        "'causal-lm' are accepted too)."
    )


def tasks_for_architecture(model_type: str, architecture: str) -> list[Task]:
    """Every task whose head class is ``architecture``, in the order of ``Task`` (one head
    can serve several: BartForConditionalGeneration fills masks and generates text)."""
    tasks = []
    for task in Task:
        for _, name in HEADS[task.value]:
            names = mapping(name).get(model_type) or ()
            if architecture in ((names,) if isinstance(names, str) else names):
                tasks.append(task)
                break
    return tasks


def task_for_architecture(model_type: str, architecture: str) -> Task | None:
    """The task whose head class is ``architecture`` (e.g. BertForMaskedLM -> fill-mask)."""
    tasks = tasks_for_architecture(model_type, architecture)
    return tasks[0] if tasks else None


def infer_task(
    model_type: str, architectures: Iterable[str] | None, supported: Iterable[Task] = ()
) -> Task | None:
    """Infer the task from ``config.architectures``; None when it says nothing usable.

    Where a head serves several tasks, the first of them in ``supported`` wins (the tasks
    the family can export), else the first.
    """
    preferred = set(supported)
    for architecture in architectures or ():
        tasks = tasks_for_architecture(model_type, architecture)
        if tasks:
            return next((t for t in tasks if t in preferred), tasks[0])
    return None

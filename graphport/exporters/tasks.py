"""Tasks: the Hugging Face task vocabulary, legacy feature aliases, and task inference.

A task decides which head is loaded (through the transformers auto classes) and which
outputs the graph has. Task values are the Hugging Face pipeline task strings; the
feature names of the removed ``transformers.onnx`` API (``default``, ``causal-lm``,
``seq2seq-lm``, ...) are accepted as aliases, with an optional ``-with-past`` suffix.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import transformers
from transformers.models.auto import modeling_auto

from graphport.errors import UnsupportedModelError


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

    def __str__(self) -> str:
        return self.value

    @property
    def auto_classes(self) -> tuple[str, ...]:
        """Names of the transformers auto classes that load this task's head, in order."""
        return tuple(auto for auto, _ in _HEADS[self])

    def model_class_name(self, model_type: str) -> str | None:
        """The transformers class that implements this task for ``model_type``, if any."""
        for _, mapping in _HEADS[self]:
            names = getattr(modeling_auto, mapping).get(model_type)
            if names:
                return names if isinstance(names, str) else names[0]
        return None

    def auto_class(self, model_type: str) -> type:
        """The auto class (``AutoModelForX``) whose mapping knows ``model_type``."""
        for auto, mapping in _HEADS[self]:
            if model_type in getattr(modeling_auto, mapping):
                return getattr(transformers, auto)
        raise UnsupportedModelError(
            f"transformers has no {self.value} head for model type {model_type!r}."
        )


# task -> (auto class, its model_type -> class-name mapping in transformers), in the order
# tried. Speech recognition is CTC for encoder-only models and seq2seq for whisper-like ones.
_HEADS: dict[Task, tuple[tuple[str, str], ...]] = {
    Task.FEATURE_EXTRACTION: (("AutoModel", "MODEL_MAPPING_NAMES"),),
    Task.FILL_MASK: (("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),),
    Task.TEXT_CLASSIFICATION: (
        ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ),
    Task.TOKEN_CLASSIFICATION: (
        ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    ),
    Task.QUESTION_ANSWERING: (
        ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    ),
    Task.MULTIPLE_CHOICE: (
        ("AutoModelForMultipleChoice", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES"),
    ),
    Task.IMAGE_CLASSIFICATION: (
        ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ),
    Task.SEMANTIC_SEGMENTATION: (
        ("AutoModelForSemanticSegmentation", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES"),
    ),
    Task.AUDIO_CLASSIFICATION: (
        ("AutoModelForAudioClassification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    ),
    Task.AUTOMATIC_SPEECH_RECOGNITION: (
        ("AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
        ("AutoModelForSpeechSeq2Seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    ),
    Task.TEXT_GENERATION: (("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),),
    Task.TEXT2TEXT_GENERATION: (
        ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ),
    # Transformers 5 folded Vision2Seq into ImageTextToText (vision-encoder-decoder, ...).
    Task.IMAGE_TO_TEXT: (
        ("AutoModelForImageTextToText", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    ),
    # A vision-language decoder (LLaVA): graphport.exporters.vlm says which families export it.
    Task.IMAGE_TEXT_TO_TEXT: (
        ("AutoModelForImageTextToText", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    ),
    Task.OBJECT_DETECTION: (
        ("AutoModelForObjectDetection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"),
    ),
    Task.DEPTH_ESTIMATION: (
        ("AutoModelForDepthEstimation", "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES"),
    ),
    Task.ZERO_SHOT_IMAGE_CLASSIFICATION: (
        (
            "AutoModelForZeroShotImageClassification",
            "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        ),
    ),
}

# Feature names of the removed transformers.onnx API and of optimum.
LEGACY_ALIASES: dict[str, Task] = {
    "default": Task.FEATURE_EXTRACTION,
    "masked-lm": Task.FILL_MASK,
    "sequence-classification": Task.TEXT_CLASSIFICATION,
    "causal-lm": Task.TEXT_GENERATION,
    "seq2seq-lm": Task.TEXT2TEXT_GENERATION,
    "speech2seq-lm": Task.AUTOMATIC_SPEECH_RECOGNITION,
    "vision2seq-lm": Task.IMAGE_TO_TEXT,
    "image-segmentation": Task.SEMANTIC_SEGMENTATION,
    "ctc": Task.AUTOMATIC_SPEECH_RECOGNITION,
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
    """Every task whose head class is ``architecture``, in the order of ``_HEADS`` (one head
    can serve several: BartForConditionalGeneration fills masks and generates text)."""
    tasks = []
    for task, heads in _HEADS.items():
        for _, mapping in heads:
            names = getattr(modeling_auto, mapping).get(model_type) or ()
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

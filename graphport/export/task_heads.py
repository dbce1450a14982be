"""Which transformers auto class loads each task's head: the table the task vocabulary
(``graphport.export.tasks``) reads.

Every entry names an auto class and its ``model_type -> class name`` mapping in
``transformers.models.auto.modeling_auto``, so the (model type, task) pairs graphport
knows are exactly those transformers has a head for. Keys are task strings (the values of
``Task``), so this table imports nothing of graphport.
"""

from __future__ import annotations

from collections.abc import Mapping

from transformers.models.auto import modeling_auto

Head = tuple[str, str]  # (auto class, its mapping in modeling_auto)

# The decision transformer is transformers' one reinforcement-learning model; its auto
# class is AutoModel. (MODEL_FOR_DECISION_MAPPING_NAMES maps answer-decision heads of
# language models, not a policy.)
DECISION_TRANSFORMER = "DECISION_TRANSFORMER"
_OWN_MAPPINGS: dict[str, Mapping[str, str]] = {
    DECISION_TRANSFORMER: {"decision_transformer": "DecisionTransformerModel"},
}

# task -> its heads, in the order tried. Speech recognition is CTC for encoder-only
# models and seq2seq for whisper-like ones; text-to-audio a waveform or a spectrogram.
HEADS: dict[str, tuple[Head, ...]] = {
    "feature-extraction": (("AutoModel", "MODEL_MAPPING_NAMES"),),
    "fill-mask": (("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),),
    "text-classification": (
        ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ),
    "token-classification": (
        ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    ),
    "question-answering": (
        ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    ),
    "multiple-choice": (("AutoModelForMultipleChoice", "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES"),),
    "image-classification": (
        ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ),
    "semantic-segmentation": (
        ("AutoModelForSemanticSegmentation", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES"),
    ),
    "audio-classification": (
        ("AutoModelForAudioClassification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    ),
    "automatic-speech-recognition": (
        ("AutoModelForCTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
        ("AutoModelForSpeechSeq2Seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    ),
    "text-generation": (("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),),
    "text2text-generation": (
        ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ),
    # Transformers 5 folded Vision2Seq into ImageTextToText (vision-encoder-decoder, ...).
    "image-to-text": (
        ("AutoModelForImageTextToText", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    ),
    # A vision-language decoder (LLaVA): graphport.export.vlm says which families export it.
    "image-text-to-text": (
        ("AutoModelForImageTextToText", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    ),
    "object-detection": (
        ("AutoModelForObjectDetection", "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES"),
    ),
    "depth-estimation": (
        ("AutoModelForDepthEstimation", "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES"),
    ),
    "zero-shot-image-classification": (
        (
            "AutoModelForZeroShotImageClassification",
            "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
        ),
    ),
    "instance-segmentation": (
        ("AutoModelForInstanceSegmentation", "MODEL_FOR_INSTANCE_SEGMENTATION_MAPPING_NAMES"),
    ),
    # DETR's segmentation head (AutoModelForImageSegmentation's one class) is panoptic.
    "panoptic-segmentation": (
        ("AutoModelForImageSegmentation", "MODEL_FOR_IMAGE_SEGMENTATION_MAPPING_NAMES"),
    ),
    "universal-segmentation": (
        ("AutoModelForUniversalSegmentation", "MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES"),
    ),
    "mask-generation": (("AutoModelForMaskGeneration", "MODEL_FOR_MASK_GENERATION_MAPPING_NAMES"),),
    "zero-shot-object-detection": (
        (
            "AutoModelForZeroShotObjectDetection",
            "MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",
        ),
    ),
    "keypoint-detection": (
        ("AutoModelForKeypointDetection", "MODEL_FOR_KEYPOINT_DETECTION_MAPPING_NAMES"),
    ),
    "image-to-image": (("AutoModelForImageToImage", "MODEL_FOR_IMAGE_TO_IMAGE_MAPPING_NAMES"),),
    "text-to-audio": (("AutoModelForTextToWaveform", "MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES"),),
    "text-to-spectrogram": (
        ("AutoModelForTextToSpectrogram", "MODEL_FOR_TEXT_TO_SPECTROGRAM_MAPPING_NAMES"),
    ),
    "audio-xvector": (("AutoModelForAudioXVector", "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES"),),
    "audio-frame-classification": (
        (
            "AutoModelForAudioFrameClassification",
            "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES",
        ),
    ),
    "masked-im": (
        ("AutoModelForMaskedImageModeling", "MODEL_FOR_MASKED_IMAGE_MODELING_MAPPING_NAMES"),
    ),
    "time-series-forecasting": (
        ("AutoModelForTimeSeriesPrediction", "MODEL_FOR_TIME_SERIES_PREDICTION_MAPPING_NAMES"),
    ),
    "reinforcement-learning": (("AutoModel", DECISION_TRANSFORMER),),
}


def mapping(name: str) -> Mapping[str, str | tuple[str, ...]]:
    """The ``model_type -> class name(s)`` mapping a head entry names."""
    if name in _OWN_MAPPINGS:
        return _OWN_MAPPINGS[name]
    return getattr(modeling_auto, name)

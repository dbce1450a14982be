from __future__ import annotations

import pytest

from graphport.errors import UnsupportedModelError
from graphport.export.tasks import Task, infer_task, parse_task


@pytest.mark.parametrize(
    ("name", "task", "with_past"),
    [
        ("feature-extraction", Task.FEATURE_EXTRACTION, False),
        ("default", Task.FEATURE_EXTRACTION, False),
        ("masked-lm", Task.FILL_MASK, False),
        ("sequence-classification", Task.TEXT_CLASSIFICATION, False),
        ("causal-lm", Task.TEXT_GENERATION, False),
        ("causal-lm-with-past", Task.TEXT_GENERATION, True),
        ("seq2seq-lm", Task.TEXT2TEXT_GENERATION, False),
        ("text-generation-with-past", Task.TEXT_GENERATION, True),
        ("  Fill-Mask ", Task.FILL_MASK, False),
    ],
)
def test_parse_task_accepts_hf_names_and_legacy_features(name, task, with_past):
    assert parse_task(name) == (task, with_past)


def test_parse_task_rejects_unknown_names_listing_the_known_ones():
    with pytest.raises(UnsupportedModelError, match=r"Unknown task 'summarise'.*fill-mask"):
        parse_task("summarise")


@pytest.mark.parametrize(
    ("model_type", "architectures", "task"),
    [
        ("bert", ["BertModel"], Task.FEATURE_EXTRACTION),
        ("bert", ["BertForMaskedLM"], Task.FILL_MASK),
        ("roberta", ["RobertaForSequenceClassification"], Task.TEXT_CLASSIFICATION),
        ("distilbert", ["DistilBertForQuestionAnswering"], Task.QUESTION_ANSWERING),
        ("deit", ["DeiTForImageClassificationWithTeacher"], Task.IMAGE_CLASSIFICATION),
        ("wav2vec2", ["Wav2Vec2ForCTC"], Task.AUTOMATIC_SPEECH_RECOGNITION),
        ("beit", ["BeitForSemanticSegmentation"], Task.SEMANTIC_SEGMENTATION),
        ("bert", ["SomethingCustom"], None),
        ("bert", None, None),
    ],
)
def test_infer_task_from_architectures(model_type, architectures, task):
    assert infer_task(model_type, architectures) is task


def test_auto_class_picks_ctc_for_wav2vec2():
    assert Task.AUTOMATIC_SPEECH_RECOGNITION.auto_class("wav2vec2").__name__ == "AutoModelForCTC"

"""Every registered (model type, task) pair exports a tiny random model and validates it
on onnxruntime and OpenVINO against eager, with the task inferred from the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphport.api.export import export_model
from graphport.models import registrations

# The pairs the families declare; the heads the generic path exports for family types are
# tested once per task (tests/exporters/test_task_heads.py).
PAIRS = [(r.model_type, task.value) for r in registrations() for task in r.family_tasks]

# The families issue 2 asks for, with the model types each must cover.
REQUIRED = {
    "bert": {
        "bert",
        "roberta",
        "xlm-roberta",
        "camembert",
        "distilbert",
        "albert",
        "electra",
        "mpnet",
        "deberta-v2",
        "roberta-prelayernorm",
        "data2vec-text",
    },
    "vit": {"vit", "deit", "beit", "dinov2", "data2vec-vision", "yolos"},
    "convnext": {"convnext", "convnextv2"},
    "swin": {"swin"},
    "resnet": {"resnet"},
    "wav2vec2": {"wav2vec2", "hubert", "data2vec-audio"},
}


def test_registry_covers_the_required_families_and_heads():
    by_family: dict[str, set[str]] = {}
    for r in registrations():
        by_family.setdefault(r.family, set()).add(r.model_type)
    for family, model_types in REQUIRED.items():
        assert model_types <= by_family.get(family, set()), family
    tasks = {task for _, task in PAIRS}
    assert tasks == {
        "feature-extraction",
        "fill-mask",
        "text-classification",
        "token-classification",
        "question-answering",
        "multiple-choice",
        "image-classification",
        "semantic-segmentation",
        "object-detection",
        "depth-estimation",
        "audio-classification",
        "automatic-speech-recognition",
        "text-generation",
        "text2text-generation",
        "image-to-text",
    }


@pytest.mark.parametrize(("model_type", "task"), PAIRS, ids=[f"{m}-{t}" for m, t in PAIRS])
def test_export_and_validate(model_type: str, task: str, tiny_checkpoint, tmp_path: Path):
    result = export_model(tiny_checkpoint(model_type, task), tmp_path / "out")
    report = result.report
    assert result.manifest.task == task, "the task is inferred from config.architectures"
    assert result.manifest.exporter["strategy"] == "torch.export"
    assert report.passed, "\n".join(report.failures())
    assert set(report.runtimes) == {"onnxruntime", "openvino"}
    cases = {r.case for r in report.results}
    assert len(cases) >= 2
    for result_case in report.results:
        assert result_case.outputs, f"{result_case.runtime}/{result_case.case} compared nothing"
    if result.manifest.kv_cache:
        # Generative exports also generate: greedy tokens equal transformers' generate()
        # on both runtimes, for a prompt alone and a padded batch of three, 24 tokens.
        checks = {(g.runtime, g.case): g for g in report.generation}
        assert {runtime for runtime, _ in checks} == {"onnxruntime", "openvino"}
        assert any(len(g.expected) == 3 for g in checks.values()), "no padded batch of 3"
        for check in checks.values():
            assert check.passed and len(check.expected[0]) == 24, check

"""A ``graphport.load`` model under lm-evaluation-harness as its Hugging Face model (the
harness takes a model instance), on a multiple-choice task defined from a local file:
the same accuracy and log-likelihoods as the eager checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_WORDS, add_causal_tokenizer

import graphport

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval (the lm-eval extra) not installed")

TASK = """\
task: graphport_tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def llama(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, export) of a tiny llama with its tokenizer."""
    from graphport.api.export import export_model

    root = tmp_path_factory.mktemp("lm-eval-llama")
    source = root / "checkpoint"
    shutil.copytree(tiny_checkpoint("llama", "text-generation"), source)
    add_causal_tokenizer(source)
    export_model(source, root / "out", validate=False)
    return source, root / "out"


def _task_dir(root: Path) -> Path:
    rng = np.random.default_rng(0)
    words = list(TINY_WORDS)
    rows = [
        {
            "context": " ".join(rng.choice(words, 6)),
            "choices": [" " + " ".join(rng.choice(words, 2)) for _ in range(3)],
            "label": int(rng.integers(0, 3)),
        }
        for _ in range(6)
    ]
    data = root / "choice.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "graphport_tiny_choice.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    return tasks


def _run(model, tokenizer, tasks: Path) -> dict:
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    harness_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=2)
    return lm_eval.simple_evaluate(
        model=harness_model,
        tasks=["graphport_tiny_choice"],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        log_samples=True,
    )


def test_a_loaded_export_runs_under_the_harness_as_eager_does(llama, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, out = llama
    tasks = _task_dir(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(out)
    export = _run(graphport.load(out), tokenizer, tasks)
    eager = _run(AutoModelForCausalLM.from_pretrained(source).eval(), tokenizer, tasks)
    name = "graphport_tiny_choice"
    assert export["results"][name]["acc,none"] == eager["results"][name]["acc,none"]

    def likelihoods(results: dict) -> np.ndarray:
        return np.array([[r[0][0] for r in s["resps"]] for s in results["samples"][name]])

    np.testing.assert_allclose(likelihoods(export), likelihoods(eager), atol=1e-4)

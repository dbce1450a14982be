"""``graphport evaluate``: each task's metrics on tiny exports, the CLI table and JSON, and
one sentence with exit code 2 for each bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_WORDS, add_causal_tokenizer, add_word_tokenizer

import graphport
from graphport.api.evaluate import EAGER
from graphport.cli import cli
from graphport.errors import UsageError
from graphport.manifest import MANIFEST_NAME

datasets = pytest.importorskip("datasets", reason="datasets (the eval extra) not installed")

WORDS = list(TINY_WORDS)


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """``exported(model_type, task)`` -> an export with its tokenizer, once per module."""
    from graphport.api.export import export_model

    cache: dict[tuple[str, str], Path] = {}

    def get(model_type: str, task: str) -> Path:
        if (model_type, task) not in cache:
            root = tmp_path_factory.mktemp(f"eval-{model_type}-{task}")
            source = root / "checkpoint"
            shutil.copytree(tiny_checkpoint(model_type, task), source)
            (add_causal_tokenizer if task == "text-generation" else add_word_tokenizer)(source)
            export_model(source, root / "out", validate=False)
            cache[model_type, task] = root / "out"
        return cache[model_type, task]

    return get


@pytest.fixture(scope="module")
def llama(exported) -> Path:
    return exported("llama", "text-generation")


@pytest.fixture(scope="module")
def perturbed(llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The llama export with its largest weight scaled: same contract, other numbers."""
    import onnx_ir as ir

    out = tmp_path_factory.mktemp("eval-perturbed") / "out"
    shutil.copytree(llama, out)
    model = ir.load(out / "model.onnx")
    weight = max(model.graph.initializers.values(), key=lambda v: v.const_value.size)
    weight.const_value = ir.tensor(weight.const_value.numpy() * 5, name=weight.name)
    ir.save(model, out / "model.onnx")
    return out


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _prose(seed: int, rows: int, words: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)) for _ in range(rows)]


def _eager_perplexity(checkpoint: Path, ids: np.ndarray) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids)).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), torch.from_numpy(ids[:, 1:]).reshape(-1)
    )
    return float(loss.exp())


def test_causal_lm_export_matches_eager(llama: Path, tmp_path: Path):
    data = _jsonl(tmp_path / "prose.jsonl", [{"text": t} for t in _prose(0, 8, 20)])
    report = graphport.evaluate(llama, data, window=16)
    assert report.task == "text-generation" and report.tokens == 160 - 0
    assert [m.name for m in report.metrics] == ["perplexity", "kl", "top1_agreement"]
    eager, export = report.rows
    assert (eager.model, eager.runtime) == (EAGER, "torch")
    assert eager.values["kl"] == 0 and eager.values["top1_agreement"] == 1
    assert export.runtime == "onnxruntime" and export.values["kl"] < 1e-6
    assert export.values["top1_agreement"] == 1
    assert export.deltas["perplexity"] == pytest.approx(0, abs=1e-3)
    # Eager's perplexity is the loss transformers computes over the same windows.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama)
    ids = tokenizer("\n\n".join(_prose(0, 8, 20)), add_special_tokens=False)["input_ids"]
    windows = np.asarray(ids, dtype=np.int64).reshape(10, 16)
    source = Path(graphport.load(llama).export_dir.manifest.source["path"])
    assert eager.values["perplexity"] == pytest.approx(_eager_perplexity(source, windows), 1e-4)


def test_a_perturbed_export_diverges(llama: Path, perturbed: Path):
    # No --data: Python's own help text (the tiny word tokenizer reads it as <unk>s, which
    # still gives each position a distribution to compare).
    report = graphport.evaluate([llama, perturbed], limit=40, window=16)
    assert report.tokens == 40 and report.examples == 3  # 16 + 16 + 8 tokens
    assert [r.model for r in report.rows] == [EAGER, str(llama), str(perturbed)]
    assert report.rows[1].values["kl"] < 1e-6
    assert report.rows[2].values["kl"] > 1e-3
    assert report.rows[2].deltas["perplexity"] != 0
    assert all(r.seconds > 0 for r in report.rows)


def test_text_classification_with_and_without_labels(exported, tmp_path: Path):
    out = exported("bert", "text-classification")
    texts = _sentences(12)
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(texts)]
    report = graphport.evaluate(out, _jsonl(tmp_path / "labelled.jsonl", rows))
    assert [m.name for m in report.metrics] == ["accuracy", "macro_f1", "agreement"]
    eager, export = report.rows
    assert export.values == pytest.approx(eager.values)
    assert export.values["agreement"] == 1.0
    assert 0 <= eager.values["accuracy"] <= 1
    # Label names go through the config's label2id.
    named = [{"text": t, "label": f"LABEL_{i % 2}"} for i, t in enumerate(texts)]
    again = graphport.evaluate(out, _jsonl(tmp_path / "named.jsonl", named))
    assert again.rows[0].values == pytest.approx(eager.values)
    unlabelled = graphport.evaluate(out, limit=5)  # the built-in text
    assert [m.name for m in unlabelled.metrics] == ["agreement"] and unlabelled.examples == 5
    with pytest.raises(UsageError, match=r"label 7 in .* outside the model's label set"):
        graphport.evaluate(out, _jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": 7}]))


def _sentences(count: int) -> list[str]:
    from conftest import WORDS as BERT_WORDS

    rng = np.random.default_rng(1)
    return [" ".join(rng.choice(BERT_WORDS[5:], 6)) for _ in range(count)]


def test_feature_extraction_cosine_and_spearman(exported, tmp_path: Path):
    out = exported("bert", "feature-extraction")
    first, second = _sentences(10), _sentences(10)[::-1]
    rows = [
        {"sentence1": a, "sentence2": b, "score": float(i)}
        for i, (a, b) in enumerate(zip(first, second, strict=True))
    ]
    report = graphport.evaluate(out, _jsonl(tmp_path / "pairs.jsonl", rows))
    eager, export = report.rows
    assert report.examples == 10
    assert export.values["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert export.values["spearman"] == pytest.approx(eager.values["spearman"], abs=1e-6)
    plain = graphport.evaluate(out, limit=4)
    assert [m.name for m in plain.metrics] == ["cosine"]
    unscored = [{"sentence1": "a", "sentence2": "b"}]
    with pytest.raises(UsageError, match=r"needs a 'score' column.*'sentence1', 'sentence2'"):
        graphport.evaluate(out, _jsonl(tmp_path / "unscored.jsonl", unscored))


def test_fill_mask_agreement(exported, tmp_path: Path):
    out = exported("bert", "fill-mask")
    data = _jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in _sentences(8)])
    report = graphport.evaluate(out, data)
    eager, export = report.rows
    assert export.values["top1_agreement"] == 1.0
    assert export.values["top5_agreement"] == 1.0
    assert export.values["accuracy"] == pytest.approx(eager.values["accuracy"])


# ---- the command line ----------------------------------------------------------------


def test_cli_table_json_and_html(llama: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(llama), "--limit", "24"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("text-generation on pydoc_data")
    assert lines[1].split() == [
        "model",
        "runtime",
        "perplexity",
        "delta",
        "kl",
        "top1_agreement",
        "time",
    ]
    assert lines[2].split()[:2] == [EAGER, "torch"] and str(llama) in lines[3]
    page = tmp_path / "eval.html"
    result = runner.invoke(
        cli, ["evaluate", str(llama), "--limit", "24", "--json", "--html", str(page)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tokens"] == 24 and [r["model"] for r in data["rows"]] == [EAGER, str(llama)]
    assert data["rows"][0]["values"]["kl"] == 0
    assert "<table>" in page.read_text(encoding="utf-8") and str(llama) in page.read_text()


def _bad(args: list[str]) -> str:
    result = CliRunner().invoke(cli, ["evaluate", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.count("\n") == 0 and message.startswith("error: ")
    return message


def test_cli_bad_input(llama: Path, exported, tmp_path: Path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "w5 w6"}\n{"text": \n', encoding="utf-8")
    assert "could not be read as json" in _bad([str(llama), "--data", str(broken)])
    wrong = _jsonl(tmp_path / "wrong.jsonl", [{"body": "w5", "title": "w6"}])
    message = _bad([str(llama), "--data", str(wrong)])
    assert "needs a text column" in message and "'body', 'title'" in message
    suffix = tmp_path / "data.xml"
    suffix.write_text("<a/>", encoding="utf-8")
    assert "does not read" in _bad([str(llama), "--data", str(suffix)])
    # An export whose task has no metric (its manifest says so; nothing else is read).
    other = tmp_path / "depth"
    shutil.copytree(llama, other)
    manifest = json.loads((other / MANIFEST_NAME).read_text())
    (other / MANIFEST_NAME).write_text(json.dumps({**manifest, "task": "depth-estimation"}))
    assert "has no metric for depth-estimation" in _bad([str(other)])
    # Nothing half-written: a bad input leaves no HTML page.
    page = tmp_path / "page.html"
    _bad([str(llama), "--data", str(broken), "--html", str(page)])
    assert not page.exists()
    classifier = exported("bert", "text-classification")
    labels = _jsonl(tmp_path / "labels.jsonl", [{"text": "hello", "label": "spam"}])
    assert "outside the model's label set" in _bad([str(classifier), "--data", str(labels)])


def test_data_without_datasets_names_the_extra(llama: Path, tmp_path: Path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    data = _jsonl(tmp_path / "prose.jsonl", [{"text": "w5 w6 w7"}])
    with pytest.raises(UsageError, match=r"needs the datasets package.*graphport\[eval\]"):
        graphport.evaluate(llama, data)
    # The built-in text needs no datasets.
    assert graphport.evaluate(llama, limit=8).tokens == 8


def test_exports_fan_out_over_ray_as_a_local_run_gives(llama: Path, perturbed: Path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    local = graphport.evaluate([llama, perturbed], limit=40, window=16)
    # No Ray running: evaluate starts a local instance (one CPU per export) and stops it.
    on_ray = graphport.evaluate([llama, perturbed], limit=40, window=16, ray=True)
    assert not ray.is_initialized()
    assert [(r.model, r.runtime) for r in on_ray.rows] == [(r.model, r.runtime) for r in local.rows]
    assert (on_ray.task, on_ray.tokens, on_ray.examples) == (local.task, 40, 3)
    for got, want in zip(on_ray.rows, local.rows, strict=True):
        assert got.values == pytest.approx(want.values, rel=1e-5, abs=1e-6)
        assert got.deltas == pytest.approx(want.deltas, rel=1e-5, abs=1e-6)


def test_ray_without_the_extra_names_it(llama: Path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    message = _bad([str(llama), "--ray"])
    assert "The --ray option needs ray; install it with `pip install 'graphport[ray]'`." in message

"""Generation with a decoder-only KV-cache export: `graphport generate` (transformers'
``generate()`` on the runtime) against eager for greedy, beam, seeded sampling, repetition
penalty and rows that end early, and its bad-input errors.

Every decoder family's greedy-token parity on onnxruntime and OpenVINO (a prompt alone
and a padded batch of 3, 24 tokens) is part of its validation, which
tests/models/test_families.py runs for every registered pair.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import add_causal_tokenizer

from graphport.api.export import export_model
from graphport.api.generate import generate_text
from graphport.cli import cli
from graphport.manifest import ExportDirectory
from graphport.runtimes.generate import left_pad
from graphport.validators.generation import GenerationCheck

VOCAB = 128


@pytest.fixture(scope="module")
def gpt2_export(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("gpt2-gen") / "checkpoint"
    shutil.copytree(tiny_checkpoint("gpt2", "text-generation"), source)
    add_causal_tokenizer(source)
    out = tmp_path_factory.mktemp("gpt2-gen-export") / "out"
    export_model(source, out)  # the task (and with it the KV cache) is inferred
    return out


@pytest.fixture(scope="module")
def eager(gpt2_export: Path):
    from transformers import AutoModelForCausalLM

    source = ExportDirectory(gpt2_export).manifest.source["path"]
    return AutoModelForCausalLM.from_pretrained(source).eval()


def _eager_tokens(model, ids: np.ndarray, mask: np.ndarray, **kwargs) -> np.ndarray:
    with torch.no_grad():
        out = model.generate(
            torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), pad_token_id=0, **kwargs
        )
    return out[:, ids.shape[1] :].numpy()


def test_manifest_records_the_kv_cache_contract(gpt2_export: Path):
    manifest = ExportDirectory(gpt2_export).manifest
    assert manifest.task == "text-generation"
    contract = manifest.kv_cache
    assert contract["num_layers"] == 2 and contract["num_kv_heads"] == 4
    assert contract["head_dim"] == 8 and contract["dtype"] == "float32"
    graph = manifest.graph("model")
    inputs = {t.name: t.shape for t in graph.inputs}
    assert inputs["attention_mask"] == ["batch", "total_sequence"]
    assert inputs["past_key_values.1.value"] == ["batch", 4, "past_sequence", 8]
    outputs = [t.name for t in graph.outputs]
    assert outputs == ["logits"] + [
        f"present.{i}.{kind}" for i in range(2) for kind in ("key", "value")
    ]


def test_validation_compared_greedy_tokens_on_both_runtimes(gpt2_export: Path):
    validation = ExportDirectory(gpt2_export).manifest.validation
    assert validation["passed"]
    generation = validation["generation"]
    assert set(generation) == {
        f"{runtime} / {case}"
        for runtime in ("onnxruntime", "openvino")
        for case in ("single prompt", "padded batch of 3")
    }
    assert all(g["tokens"] == 24 and g["first_difference"] is None for g in generation.values())


def _cli_tokens(export: Path, prompts: list[str], *args: str) -> list[list[int]]:
    """``graphport generate --json`` token ids, one list per prompt."""
    result = CliRunner().invoke(cli, ["generate", str(export), *prompts, *args, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    return [row["token_ids"] for row in (payload if len(prompts) > 1 else [payload])]


def _trimmed(tokens: np.ndarray, eos: int = 2) -> list[list[int]]:
    rows = []
    for row in tokens.tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


TWO_PROMPTS = (["w5 w6 w7 w5 w6", "w9 w10"], [[5, 6, 7, 5, 6], [9, 10]])


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_repetition_penalty_matches_transformers(gpt2_export: Path, eager, runtime: str):
    texts, prompts = TWO_PROMPTS
    ids, mask = left_pad(prompts, pad_token_id=0)
    expected = _eager_tokens(eager, ids, mask, max_new_tokens=16, repetition_penalty=1.8)
    args = ["--max-new-tokens", "16", "--repetition-penalty", "1.8", "--runtime", runtime]
    assert _cli_tokens(gpt2_export, texts, *args) == _trimmed(expected)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_beam_search_matches_transformers(gpt2_export: Path, eager, runtime: str):
    texts, prompts = TWO_PROMPTS
    ids, mask = left_pad(prompts, pad_token_id=0)
    expected = _eager_tokens(eager, ids, mask, max_new_tokens=10, num_beams=3)
    args = ["--max-new-tokens", "10", "--num-beams", "3", "--runtime", runtime]
    assert _cli_tokens(gpt2_export, texts, *args) == _trimmed(expected)


def test_sampling_is_seeded_as_transformers_samples(gpt2_export: Path, eager):
    texts, prompts = TWO_PROMPTS
    ids, mask = left_pad(prompts, pad_token_id=0)
    sample = ["--max-new-tokens", "12", "--sample", "--temperature", "1.5", "--seed", "3"]
    sampled = _cli_tokens(gpt2_export, texts, *sample)
    assert _cli_tokens(gpt2_export, texts, *sample) == sampled
    torch.manual_seed(3)
    expected = _eager_tokens(eager, ids, mask, max_new_tokens=12, do_sample=True, temperature=1.5)
    assert sampled == _trimmed(expected)
    greedy = _cli_tokens(gpt2_export, texts, "--max-new-tokens", "12")
    assert sampled != greedy, "high-temperature sampling followed argmax"
    narrow = ["--max-new-tokens", "12", "--sample", "--top-k", "1", "--seed", "1"]
    assert _cli_tokens(gpt2_export, texts, *narrow) == greedy


def test_rows_stop_at_eos_and_are_padded(gpt2_export: Path, eager, tmp_path: Path):
    ids, mask = left_pad([[5, 6, 7], [20, 21]], pad_token_id=0)
    first = int(_eager_tokens(eager, ids, mask, max_new_tokens=1)[0, 0])
    copy = tmp_path / "early-eos"
    shutil.copytree(gpt2_export, copy)
    (copy / "generation_config.json").write_text(
        json.dumps({"eos_token_id": first, "pad_token_id": 0})
    )
    result = generate_text(copy, ["w5 w6 w7", "w20 w21"], max_new_tokens=10)
    tokens = np.array(result.tokens)
    assert tokens[0, 0] == first
    assert (tokens[0, 1:] == 0).all(), "a finished row continues with the pad token"
    expected = _eager_tokens(eager, ids, mask, max_new_tokens=10, eos_token_id=first)
    np.testing.assert_array_equal(tokens, expected)
    assert result.trimmed(0) == [first]


def test_first_difference_names_the_step():
    same = GenerationCheck("onnxruntime", "case", [[1, 2, 3]], [[1, 2, 3]])
    assert same.passed and same.first_difference is None
    differs = GenerationCheck("onnxruntime", "case", [[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 9, 6]])
    assert not differs.passed and differs.first_difference == 1
    shorter = GenerationCheck("openvino", "case", [[1, 2, 3]], [[1, 2]])
    assert shorter.first_difference == 2


def test_cli_generate_json_matches_eager(gpt2_export: Path, eager):
    result = CliRunner().invoke(
        cli, ["generate", str(gpt2_export), "w5 w6 w7 w8", "--max-new-tokens", "8", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    ids = np.array([[5, 6, 7, 8]])
    expected = _eager_tokens(eager, ids, np.ones_like(ids), max_new_tokens=8)[0].tolist()
    if 2 in expected:
        expected = expected[: expected.index(2) + 1]
    assert payload["token_ids"] == expected
    assert payload["text"] == " ".join(f"w{t}" for t in expected if t > 3)


def test_cli_generate_batch_and_text_output(gpt2_export: Path):
    result = CliRunner().invoke(
        cli, ["generate", str(gpt2_export), "w5 w6", "w9", "--max-new-tokens", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(len(r["token_ids"]) <= 4 for r in rows)
    plain = CliRunner().invoke(
        cli, ["generate", str(gpt2_export), "w5 w6", "--max-new-tokens", "3"]
    )
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.strip().startswith("w")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-new-tokens", "0"], "must be positive"),
        (["--max-new-tokens", "-3"], "must be positive"),
        (["--runtime", "tensorflow"], "Invalid value for '--runtime'"),
        (["--max-new-tokens", "500"], "exceeds the model's 128 positions"),
        (["--num-beams", "0"], "must be at least 1"),
        (["--top-p", "1.5"], "top-p must be in (0, 1]"),
    ],
)
def test_cli_generate_bad_input(gpt2_export: Path, args: list[str], message: str):
    result = CliRunner().invoke(cli, ["generate", str(gpt2_export), "w5 w6", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_cli_generate_needs_a_decoder(bert_export: Path):
    result = CliRunner().invoke(cli, ["generate", str(bert_export), "hello"])
    assert result.exit_code != 0
    assert "has no decoder with a KV cache" in result.output


def test_cli_generate_beam_search_needs_a_kv_cache(tiny_checkpoint, eager, tmp_path: Path):
    source = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint("gpt2", "text-generation"), source)
    add_causal_tokenizer(source)
    out = tmp_path / "no-cache"
    export_model(source, out, task="text-generation", validate=False)  # given: no cache
    assert ExportDirectory(out).manifest.kv_cache is None
    result = CliRunner().invoke(cli, ["generate", str(out), "w5 w6", "--num-beams", "3"])
    assert result.exit_code == 2
    assert "has no KV cache, so beam search cannot reorder one" in result.output
    assert "Traceback" not in result.output
    # Greedy still runs, the graph rerun on the whole sequence each step.
    ids = np.array([[5, 6]])
    expected = _eager_tokens(eager, ids, np.ones_like(ids), max_new_tokens=5)
    assert _cli_tokens(out, ["w5 w6"], "--max-new-tokens", "5") == _trimmed(expected)


def test_cli_generate_needs_a_tokenizer(gpt2_export: Path, tmp_path: Path):
    copy = tmp_path / "no-tokenizer"
    shutil.copytree(gpt2_export, copy)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (copy / name).unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["generate", str(copy), "w5"])
    assert result.exit_code != 0
    assert "has no tokenizer files" in result.output


def test_eos_outside_the_vocabulary_is_ignored_as_transformers_does(
    gpt2_export: Path, eager, tmp_path: Path, caplog
):
    # A small decoder that kept GPT-2's end token 50256 over a vocabulary of 128; the
    # minimum length bans the end token at the first steps, which indexed past the logits.
    copy = tmp_path / "big-eos"
    shutil.copytree(gpt2_export, copy)
    (copy / "generation_config.json").write_text(
        json.dumps({"eos_token_id": 50256, "pad_token_id": 0, "min_new_tokens": 2})
    )
    result = CliRunner().invoke(
        cli, ["generate", str(copy), "w5 w6 w7", "--max-new-tokens", "6", "--json"]
    )
    assert result.exit_code == 0, result.output
    ids = np.array([[5, 6, 7]])
    expected = _eager_tokens(
        eager, ids, np.ones_like(ids), max_new_tokens=6, eos_token_id=50256, min_new_tokens=2
    )
    assert json.loads(result.stdout)["token_ids"] == expected[0].tolist()
    assert "outside the model's vocabulary of 128 tokens" in caplog.text

"""onnxruntime-genai runs graphport's ONNX decoder exports from their genai_config.json:
``onnxruntime_genai.Model(OUT)`` decodes eager's greedy tokens from the plain graph and
from -O 2's GroupQueryAttention graph on a shared buffer, and ``graphport generate``
takes it (``--engine auto``) where it can do what is asked, saying which engine ran."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import add_causal_tokenizer
from transformers import AutoModelForCausalLM

from graphport.api.export import export_model
from graphport.api.generate import choose_engine, generate_text
from graphport.api.transform import optimize_export
from graphport.cli import cli
from graphport.export.genai_config import GENAI_CONFIG, genai_unsupported
from graphport.manifest import ExportDirectory, Manifest, TensorSpec
from graphport.models.tiny import save_tiny_checkpoint
from graphport.runtimes.engines import OnnxruntimeGenaiEngine, Settings
from graphport.runtimes.generate import left_pad

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai not installed")

NEW_TOKENS = 12
ROWS = [[5, 9, 12, 7, 3, 11], [3, 8], [20, 21, 22, 23], [4, 5]]  # two of one length
# (model type, -O 2); qwen2's q/k/v projections carry biases (-m slow: the suite's budget)
CASES = [
    ("llama", False),
    ("llama", True),
    pytest.param(("qwen2", False), marks=pytest.mark.slow),
    pytest.param(("qwen2", True), marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, tuple[Path, Path]] = {}

    def make(model_type: str) -> tuple[Path, Path]:
        if model_type not in cache:
            root = tmp_path_factory.mktemp(f"genai-{model_type}")
            checkpoint = save_tiny_checkpoint(model_type, root / "checkpoint", "text-generation")
            add_causal_tokenizer(checkpoint)
            export_model(checkpoint, root / "onnx", validate=False)
            cache[model_type] = (checkpoint, root / "onnx")
        return cache[model_type]

    return make


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}{'-O2' if c[1] else ''}")
def export(request, checkpoints) -> tuple[Path, Path, bool]:
    model_type, fused = request.param
    checkpoint, plain = checkpoints(model_type)
    if not fused:
        return checkpoint, plain, False
    out = plain.parent / "o2"
    if not out.exists():
        optimize_export(plain, out, level=2)  # validated, greedy generation included
    return checkpoint, out, True


@pytest.fixture(scope="module")
def llama(checkpoints) -> Path:
    return checkpoints("llama")[1]


def _eager(checkpoint: Path, rows: list[list[int]], **kwargs) -> list[list[int]]:
    """transformers' generate() on the left-padded batch: the new tokens."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ids, mask = left_pad(rows, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(
            torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
            **kwargs,
        )
    return out[:, ids.shape[1] :].tolist()


def test_the_export_carries_its_genai_config(export):
    _, out, fused = export
    manifest = ExportDirectory(out).manifest
    assert GENAI_CONFIG in manifest.files
    config = json.loads((out / GENAI_CONFIG).read_text())
    decoder = config["model"]["decoder"]
    assert config["model"]["type"] == "decoder" and decoder["filename"] == "model.onnx"
    contract = manifest.kv_cache
    assert decoder["num_hidden_layers"] == contract["num_layers"]
    assert decoder["num_key_value_heads"] == contract["num_kv_heads"]
    assert decoder["head_size"] == contract["head_dim"]
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert decoder["outputs"]["present_value_names"] == "present.%d.value"
    assert config["model"]["context_length"] == 128
    # one buffer as past and present only where -O 2's kernels allow it
    assert config["search"]["past_present_share_buffer"] is fused
    assert config["search"]["do_sample"] is False


def test_genai_generator_decodes_eagers_greedy_tokens(export):
    checkpoint, out, _ = export
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    prompt = ROWS[0]
    params.set_search_options(max_length=len(prompt) + NEW_TOKENS, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    assert generator.get_sequence(0)[len(prompt) :].tolist() == _eager(checkpoint, [prompt])[0]


def test_the_engine_decodes_a_padded_batch_as_eager_does(export):
    checkpoint, out, _ = export
    engine = OnnxruntimeGenaiEngine(ExportDirectory(out), pad_token_id=0)
    tokens = engine.generate(ROWS, Settings(max_new_tokens=NEW_TOKENS, pad_token_id=0))
    assert tokens == _eager(checkpoint, ROWS)


def _cli(out: Path, *args: str):
    return CliRunner().invoke(cli, ["generate", str(out), *args])


def test_generate_takes_genai_and_says_so(llama: Path, checkpoints):
    checkpoint = checkpoints("llama")[0]
    result = _cli(llama, "w5 w9 w12 w7", "w3 w8", "--max-new-tokens", str(NEW_TOKENS), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["engine"] for row in rows] == ["onnxruntime-genai"] * 2
    expected = _eager(checkpoint, [[5, 9, 12, 7], [3, 8]])
    assert [row["token_ids"] for row in rows] == [
        row[: row.index(2) + 1] if 2 in row else row for row in expected
    ]
    plain = _cli(llama, "w5 w9", "--max-new-tokens", "3")
    assert plain.exit_code == 0, plain.output
    assert "on onnxruntime with onnxruntime-genai]" in plain.stderr
    result = generate_text(llama, ["w5 w9 w12 w7"], max_new_tokens=4)
    assert result.engine == "onnxruntime-genai" and len(result.tokens[0]) == 4


@pytest.mark.parametrize(
    ("kwargs", "seed", "runtime"),
    [
        ({"num_beams": 2}, None, None),  # beam search
        ({"do_sample": True}, 3, None),  # torch's seeded sampling, which eager repeats
        ({"min_new_tokens": 3}, None, None),  # a setting genai does not take
        ({}, None, "openvino"),  # another runtime
    ],
)
def test_auto_leaves_the_rest_to_transformers(llama: Path, kwargs, seed, runtime):
    directory = ExportDirectory(llama)
    assert choose_engine(directory, "auto", runtime, None, kwargs, seed) == "transformers"
    assert choose_engine(directory, "auto", None, None, {"do_sample": True}) != "transformers"


def test_auto_follows_the_generation_config(llama: Path, tmp_path: Path):
    copy = tmp_path / "beams"
    shutil.copytree(llama, copy)
    (copy / "generation_config.json").write_text(json.dumps({"num_beams": 2, "eos_token_id": 2}))
    assert choose_engine(ExportDirectory(copy)) == "transformers"


def test_an_end_token_outside_the_vocabulary_stays_with_transformers(llama, tmp_path: Path):
    copy = tmp_path / "big-eos"  # genai would end on the pad token; generate() never ends
    shutil.copytree(llama, copy)
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": 50256}))
    assert choose_engine(ExportDirectory(copy)) == "transformers"


def test_genai_sampling_is_seeded_by_its_own_sampler(llama: Path):
    sample = ["--max-new-tokens", "12", "--sample", "--temperature", "1.5", "--seed", "3"]
    runs = [_cli(llama, "w5 w9", *sample, "--engine", "onnxruntime-genai", "--json")]
    runs.append(_cli(llama, "w5 w9", *sample, "--engine", "onnxruntime-genai", "--json"))
    assert all(r.exit_code == 0 for r in runs), runs[0].output
    sampled = [json.loads(r.stdout)["token_ids"] for r in runs]
    assert sampled[0] == sampled[1]
    greedy = json.loads(_cli(llama, "w5 w9", "--max-new-tokens", "12", "--json").stdout)
    assert sampled[0] != greedy["token_ids"], "high-temperature sampling followed argmax"


def test_rows_stop_at_the_generation_configs_eos(llama: Path, checkpoints, tmp_path: Path):
    first = _eager(checkpoints("llama")[0], [[5, 6, 7]])[0][0]
    copy = tmp_path / "early-eos"
    shutil.copytree(llama, copy)  # genai_config.json keeps the exported eos: read as now
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": first}))
    result = generate_text(copy, ["w5 w6 w7", "w20 w21"], max_new_tokens=6)
    assert result.engine == "onnxruntime-genai"
    assert result.tokens[0] == [first] + [0] * 5, "a finished row continues with the pad"
    assert result.trimmed(0) == [first] and len(result.tokens[1]) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "onnxruntime-genai", "--num-beams", "2"], "cannot do beam search"),
        (["--engine", "openvino-genai"], "is not a stateful OpenVINO decoder"),
        (["--engine", "onnxruntime-genai", "--runtime", "openvino"], "another runtime"),
        (["--max-new-tokens", "127"], "exceeds the model's 128 positions"),
    ],
)
def test_bad_input_is_one_sentence(llama: Path, args: list[str], message: str):
    result = _cli(llama, "w5 w9", "w3 w8 w9 w10", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    if "--engine" in args and "--max-new-tokens" not in args:
        assert "transformers' generate() can" in result.output


def test_an_engine_not_installed_names_its_extra(llama: Path, monkeypatch):
    monkeypatch.setattr("graphport.api.generate.engine_installed", lambda name: False)
    result = _cli(llama, "w5", "--engine", "onnxruntime-genai")
    assert result.exit_code == 2
    assert "it is not installed; pip install graphport[genai]" in result.output
    assert _cli(llama, "w5", "--max-new-tokens", "2", "--json").exit_code == 0  # auto


def test_an_export_without_its_genai_config(llama: Path, tmp_path: Path):
    copy = tmp_path / "old"
    shutil.copytree(llama, copy)
    (copy / GENAI_CONFIG).unlink()
    result = _cli(copy, "w5", "--engine", "onnxruntime-genai")
    assert result.exit_code == 2 and f"has no {GENAI_CONFIG}" in result.output
    assert json.loads(_cli(copy, "w5", "--json").stdout)["engine"] == "transformers"


def test_unsupported_exports_name_the_part(llama: Path, bert_export: Path):
    manifest = ExportDirectory(llama).manifest
    assert genai_unsupported(manifest) is None
    extra = Manifest.from_dict(manifest.to_dict())
    extra.graphs[0].inputs.append(TensorSpec("token_type_ids", "int64", ["batch", "sequence"]))
    assert "takes the input 'token_type_ids'" in genai_unsupported(extra)
    bert = ExportDirectory(bert_export).manifest
    assert "not a decoder-only language model" in genai_unsupported(bert)
    assert not (bert_export / GENAI_CONFIG).exists()

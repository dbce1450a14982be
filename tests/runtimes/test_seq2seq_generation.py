"""Encoder-decoder exports: an encoder and a decoder graph, and transformers'
``generate()`` on them (``graphport.load``, which ``graphport generate`` runs) that gives
eager's greedy tokens, on onnxruntime and on OpenVINO.

Each family is a tiny random model built here, saved with the generation settings its
real checkpoints use (forced tokens, banned words, Whisper's prompt and suppressed
tokens), and exported with the task inferred from ``config.architectures``. Its validation
report compares 24 greedy tokens for one input and a padded batch of 3 on both runtimes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import add_seq2seq_tokenizer

from graphport.api.export import ExportResult, export_model
from graphport.api.generate import generate_text
from graphport.manifest import ExportDirectory
from graphport.models.tiny import tiny_model
from graphport.runtimes.generate import eager_generate
from graphport.runtimes.model_factory import load_model

RUNTIMES = {"onnxruntime", "openvino"}

# Whisper's special tokens, inside the tiny vocabulary (start 3, end of text 2).
WHISPER_LANGUAGES = {"<|en|>": 120, "<|fr|>": 121, "<|de|>": 122}
WHISPER_TASKS = {"transcribe": 123, "translate": 124}
WHISPER_NO_TIMESTAMPS = 125


@dataclasses.dataclass(frozen=True)
class Case:
    model_type: str
    task: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    generation: dict[str, Any] = dataclasses.field(default_factory=dict)
    tokenizer: bool = False


CASES = {
    "t5": Case("t5", "text2text-generation"),
    "t5-v1.1": Case(
        "t5",
        "text2text-generation",
        {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    ),
    "mt5": Case("mt5", "text2text-generation"),
    # bart-large-cnn's rules (shorter): a forced BOS, no repeated trigram, a minimum length.
    "bart": Case(
        "bart",
        "text2text-generation",
        generation={"forced_bos_token_id": 0, "no_repeat_ngram_size": 3, "min_length": 12},
        tokenizer=True,
    ),
    "mbart": Case("mbart", "text2text-generation"),
    # OPUS-MT bans its pad token, which is also its decoder start.
    "marian": Case("marian", "text2text-generation", generation={"bad_words_ids": [[127]]}),
    # M2M-100 and NLLB (an m2m_100 checkpoint) force the target language as the first token.
    "m2m_100": Case("m2m_100", "text2text-generation", generation={"forced_bos_token_id": 100}),
    "blenderbot-small": Case("blenderbot-small", "text2text-generation"),
    # A multilingual Whisper's generation config: language detected per input, then the
    # task, no timestamps; suppressed tokens, and end of text barred at the start.
    "whisper": Case(
        "whisper",
        "automatic-speech-recognition",
        generation={
            "lang_to_id": WHISPER_LANGUAGES,
            "task_to_id": WHISPER_TASKS,
            "no_timestamps_token_id": WHISPER_NO_TIMESTAMPS,
            "is_multilingual": True,
            "forced_decoder_ids": [[1, None], [2, WHISPER_TASKS["transcribe"]]],
            "suppress_tokens": [126, 127],
            "begin_suppress_tokens": [2, 10],
        },
    ),
    "vision-encoder-decoder": Case("vision-encoder-decoder", "image-to-text"),
}


def save_checkpoint(case: Case, path: Path) -> Path:
    model = tiny_model(case.model_type, case.task, **case.config)
    for key, value in case.generation.items():
        setattr(model.generation_config, key, value)
    # A config marked as derived from the model's drops Whisper's own keys when loaded.
    model.generation_config._from_model_config = False
    model.save_pretrained(path)
    if case.tokenizer:
        add_seq2seq_tokenizer(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """``exported(name)`` -> the export of ``CASES[name]``, made once per module."""
    cache: dict[str, ExportResult] = {}

    def make(name: str) -> ExportResult:
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            checkpoint = save_checkpoint(CASES[name], root / "checkpoint")
            cache[name] = export_model(checkpoint, root / "out")  # the task is inferred
        return cache[name]

    return make


@pytest.mark.parametrize("name", list(CASES))
def test_greedy_tokens_match_transformers_on_both_runtimes(name: str, exported):
    result = exported(name)
    report = result.report
    assert report.passed, "\n".join(report.failures())
    assert result.manifest.task == CASES[name].task
    assert [g.name for g in result.manifest.graphs] == ["encoder", "decoder"]
    assert set(report.runtimes) == RUNTIMES
    checks = {(g.runtime, g.case): g for g in report.generation}
    labels = {case for _, case in checks}
    assert {runtime for runtime, _ in checks} == RUNTIMES and len(labels) == 2
    for check in checks.values():
        assert check.passed and check.actual == check.expected
        assert all(len(row) == 24 for row in check.expected)
    assert sorted(len(check.expected) for check in checks.values()) == [1, 1, 3, 3]


def test_manifest_records_the_decoder_contract(exported):
    result = exported("bart")
    cases = {r.case for r in result.report.results}
    assert "encoder / real sentences" in cases, "a tokenizer's sentences feed the encoder"
    manifest = result.manifest
    contract = manifest.kv_cache
    assert contract["graph"] == "decoder" and contract["encoder_graph"] == "encoder"
    assert contract["layout"] == ["batch", "kv_heads", "sequence", "head_dim"]
    assert (contract["num_layers"], contract["num_kv_heads"], contract["head_dim"]) == (2, 4, 8)
    assert contract["encoder_attention_mask"] is True
    encoder = manifest.graph("encoder")
    assert [t.name for t in encoder.inputs] == ["input_ids", "attention_mask"]
    assert encoder.outputs[0].name == "last_hidden_state"
    assert encoder.outputs[0].shape == ["batch", "encoder_sequence", 32]
    decoder = {t.name: t.shape for t in manifest.graph("decoder").inputs}
    assert decoder["decoder_input_ids"] == ["batch", "decoder_sequence"]
    assert decoder["encoder_hidden_states"] == ["batch", "encoder_sequence", 32]
    assert decoder["past_key_values.1.value"] == ["batch", 4, "past_decoder_sequence", 8]
    outputs = [t.name for t in manifest.graph("decoder").outputs]
    assert outputs == ["logits"] + [f"present.{i}.{k}" for i in range(2) for k in ("key", "value")]


def test_whisper_and_images_feed_the_decoder_no_encoder_mask(exported):
    for name, encoder_input in (
        ("whisper", "input_features"),
        ("vision-encoder-decoder", "pixel_values"),
    ):
        manifest = exported(name).manifest
        assert [t.name for t in manifest.graph("encoder").inputs] == [encoder_input]
        decoder_inputs = [t.name for t in manifest.graph("decoder").inputs]
        assert "encoder_attention_mask" not in decoder_inputs
        assert manifest.kv_cache["encoder_attention_mask"] is False


def test_whisper_detects_the_language_per_input(exported):
    from transformers import WhisperForConditionalGeneration

    directory = ExportDirectory(exported("whisper").path)
    model = load_model(directory, "onnxruntime")
    features = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (4, 16, 32)))
    features = features.float()
    eager = WhisperForConditionalGeneration.from_pretrained(directory.manifest.source["path"])
    with torch.no_grad():
        expected = eager.eval().generate(features, max_new_tokens=4)
        actual = model.generate(features, max_new_tokens=4)
    assert torch.equal(actual, expected)
    languages = eager.generate(features, max_new_tokens=1, return_dict_in_generate=True)
    assert set(languages.sequences[:, 1].tolist()) <= set(WHISPER_LANGUAGES.values())


@pytest.mark.parametrize(
    "settings",
    [
        {"no_timestamps_token_id": 125},
        {"forced_decoder_ids": [[1, 121], [2, 124]]},
        {"language": "de", "task": "translate"},
        {"language": "english"},
    ],
)
def test_whisper_language_and_task_prompts_match_transformers(settings: dict[str, Any], exported):
    from transformers import WhisperForConditionalGeneration

    directory = ExportDirectory(exported("whisper").path)
    model = load_model(directory, "openvino")
    eager = WhisperForConditionalGeneration.from_pretrained(directory.manifest.source["path"])
    for config in (model.generation_config, eager.generation_config):
        config.forced_decoder_ids = None
        for key, value in settings.items():
            setattr(config, key, value)
    features = torch.from_numpy(np.random.default_rng(2).uniform(-1, 1, (2, 16, 32))).float()
    with torch.no_grad():
        expected = eager.eval().generate(features, max_new_tokens=6)
        actual = model.generate(features, max_new_tokens=6)
    assert torch.equal(actual, expected)


def test_generate_text_right_pads_an_encoder_input(exported):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    directory = ExportDirectory(exported("bart").path)
    prompts = ["w5 w6 w7 w8 w9", "w20 w21"]
    result = generate_text(directory, prompts, "openvino", max_new_tokens=14)
    tokenizer = AutoTokenizer.from_pretrained(directory.path)
    encoded = tokenizer(prompts, padding=True, return_tensors="np")
    inputs = {k: encoded[k] for k in ("input_ids", "attention_mask")}
    assert inputs["attention_mask"][1, -1] == 0, "the tokenizer pads on the right"
    source = directory.manifest.source["path"]
    model = AutoModelForSeq2SeqLM.from_pretrained(source).eval()
    expected = eager_generate(model, inputs, 14, pad_token_id=1)
    # bart's rules (forced BOS, no repeated trigram, minimum length) from its config.
    np.testing.assert_array_equal(np.array(result.tokens), expected)
    assert len(result.texts) == 2

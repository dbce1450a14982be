"""Exports of several graphs through graphport.load: encoder-decoders run transformers' own
generate() on the encoder and decoder graphs (an EncoderDecoderCache of the runtime's
arrays) and equal eager token for token; Whisper's generate and speech recognition
pipeline, image-to-text through graphport.pipeline; two-tower exports return eager's
CLIPOutput / ClapOutput and serve the zero-shot classification pipelines."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from conftest import add_image_processor, add_seq2seq_tokenizer, add_word_tokenizer
from transformers import EncoderDecoderCache
from transformers.modeling_outputs import Seq2SeqLMOutput

import graphport
from graphport.api.export import export_model
from graphport.models.tiny import tiny_model

RUNTIMES = ["onnxruntime", "openvino"]

# Whisper's special tokens inside the tiny vocabulary (start 3, end of text 2), as in
# tests/runtimes/test_seq2seq_generation.py; ids from 126 would read as timestamps.
WHISPER_SPECIAL = {
    1: "<|startoftext|>",
    2: "<|endoftext|>",
    3: "<|startoftranscript|>",
    120: "<|en|>",
    121: "<|fr|>",
    122: "<|de|>",
    123: "<|transcribe|>",
    124: "<|translate|>",
    125: "<|notimestamps|>",
    126: "<|startofprev|>",
    127: "<|nocaptions|>",
}
WHISPER_GENERATION = {
    "lang_to_id": {"<|en|>": 120, "<|fr|>": 121, "<|de|>": 122},
    "task_to_id": {"transcribe": 123, "translate": 124},
    "no_timestamps_token_id": 125,
    "is_multilingual": True,
    "forced_decoder_ids": [[1, None], [2, 123]],
    "suppress_tokens": [126, 127],
    "begin_suppress_tokens": [2, 10],
}


@dataclasses.dataclass(frozen=True)
class Case:
    model_type: str
    task: str
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    generation: dict[str, Any] = dataclasses.field(default_factory=dict)


CASES = {
    "t5": Case("t5", "text2text-generation"),
    # bart-large-cnn's rules: a forced BOS, no repeated trigram, a minimum length.
    "bart": Case(
        "bart",
        "text2text-generation",
        generation={"forced_bos_token_id": 0, "no_repeat_ngram_size": 3, "min_length": 8},
    ),
    # 100 frames: WhisperFeatureExtractor(chunk_length=1) at 16 kHz, hop 160.
    "whisper": Case(
        "whisper", "automatic-speech-recognition", {"max_source_positions": 50}, WHISPER_GENERATION
    ),
    "vision-encoder-decoder": Case("vision-encoder-decoder", "image-to-text"),
    "vision-text-dual-encoder": Case("vision-text-dual-encoder", "feature-extraction"),
    "clap": Case("clap", "feature-extraction"),
}


def add_whisper_preprocessors(checkpoint: Path) -> None:
    """A byte-level WhisperTokenizer over the tiny vocabulary and a 1 s feature extractor."""
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words = iter(["!", *letters, *(f"Ġ{c}" for c in letters), *(f"Ġw{i}" for i in range(64))])
    vocab = {WHISPER_SPECIAL.get(i) or next(words): i for i in range(128)}
    end = WHISPER_SPECIAL[2]
    tokenizer = WhisperTokenizer(
        vocab=vocab, merges=[], unk_token=end, bos_token=end, eos_token=end, pad_token=end
    )
    specials = [token for i, token in sorted(WHISPER_SPECIAL.items()) if i != 2]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.save_pretrained(checkpoint)
    WhisperFeatureExtractor(feature_size=16, chunk_length=1).save_pretrained(checkpoint)


def add_clap_feature_extractor(checkpoint: Path) -> None:
    from transformers import ClapFeatureExtractor

    # An unfused CLAP's extractor (a clip under 10 s is padded, not cropped at random).
    ClapFeatureExtractor(feature_size=16, truncation="rand_trunc").save_pretrained(checkpoint)


PREPROCESSORS = {
    "bart": [add_seq2seq_tokenizer],
    "whisper": [add_whisper_preprocessors],
    "vision-encoder-decoder": [add_seq2seq_tokenizer, add_image_processor],
    "vision-text-dual-encoder": [add_word_tokenizer, add_image_processor],
    "clap": [add_word_tokenizer, add_clap_feature_extractor],
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """``exported(name)`` -> (eager model, export directory) of ``CASES[name]``, once."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}

    def make(name: str) -> tuple[torch.nn.Module, Path]:
        if name not in cache:
            case = CASES[name]
            root = tmp_path_factory.mktemp(name)
            model = tiny_model(case.model_type, case.task, **case.config)
            if model.can_generate():
                for key, value in case.generation.items():
                    setattr(model.generation_config, key, value)
                model.generation_config._from_model_config = False  # keep Whisper's keys
            for scale in ("logit_scale", "logit_scale_a", "logit_scale_t"):
                if hasattr(model, scale):  # trained scales, not the config's initial value
                    getattr(model, scale).data.fill_(3.0 + len(scale) / 10)
            model.save_pretrained(root / "checkpoint")
            for add in PREPROCESSORS.get(name, ()):
                add(root / "checkpoint")
            export_model(root / "checkpoint", root / "out", validate=False)
            cache[name] = (model, root / "out")
        return cache[name]

    return make


ENCODER_INPUTS = {  # a right-padded batch, as encoder tokenizers pad: 5 and 3 tokens
    "input_ids": torch.tensor([[5, 6, 7, 8, 2], [9, 10, 2, 1, 1]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
}
DECODING = [{}, {"num_beams": 3}, {"num_beams": 3, "num_return_sequences": 2}, {"do_sample": True}]


def assert_generates_as_eager(eager, model, inputs: dict, cases=DECODING, **kwargs) -> None:
    for options in cases:
        arguments = {"max_new_tokens": 10, **kwargs, **options}
        torch.manual_seed(0)
        with torch.no_grad():
            expected = eager.generate(**inputs, **arguments)
        torch.manual_seed(0)
        actual = model.generate(**inputs, **arguments)
        assert torch.equal(actual, expected), f"{options}: {actual} != {expected}"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", ["t5", "bart"])
def test_generate_equals_eager(exported, name: str, runtime: str):
    eager, out = exported(name)
    model = graphport.load(out, runtime=runtime)
    assert type(model).__name__ == "RuntimeModelForSeq2SeqLM" and model.can_generate()
    assert model.main_input_name == "input_ids"
    assert_generates_as_eager(eager, model, ENCODER_INPUTS)


def test_the_cache_holds_the_runtimes_arrays(exported, monkeypatch: pytest.MonkeyPatch):
    _, out = exported("t5")
    model = graphport.load(out)
    calls: list[tuple[dict, dict]] = []
    run = model.runtime.run

    def recording(feeds):
        results = run(feeds)
        calls.append((feeds, results))
        return results

    monkeypatch.setattr(model.runtime, "run", recording)
    start = torch.zeros((2, 1), dtype=torch.long)
    first = model(**ENCODER_INPUTS, decoder_input_ids=start)
    assert isinstance(first, Seq2SeqLMOutput) and first.logits.shape == (2, 1, 128)
    assert isinstance(first.cache, EncoderDecoderCache)
    assert first.cache.cross_attention_cache.get_seq_length() == 0, "the graph recomputes it"
    np.testing.assert_array_equal(
        calls[0][0]["encoder_attention_mask"], ENCODER_INPUTS["attention_mask"]
    )
    present = calls[0][1]["present.0.key"]
    assert np.shares_memory(first.cache.self_attention_cache.layers[0].keys.numpy(), present)
    second = model(
        encoder_outputs=(first.encoder_last_hidden_state,),
        attention_mask=ENCODER_INPUTS["attention_mask"],
        decoder_input_ids=torch.tensor([[4], [5]]),
        cache=first.cache,
    )
    assert np.shares_memory(calls[1][0]["past_key_values.0.key"], present), "the past was copied"
    assert second.cache.get_seq_length() == 2


def test_beam_search_feeds_the_expanded_encoder_states(exported, monkeypatch):
    _, out = exported("bart")
    model = graphport.load(out)
    encoder_batches, decoder_batches = [], []
    encode, decode = model.encoder.runtime.run, model.runtime.run
    monkeypatch.setattr(
        model.encoder.runtime,
        "run",
        lambda f: encoder_batches.append(len(f["input_ids"])) or encode(f),
    )

    def recording(feeds):
        assert len(feeds["encoder_hidden_states"]) == len(feeds["decoder_input_ids"])
        decoder_batches.append(len(feeds["encoder_hidden_states"]))
        return decode(feeds)

    monkeypatch.setattr(model.runtime, "run", recording)
    model.generate(**ENCODER_INPUTS, num_beams=3, max_new_tokens=8)
    assert encoder_batches == [2], "the encoder runs once"
    assert set(decoder_batches) == {6}, "every beam's row gets its input's encoder states"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_text2text_pipeline_generates_through_the_model(exported, runtime: str):
    eager, out = exported("bart")
    pipe = graphport.pipeline(out, runtime=runtime, max_new_tokens=8)
    result = pipe(["w5 w9 w12", "w7 w8"])
    tokenizer = pipe.tokenizer
    encoded = tokenizer(["w5 w9 w12", "w7 w8"], padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = eager.generate(
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            max_new_tokens=8,
        )
    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
    assert result == [[{"generated_text": text}] for text in texts]
    summary = graphport.pipeline(out, task="summarization", runtime=runtime, max_new_tokens=8)
    assert summary("w5 w9 w12") == [{"summary_text": texts[0]}]


AUDIO = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_whisper_generates_and_transcribes_as_eager(exported, runtime: str):
    eager, out = exported("whisper")
    model = graphport.load(out, runtime=runtime)
    assert model.main_input_name == "input_features"
    features = torch.from_numpy(
        np.random.default_rng(1).uniform(-1, 1, (3, 16, 100)).astype(np.float32)
    )
    # Whisper's own generate: the language detected per input, then task and no timestamps.
    assert_generates_as_eager(eager, model, {"input_features": features}, [{}])
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    extractor = transformers.AutoFeatureExtractor.from_pretrained(out)
    kwargs = {"tokenizer": tokenizer, "feature_extractor": extractor, "device": "cpu"}
    task, short = "automatic-speech-recognition", {"generate_kwargs": {"max_new_tokens": 10}}
    expected = transformers.pipeline(task, model=eager, **kwargs)(AUDIO, **short)
    actual = transformers.pipeline(task, model=model, **kwargs)(AUDIO, **short)
    assert actual == expected and expected["text"]
    assert graphport.pipeline(out, runtime=runtime)(AUDIO, **short) == expected


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_image_to_text_generates_as_eager(exported, runtime: str):
    from PIL import Image

    eager, out = exported("vision-encoder-decoder")
    model = graphport.load(out, runtime=runtime)
    assert model.main_input_name == "pixel_values"
    pixels = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype("f4"))
    assert_generates_as_eager(eager, model, {"pixel_values": pixels}, DECODING[:2])
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in "ab"]
    pipe = graphport.pipeline(out, runtime=runtime, max_new_tokens=6)
    with torch.no_grad():
        tokens = eager.generate(
            **pipe.image_processor(images, return_tensors="pt"), max_new_tokens=6
        )
    texts = pipe.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    assert pipe(images) == [[{"generated_text": text}] for text in texts]
    assert pipe(images[0]) == [{"generated_text": texts[0]}]


def scores_match(actual: list[dict], expected: list[dict]) -> None:
    assert [r["label"] for r in actual] == [r["label"] for r in expected]
    np.testing.assert_allclose(
        [r["score"] for r in actual], [r["score"] for r in expected], atol=1e-3
    )


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_dual_encoder_serves_zero_shot_image_classification(exported, runtime: str):
    from PIL import Image

    eager, out = exported("vision-text-dual-encoder")
    model = graphport.load(out, runtime=runtime)
    pixels = torch.from_numpy(np.random.default_rng(4).normal(size=(2, 3, 32, 32)).astype("f4"))
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]]), "pixel_values": pixels}
    inputs["attention_mask"] = (inputs["input_ids"] != 0).long()
    with torch.no_grad():
        expected = eager(**inputs)
    actual = model(**inputs)
    assert type(actual) is type(expected)
    for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        torch.testing.assert_close(actual[name], expected[name], atol=1e-4, rtol=1e-4)
    features = model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(
        features, eager.get_image_features(pixel_values=pixels).pooler_output
    )
    image = Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    labels = ["hello world", "a text", "b"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    kwargs = {"tokenizer": tokenizer, "image_processor": processor, "device": "cpu"}
    task = "zero-shot-image-classification"
    expected = transformers.pipeline(task, model=eager, **kwargs)(image, candidate_labels=labels)
    actual = transformers.pipeline(task, model=model, **kwargs)(image, candidate_labels=labels)
    scores_match(actual, expected)
    scores_match(graphport.pipeline(out, runtime=runtime)(image, candidate_labels=labels), expected)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_clap_serves_zero_shot_audio_classification(exported, runtime: str):
    eager, out = exported("clap")
    labels = ["hello world", "a text", "b"]
    task = "zero-shot-audio-classification"
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    extractor = transformers.AutoFeatureExtractor.from_pretrained(out)
    kwargs = {"tokenizer": tokenizer, "feature_extractor": extractor, "device": "cpu"}
    audio = np.resize(AUDIO, 48000)
    expected = transformers.pipeline(task, model=eager, **kwargs)(audio, candidate_labels=labels)
    model = graphport.load(out, runtime=runtime)
    actual = transformers.pipeline(task, model=model, **kwargs)(audio, candidate_labels=labels)
    scores_match(actual, expected)
    scores_match(graphport.pipeline(out, runtime=runtime)(audio, candidate_labels=labels), expected)

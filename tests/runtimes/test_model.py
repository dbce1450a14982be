"""The runtime model: forward returns eager's ModelOutput, transformers' own generate()
runs on the runtime with the KV cache in a DynamicCache of the runtime's arrays, and
equals eager token for token (greedy, beam search, seeded sampling) on both runtimes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import add_causal_tokenizer, add_word_tokenizer
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
from transformers.modeling_outputs import CausalLMOutputWithPast, MaskedLMOutput

import graphport
from graphport.api.export import export_model
from graphport.errors import UnsupportedModelError, UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes.model import RuntimeModelForCausalLM

RUNTIMES = ["onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """``exported(model_type, task, with_past)`` -> (eager model, export), once per module;
    ``with_past=False`` exports a text-generation model without its KV cache."""
    cache: dict[tuple, tuple[torch.nn.Module, Path]] = {}

    def get(model_type: str, task: str, with_past: bool = True) -> tuple[torch.nn.Module, Path]:
        key = (model_type, task, with_past)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"model-{model_type}")
            source = root / "checkpoint"
            shutil.copytree(tiny_checkpoint(model_type, task), source)
            (add_causal_tokenizer if task == "text-generation" else add_word_tokenizer)(source)
            # --task text-generation (given, not inferred) exports without the cache.
            export_model(source, root / "out", task=None if with_past else task, validate=False)
            auto = AutoModelForCausalLM if task == "text-generation" else AutoModelForMaskedLM
            cache[key] = (auto.from_pretrained(source).eval(), root / "out")
        return cache[key]

    return get


PROMPTS = {  # a left-padded batch: rows of 5 and 2 tokens
    "input_ids": torch.tensor([[5, 6, 7, 8, 9], [0, 0, 0, 10, 11]]),
    "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]]),
}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_generate_equals_eager(exported, model_type: str, runtime: str):
    eager, out = exported(model_type, "text-generation")
    model = graphport.load(out, runtime=runtime)
    assert model.can_generate() and model.generation_config.eos_token_id == 2
    cases = [{}, {"num_beams": 3}, {"num_beams": 3, "num_return_sequences": 2}, {"do_sample": True}]
    for options in cases:
        kwargs = {"max_new_tokens": 12, "pad_token_id": 0, **options}
        torch.manual_seed(0)
        with torch.no_grad():
            expected = eager.generate(**PROMPTS, **kwargs)
        torch.manual_seed(0)
        actual = model.generate(**PROMPTS, **kwargs)
        assert torch.equal(actual, expected), f"{options}: {actual} != {expected}"


def test_the_cache_holds_the_runtimes_arrays(exported, monkeypatch: pytest.MonkeyPatch):
    _, out = exported("gpt2", "text-generation")
    model = graphport.load(out)
    calls: list[tuple[dict, dict]] = []
    run = model.runtime.run

    def recording(feeds):
        results = run(feeds)
        calls.append((feeds, results))
        return results

    monkeypatch.setattr(model.runtime, "run", recording)
    first = model(**PROMPTS)
    assert isinstance(first, CausalLMOutputWithPast) and first.logits.shape == (2, 5, 128)
    assert calls[0][0]["past_key_values.0.key"].shape == (2, 4, 0, 8)
    present = calls[0][1]["present.0.key"]
    assert np.shares_memory(first.cache.layers[0].keys.numpy(), present)
    mask = torch.cat([PROMPTS["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1)
    model(input_ids=torch.tensor([[3], [4]]), attention_mask=mask, cache=first.cache)
    assert np.shares_memory(calls[1][0]["past_key_values.0.key"], present), "the past was copied"
    # position_ids were left out: filled from the mask as generate() builds them
    np.testing.assert_array_equal(calls[0][0]["position_ids"], [[0, 1, 2, 3, 4], [0, 0, 0, 0, 1]])
    np.testing.assert_array_equal(calls[1][0]["position_ids"], [[5], [2]])


def test_beam_search_needs_a_kv_cache(exported):
    eager, out = exported("gpt2", "text-generation", with_past=False)
    assert ExportDirectory(out).manifest.kv_cache is None
    model = graphport.load(out)
    # Without a cache every step reruns the sequence, so greedy still equals eager (on a
    # prompt without padding: this graph computes its positions itself).
    prompt = PROMPTS["input_ids"][:1]
    expected = eager.generate(prompt, max_new_tokens=6, pad_token_id=0)
    assert torch.equal(model.generate(prompt, max_new_tokens=6, pad_token_id=0), expected)
    with pytest.raises(UsageError, match="has no KV cache, so beam search cannot reorder one"):
        model.generate(**PROMPTS, max_new_tokens=6, num_beams=3, pad_token_id=0)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_forward_returns_eagers_output_class(exported, runtime: str):
    eager, out = exported("bert", "fill-mask")
    model = graphport.load(out, runtime=runtime)
    assert model.main_input_name == "input_ids" and model.device.type == "cpu"
    assert model.dtype == torch.float32 and model.config.model_type == "bert"
    ids = torch.tensor([[2, 5, 4, 6, 3]])
    with torch.no_grad():
        expected = eager(input_ids=ids)  # eager fills the mask and token types itself
    actual = model(input_ids=ids)
    assert type(actual) is MaskedLMOutput and list(actual.keys()) == ["logits"]
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=1e-4)
    # numpy in, positional in: the same result
    torch.testing.assert_close(model(ids.numpy()).logits, actual.logits)
    with pytest.raises(UsageError, match="compute no loss"):
        model(input_ids=ids, labels=ids)


def test_exports_of_several_graphs_are_refused_with_a_reason(exported, tmp_path: Path):
    _, out = exported("bert", "fill-mask")
    copy = shutil.copytree(out, tmp_path / "two-graphs")
    manifest = json.loads((copy / "graphport.json").read_text())
    manifest["graphs"].append(dict(manifest["graphs"][0], name="decoder"))
    manifest["graphs"][0]["name"] = "encoder"
    (copy / "graphport.json").write_text(json.dumps(manifest))
    with pytest.raises(UnsupportedModelError, match="graphs encoder, decoder, which graphport"):
        graphport.load(copy)


def test_a_decoder_export_loads_as_a_causal_lm(exported):
    _, out = exported("gpt2", "text-generation")
    assert type(graphport.load(out)) is RuntimeModelForCausalLM


def test_streamers_stopping_criteria_and_zero_token_types(exported, capsys):
    from transformers import AutoTokenizer, StoppingCriteria, StoppingCriteriaList, TextStreamer

    eager, out = exported("gpt2", "text-generation")
    model = graphport.load(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = PROMPTS["input_ids"][:1]
    expected = eager.generate(prompt, max_new_tokens=5, pad_token_id=0)
    tokens = model.generate(
        prompt,
        token_type_ids=torch.zeros_like(prompt),  # dropped: the graph takes none
        max_new_tokens=5,
        pad_token_id=0,
        streamer=TextStreamer(tokenizer),
    )
    assert torch.equal(tokens, expected)
    assert capsys.readouterr().out.split() == tokenizer.decode(expected[0]).split()

    class AtLength(StoppingCriteria):
        def __call__(self, ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
            return torch.full((ids.shape[0],), ids.shape[1] >= 7, dtype=torch.bool)

    stopped = model.generate(
        prompt,
        max_new_tokens=5,
        pad_token_id=0,
        stopping_criteria=StoppingCriteriaList([AtLength()]),
    )
    assert torch.equal(stopped, expected[:, :7])

"""The bare encoder-decoders (``T5Model``, ``BartModel``, ``WhisperModel``...) export for
feature-extraction, the task their checkpoints' ``config.architectures`` implies: one
graph from the encoder's inputs and the decoder's tokens to both hidden states, with no
KV cache.

``test_families`` exports and validates every registered (model type, task) pair, these
included; here the task inference and the graph contract are pinned for each family
without exporting, and one checkpoint with a tokenizer goes through ``graphport export``
as a user runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphport.cli import cli
from graphport.errors import UnsupportedModelError
from graphport.export.tasks import Task
from graphport.manifest import MANIFEST_NAME
from graphport.models import get_onnx_config
from graphport.models.loader import load_checkpoint
from graphport.models.registry import resolve_task
from graphport.models.tiny import save_tiny_checkpoint, tiny_config, tiny_model
from tests.conftest import save_word_tokenizer

TOKENS = ["input_ids", "attention_mask"]
DECODER = ["decoder_input_ids", "decoder_attention_mask"]
# model type -> (the bare model class, its encoder's inputs).
BARE = {
    "t5": ("T5Model", TOKENS),
    "mt5": ("MT5Model", TOKENS),
    "bart": ("BartModel", TOKENS),
    "mbart": ("MBartModel", TOKENS),
    "marian": ("MarianModel", TOKENS),
    "m2m_100": ("M2M100Model", TOKENS),
    "blenderbot-small": ("BlenderbotSmallModel", TOKENS),
    "whisper": ("WhisperModel", ["input_features"]),
}


@pytest.mark.parametrize("model_type", list(BARE))
def test_bare_checkpoint_infers_feature_extraction(model_type: str, tmp_path: Path):
    architecture, encoder_inputs = BARE[model_type]
    checkpoint = load_checkpoint(save_tiny_checkpoint(model_type, tmp_path / "checkpoint"))
    assert checkpoint.architectures == [architecture]
    assert resolve_task(checkpoint, None) == (Task.FEATURE_EXTRACTION, False)

    config = get_onnx_config(checkpoint.config, Task.FEATURE_EXTRACTION)
    assert list(config.inputs) == [*encoder_inputs, *DECODER]
    assert config.inputs["decoder_input_ids"] == {0: "batch", 1: "decoder_sequence"}
    assert list(config.outputs) == ["last_hidden_state", "encoder_last_hidden_state"]
    assert config.outputs["last_hidden_state"] == {0: "batch", 1: "decoder_sequence"}
    assert [g.name for g in config.sub_graphs(tiny_model(model_type))] == ["model"]
    assert config.kv_cache_contract() is None
    for shapes in (config.trace_shapes(), *config.validation_shapes()):
        feeds = config.dummy_inputs(shapes)
        decoder = (shapes.sizes["batch"], shapes.sizes["decoder_sequence"])
        assert list(feeds) == list(config.inputs)
        assert tuple(feeds["decoder_attention_mask"].shape) == decoder
        assert feeds["decoder_attention_mask"][:, 0].all(), "every row has a first token"


def test_text_encoders_are_token_aligned():
    """The encoder's output follows its ``sequence`` axis, so its padding is masked."""
    config = get_onnx_config(tiny_config("bart"), Task.FEATURE_EXTRACTION)
    assert config.inputs["input_ids"] == {0: "batch", 1: "sequence"}
    assert config.outputs["encoder_last_hidden_state"] == {0: "batch", 1: "sequence"}
    whisper = get_onnx_config(tiny_config("whisper"), Task.FEATURE_EXTRACTION)
    assert whisper.outputs["encoder_last_hidden_state"] == {0: "batch"}  # a fixed window


def test_feature_extraction_has_no_kv_cache():
    with pytest.raises(UnsupportedModelError, match=r"without a KV cache.*-with-past"):
        get_onnx_config(tiny_config("t5"), "feature-extraction-with-past")


def test_cli_exports_a_bare_checkpoint_with_its_tokenizer(tmp_path: Path):
    checkpoint = save_tiny_checkpoint("bart", tmp_path / "checkpoint")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, 128)}}
    save_word_tokenizer(
        checkpoint, vocab, template="<s> $A </s>", pad_token="<pad>", unk_token="<unk>"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(out)])
    assert result.exit_code == 0, result.output
    assert "(feature-extraction, onnx" in result.output
    assert "parity passed" in result.output
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["task"] == "feature-extraction" and manifest["kv_cache"] is None
    (graph,) = manifest["graphs"]
    assert [t["name"] for t in graph["inputs"]] == [*TOKENS, *DECODER]
    assert [t["shape"] for t in graph["outputs"]] == [
        ["batch", "decoder_sequence", 32],
        ["batch", "sequence", 32],
    ]
    assert (out / "tokenizer.json").is_file()
    report = json.loads((out / "parity.json").read_text())
    assert {r["runtime"] for r in report["results"]} == {"onnxruntime", "openvino"}
    assert all(r["outputs"] for r in report["results"])

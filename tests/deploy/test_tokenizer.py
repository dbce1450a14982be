"""Tokenizer graphs: kept only where they encode as the Python tokenizer does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import add_word_tokenizer

from graphport.deploy import tokenizer as tokenizer_graphs
from graphport.deploy.tokenizer import convert_onnxruntime, convert_openvino, reference
from graphport.manifest import ExportDirectory


@pytest.fixture(scope="module")
def export(bert_export: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportDirectory:
    """The tiny BERT export with a BertTokenizer whose vocabulary has "unicode"."""
    from transformers import BertTokenizer

    out = shutil.copytree(bert_export, tmp_path_factory.mktemp("tokenizer-graphs") / "out")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "unicode"]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(out)
    return ExportDirectory(out)


def test_truncation_length_is_the_models_positions(export: ExportDirectory):
    tokenizer, max_length = reference(export)
    assert tokenizer.model_max_length > 1e20 and max_length == 128


@pytest.mark.parametrize("convert", [convert_openvino, convert_onnxruntime])
def test_both_converters_encode_as_the_python_tokenizer(convert, export, tmp_path: Path):
    conversion = convert(export, tmp_path)
    assert conversion, conversion.reason
    assert conversion.graph.outputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert all((tmp_path / name).is_file() for name in conversion.graph.files)


def test_a_graph_that_encodes_differently_is_refused(
    export, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import onnxruntime_extensions

    generate = onnxruntime_extensions.gen_processing_models

    def keep_accents(tokenizer, pre_kwargs):  # the converter's own reading of BERT's default
        return generate(tokenizer, pre_kwargs={**pre_kwargs, "strip_accents": 0})

    monkeypatch.setattr(onnxruntime_extensions, "gen_processing_models", keep_accents)
    conversion = convert_onnxruntime(export, tmp_path)
    assert not conversion and not list(tmp_path.iterdir())
    assert conversion.reason.startswith("onnxruntime-extensions' graph encodes 'Ünïcödé")
    assert "as input_ids [2, 1," in conversion.reason and "not [2, 7," in conversion.reason


def test_an_export_without_a_tokenizer(export, tmp_path: Path):
    bare = shutil.copytree(export.path, tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    for convert in (convert_openvino, convert_onnxruntime):
        assert convert(ExportDirectory(bare), tmp_path).reason == "the export has no tokenizer"


def test_word_level_tokenizers_are_outside_onnxruntime_extensions(export, tmp_path: Path):
    words = shutil.copytree(export.path, tmp_path / "words")
    add_word_tokenizer(words)
    conversion = convert_onnxruntime(ExportDirectory(words), tmp_path)
    assert conversion.reason == (
        "onnxruntime-extensions cannot convert it (Unsupported processor/tokenizer: "
        "TokenizersBackend)"
    )
    assert convert_openvino(ExportDirectory(words), tmp_path)  # openvino-tokenizers can
    assert tokenizer_graphs.OPENVINO_FILE in {p.name for p in tmp_path.iterdir()}

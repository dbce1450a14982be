"""Triton model repositories, checked by parsing config.pbtxt with Triton's own schema."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import add_word_tokenizer

from graphport.api.export import export_model
from graphport.cli import cli
from graphport.deploy import deploy
from graphport.deploy.triton import model_config
from graphport.errors import ManifestError, RuntimeUnavailableError, UsageError
from graphport.manifest import ExportDirectory, Manifest, TensorSpec

# name -> (model type, task, format); one export each, shared by the module.
EXPORTS = {
    "bert": ("bert", "feature-extraction", "onnx"),
    "bert-mc": ("bert", "multiple-choice", "onnx"),
    "vit": ("vit", "image-classification", "openvino"),
    "wav2vec2": ("wav2vec2", "audio-classification", "onnx"),
    "bert-ts": ("bert", "feature-extraction", "torchscript"),
}


@pytest.fixture(scope="module")
def exports(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("triton-exports")
    with_tokenizer = root / "bert-checkpoint"
    shutil.copytree(tiny_checkpoint("bert"), with_tokenizer)
    add_word_tokenizer(with_tokenizer)
    out = {}
    for name, (model_type, task, fmt) in EXPORTS.items():
        checkpoint = with_tokenizer if name == "bert" else tiny_checkpoint(model_type, task)
        out[name] = root / name
        export_model(checkpoint, out[name], task=task, fmt=fmt, validate=False)
    return out


@pytest.fixture(scope="module")
def schema():
    """Triton's ModelConfig protobuf module."""
    return pytest.importorskip(
        "tritonclient.grpc.model_config_pb2",
        reason="tritonclient[grpc] (Triton's model-config schema) is not installed",
    )


def parse(schema, model_dir: Path):
    from google.protobuf import text_format

    text = (model_dir / "config.pbtxt").read_text(encoding="utf-8")
    return text_format.Parse(text, schema.ModelConfig())


def tensors(schema, entries) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (schema.DataType.Name(t.data_type), list(t.dims)) for t in entries}


def files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def variant(export: Path, **changes: Any) -> Manifest:
    """A copy of an export's manifest with fields replaced, for config-only checks."""
    manifest = Manifest.from_dict(ExportDirectory(export).manifest.to_dict())
    for key, value in changes.items():
        setattr(manifest, key, value)
    return manifest


def fake_export(source: Path, dest: Path, graph_file: str, **changes: Any) -> Path:
    """A copy of ``source`` whose manifest claims another format (with a dummy graph file)."""
    shutil.copytree(source, dest)
    manifest = variant(dest, **changes)
    graph = manifest.graphs[0]
    if graph_file != graph.file:
        (dest / graph_file).write_bytes(b"not a real graph")
        graph.file = graph_file
        manifest.files = sorted([*manifest.files, graph_file])
    manifest.write(dest)
    return dest


# --- repositories from real exports -------------------------------------------------------


def test_onnx_text_model(schema, exports: dict[str, Path], tmp_path: Path):
    model_dir = deploy(exports["bert"], tmp_path / "repo", "triton", model_name="bert")
    assert model_dir == tmp_path / "repo" / "bert"
    config = parse(schema, model_dir)
    assert (config.name, config.platform, config.backend) == (
        "bert",
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert config.max_batch_size == 8
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    # The batch axis is Triton's; sequence is dynamic, the hidden size static.
    assert tensors(schema, config.input) == {
        "input_ids": ("TYPE_INT64", [-1]),
        "attention_mask": ("TYPE_INT64", [-1]),
        "token_type_ids": ("TYPE_INT64", [-1]),
    }
    assert tensors(schema, config.output) == {"last_hidden_state": ("TYPE_FP32", [-1, 32])}
    assert files(model_dir / "1") == {"model.onnx"}
    assert {"config.json", "tokenizer.json", "graphport.json"} <= files(model_dir)
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "## bert" in readme and "`input_ids`: int64" in readme


def test_multiple_choice_keeps_the_choice_axis(schema, exports: dict[str, Path], tmp_path: Path):
    model_dir = deploy(exports["bert-mc"], tmp_path / "repo", "triton", max_batch_size=4)
    config = parse(schema, model_dir)
    assert config.name == "bert-mc" and config.max_batch_size == 4
    assert tensors(schema, config.input)["input_ids"] == ("TYPE_INT64", [-1, -1])
    assert tensors(schema, config.output) == {"logits": ("TYPE_FP32", [-1])}


def test_max_batch_size_zero_keeps_the_batch_axis(schema, exports: dict[str, Path], tmp_path: Path):
    config = parse(schema, deploy(exports["bert-mc"], tmp_path, "triton", max_batch_size=0))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert tensors(schema, config.input)["input_ids"] == ("TYPE_INT64", [-1, -1, -1])
    assert tensors(schema, config.output) == {"logits": ("TYPE_FP32", [-1, -1])}


def test_openvino_vision_model(schema, exports: dict[str, Path], tmp_path: Path):
    model_dir = deploy(exports["vit"], tmp_path, "triton")
    config = parse(schema, model_dir)
    assert (config.platform, config.backend) == ("", "openvino")
    assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert config.parameters["ENABLE_BATCH_PADDING"].string_value == "YES"
    assert [g.kind for g in config.instance_group] == [schema.ModelInstanceGroup.KIND_CPU]
    assert tensors(schema, config.input) == {"pixel_values": ("TYPE_FP32", [3, 32, 32])}
    assert tensors(schema, config.output) == {"logits": ("TYPE_FP32", [3])}
    assert files(model_dir / "1") == {"model.xml", "model.bin"}


def test_audio_model(schema, exports: dict[str, Path], tmp_path: Path):
    config = parse(schema, deploy(exports["wav2vec2"], tmp_path, "triton"))
    assert tensors(schema, config.input) == {"input_values": ("TYPE_FP32", [-1])}
    assert tensors(schema, config.output) == {"logits": ("TYPE_FP32", [3])}


def test_torchscript_names_tensors_by_position(schema, exports: dict[str, Path], tmp_path: Path):
    model_dir = deploy(exports["bert-ts"], tmp_path, "triton")
    config = parse(schema, model_dir)
    assert (config.platform, config.backend) == ("pytorch_libtorch", "pytorch")
    assert [t.name for t in config.input] == [
        "input_ids__0",
        "attention_mask__1",
        "token_type_ids__2",
    ]
    assert [t.name for t in config.output] == ["last_hidden_state__0"]
    assert files(model_dir / "1") == {"model.pt"}


def test_tensorrt_engine_becomes_model_plan(schema, exports: dict[str, Path], tmp_path: Path):
    profile = [{"name": n, "min": [1, 1], "opt": [1, 128], "max": [16, 128]} for n in "abc"]
    export = fake_export(
        exports["bert"],
        tmp_path / "trt",
        "model.engine",
        format="tensorrt",
        exporter={"profile": profile, "tensorrt": {"tensorrt": "10.9", "gpu": "NVIDIA H100"}},
    )
    model_dir = deploy(export, tmp_path / "repo", "triton", max_batch_size=16)
    config = parse(schema, model_dir)
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 16)
    assert files(model_dir / "1") == {"model.plan"}
    assert "model.onnx" not in files(model_dir)
    assert "TensorRT 10.9" in (tmp_path / "repo" / "README.md").read_text()
    with pytest.raises(UsageError, match=r"exceeds the TensorRT engine's profile, .* up to 16"):
        deploy(export, tmp_path / "other", "triton", max_batch_size=32)


def test_second_model_needs_overwrite_and_keeps_the_first(
    schema, exports: dict[str, Path], tmp_path
):
    repo = tmp_path / "repo"
    deploy(exports["bert"], repo, "triton")
    with pytest.raises(UsageError, match=r"is not empty; pass --overwrite .* other models"):
        deploy(exports["vit"], repo, "triton")
    deploy(exports["vit"], repo, "triton", overwrite=True)
    (repo / "bert" / "stale").write_text("from an earlier deployment")
    deploy(exports["bert"], repo, "triton", overwrite=True)
    assert files(repo) == {"README.md", "bert", "vit"}
    assert "stale" not in files(repo / "bert")
    readme = (repo / "README.md").read_text()
    assert "## bert" in readme and "## vit" in readme
    assert not list(tmp_path.glob(".*partial*"))  # no scratch directory left behind


def test_cli_deploys_a_triton_repository(schema, exports: dict[str, Path], tmp_path: Path):
    args = ["deploy", str(exports["bert"]), str(tmp_path / "repo"), "--target", "triton"]
    result = CliRunner().invoke(cli, [*args, "--model-name", "encoder", "--max-batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "max_batch_size: 2" in (tmp_path / "repo" / "encoder" / "config.pbtxt").read_text()


# --- configs from manifest variants --------------------------------------------------------


def test_graph_without_a_leading_batch_axis_is_not_batched(
    exports: dict[str, Path], caplog: pytest.LogCaptureFixture
):
    manifest = variant(exports["wav2vec2"])
    manifest.graphs[0].inputs[0].shape = ["sequence"]
    with caplog.at_level(logging.WARNING, logger="graphport.deploy.triton"):
        config = model_config(manifest, "asr")
    assert config.max_batch_size == 0
    assert config.inputs[0].dims == [-1] and config.outputs[0].dims == [-1, 3]
    assert "max_batch_size 0" in caplog.text and "batch axis first" in caplog.text


def test_openvino_with_dynamic_axes_is_not_batched(
    exports: dict[str, Path], caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="graphport.deploy.triton"):
        config = model_config(variant(exports["bert"], format="openvino"), "bert")
    assert config.max_batch_size == 0 and not config.parameters
    assert config.inputs[0].dims == [-1, -1]
    assert "static non-batch axes" in caplog.text


def test_onnx_for_openvino_runs_on_the_openvino_backend(schema, exports: dict[str, Path]):
    from google.protobuf import text_format

    config = model_config(variant(exports["vit"], format="onnx", target="openvino"), "vit")
    parsed = text_format.Parse(config.to_pbtxt(), schema.ModelConfig())
    assert (parsed.backend, parsed.default_model_filename) == ("openvino", "model.onnx")


def test_batch_only_tensor_gets_a_reshape(schema, exports: dict[str, Path]):
    from google.protobuf import text_format

    manifest = variant(exports["wav2vec2"])
    manifest.graphs[0].outputs = [TensorSpec("score", "float32", ["batch"])]
    parsed = text_format.Parse(model_config(manifest, "m").to_pbtxt(), schema.ModelConfig())
    (output,) = parsed.output
    assert list(output.dims) == [1]
    assert output.HasField("reshape") and list(output.reshape.shape) == []


@pytest.mark.parametrize(
    ("dtype", "data_type"),
    [("float16", "TYPE_FP16"), ("bfloat16", "TYPE_BF16"), ("int32", "TYPE_INT32")],
)
def test_data_types(schema, exports: dict[str, Path], dtype: str, data_type: str):
    from google.protobuf import text_format

    manifest = variant(exports["wav2vec2"])
    manifest.graphs[0].outputs[0].dtype = dtype
    parsed = text_format.Parse(model_config(manifest, "m").to_pbtxt(), schema.ModelConfig())
    assert schema.DataType.Name(parsed.output[0].data_type) == data_type


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "graph_file"), [("ort", "model.ort"), ("pt2", "model.pt2")])
def test_formats_without_a_triton_backend(exports, tmp_path: Path, fmt: str, graph_file: str):
    export = fake_export(exports["bert"], tmp_path / fmt, graph_file, format=fmt)
    message = rf"Triton has no backend for the {fmt} format; .* onnx, openvino, tensorrt"
    with pytest.raises(UsageError, match=message):
        deploy(export, tmp_path / "repo", "triton")
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("name", ["bad name!", ".hidden", "-flag", "a/b", ""])
def test_invalid_model_names(exports: dict[str, Path], tmp_path: Path, name: str):
    with pytest.raises(UsageError, match="is not a usable Triton model name"):
        deploy(exports["bert"], tmp_path / "repo", "triton", model_name=name)
    assert not (tmp_path / "repo").exists()


def test_other_bad_inputs(exports: dict[str, Path], tmp_path: Path):
    with pytest.raises(ManifestError, match="is not a graphport export"):
        deploy(tmp_path, tmp_path / "repo", "triton")
    with pytest.raises(UsageError, match="--max-batch-size must be 0 or more, not -1"):
        deploy(exports["bert"], tmp_path / "repo", "triton", max_batch_size=-1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file; pass a directory"):
        deploy(exports["bert"], tmp_path / "file", "triton")
    manifest = variant(exports["bert"])
    manifest.graphs[0].outputs[0].dtype = "float8_e4m3fn"
    with pytest.raises(UsageError, match="dtype float8_e4m3fn, which Triton has no data type"):
        model_config(manifest, "bert")


def test_without_tritonclient_the_extra_is_named(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if not installed
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'graphport\[triton\]'"):
        deploy(exports["bert"], tmp_path / "repo", "triton")
    assert not (tmp_path / "repo").exists()


# --- raw text: the tokenizer graph in an ensemble ------------------------------------------

TEXTS = ["hello world", "Ünïcödé 東京 🙂 text", "hellos worlds " * 100]  # the last > 128


@pytest.fixture(scope="module")
def wordpiece_export(exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT export with a BertTokenizer (WordPiece, lowercasing, accents stripped)."""
    from transformers import BertTokenizer

    export = tmp_path_factory.mktemp("wordpiece") / "bert"
    shutil.copytree(exports["bert"], export)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "unicode", "text"]
    words += ["##s", "東", "京"]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(export)
    return export


def test_text_ensemble_runs_the_tokenizer_graph_then_the_model(
    schema, wordpiece_export: Path, tmp_path: Path
):
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    repo = tmp_path / "repo"
    deploy(wordpiece_export, repo, "triton", model_name="bert")
    assert files(repo) == {"README.md", "bert", "bert_tokenizer", "bert_text"}
    encodings = ["input_ids", "attention_mask", "token_type_ids"]

    tokenizer = parse(schema, repo / "bert_tokenizer")
    assert (tokenizer.platform, tokenizer.backend, tokenizer.max_batch_size) == (
        "onnxruntime_onnx",
        "onnxruntime",
        0,
    )
    assert tensors(schema, tokenizer.input) == {"text": ("TYPE_STRING", [1])}
    assert tensors(schema, tokenizer.output) == {n: ("TYPE_INT64", [1, -1]) for n in encodings}
    (library,) = tokenizer.model_operations.op_library_filename
    assert library.startswith("/models/bert_tokenizer/")  # inside the README's container
    library_file = repo / "bert_tokenizer" / Path(library).name
    assert library_file.is_file() and files(repo / "bert_tokenizer" / "1") == {"model.onnx"}

    ensemble = parse(schema, repo / "bert_text")
    assert (ensemble.platform, ensemble.backend, ensemble.max_batch_size) == ("ensemble", "", 0)
    assert tensors(schema, ensemble.input) == {"TEXT": ("TYPE_STRING", [1])}
    assert tensors(schema, ensemble.output) == {"last_hidden_state": ("TYPE_FP32", [-1, -1, 32])}
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, dict(first.input_map)) == ("bert_tokenizer", {"text": "TEXT"})
    assert dict(first.output_map) == {n: n for n in encodings}
    assert (second.model_name, dict(second.input_map)) == ("bert", {n: n for n in encodings})
    assert dict(second.output_map) == {"last_hidden_state": "last_hidden_state"}
    assert "`bert_text` takes `TEXT`" in (repo / "README.md").read_text()

    # The tokenizer graph as written encodes as the Python tokenizer does, truncation and
    # stripped accents included ("Ünïcödé" -> "unicode").
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library_file))
    session = ort.InferenceSession(repo / "bert_tokenizer" / "1" / "model.onnx", options)
    reference = AutoTokenizer.from_pretrained(wordpiece_export)
    for text in TEXTS:
        got = session.run(encodings, {"text": np.array([text], dtype=object)})
        expected = reference(text, truncation=True, max_length=128)
        for name, value in zip(encodings, got, strict=True):
            assert value.tolist() == [expected[name]], (text, name)
    assert expected["input_ids"][-1] == 3 and len(expected["input_ids"]) == 128
    assert reference(TEXTS[1])["input_ids"][1] == 7  # unicode


def test_tokenizer_onnxruntime_extensions_cannot_convert_gets_no_ensemble(
    schema, exports: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING, logger="graphport.deploy.triton"):
        deploy(exports["bert"], tmp_path / "repo", "triton")  # a word-level tokenizer
    assert files(tmp_path / "repo") == {"README.md", "bert"}
    assert "Writing no text ensemble for bert: onnxruntime-extensions cannot convert it" in (
        caplog.text
    )


def test_redeploying_without_a_tokenizer_removes_the_old_ensemble(
    schema, exports: dict[str, Path], wordpiece_export: Path, tmp_path: Path
):
    repo = tmp_path / "repo"
    deploy(wordpiece_export, repo, "triton", model_name="bert")
    deploy(exports["bert"], repo, "triton", model_name="bert", overwrite=True)
    assert files(repo) == {"README.md", "bert"}

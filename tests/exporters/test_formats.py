"""Every export format but TensorRT, end to end on a tiny model; TensorRT's logic in units."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from graphport.api.export import export_model
from graphport.errors import RuntimeUnavailableError, UsageError
from graphport.export.tensorrt import (
    InputProfile,
    engine_cache_key,
    optimization_profile,
    parse_profile_overrides,
)
from graphport.manifest import ExportDirectory
from graphport.models.registry import get_onnx_config
from graphport.models.tiny import tiny_config
from graphport.validators.parity import validate_export

FORMATS = {
    # format: (files in the directory, runtimes that validate it by default)
    "openvino": ({"model.xml", "model.bin"}, {"openvino"}),
    "ort": ({"model.ort", "model.required_operators.config"}, {"onnxruntime"}),
    "torchscript": ({"model.pt"}, {"torchscript"}),
    "pt2": ({"model.pt2"}, {"aoti"}),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_format_exports_and_validates(fmt: str, tiny_checkpoint, tmp_path: Path):
    files, runtimes = FORMATS[fmt]
    result = export_model(tiny_checkpoint("bert", "text-classification"), tmp_path / "out", fmt=fmt)
    assert result.report.passed, result.report.failures()
    assert set(result.report.runtimes) == runtimes
    manifest = result.manifest
    assert manifest.format == fmt
    assert files <= set(manifest.files)
    assert not (tmp_path / "out" / "model.onnx").exists(), "the intermediate ONNX is removed"
    for name in manifest.files:
        assert (tmp_path / "out" / name).is_file()
    graph = manifest.graphs[0]
    assert [t.name for t in graph.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph.inputs[0].shape == ["batch", "sequence"]
    assert [t.name for t in graph.outputs] == ["logits"]
    assert graph.outputs[0].dtype == "float32"
    # `graphport validate` on the directory picks the same runtimes by itself.
    again = validate_export(ExportDirectory(tmp_path / "out"), sorted(runtimes))
    assert again.passed


def test_torchscript_manifest_records_the_deprecation(tiny_checkpoint, tmp_path: Path):
    result = export_model(
        tiny_checkpoint("bert"), tmp_path / "out", fmt="torchscript", validate=False
    )
    assert "deprecated" in result.manifest.exporter["deprecated"]


def test_openvino_fp16_weights_shrink_the_ir(tiny_checkpoint, tmp_path: Path):
    from graphport.formats.openvino import OpenVinoOptions

    full = export_model(tiny_checkpoint("vit"), tmp_path / "fp32", fmt="openvino", validate=False)
    half = export_model(
        tiny_checkpoint("vit"),
        tmp_path / "fp16",
        fmt="openvino",
        format_options=OpenVinoOptions(openvino_fp16_weights=True),
    )
    assert half.report.passed, half.report.failures()
    size = {p: (p / "model.bin").stat().st_size for p in (full.path, half.path)}
    assert size[half.path] < 0.6 * size[full.path]


def test_unknown_runtime_for_format_fails_in_validation(tiny_checkpoint, tmp_path: Path):
    export_model(tiny_checkpoint("bert"), tmp_path / "out", fmt="torchscript", validate=False)
    report = validate_export(ExportDirectory(tmp_path / "out"), ["onnxruntime"])
    assert not report.passed


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT present")
def test_tensorrt_absent_is_one_clear_sentence_and_writes_nothing(tiny_checkpoint, tmp_path):
    with pytest.raises(RuntimeUnavailableError, match=r"^TensorRT is not installed: .*--format\.$"):
        export_model(tiny_checkpoint("bert"), tmp_path / "out", fmt="tensorrt")
    assert list(tmp_path.iterdir()) == []


def test_profile_from_config_axes_capped_by_positions():
    config = get_onnx_config(tiny_config("bert", max_position_embeddings=64), "default")
    profile = optimization_profile(config)
    assert [p.name for p in profile] == ["input_ids", "attention_mask", "token_type_ids"]
    ids = profile[0]
    assert ids.min == (1, 1)
    assert ids.opt == (1, 64)  # opt clamps to the 64 positions too
    assert ids.max == (16, 64)


def test_profile_overrides_and_static_axes():
    config = get_onnx_config(tiny_config("bert"), "multiple-choice")
    profile = optimization_profile(config, parse_profile_overrides("batch=2:4:8,choice=4:4:4"))
    assert profile[0].min == (2, 4, 1)
    assert profile[0].max == (8, 4, 128)
    vision = optimization_profile(get_onnx_config(tiny_config("vit"), "image-classification"))
    assert vision[0] == InputProfile(
        "pixel_values", (1, 3, 32, 32), (1, 3, 32, 32), (16, 3, 32, 32)
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch=1:4", "is not AXIS=MIN:OPT:MAX"),
        ("batch=4:2:8", "needs 1 <= MIN <= OPT <= MAX"),
        ("batch=0:1:2", "needs 1 <= MIN <= OPT <= MAX"),
    ],
)
def test_bad_profile_overrides(text: str, message: str):
    with pytest.raises(UsageError, match=message):
        parse_profile_overrides(text)


def test_profile_override_of_an_unknown_axis():
    config = get_onnx_config(tiny_config("bert"), "default")
    with pytest.raises(UsageError, match="no dynamic axis height; its axes are batch, sequence"):
        optimization_profile(config, {"height": (1, 2, 3)})


def test_engine_cache_key_changes_with_every_input(tmp_path: Path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"graph")
    profile = [InputProfile("x", (1,), (2,), (4,))]
    base = engine_cache_key(onnx_file, profile, "11.4", "H100", "9.0")
    assert base == engine_cache_key(onnx_file, profile, "11.4", "H100", "9.0")
    assert base != engine_cache_key(onnx_file, profile, "11.5", "H100", "9.0")
    assert base != engine_cache_key(onnx_file, profile, "11.4", "A100", "8.0")
    other = [InputProfile("x", (1,), (2,), (8,))]
    assert base != engine_cache_key(onnx_file, other, "11.4", "H100", "9.0")
    onnx_file.write_bytes(b"graph2")
    assert base != engine_cache_key(onnx_file, profile, "11.4", "H100", "9.0")
    assert len(base) == 32 and base.isalnum()  # usable as a file name


def test_torch_formats_call_a_kv_cache_decoder_by_position():
    # The KV-cache module takes its inputs positionally (past_key_values.0.key is no Python
    # name): the spec's eager run and the torch.export / jit.trace wrapper must call it so.
    from graphport.export.artifacts import spec_from_eager
    from graphport.export.signature import wrap_for_tracing
    from graphport.models.tiny import tiny_model

    model = tiny_model("llama", "text-generation-with-past")
    config = get_onnx_config(model.config, "text-generation-with-past")
    (graph,) = config.sub_graphs(model)
    spec = spec_from_eager(graph.module, config)
    assert [t.name for t in spec.inputs] == list(config.inputs)
    assert spec.inputs[3].shape == ["batch", 2, "past_sequence", 8]
    assert [t.name for t in spec.outputs] == list(config.outputs)
    wrapper, inputs = wrap_for_tracing(graph.module, config)
    outputs = wrapper(*inputs)
    assert len(outputs) == len(config.outputs)
    assert outputs[0].shape[-1] == spec.outputs[0].shape[-1]  # logits over the vocabulary


@pytest.mark.slow  # pt2 ~70 s (AOTInductor compiles kernels), torchscript ~30 s on 2 busy cores
@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_a_kv_cache_decoder_exports_to_a_torch_format_and_validates(
    fmt: str, tiny_checkpoint, tmp_path: Path
):
    checkpoint = tiny_checkpoint("llama", "text-generation-with-past")
    result = export_model(checkpoint, tmp_path / "out", task="text-generation-with-past", fmt=fmt)
    assert result.report.passed, result.report.failures()
    assert result.manifest.kv_cache
    assert [g.passed for g in result.report.generation] == [True, True]

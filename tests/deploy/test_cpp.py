"""The C++ target: generate the CMake project, build it, run graphport_infer, compare with eager."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import add_word_tokenizer

from graphport.api.export import export_model
from graphport.cli import cli
from graphport.deploy import deploy
from graphport.deploy.cpp import check_deployable
from graphport.deploy.tokenizer import OPENVINO_FILE
from graphport.errors import ManifestError, UsageError
from graphport.export.tasks import Task
from graphport.manifest import ExportDirectory, Manifest, TensorSpec
from graphport.models.loader import load_checkpoint, load_model
from graphport.runtimes.torch import run_eager

IDS = [2, 17, 54, 99, 3]
needs_toolchain = pytest.mark.skipif(
    not (shutil.which("cmake") and (shutil.which("c++") or shutil.which("g++"))),
    reason="cmake and a C++ compiler are needed to build graphport_infer",
)


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with a word-level tokenizer (max 128 positions)."""
    path = tmp_path_factory.mktemp("cpp-checkpoint") / "bert"
    shutil.copytree(tiny_checkpoint("bert"), path)
    return add_word_tokenizer(path)


@pytest.fixture(scope="module")
def export(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """``export(fmt)`` -> a tiny BERT feature-extraction export, made once per format."""
    root = tmp_path_factory.mktemp("cpp-exports")
    cache: dict[str, Path] = {}

    def make(fmt: str) -> Path:
        if fmt not in cache:
            cache[fmt] = root / fmt
            export_model(checkpoint, cache[fmt], fmt=fmt, validate=False)
        return cache[fmt]

    return make


@pytest.fixture(scope="module")
def built(export, tmp_path_factory: pytest.TempPathFactory):
    """``built(fmt)`` -> a fresh deployment of ``export(fmt)``, built once per format."""
    root = tmp_path_factory.mktemp("cpp-projects")
    cache: dict[str, Path] = {}

    def make(fmt: str) -> Path:
        if fmt not in cache:
            cache[fmt] = deploy(export(fmt), root / fmt, "cpp")
            build(cache[fmt])
        return cache[fmt]

    return make


def variant(export_dir: Path) -> Manifest:
    return copy.deepcopy(ExportDirectory(export_dir).manifest)


def build(project: Path) -> None:
    done = subprocess.run(
        ["bash", str(project / "build.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def infer(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    program = project / "build" / "graphport_infer"
    return subprocess.run([str(program), *args], capture_output=True, text=True, check=False)


def eager_last_hidden_state(checkpoint: Path, ids: list[int] = IDS) -> np.ndarray:
    model = load_model(load_checkpoint(checkpoint), Task.FEATURE_EXTRACTION)
    array = np.array([ids], dtype=np.int64)
    feeds = {
        "input_ids": array,
        "attention_mask": np.ones_like(array),
        "token_type_ids": np.zeros_like(array),
    }
    return run_eager(model, feeds, ["last_hidden_state"])["last_hidden_state"]


# --- build and run -------------------------------------------------------------------------


@needs_toolchain
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])  # OpenVINO's C++ API; libtorch AOTInductor
def test_program_matches_eager(fmt: str, built, checkpoint: Path, tmp_path: Path):
    project = built(fmt)

    done = infer(project, "--ids", ",".join(map(str, IDS)), "--timings")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"outputs", "timings"}
    expected = eager_last_hidden_state(checkpoint)
    output = result["outputs"]["last_hidden_state"]
    assert output["shape"] == list(expected.shape) == [1, len(IDS), 32]
    np.testing.assert_allclose(output["head"], expected.reshape(-1)[:8], atol=1e-3)

    # --model reads the export from elsewhere: here, the project's own, moved away.
    moved = (project / "model").rename(tmp_path / "moved")
    try:
        done = infer(project, "--model", str(moved), "--ids", "2,17")
    finally:
        moved.rename(project / "model")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"]["last_hidden_state"]["shape"] == [1, 2, 32]

    bad_ids = infer(project, "--ids", "2,x")
    assert bad_ids.returncode == 2
    assert "--ids takes comma-separated integers" in bad_ids.stderr
    missing = infer(project, "--model", str(tmp_path / "absent"), "--ids", "2")
    assert missing.returncode == 1
    assert missing.stderr.startswith("graphport_infer: ")


TEXTS = [
    "hello world text",
    "Ünïcödé 東京 🙂 and a normal sentence",  # accents, CJK, emoji: [UNK] but one per word
    "a b " * 100,  # 200 words: truncated at the 128 positions, [SEP] kept
]


@needs_toolchain
def test_text_is_encoded_as_the_python_tokenizer_does(built, checkpoint: Path):
    from transformers import AutoTokenizer

    project = built("onnx")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    for text in TEXTS:
        done = infer(project, "--text", text)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        ids = tokenizer(text, truncation=True, max_length=128)["input_ids"]
        assert result["input_ids"] == ids, text
        expected = eager_last_hidden_state(checkpoint, ids)
        output = result["outputs"]["last_hidden_state"]
        assert output["shape"] == [1, len(ids), 32]
        np.testing.assert_allclose(output["head"], expected.reshape(-1)[:8], atol=1e-3)
    assert len(result["input_ids"]) == 128 and result["input_ids"][-1] == 3  # [SEP]


@needs_toolchain
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_text_without_a_tokenizer_graph_is_refused(fmt: str, built, tmp_path: Path):
    project = built(fmt)
    model = shutil.copytree(project / "model", tmp_path / "model")
    (model / OPENVINO_FILE).unlink(missing_ok=True)  # pt2 deployments have none
    done = infer(project, "--model", str(model), "--text", "hello world")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("so this deployment takes --ids only.")
    assert done.stderr.count("\n") == 1 and not done.stdout


# --- the generated project -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "model_file", "runtime"),
    [
        ("onnx", "model.onnx", "openvino/openvino.hpp"),
        ("openvino", "model.xml", "openvino/openvino.hpp"),
        ("pt2", "model.pt2", "AOTIModelPackageLoader"),
    ],
)
def test_project_is_self_contained(fmt: str, model_file: str, runtime: str, export, tmp_path: Path):
    source = export(fmt)
    project = deploy(source, tmp_path / "cpp", "cpp")
    names = {p.name for p in project.iterdir()}
    on_openvino = fmt != "pt2"  # the tokenizer graph and its library: OpenVINO only
    assert names == {
        "CMakeLists.txt",
        "README.md",
        "build.sh",
        "main.cpp",
        "model",
        "model_io.h",
        "runtime.cpp",
        "runtime.h",
    } | ({"lib"} if on_openvino else set())
    copied = ExportDirectory(project / "model")  # the copy is an export directory itself
    assert copied.manifest.files == ExportDirectory(source).manifest.files
    for name in copied.manifest.files:
        assert (project / "model" / name).read_bytes() == (source / name).read_bytes()
    assert (project / "model" / model_file).is_file()
    assert (project / "model" / OPENVINO_FILE).is_file() == on_openvino
    assert (project / "lib" / "libopenvino_tokenizers.so").is_file() == on_openvino
    assert not (source / OPENVINO_FILE).exists()  # the export itself is left as it was
    assert runtime in (project / "runtime.cpp").read_text()

    model_io = (project / "model_io.h").read_text()
    assert f'kModelFile = "{model_file}";' in model_io
    assert 'kPrecision = "f32";' in model_io
    assert 'kInputs[] = {"input_ids", "attention_mask", "token_type_ids"};' in model_io
    assert "kInputBits[] = {64, 64, 64};" in model_io
    assert 'kOutputs[] = {"last_hidden_state"};' in model_io

    # No machine paths in the sources; build.sh records the deploying Python.
    for name in ["CMakeLists.txt", "main.cpp", "runtime.cpp", "runtime.h", "model_io.h"]:
        text = (project / name).read_text()
        assert str(tmp_path) not in text and sys.prefix not in text, name
    assert sys.executable in (project / "build.sh").read_text()
    assert os.access(project / "build.sh", os.X_OK)
    for name in ["build.sh", "README.md", "model_io.h"]:
        assert not re.search(r"@[A-Z_]+@", (project / name).read_text()), name


def test_cli_writes_the_project(export, tmp_path: Path):
    dest = tmp_path / "cpp"
    result = CliRunner().invoke(cli, ["deploy", str(export("onnx")), str(dest), "--target", "cpp"])
    assert result.exit_code == 0, result.output
    assert f"Wrote {dest}" in result.output
    readme = (dest / "README.md").read_text()
    assert "--ids 101,7592,2088,102" in readme
    assert "truncated at 128 tokens" in readme


def test_a_tokenizer_openvino_tokenizers_cannot_convert_deploys_for_ids_only(
    export, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    exported = shutil.copytree(export("onnx"), tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(exported)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.UnicodeScripts()  # unsupported
    tokenizer.save_pretrained(exported)

    with caplog.at_level("WARNING", logger="graphport"):
        project = deploy(exported, tmp_path / "cpp", "cpp")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("Deploying for --ids only: openvino-tokenizers cannot convert it")
    assert "UnicodeScripts" in warning and warning.count(". ") == 0
    assert not (project / "model" / OPENVINO_FILE).exists() and not (project / "lib").exists()
    assert (
        "This program takes `--ids` only: openvino-tokenizers cannot"
        in (project / "README.md").read_text()
    )


# --- refusals ------------------------------------------------------------------------------


def test_refuses_a_directory_that_is_not_an_export(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"has no graphport\.json, so it is not a graphport"):
        deploy(tmp_path / "empty", tmp_path / "cpp", "cpp")
    with pytest.raises(ManifestError, match="is not a directory"):
        deploy(tmp_path / "missing", tmp_path / "cpp", "cpp")
    assert not (tmp_path / "cpp").exists()


@pytest.mark.parametrize("fmt", ["torchscript", "ort", "tensorrt"])
def test_refuses_formats_without_a_cpp_backend(fmt: str, export):
    manifest = variant(export("onnx"))
    manifest.format = fmt
    with pytest.raises(
        UsageError, match=f"cannot run {fmt} exports; it runs onnx and openvino exports"
    ):
        check_deployable(manifest)


def test_refuses_graphs_openvino_cannot_run(export):
    manifest = variant(export("onnx"))
    manifest.target = "onnxruntime"
    with pytest.raises(UsageError, match="optimized for onnxruntime and uses its own operators"):
        check_deployable(manifest)
    manifest.target = "openvino"  # optimized for OpenVINO: fine
    check_deployable(manifest)
    manifest.target, manifest.dtype = None, "bf16"
    with pytest.raises(UsageError, match="OpenVINO misreads bfloat16 ONNX graphs"):
        check_deployable(manifest)


@pytest.mark.parametrize(
    "inputs",
    [
        [TensorSpec("pixel_values", "float32", ["batch", 3, 32, 32])],
        [TensorSpec("input_ids", "int64", ["batch", "choices", "sequence"])],  # multiple choice
        [TensorSpec("attention_mask", "int64", ["batch", "sequence"])],  # no input_ids
        [TensorSpec("input_ids", "float32", ["batch", "sequence"])],
    ],
)
def test_refuses_inputs_other_than_token_ids(inputs: list[TensorSpec], export):
    manifest = variant(export("onnx"))
    manifest.graphs[0].inputs = inputs
    with pytest.raises(UsageError, match="graphport_infer takes one sequence of token ids"):
        check_deployable(manifest)


def test_refuses_a_non_empty_dest_without_overwrite(export, tmp_path: Path):
    dest = tmp_path / "cpp"
    dest.mkdir()
    (dest / "stale").write_text("from an earlier deployment")
    with pytest.raises(UsageError, match="already exists and is not empty; pass --overwrite"):
        deploy(export("onnx"), dest, "cpp")
    assert (dest / "stale").is_file()
    deploy(export("onnx"), dest, "cpp", overwrite=True)
    assert not (dest / "stale").exists() and (dest / "CMakeLists.txt").is_file()
    assert not list(tmp_path.glob(".*partial*"))  # no scratch directory left behind


def test_cli_reports_a_refusal_in_one_line(export, tmp_path: Path):
    exported = tmp_path / "ts"
    shutil.copytree(export("onnx"), exported)
    manifest = variant(exported)
    manifest.format = "torchscript"
    manifest.write(exported)
    result = CliRunner().invoke(
        cli, ["deploy", str(exported), str(tmp_path / "cpp"), "--target", "cpp"]
    )
    assert result.exit_code == 2
    assert "error: The cpp target cannot run torchscript exports" in result.output


@needs_toolchain
@pytest.mark.slow
@pytest.mark.demo
def test_minilm_takes_text_as_a_user_would(minilm_dir: Path, tmp_path: Path, request):
    """export, deploy, build and run --text on the real MiniLM (about a minute: `-m slow`)."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("exports and builds the real MiniLM; select it with -m slow")
    import torch
    from transformers import AutoModel, AutoTokenizer

    runner = CliRunner()
    out, project = tmp_path / "minilm-out", tmp_path / "minilm-cpp"
    for args in (["export", str(minilm_dir), str(out)], ["deploy", str(out), str(project)]):
        result = runner.invoke(cli, [*args, *(["--target", "cpp"] if args[0] == "deploy" else [])])
        assert result.exit_code == 0, result.output
    build(project)

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    for text in ["Ünïcödé 東京 🙂 and a normal sentence", "the quick brown fox " * 200]:
        done = infer(project, "--text", text)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        encoded = tokenizer(text, truncation=True, return_tensors="pt")
        assert result["input_ids"] == encoded["input_ids"][0].tolist()
        with torch.no_grad():
            expected = model(**encoded).last_hidden_state.numpy()
        output = result["outputs"]["last_hidden_state"]
        assert output["shape"] == list(expected.shape)
        np.testing.assert_allclose(output["head"], expected.reshape(-1)[:8], atol=1e-4)
    assert len(result["input_ids"]) == 512

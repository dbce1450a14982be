"""The command line: one clear line for every bad input, and the happy paths end to end.

Bad inputs and verbosity run as real processes, so the exit code, stderr and the absence of
a traceback are what a user sees. ``python -m graphport`` spends ~4 s importing torch and
transformers before it looks at its arguments, which for 16 cases would dominate the suite,
so a launcher process pays for those imports once and forks one child per case; each child
runs ``graphport/__main__.py`` as ``python -m`` does, with its own stdout, stderr (file
descriptors 1 and 2) and exit code. One case also runs as a plain ``python -m graphport``
to prove the launcher changes nothing. The happy paths run in-process with CliRunner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import WORDS, add_word_tokenizer

from graphport.cli import cli
from graphport.manifest import MANIFEST_NAME
from graphport.verbosity import ENV_VAR, set_verbosity

TINY_VOCAB_SIZE = 128  # the tiny text configs' vocab_size (graphport.models.tiny)
TEXTS = ["hello world", "text a b hello world"]

# Run by ``python -c LAUNCHER JOBS_FILE``: import once, fork a child per job, wait for all.
# A child turns SystemExit into its exit code and anything else into a traceback on stderr
# and exit code 1, as the interpreter does, and dies after ``timeout`` seconds.
LAUNCHER = """
import json, os, runpy, signal, sys, traceback
import graphport.cli, graphport.api.export, graphport.runtimes.predict
jobs = json.loads(open(sys.argv[1]).read())
children = {}
for name, job in jobs.items():
    pid = os.fork()
    if pid:
        children[pid] = name
        continue
    code = 1
    try:
        os.environ.pop("GRAPHPORT_VERBOSITY", None)
        os.environ.update(job["env"])
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        signal.alarm(job["timeout"])
        sys.argv = ["graphport", *job["args"]]
        runpy.run_module("graphport", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
codes = {}
while children:
    pid, status = os.wait()
    codes[children.pop(pid)] = os.waitstatus_to_exitcode(status)
print(json.dumps(codes))
"""


def graphport(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m graphport ARGS`` in a fresh process, with the default verbosity."""
    environ = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "graphport", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        check=False,
    )


def launch(
    jobs: dict[str, tuple[list[str], dict[str, str]]], scratch: Path
) -> dict[str, subprocess.CompletedProcess]:
    """Run each ``name: (args, env)`` as a forked ``python -m graphport`` (see LAUNCHER)."""
    if not hasattr(os, "fork"):  # Windows: one fresh interpreter per case
        return {name: graphport(*args, env=env) for name, (args, env) in jobs.items()}
    spec = {
        name: {
            "args": args,
            "env": env,
            "stdout": str(scratch / f"{i}.stdout"),
            "stderr": str(scratch / f"{i}.stderr"),
            "timeout": 120,
        }
        for i, (name, (args, env)) in enumerate(jobs.items())
    }
    (scratch / "jobs.json").write_text(json.dumps(spec))
    launcher = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(scratch / "jobs.json")],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != ENV_VAR},
        timeout=300,
        check=False,
    )
    assert launcher.returncode == 0, launcher.stderr
    codes = json.loads(launcher.stdout.strip().splitlines()[-1])
    return {
        name: subprocess.CompletedProcess(
            ["graphport", *job["args"]],
            codes[name],
            Path(job["stdout"]).read_text(),
            Path(job["stderr"]).read_text(),
        )
        for name, job in spec.items()
    }


def copy_checkpoint(checkpoint: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(checkpoint, tmp / "checkpoint"))


# ---- bad inputs: (arguments, exit code, message) ------------------------------------------
# Each builder gets the tiny bert checkpoint and a scratch directory, damages a copy if it
# needs one, and returns the arguments; the output directory is always ``tmp / "out"``.


def _missing_path(ckpt: Path, tmp: Path) -> list[str]:
    return ["export", str(tmp / "no-such-model"), str(tmp / "out")]


def _empty_directory(ckpt: Path, tmp: Path) -> list[str]:
    (tmp / "empty").mkdir()
    return ["export", str(tmp / "empty"), str(tmp / "out")]


def _corrupt_config(ckpt: Path, tmp: Path) -> list[str]:
    copy = copy_checkpoint(ckpt, tmp)
    text = (copy / "config.json").read_text()
    (copy / "config.json").write_text(text[: len(text) // 2])
    return ["export", str(copy), str(tmp / "out")]


def _set_model_type(model_type: str, architecture: str) -> Callable[[Path, Path], list[str]]:
    def build(ckpt: Path, tmp: Path) -> list[str]:
        copy = copy_checkpoint(ckpt, tmp)
        config = json.loads((copy / "config.json").read_text())
        config["model_type"] = model_type
        config["architectures"] = [architecture]
        (copy / "config.json").write_text(json.dumps(config))
        return ["export", str(copy), str(tmp / "out")]

    return build


def _tiny_of(model_type: str) -> Callable[[Path, Path], list[str]]:
    def build(ckpt: Path, tmp: Path) -> list[str]:
        from graphport.models.tiny import save_tiny_checkpoint

        # -q: the task inference line would precede the error otherwise.
        tiny = save_tiny_checkpoint(model_type, tmp / "tiny")
        return ["-q", "export", str(tiny), str(tmp / "out")]

    return build


def _lilt_with_misfit_sizes(ckpt: Path, tmp: Path) -> list[str]:
    """A LiLT whose hidden size (32) does not split into its 2-D position embeddings
    (six of hidden // 6): the eager model itself cannot run."""
    import torch
    from transformers import LiltConfig, LiltModel

    torch.manual_seed(0)
    config = LiltConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        architectures=["LiltModel"],
    )
    LiltModel(config).save_pretrained(tmp / "lilt")
    return ["-q", "export", str(tmp / "lilt"), str(tmp / "nested" / "out")]


def _no_weights(ckpt: Path, tmp: Path) -> list[str]:
    copy = copy_checkpoint(ckpt, tmp)
    (copy / "model.safetensors").unlink()
    return ["export", str(copy), str(tmp / "out")]


def _truncated_weights(ckpt: Path, tmp: Path) -> list[str]:
    copy = copy_checkpoint(ckpt, tmp)
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return ["export", str(copy), str(tmp / "out")]


def _export_with(*options: str) -> Callable[[Path, Path], list[str]]:
    def build(ckpt: Path, tmp: Path) -> list[str]:
        return ["export", str(ckpt), str(tmp / "out"), *options]

    return build


def _output_is_a_file(ckpt: Path, tmp: Path) -> list[str]:
    (tmp / "out").write_text("not a directory")
    return ["export", str(ckpt), str(tmp / "out")]


def _validate_without_manifest(ckpt: Path, tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    return ["validate", str(tmp / "out")]


BAD_INPUTS: dict[str, tuple[Callable[[Path, Path], list[str]], int, str]] = {
    "missing model path": (
        _missing_path,
        1,
        r"Model '.*no-such-model' was not found: it is neither a local directory",
    ),
    "empty directory": (_empty_directory, 1, r"empty is empty, so it is not a transformers"),
    "corrupt config.json": (_corrupt_config, 1, r"config\.json is not valid JSON"),
    "model_type unknown to transformers": (
        _set_model_type("no-such-architecture", "NoSuchModel"),
        1,
        r"Model type 'no-such-architecture' in .* is unknown to the installed transformers",
    ),
    "model_type the generic path cannot feed": (
        _tiny_of("blip_2_qformer"),
        1,
        r"Model type 'blip_2_qformer' cannot be exported generically: "
        r"Blip2QFormerModel.forward requires query_embeds",
    ),
    "checkpoint without weights": (_no_weights, 1, r"has a config but no weights"),
    "eager model fails on its own config": (
        _lilt_with_misfit_sizes,
        2,
        r"The eager LiltModel itself fails on inputs built from its config \(input_ids "
        r"\[2, \d+\], bbox .*\): RuntimeError: mat1 and mat2 shapes cannot be multiplied",
    ),
    "truncated safetensors": (_truncated_weights, 1, r"model\.safetensors is truncated"),
    "unsupported task": (
        _export_with("--task", "image-classification"),
        2,
        r"does not support the task 'image-classification'; it supports feature-extraction, "
        r"fill-mask, text-classification, token-classification, question-answering, "
        r"multiple-choice, text-generation: pass one of these with --task\.",
    ),
    "opset 9": (_export_with("--opset", "9"), 2, r"Opset 9 cannot be produced.*between 18 and"),
    "opset 99": (_export_with("--opset", "99"), 2, r"Opset 99 cannot be produced.*between 18 and"),
    "output path is a file": (_output_is_a_file, 2, r"out is an existing file; pass a directory"),
    "unknown runtime": (
        _export_with("--runtime", "tensorflow"),
        2,
        r"Unknown runtime 'tensorflow'; choose from onnxruntime, openvino, .*torch\.",
    ),
    "quantize a non-ONNX export": (
        _export_with("--format", "openvino", "--quantize", "int8-dynamic"),
        2,
        r"--optimize and --quantize rewrite ONNX graphs \(executorch takes --quantize .*\); "
        r"drop --format\.",
    ),
    "calibration without quantize": (
        _export_with("-O", "2", "--calibration", "sentences.txt"),
        2,
        r"--calibration is for --quantize; add a quantization mode\.",
    ),
    "validate without a manifest": (
        _validate_without_manifest,
        1,
        rf"out has no {MANIFEST_NAME}, so it is not a graphport export",
    ),
}

# Successful exports with the three verbosity settings: flags and environment.
VERBOSITY_RUNS: dict[str, tuple[list[str], dict[str, str]]] = {
    "quiet": (["-q"], {}),
    "default": ([], {}),
    "debug": ([], {ENV_VAR: "debug"}),
}


@pytest.fixture(scope="module")
def processes(
    tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Every process case: name -> (its scratch directory, the finished process)."""
    checkpoint = tiny_checkpoint("bert")
    scratch: dict[str, Path] = {}
    jobs: dict[str, tuple[list[str], dict[str, str]]] = {}
    for name, (build, _, _) in BAD_INPUTS.items():
        scratch[name] = tmp_path_factory.mktemp("bad-input")
        jobs[name] = (build(checkpoint, scratch[name]), {})
    for name, (flags, env) in VERBOSITY_RUNS.items():
        scratch[name] = tmp_path_factory.mktemp(f"verbosity-{name}")
        out = scratch[name] / "out"
        jobs[name] = ([*flags, "export", str(checkpoint), str(out), "--no-validate"], env)
    done = launch(jobs, tmp_path_factory.mktemp("launcher"))
    return {name: (scratch[name], done[name]) for name in jobs}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(processes, case: str):
    tmp, proc = processes[case]
    _, exit_code, message = BAD_INPUTS[case]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == exit_code, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]
    assert lines[0].endswith("."), "the message should be a complete sentence"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp / "out" / MANIFEST_NAME).exists()
    assert not list(tmp.glob(".out.*")), "a staging directory was left behind"
    assert not (tmp / "nested").exists(), "a failed export created its parent directory"


@pytest.mark.parametrize("case", ["opset 9", "opset 99"])
def test_opset_error_apart_from_the_progress_line(processes, case: str):
    tmp, proc = processes[case]
    _, exit_code, message = BAD_INPUTS[case]
    assert proc.returncode == exit_code
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    assert re.search(message, last), last
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp / "out").exists()


def test_launcher_matches_python_dash_m(processes):
    _, forked = processes["missing model path"]
    direct = graphport(*forked.args[1:])
    assert direct.returncode == forked.returncode == 1
    assert direct.stderr == forked.stderr
    assert direct.stdout == forked.stdout == ""


def test_output_file_is_left_untouched(processes):
    tmp, proc = processes["output path is a file"]
    assert proc.returncode == 2
    assert (tmp / "out").read_text() == "not a directory"


def test_quiet_export_prints_no_progress(processes):
    tmp, proc = processes["quiet"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "validation skipped" in proc.stdout
    assert (tmp / "out" / MANIFEST_NAME).is_file()


def test_default_export_shows_progress_and_debug_shows_more(processes):
    default_tmp, default = processes["default"]
    debug_tmp, debug = processes["debug"]
    assert default.returncode == 0, default.stderr
    assert debug.returncode == 0, debug.stderr
    assert "Loading " in default.stderr
    assert "Tracing with torch.export" in default.stderr
    assert "Traceback" not in default.stderr
    debug_text = debug.stderr.replace(str(debug_tmp), "TMP")
    for line in default.stderr.replace(str(default_tmp), "TMP").splitlines():
        assert line in debug_text
    assert len(debug.stderr.splitlines()) > len(default.stderr.splitlines())


# ---- happy paths, in-process ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_verbosity() -> Iterator[None]:
    # The CLI sets graphport's log level for the whole process; put the tests' level back.
    yield
    set_verbosity("error")


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def text_checkpoint(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bert checkpoint plus a word-level tokenizer built offline."""
    checkpoint = copy_checkpoint(tiny_checkpoint("bert"), tmp_path_factory.mktemp("text"))
    assert len(WORDS) <= TINY_VOCAB_SIZE
    return add_word_tokenizer(checkpoint)


@pytest.fixture(scope="module")
def text_export(text_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``graphport export --no-validate`` of the checkpoint with a tokenizer."""
    out = tmp_path_factory.mktemp("cli-export") / "out"
    result = invoke("export", str(text_checkpoint), str(out), "--no-validate")
    assert re.search(r"Exported bert \(feature-extraction, onnx, fp32, opset 18, ", result.stdout)
    assert result.stdout.rstrip().endswith("; validation skipped")
    return out


def test_export_copies_the_tokenizer(text_export: Path):
    manifest = json.loads((text_export / MANIFEST_NAME).read_text())
    assert {"tokenizer.json", "tokenizer_config.json", "model.onnx"} <= set(manifest["files"])
    assert (text_export / "tokenizer.json").is_file()


def test_validate_writes_a_report(text_export: Path, tmp_path: Path):
    report_file = tmp_path / "report.json"
    result = invoke("validate", str(text_export), "--report", str(report_file))
    assert "Parity passed on onnxruntime, openvino." in result.stdout
    report = json.loads(report_file.read_text())
    assert report["passed"] is True
    assert set(report["runtimes"]) == {"onnxruntime", "openvino"}
    shape_cases = {r["case"] for r in report["results"] if r["case"].startswith("shape set")}
    assert len(shape_cases) >= 2
    assert "real sentences" in {r["case"] for r in report["results"]}  # it has a tokenizer
    manifest = json.loads((text_export / MANIFEST_NAME).read_text())
    assert manifest["validation"]["passed"] is True


def test_inspect(bert_export: Path):
    text = invoke("inspect", str(bert_export)).stdout
    assert "task        feature-extraction  family bert" in text
    assert "format      onnx  dtype fp32  opset 18" in text
    assert "graph       model: model.onnx" in text
    assert re.search(r"input\s+input_ids\s+int64\s+\['batch', 'sequence'\]", text)
    assert re.search(r"output\s+last_hidden_state\s+float32\s+\['batch', 'sequence', 32\]", text)
    assert "validation  passed  (onnxruntime max abs " in text
    assert re.search(r"files       .*model\.onnx \(\d+\.\d\d MB\)", text)


def test_inspect_json_is_the_manifest(bert_export: Path):
    data = json.loads(invoke("inspect", str(bert_export), "--json").stdout)
    assert data == json.loads((bert_export / MANIFEST_NAME).read_text())


def test_list():
    rows = [line.split() for line in invoke("list").stdout.splitlines()]
    by_type = {row[1]: row for row in rows}
    assert by_type["bert"][0] == "bert"
    assert "feature-extraction," in by_type["bert"]
    assert by_type["wav2vec2"][0] == "wav2vec2"
    data = json.loads(invoke("list", "--json").stdout)
    entries = {entry["model_type"]: entry for entry in data}
    assert entries["wav2vec2"]["family"] == "wav2vec2"
    assert "automatic-speech-recognition" in entries["wav2vec2"]["tasks"]
    assert "fill-mask" in entries["bert"]["tasks"]


def test_env_json():
    info = json.loads(invoke("env", "--json").stdout)
    assert re.match(r"\d+\.\d+", info["packages"]["torch"])
    assert "CPUExecutionProvider" in info["runtimes"]["onnxruntime"]
    assert info["runtimes"]["torch"].endswith("(eager reference)")


@pytest.fixture(scope="module")
def run_json(text_export: Path) -> dict[str, dict]:
    """``graphport run EXPORT TEXTS... --json`` on each graph runtime."""
    return {
        runtime: json.loads(
            invoke("run", str(text_export), *TEXTS, "--runtime", runtime, "--json").stdout
        )
        for runtime in ("onnxruntime", "openvino")
    }


def test_run_embeds_texts(run_json: dict[str, dict], text_export: Path):
    from transformers import AutoTokenizer

    data = run_json["onnxruntime"]
    assert data["task"] == "feature-extraction"
    assert data["runtime"].startswith("onnxruntime")
    assert data["inputs"] == TEXTS
    tokenizer = AutoTokenizer.from_pretrained(text_export, local_files_only=True)
    length = max(len(ids) for ids in tokenizer(TEXTS)["input_ids"])
    assert length == len(TEXTS[1].split()) + 2  # [CLS] ... [SEP], the longer text
    assert data["outputs"]["last_hidden_state"]["shape"] == [2, length, 32]
    similarity = np.array(data["similarity"])
    assert similarity.shape == (2, 2)
    np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-5)
    assert similarity[0, 1] == pytest.approx(similarity[1, 0])
    assert similarity[0, 1] < 1 - 1e-4  # different texts, different embeddings


def test_run_on_openvino_agrees_with_onnxruntime(run_json: dict[str, dict]):
    ort, ov = run_json["onnxruntime"], run_json["openvino"]
    assert ov["runtime"].startswith("openvino")
    assert (
        ov["outputs"]["last_hidden_state"]["shape"] == ort["outputs"]["last_hidden_state"]["shape"]
    )
    np.testing.assert_allclose(
        np.array(ov["outputs"]["last_hidden_state"]["data"]),
        np.array(ort["outputs"]["last_hidden_state"]["data"]),
        atol=1e-4,
    )
    np.testing.assert_allclose(np.array(ov["similarity"]), np.array(ort["similarity"]), atol=1e-4)


def test_optimize_quantize_and_bench(bert_export: Path, tmp_path: Path):
    optimized = invoke("optimize", str(bert_export), str(tmp_path / "o2"), "-O", "2")
    assert re.search(r"pass cleanup .* parity ok", optimized.stdout)
    assert re.search(r"pass ort-fusion .* parity ok", optimized.stdout)
    quantized = invoke(
        "quantize", str(tmp_path / "o2"), str(tmp_path / "q8"), "--mode", "int8-dynamic"
    )
    assert re.search(r"pass int8-dynamic .* min cosine 0\.9\d+ \(budget", quantized.stdout)
    bench = invoke("bench", str(tmp_path / "q8"), "--runs", "3", "--sequence-length", "16")
    header, row = bench.stdout.strip().splitlines()
    assert header.split() == ["runtime", "p50", "ms", "p90", "ms", "samples/s"]
    assert row.split()[0] == "onnxruntime"  # the fused, quantized graph runs there only
    assert float(row.split()[1]) > 0


def test_quantize_int4_names_the_kernel_path(bert_export: Path, tmp_path: Path):
    out = invoke("quantize", str(bert_export), str(tmp_path / "q4"), "--mode", "int4-weight")
    assert re.search(r"pass int4-weight .* parity ok", out.stdout)
    # The default method's graph, read back: uint8 zero points, the fast kernel.
    assert re.search(
        r"MatMulNBits: \d+ int4 nodes, block 32, accuracy level 4, uint8 zero points -> "
        r"onnxruntime's packed int8-activation kernel \(fast path\)",
        out.stdout,
    )


def test_export_optimizes_and_quantizes_on_the_way(text_checkpoint: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = invoke(
        "export", str(text_checkpoint), str(out), "-O", "2", "--quantize", "int8-dynamic"
    )
    assert re.search(r"pass ort-fusion .* parity ok", result.stdout)
    assert re.search(r"pass int8-dynamic .* parity ok", result.stdout)
    assert result.stdout.rstrip().endswith(f"Wrote {out}")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    names = [p["name"] for p in manifest["passes"]]
    assert names == ["cleanup", "ort-fusion", "pack-attention", "ort-cpu-kernels", "int8-dynamic"]
    assert (out / "tokenizer.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging left behind"

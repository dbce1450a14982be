"""The format registry: a format is one module, and nothing else tests a format's name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import graphport
from graphport.api.plan import plan_export
from graphport.cli import cli
from graphport.errors import MissingExtraError, UsageError
from graphport.formats import (
    Format,
    FormatOptions,
    format_names,
    formats,
    formats_for_target,
    get_format,
    register_format,
    unregister_format,
)
from graphport.formats.executorch import ExecuTorchFormat
from graphport.runtimes import available_runtimes, default_runtimes, get_runtime_class
from graphport.runtimes.executorch import ExecuTorchRuntime

PACKAGE = Path(graphport.__file__).parent
EDGE = re.escape("pip install 'graphport[edge]'")


@pytest.fixture
def dummy_format() -> Iterator[type[Format]]:
    """A format registered in the test alone: it writes the state dict with torch.save."""

    @register_format("dummy")
    class DummyFormat(Format):
        summary = "dummy (a test's)"
        writes = (".dummy",)
        runtimes = ("onnxruntime",)  # what it declares is all the others read

        def write(self, model, config, directory, options, name="model"):
            from graphport.export.artifacts import Artifact, spec_from_eager

            spec = spec_from_eager(model, config)
            spec.name, spec.file = name, f"{name}.dummy"
            torch.save(model.state_dict(), directory / spec.file)
            return Artifact(spec, [spec.file], {"strategy": "torch.save"}, None)

    yield DummyFormat
    unregister_format("dummy")


def test_the_builtin_formats_in_the_cli_order():
    assert format_names() == [
        "onnx",
        "openvino",
        "torchscript",
        "pt2",
        "ort",
        "tensorrt",
        "executorch",
        "litert",
    ]
    assert get_format("onnx").runtimes == ("onnxruntime", "openvino")  # the default first
    assert [f.name for f in formats() if f.takes_passes] == ["onnx"]
    assert [f.name for f in formats_for_target("cpp")] == ["onnx", "openvino", "pt2"]
    assert get_format("executorch").extra == "edge"


def test_an_unknown_format_names_the_known_ones():
    with pytest.raises(UsageError, match=r"Unknown format 'gif'; use one of onnx, openvino"):
        get_format("gif")


def test_a_format_registered_in_one_place_is_seen_everywhere(
    dummy_format, tiny_checkpoint, tmp_path: Path
):
    assert format_names()[-1] == "dummy"
    assert available_runtimes("dummy") == ["onnxruntime"]

    class Manifest:
        format, target = "dummy", None

    assert default_runtimes(Manifest()) == ["onnxruntime"]
    plan = plan_export(tiny_checkpoint("bert"), tmp_path / "plan", fmt="dummy")
    assert (plan.fmt, plan.runtimes) == ("dummy", ("onnxruntime",))
    assert isinstance(plan.format_options, FormatOptions)

    result = graphport.export_model(
        tiny_checkpoint("bert"), tmp_path / "out", fmt="dummy", validate=False
    )
    assert result.manifest.format == "dummy"
    assert (result.path / "model.dummy").is_file()

    listed = CliRunner().invoke(cli, ["list", "--formats", "--json"])
    assert listed.exit_code == 0, listed.output
    row = json.loads(listed.output)[-1]
    assert (row["format"], row["writes"], row["runtimes"]) == ("dummy", [".dummy"], ["onnxruntime"])


def test_a_format_whose_extra_is_missing_names_it(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint, tmp_path: Path
):
    monkeypatch.setattr(ExecuTorchFormat, "is_available", lambda self: False)
    with pytest.raises(MissingExtraError, match=f"The executorch format needs ExecuTorch.*{EDGE}"):
        plan_export(tiny_checkpoint("bert"), tmp_path / "out", fmt="executorch")

    out = tmp_path / "cli"
    args = ["export", str(tiny_checkpoint("bert")), str(out), "--format", "executorch"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "The executorch format needs ExecuTorch; install it with" in result.output
    assert "No runtime given" not in result.output
    assert not out.exists()  # refused before any work


def test_a_runtime_whose_extra_is_missing_names_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ExecuTorchRuntime, "is_available", classmethod(lambda cls: False))
    with pytest.raises(MissingExtraError, match=f"The executorch runtime needs ExecuTorch.*{EDGE}"):
        get_runtime_class("executorch")
    assert "executorch" not in available_runtimes()


# A comparison of a format variable, or of a manifest's format, with a literal.
NAME_TEST = re.compile(r"\b(fmt|format)\s*(==|!=|\bin\b|\bnot in\b)\s*[\"'(\[{]")


def test_no_module_outside_the_formats_tests_a_format_name():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "formats" not in path.relative_to(PACKAGE).parts[:1]
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if NAME_TEST.search(line)
    ]
    assert offenders == []

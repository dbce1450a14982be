"""The HTML parity report: a self-contained page that shows the verdict, the outputs, the
passes and, for localised reports, the first divergent module and a per-module chart.

The reports are real (a tiny BERT exported, optimized and tampered with, through the CLI);
the localisation fields (``first_divergence``, ``layers``, ``localized``,
``cross_runtime``) are added by hand to a real failing report, so the page is tested on
today's reports and on localised ones alike. One test opens the page in headless
chromium, as a reader would.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from conftest import add_word_tokenizer
from onnx import numpy_helper

from graphport.cli import cli
from graphport.errors import UsageError
from graphport.manifest import MANIFEST_NAME
from graphport.validators import render_html, write_html
from graphport.validators.chart import FAIL_COLOUR
from graphport.validators.html_page import OUTPUT_COLUMNS, Column
from graphport.verbosity import set_verbosity

TAMPERED = "encoder.layer.0.intermediate.dense.bias"
FIRST = "encoder.layer.0.intermediate.dense"
HOSTILE = '<script>alert("x")</script>'
VOID = {"br", "meta", "hr", "img", "input", "link", "col", "wbr", "area", "base", "source"}


class _Elements(HTMLParser):
    """Text inside each element with an id (whitespace collapsed), every tag with its
    attributes, and whether every element was closed."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.text: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in VOID:
            return
        element_id = dict(attrs).get("id")
        if element_id:
            self.text.setdefault(element_id, "")
        self.stack.append((tag, element_id))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))  # <path/> and friends in the SVG

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for _, element_id in self.stack:
            if element_id:
                self.text[element_id] += f" {data} "  # cells apart, as a reader sees them

    def close(self) -> None:
        super().close()
        self.text = {k: words(v) for k, v in self.text.items()}


def parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    assert not parser.problems, parser.problems
    assert not parser.stack, f"unclosed: {parser.stack}"
    return parser


def words(text: str) -> str:
    return " ".join(text.split())


def invoke(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture(autouse=True)
def _restore_verbosity() -> Iterator[None]:
    yield  # the CLI sets graphport's log level for the whole process
    set_verbosity("error")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``graphport export -O 1 --html``: a tiny BERT with a tokenizer (so the real-sentence
    case runs), through the cleanup pass; (export directory, page)."""
    root = tmp_path_factory.mktemp("html-export")
    checkpoint = add_word_tokenizer(Path(shutil.copytree(tiny_checkpoint("bert"), root / "ck")))
    out, page = root / "out", root / "report.html"
    invoke("export", str(checkpoint), str(out), "-O", "1", "--runtime", "onnxruntime",
           "--html", str(page))  # fmt: skip
    return out, page


@pytest.fixture(scope="module")
def failed(exported: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``graphport validate --report --html`` on a copy of the export with one bias of
    layer 0 shifted: {"report": JSON report, "page": HTML, "manifest": ...}."""
    root = tmp_path_factory.mktemp("html-tampered")
    tampered = Path(shutil.copytree(exported[0], root / "tampered"))
    model = onnx.load(tampered / "model.onnx")
    (bias,) = [t for t in model.graph.initializer if t.name == TAMPERED]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.05, bias.name))
    onnx.save(model, tampered / "model.onnx")
    report, page = root / "parity.json", root / "parity.html"
    result = invoke("validate", str(tampered), "--runtime", "onnxruntime,openvino",
                    "--report", str(report), "--html", str(page), code=1)  # fmt: skip
    assert "Parity failed" in result.output
    return {
        "report": json.loads(report.read_text()),
        "page": page.read_text(),
        "manifest": json.loads((tampered / MANIFEST_NAME).read_text()),
    }


def _modules() -> list[tuple[str, str]]:
    """(module, type) of the tiny BERT in execution order, as localisation lists them."""
    rows = [
        ("embeddings.word_embeddings", "Embedding"),
        ("embeddings.position_embeddings", "Embedding"),
        ("embeddings.LayerNorm", "LayerNorm"),
        ("embeddings", "BertEmbeddings"),
    ]
    for i in range(2):
        p = f"encoder.layer.{i}"
        rows += [
            (f"{p}.attention.self.query", "Linear"),
            (f"{p}.attention.self.key", "Linear"),
            (f"{p}.attention.self.value", "Linear"),
            (f"{p}.attention.output.dense", "Linear"),
            (f"{p}.attention.output.LayerNorm", "LayerNorm"),
            (f"{p}.intermediate.dense", "Linear"),
            (f"{p}.intermediate.intermediate_act_fn", "GELUActivation"),
            (f"{p}.output.dense", "Linear"),
            (f"{p}.output.LayerNorm", "LayerNorm"),
            (p, "BertLayer"),
        ]
    return rows


def localised(report: dict[str, Any]) -> dict[str, Any]:
    """The real failing report with the fields ``validate --localize`` adds: every module
    from the tampered one on out of tolerance, the runtimes agreeing with each other."""
    data = copy.deepcopy(report)
    rng = np.random.default_rng(0)
    for result in data["results"]:
        layers, off = [], False
        for module, module_type in _modules():
            off = off or module == FIRST
            error = float(rng.uniform(0.02, 0.06) if off else 10 ** rng.uniform(-7.5, -6))
            layers.append(
                {
                    "module": module,
                    # A hostile type name: the page must show it, not run it.
                    "module_type": HOSTILE if module == "embeddings" else module_type,
                    "onnx_node": f"node_{module.replace('.', '_')}",
                    "max_abs": error,
                    "mean_abs": error / 4,
                    "cosine": 1 - error**2,
                    "passed": error <= data["atol"],
                }
            )
        result["layers"] = layers
        first = next(layer for layer in layers if not layer["passed"])
        result["first_divergence"] = {k: v for k, v in first.items() if k != "passed"}
        result["localized"] = {"matched": len(layers), "modules": 40}
    data["cross_runtime"] = [
        {"a": "onnxruntime", "b": "openvino", "case": r["case"], "max_abs": 2e-6, "passed": True}
        for r in data["results"]
        if r["runtime"] == "onnxruntime"
    ]
    return data


def assert_self_contained(page: str) -> None:
    tags = parse(page).tags
    assert not [t for t, _ in tags if t in ("script", "link", "img", "iframe", "object")]
    urls = [v for _, attrs in tags for k, v in attrs.items() if k in ("src", "href") and v]
    assert urls == []
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page  # the browser may fetch nothing


def test_a_passing_export_writes_its_page(exported: tuple[Path, Path]):
    out, page_file = exported
    page = page_file.read_text()
    assert_self_contained(page)
    elements = parse(page)
    assert elements.text["verdict"] == "PASS"
    assert "every output is within tolerance" in elements.text["first-divergence"]
    outputs = elements.text["outputs"]
    report = json.loads((out / "parity.json").read_text())
    assert {r["case"] for r in report["results"]} >= {"real sentences"}
    for result in report["results"]:
        (diff,) = result["outputs"]
        row = f"{result['runtime']} {result['case']} last_hidden_state"
        assert f"{row} {'×'.join(map(str, diff['expected_shape']))} {diff['max_abs']:.2e}" in (
            outputs
        )
    assert "NO" not in outputs.split()
    matrix = elements.text["matrix"]
    assert matrix.count("✓ pass") == len(report["results"]) and "fail" not in matrix
    # The passes come from the manifest: -O 1 ran cleanup, checked against eager.
    passes = elements.text["passes"]
    assert re.search(
        r"cleanup (True|False) \d+\.\d\d atol 0\.0001, norm tol 0\.0002 yes onnxruntime: max abs",
        passes,
    )
    assert "Error per module" not in page and "<svg" not in page  # not localised


def test_a_failing_validation_writes_its_page_and_todays_report_renders(failed: dict):
    elements = parse(failed["page"])
    assert elements.text["verdict"] == "FAIL"
    assert "--localize" in elements.text["first-divergence"]  # says how to localise
    assert "max abs diff" in elements.text["failures"]
    assert elements.text["matrix"].count("✗ fail") == len(failed["report"]["results"])
    assert "None: the graph is the exporter's output" not in failed["page"]  # cleanup ran
    # The fields localisation adds render the same absent (older reports) as empty.
    absent, empty = copy.deepcopy(failed["report"]), copy.deepcopy(failed["report"])
    for result in absent["results"]:
        for key in ("first_divergence", "layers", "localized"):
            result.pop(key, None)
    absent.pop("cross_runtime", None)
    for result in empty["results"]:
        result.update(first_divergence=None, layers=[], localized=None)
    empty["cross_runtime"] = []
    assert render_html(absent, failed["manifest"]) == render_html(empty, failed["manifest"])
    assert "<svg" not in render_html(absent, failed["manifest"])


def test_a_localised_report_shows_the_first_divergence_and_the_chart(failed: dict):
    data = localised(failed["report"])
    page = render_html(data, failed["manifest"])
    assert_self_contained(page)
    elements = parse(page)
    assert elements.text["verdict"] == "FAIL"
    divergence = elements.text["first-divergence"]
    assert divergence.startswith(f"{FIRST} Linear · ONNX node node_encoder_layer_0_intermediate")
    assert f"first divergence in {len(data['results'])} of {len(data['results'])}" in divergence
    # One bar per module and (runtime, case), the failing ones red, in execution order.
    bars = [attrs for tag, attrs in elements.tags if tag == "rect"]
    modules = _modules()
    assert len(bars) == len(modules) * len(data["results"])
    failing = [i for i, (m, _) in enumerate(modules) if i >= modules.index((FIRST, "Linear"))]
    for start in range(0, len(bars), len(modules)):
        chart = bars[start : start + len(modules)]
        assert [i for i, b in enumerate(chart) if b["fill"] == FAIL_COLOUR] == failing
        assert [b["class"] for b in chart] == ["fail" if i in failing else "pass" for i in
                                               range(len(modules))]  # fmt: skip
    assert page.count(f"first divergence: {FIRST}</text>") == len(data["results"])
    assert "40 eager modules matched" in elements.text["export"]
    assert elements.text["cross-runtime"].count("onnxruntime openvino") == len(
        data["cross_runtime"]
    )
    # Text from the report is escaped, never markup.
    assert HOSTILE not in page and html_escaped(HOSTILE) in page


def html_escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def test_a_passing_quantized_report_charts_one_minus_cosine(exported: tuple[Path, Path]):
    # A cosine-judged export within its budget, whose modules still carry error.
    data = localised(json.loads((exported[0] / "parity.json").read_text()))
    data["cosine"] = 0.95
    for result in data["results"]:
        result["first_divergence"] = None
    elements = parse(render_html(data, None))
    assert elements.text["verdict"] == "PASS"
    assert "1 − cosine of each matched module" in elements.text["layers"]
    error, module, kind, result = max(
        (
            1 - layer["cosine"],
            layer["module"],
            layer["module_type"],
            f"{r['runtime']} / {r['case']}",
        )
        for r in data["results"]
        for layer in r["layers"]
    )
    assert elements.text["first-divergence"] == (
        "None: every output is within tolerance. Largest module error: "
        f"{module} ({kind}), 1 − cosine {error:.3g} on {result}."
    )


def test_an_output_measure_is_one_column_entry(failed: dict, monkeypatch):
    # A measure OutputDiff gains (the mean relative difference here) is one OUTPUT_COLUMNS entry.
    extra = Column("mean rel", "mean_rel", ".3f", title="mean relative difference")
    monkeypatch.setattr("graphport.validators.html_page.OUTPUT_COLUMNS", (*OUTPUT_COLUMNS, extra))
    report = copy.deepcopy(failed["report"])
    report["results"][0]["outputs"][0]["mean_rel"] = 0.75
    elements = parse(render_html(report, failed["manifest"]))
    titles = [a.get("title") for t, a in elements.tags if t == "th"]
    header = [t for t in titles if t == "mean relative difference"]
    assert len(header) == 1
    outputs = elements.text["outputs"]
    assert "top-1 mean rel tolerance pass" in outputs
    assert outputs.count(" 0.750 ") == 1


def test_the_verdicts_are_the_reports_own(failed: dict):
    # The page shows the verdict the report carries; it does not judge the numbers again.
    report = copy.deepcopy(failed["report"])
    for result in report["results"]:
        result["passed"] = True
        for output in result["outputs"]:
            output["passed"] = True
    report["passed"] = True
    elements = parse(render_html(report, failed["manifest"]))
    assert elements.text["verdict"] == "PASS"
    assert "failures" not in elements.text and "NO" not in elements.text["outputs"].split()
    # Data without them (an older graphport's parity.json) is refused in one sentence.
    del report["results"][0]["outputs"][0]["passed"]
    with pytest.raises(UsageError, match=r"no verdict for each result and output .* again"):
        render_html(report, failed["manifest"])


def test_html_paths_that_cannot_be_written_are_refused_up_front(exported, tmp_path: Path):
    out, _ = exported
    missing = invoke("validate", str(out), "--html", str(tmp_path / "no" / "r.html"), code=2)
    assert missing.stderr.strip().splitlines() == [
        f"error: Cannot write the HTML report to {tmp_path / 'no' / 'r.html'}: directory "
        f"{tmp_path / 'no'} does not exist; create it or choose another path."
    ]
    assert "Traceback" not in missing.output and "Validating" not in missing.stderr
    directory = invoke("optimize", str(out), str(tmp_path / "o"), "--html", str(tmp_path), code=2)
    assert "is a directory; pass a file path" in directory.stderr
    assert not (tmp_path / "o").exists()
    skipped = invoke("export", str(out), str(tmp_path / "e"), "--no-validate", "--html",
                     str(tmp_path / "e.html"), code=2)  # fmt: skip
    assert "--no-validate skips" in skipped.stderr


def test_writing_never_leaves_half_a_page(failed: dict, tmp_path: Path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("the previous report")
    # A page that fails to encode half-way: the old file stays, no scratch file is left.
    monkeypatch.setattr(
        "graphport.validators.html.render_html", lambda *a: "<html>" * 5000 + "\ud800"
    )
    with pytest.raises(UnicodeEncodeError):
        write_html(failed["report"], target, failed["manifest"])
    assert target.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    monkeypatch.undo()
    write_html(failed["report"], target, failed["manifest"])
    assert parse(target.read_text()).text["verdict"] == "FAIL"
    assert oct(target.stat().st_mode & 0o777) == "0o644"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; session-scoped, so it is set up (or skips) before the module's
    exports are built."""
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI") == "true":  # CI must have it: scripts/test.sh installs it
            pytest.fail("chromium is not installed; scripts/test.sh installs it as root")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def test_the_page_renders_in_headless_chromium(chromium: str, failed: dict, tmp_path: Path):
    page = write_html(localised(failed["report"]), tmp_path / "report.html", failed["manifest"])
    common = [chromium, "--headless", "--disable-gpu", "--no-sandbox",
              f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    elements = parse(dom)  # the DOM after rendering, as the browser built it
    assert elements.text["verdict"] == "FAIL"
    assert elements.text["first-divergence"].startswith(FIRST)
    assert len([t for t, _ in elements.tags if t == "rect"]) == len(_modules()) * len(
        failed["report"]["results"]
    )
    png = tmp_path / "report.png"
    subprocess.run(
        [*common, f"--screenshot={png}", "--window-size=1200,1600", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1200, 1600)

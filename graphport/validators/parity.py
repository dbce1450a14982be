"""Parity of an export against the eager model: the validation contract.

For each runtime and each case (two or more shape sets that differ from the trace shapes,
plus real tokenized sentences when the export has a tokenizer), the graph's outputs are
compared with the eager model's, output by output, with per-output tolerances. The graph
contract is checked as well (``graphport.validators.contract``). The result is a
``ParityReport`` (data, ``graphport.validators.report``); ``passed`` is the verdict, and
callers fail when it is False.

``validate_export`` runs in steps: build the tolerance, compute the eager reference
outputs, swap in the export's int4 weights where the manifest asks for it, run each
runtime on every case, compare the runtimes with each other, and check greedy generation.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import GraphportError
from graphport.export.config import OnnxConfig, ShapeSet, SubGraph
from graphport.manifest import ExportDirectory, Manifest
from graphport.validators.compare import Tolerance, compare_output
from graphport.validators.contract import (
    check_contract,
    intermediate_positions,
    valid_positions,
)
from graphport.validators.generation import check_generation
from graphport.validators.localize import (
    ModuleOutput,
    eager_module_outputs,
    graph_module_values,
    localize,
)
from graphport.validators.quantized import apply_int4_weights
from graphport.validators.reference import load_reference
from graphport.validators.report import CaseResult, CrossRuntimeDiff, ParityReport

logger = logging.getLogger(__name__)

# Sentences of different lengths, for the real-text case (padded into one batch).
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "graphport exports transformer models to portable graphs.",
    "Hi!",
    "Validation runs at shapes that differ from the ones used for tracing, so a graph "
    "that silently specialized a dimension is caught before it ships.",
)

# The default share of an output's RMS magnitude added to its absolute budget
# (compare_output). Chosen on real weights: SmolLM2-135M's correct fp32 export uses
# at most 0.36 of it (logits 6.8e-4 off at RMS 10.5, KV values 1.1e-4 at RMS 1.1, OpenVINO).
NORM_TOL = 2e-4

# Tolerance floors by export precision: half-precision graphs cannot meet fp32 budgets.
DTYPE_TOLERANCE = {"fp32": (0.0, 0.0), "fp16": (2e-2, 1e-2), "bf16": (1e-1, 5e-2)}

# manifest.tolerance["reference"] of an export validated against its own int4 weights.
INT4_REFERENCE = "int4 weights"

# (label, axis sizes, feeds): one case a graph is validated on.
Case = tuple[str, dict[str, int], dict[str, np.ndarray]]
Outputs = dict[str, np.ndarray]


@dataclasses.dataclass
class _Reference:
    """The eager side of a validation: each graph's cases and eager outputs, keyed by
    (graph, case label); with localization, every module's output and the graph values
    that may match them; judged against int4 weights, the float outputs as well."""

    graphs: list[SubGraph]
    cases: dict[str, list[Case]] = dataclasses.field(default_factory=dict)
    expected: dict[tuple[str, str], Outputs] = dataclasses.field(default_factory=dict)
    modules: dict[tuple[str, str], list[ModuleOutput]] = dataclasses.field(default_factory=dict)
    candidates: dict[str, dict[str, list[tuple[str, str]]]] = dataclasses.field(
        default_factory=dict
    )
    float_expected: dict[tuple[str, str], Outputs] = dataclasses.field(default_factory=dict)

    def prefix(self, graph: str) -> str:
        """A composite export's case labels name the graph."""
        return f"{graph} / " if len(self.graphs) > 1 else ""


def validate_export(
    export_dir: ExportDirectory | str | Path,
    runtimes: Sequence[str] = ("onnxruntime", "openvino"),
    atol: float | None = None,
    rtol: float | None = None,
    per_output_atol: Mapping[str, float] | None = None,
    reference_model: Any = None,
    config: OnnxConfig | None = None,
    shape_sets: Sequence[ShapeSet] | None = None,
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    cosine: float | None = None,
    localize: bool = False,
    release_reference: bool = False,
    norm_tol: float | None = None,
) -> ParityReport:
    """Validate every graph runtime against the eager model; returns the report.

    ``cosine`` (default: the manifest's ``tolerance.min_cosine``, set by quantization)
    judges outputs by their smallest cosine similarity to eager instead of by ``atol``.
    ``norm_tol`` (default: the manifest's, else ``NORM_TOL``) widens each output's budget
    by that share of the output's RMS magnitude (``compare_output``).
    ``localize`` compares every module's output as well (graphport/validators/localize.py):
    each result gets its per-module rows and, when it fails, its first divergent module.
    With several runtimes, each is compared with every other (``cross_runtime``).

    ``release_reference`` (for models near the memory's size) frees the eager model once
    its outputs are computed, before any runtime loads the graph, and runs the runtimes
    one at a time; it is ignored where the eager model is needed later (localization,
    the greedy generation check, or the torch runtime itself).
    """
    from graphport.models.registry import export_config

    directory = (
        export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
    )
    manifest = directory.manifest
    if config is None:
        config = export_config(directory)
    eager = reference_model if reference_model is not None else load_reference(directory)
    tolerance = _tolerance(manifest, eager, atol, rtol, per_output_atol, cosine, norm_tol)
    cached = manifest.kv_cache or manifest.exporter.get("static_cache")
    generate = bool(cached and tolerance.cosine is None and manifest.dtype == "fp32")
    release = release_reference and not (localize or generate or "torch" in runtimes)
    report = _new_report(directory, tolerance)
    reference = _reference_outputs(
        directory, config.sub_graphs(eager), shape_sets, seed, localize, report
    )
    if manifest.tolerance.get("reference") == INT4_REFERENCE and not localize:
        # A caller's model is not ours to change: the int4 weights go into a copy.
        if reference_model is not None:
            eager = copy.deepcopy(reference_model)
            reference.graphs = config.sub_graphs(eager)
        _apply_int4_reference(directory, eager, reference, report)
    if release:
        reference.graphs = [dataclasses.replace(g, module=None) for g in reference.graphs]
        eager = None
        gc.collect()

    actual: dict[str, dict[tuple[str, str], Outputs]] = {}
    for name in runtimes:
        options = dict((runtime_options or {}).get(name, {}))
        run = _RuntimeRun(name, options, localize, release)
        _run_runtime(run, directory, reference, tolerance, report, actual)
    report.cross_runtime = _cross_runtime(reference, actual, tolerance)
    # Tokens can only be expected to match where logits do to fp32 precision.
    # An ExecuTorch decoder's cache is inside its program (runtimes/executorch.py).
    if generate:
        # The eager reference against itself proves nothing about generation.
        loaded = [n for n in runtimes if report.runtimes.get(n) != "unavailable" and n != "torch"]
        report.generation = check_generation(
            directory, eager, config, loaded, runtime_options, seed
        )
    return report


def _tolerance(
    manifest: Manifest,
    eager: Any,
    atol: float | None,
    rtol: float | None,
    per_output_atol: Mapping[str, float] | None,
    cosine: float | None,
    norm_tol: float | None,
) -> Tolerance:
    """The caller's budget, else the manifest's, floored by the precision of the graph
    and of the eager reference."""
    atol_given = atol is not None or rtol is not None
    # fp16-compressed weights (OpenVINO IR) carry fp16 rounding even in an fp32 graph.
    weights = "fp16" if manifest.exporter.get("weights") == "fp16" else manifest.dtype
    floor_atol, floor_rtol = DTYPE_TOLERANCE[weights]
    atol = max(atol if atol is not None else manifest.tolerance["atol"], floor_atol)
    rtol = max(rtol if rtol is not None else manifest.tolerance["rtol"], floor_rtol)
    # A half-precision reference of a larger graph (validators/reference.py reference_dtype).
    reference_precision = _model_dtype(eager)
    if reference_precision in DTYPE_TOLERANCE:
        ref_atol, ref_rtol = DTYPE_TOLERANCE[reference_precision]
        atol, rtol = max(atol, ref_atol), max(rtol, ref_rtol)
    return Tolerance(
        atol,
        rtol,
        _norm_tol(manifest, atol_given, norm_tol),
        cosine if cosine is not None else manifest.tolerance.get("min_cosine"),
        dict(per_output_atol or {}),
    )


def _norm_tol(manifest: Manifest, budget_given: bool, norm_tol: float | None) -> float:
    """The magnitude term: the caller's; none when the caller set atol or rtol (a budget
    a user sets is absolute); else the manifest's, or ``NORM_TOL`` for an export made
    before the term existed."""
    if norm_tol is not None:
        return norm_tol
    return 0.0 if budget_given else manifest.tolerance.get("norm_tol", NORM_TOL)


def _new_report(directory: ExportDirectory, tolerance: Tolerance) -> ParityReport:
    """An empty report of the export, stating the budget it is judged by."""
    manifest = directory.manifest
    return ParityReport(
        str(directory.path),
        manifest.task,
        manifest.dtype,
        "torch eager",
        {},
        [],
        [],
        tolerance.atol,
        tolerance.rtol,
        dict(tolerance.per_output_atol),
        tolerance.cosine,
        tolerance.norm_tol,
    )


def _reference_outputs(
    directory: ExportDirectory,
    graphs: list[SubGraph],
    shape_sets: Sequence[ShapeSet] | None,
    seed: int,
    localize: bool,
    report: ParityReport,
) -> _Reference:
    """Check each graph's contract and compute its cases' eager outputs: each graph is
    validated on its own cases against its own eager module."""
    from graphport.runtimes.torch import TorchRuntime

    reference = _Reference(graphs)
    for graph in graphs:
        prefix = reference.prefix(graph.name)
        report.contract_problems += [
            problem.with_prefix(prefix)
            for problem in check_contract(directory, graph.config, graph.name)
        ]
        reference.cases[graph.name] = _cases(directory, graph.config, shape_sets, seed)
        runtime = TorchRuntime(directory, graph=graph.name, model=graph.module)
        for label, _, feeds in reference.cases[graph.name]:
            key = graph.name, label
            if not localize:
                reference.expected[key] = runtime.run(feeds)
                continue
            # One eager run gives the outputs and, through hooks, every module's output.
            reference.modules[key], reference.expected[key] = eager_module_outputs(
                graph.module, feeds, runtime.run
            )
        if localize:
            reference.candidates[graph.name] = _graph_candidates(directory, graph.name)
    return reference


def _apply_int4_reference(
    directory: ExportDirectory, eager: Any, reference: _Reference, report: ParityReport
) -> None:
    """Judge the graph against its own int4 weights (validators/quantized.py): ``eager``
    takes them, and the float outputs are kept to report the distance."""
    from graphport.runtimes.torch import TorchRuntime

    reference.float_expected = dict(reference.expected)
    manifest = directory.manifest
    replaced = sum(apply_int4_weights(eager, directory.path / g.file) for g in manifest.graphs)
    report.reference = f"torch eager with the export's int4 weights ({replaced} Linear layers)"
    for graph in reference.graphs:
        runtime = TorchRuntime(directory, graph=graph.name, model=graph.module)
        for label, _, feeds in reference.cases[graph.name]:
            reference.expected[graph.name, label] = runtime.run(feeds)


@dataclasses.dataclass
class _RuntimeRun:
    """One runtime to validate: its name, its constructor options, whether to localize
    failures, and whether to free each graph's session before the next loads."""

    name: str
    options: dict[str, Any]
    localize: bool
    release: bool


def _run_runtime(
    run: _RuntimeRun,
    directory: ExportDirectory,
    reference: _Reference,
    tolerance: Tolerance,
    report: ParityReport,
    actual: dict[str, dict[tuple[str, str], Outputs]],
) -> None:
    """Load one runtime on every graph and judge it on each case; its outputs go into
    ``actual[graph][runtime, case]`` for the cross-runtime comparison."""
    from graphport.runtimes import get_runtime_class

    name, options = run.name, run.options
    for graph in reference.graphs:
        prefix = reference.prefix(graph.name)
        try:
            if name == "torch":  # eager on one graph: that graph's own module
                options["model"] = graph.module
            runtime = get_runtime_class(name)(directory, graph=graph.name, **options)
        except GraphportError as e:
            report.runtimes[name] = "unavailable"
            report.results.append(
                CaseResult(name, f"{prefix}load", {}, [], 0.0, str(e), reason=e.reason)
            )
            return
        report.runtimes[name] = runtime.describe()
        logger.info("Validating %s on %s", graph.name, report.runtimes[name])
        for label, sizes, feeds in reference.cases[graph.name]:
            key = graph.name, label
            expected = reference.expected[key]
            result, outputs = _run_case(
                runtime, prefix + label, sizes, feeds, expected, graph.config, tolerance
            )
            report.results.append(result)
            if name != "torch":  # eager against eager proves nothing
                actual.setdefault(graph.name, {})[name, label] = outputs
            float_logits = reference.float_expected.get(key, {}).get("logits")
            if float_logits is not None:  # the quantization's own distance, plain atol
                valid = valid_positions(feeds, graph.config.outputs["logits"], float_logits.shape)
                diff = compare_output(
                    "logits",
                    float_logits,
                    outputs.get("logits"),
                    tolerance.atol,
                    tolerance.rtol,
                    valid,
                    tolerance.cosine,
                    tolerance.norm_tol,
                )
                report.float_reference.append((name, diff))
            if run.localize and name != "torch":
                modules = reference.modules[key]
                candidates = reference.candidates[graph.name]
                _localize_case(result, runtime, feeds, modules, candidates, tolerance)
        if run.release:  # one graph on one runtime in memory at a time
            del runtime
            gc.collect()


def _cross_runtime(
    reference: _Reference,
    actual: Mapping[str, Mapping[tuple[str, str], Outputs]],
    tolerance: Tolerance,
) -> list[CrossRuntimeDiff]:
    """Every pair of runtimes on every case of every graph."""
    diffs = []
    for graph in reference.graphs:
        prefix = reference.prefix(graph.name)
        diffs += [
            dataclasses.replace(d, case=prefix + d.case)
            for d in cross_runtime_diffs(
                actual.get(graph.name, {}),
                {label: feeds for label, _, feeds in reference.cases[graph.name]},
                graph.config.outputs,
                tolerance,
            )
        ]
    return diffs


def cross_runtime_diffs(
    actual: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    feeds: Mapping[str, Mapping[str, np.ndarray]],
    outputs: Mapping[str, Mapping[int, str]],
    tolerance: Tolerance,
) -> list[CrossRuntimeDiff]:
    """Every pair of runtimes on every case both ran: ``actual[runtime, case]`` are the
    outputs, ``feeds[case]`` the inputs (for the padding mask), ``outputs`` the axes."""
    runtimes = list(dict.fromkeys(name for name, _ in actual))
    diffs = []
    for i, a in enumerate(runtimes):
        for b in runtimes[i + 1 :]:
            for case, case_feeds in feeds.items():
                first, second = actual.get((a, case)), actual.get((b, case))
                if not first or not second:
                    continue
                compared = [
                    tolerance.compare(
                        name,
                        first[name],
                        second.get(name),
                        valid_positions(case_feeds, outputs.get(name, {}), first[name].shape),
                    )
                    for name in first
                    if name in outputs
                ]
                worst = max((c.max_abs for c in compared if np.isfinite(c.max_abs)), default=0.0)
                diffs.append(CrossRuntimeDiff(a, b, case, worst, all(c.passed for c in compared)))
    return diffs


def _run_case(
    runtime: Any,
    label: str,
    sizes: dict[str, int],
    feeds: dict[str, np.ndarray],
    expected: Outputs,
    config: OnnxConfig,
    tolerance: Tolerance,
) -> tuple[CaseResult, Outputs]:
    start = time.perf_counter()
    try:
        actual = runtime.run(feeds)
    except Exception as e:
        seconds = time.perf_counter() - start
        reason = e.reason if isinstance(e, GraphportError) else None
        return CaseResult(runtime.name, label, sizes, [], seconds, str(e), reason=reason), {}
    seconds = time.perf_counter() - start
    diffs = [
        tolerance.compare(
            out, ref, actual.get(out), valid_positions(feeds, config.outputs[out], ref.shape)
        )
        for out, ref in expected.items()
    ]
    return CaseResult(runtime.name, label, sizes, diffs, seconds), actual


def _localize_case(
    result: CaseResult,
    runtime: Any,
    feeds: dict[str, np.ndarray],
    eager: Sequence[ModuleOutput],
    candidates: Mapping[str, Sequence[tuple[str, str]]],
    tolerance: Tolerance,
) -> None:
    """Fill the result's per-module rows and its first divergence (when it failed)."""
    if result.error is not None or not candidates:
        result.localized = {"matched": 0, "modules": len(eager)}
        return
    try:
        found = localize(
            runtime, feeds, eager, candidates, tolerance, intermediate_positions(feeds)
        )
    except GraphportError as e:
        logger.warning("Cannot localize on %s: %s", runtime.name, e)
        result.localized = {"matched": 0, "modules": len(eager)}
        return
    result.layers = found.layers
    result.localized = {"matched": found.matched, "modules": found.modules}
    first = found.first_divergence
    if not result.passed and first is not None:
        result.first_divergence = first.divergence()


def text_case(export_dir: ExportDirectory, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Real sentences tokenized with the export's tokenizer, padded into one batch."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_dir.path, local_files_only=True)
    encoded = tokenizer(list(SENTENCES), padding=True, truncation=True, return_tensors="np")
    feeds = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in input_names}
    if "token_type_ids" in input_names and "token_type_ids" not in feeds:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    return feeds


def _cases(
    directory: ExportDirectory,
    config: OnnxConfig,
    shape_sets: Sequence[ShapeSet] | None,
    seed: int,
) -> list[tuple[str, dict[str, int], dict[str, np.ndarray]]]:
    """(label, axis sizes, feeds): the config's shape sets, plus real sentences for text."""
    cases = []
    for shapes in shape_sets or config.validation_shapes():
        feeds = {k: v.numpy() for k, v in config.dummy_inputs(shapes, seed=seed).items()}
        cases.append((str(shapes), dict(shapes.sizes), feeds))
    if config.modality == "text" and directory.has_tokenizer() and config.takes_sentences:
        feeds = text_case(directory, list(config.inputs))
        sizes = dict(zip(("batch", "sequence"), feeds["input_ids"].shape, strict=False))
        cases.append(("real sentences", sizes, feeds))
    return cases


def _model_dtype(model: Any) -> str:
    """fp32, fp16 or bf16: the precision of a torch model's first parameter."""
    try:
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    except (AttributeError, StopIteration):
        return "fp32"
    return {"float16": "fp16", "bfloat16": "bf16"}.get(dtype, "fp32")


def _graph_candidates(directory: ExportDirectory, graph: str) -> dict[str, list[tuple[str, str]]]:
    """Module path -> candidate values of an ONNX graph; none for other formats (an IR
    keeps tensor names but not the module scopes)."""
    path = directory.graph_path(graph)
    if path.suffix != ".onnx":
        logger.warning("Cannot localize %s: only ONNX graphs carry module scopes.", path.name)
        return {}
    found = graph_module_values(path)
    if not found:
        logger.warning(
            "Cannot localize %s: its nodes carry no module scopes (exported before graphport "
            "kept them); export it again.",
            path.name,
        )
    return found

"""Parity of an export against the eager model: the validation contract.

For each runtime and each case (two or more shape sets that differ from the trace shapes,
plus real tokenized sentences when the export has a tokenizer), the graph's outputs are
compared with the eager model's, output by output, with per-output tolerances. The graph
contract is checked as well: input/output names and order, and that every axis the
config calls dynamic is symbolic in the graph. The result is a ``ParityReport`` (data);
``passed`` is the verdict, and callers fail when it is False.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import GraphportError
from graphport.exporters.config import OnnxConfig, ShapeSet
from graphport.manifest import ExportDirectory
from graphport.validators.compare import OutputDiff, compare_output
from graphport.validators.generation import GenerationCheck, check_generation
from graphport.validators.localize import (
    LayerDiff,
    ModuleOutput,
    eager_module_outputs,
    graph_module_values,
    localize,
)
from graphport.validators.quantized import apply_int4_weights

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


@dataclasses.dataclass
class CaseResult:
    runtime: str
    case: str
    sizes: dict[str, int]
    outputs: list[OutputDiff]
    seconds: float
    error: str | None = None
    # With localization (graphport/validators/localize.py): the first module whose output
    # leaves tolerance (when the case fails), every matched module in execution order, and
    # {"matched": modules matched to graph values, "modules": modules with a float output}.
    first_divergence: dict[str, Any] | None = None
    layers: list[LayerDiff] = dataclasses.field(default_factory=list)
    localized: dict[str, int] | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)


@dataclasses.dataclass
class CrossRuntimeDiff:
    """Two runtimes' outputs against each other on one case (the worst output), judged
    with the same tolerance as against eager."""

    a: str
    b: str
    case: str
    max_abs: float
    passed: bool


@dataclasses.dataclass
class ParityReport:
    """Per-runtime, per-case, per-output differences against the eager reference."""

    export_dir: str
    task: str
    dtype: str
    reference: str
    runtimes: dict[str, str]
    contract_problems: list[str]
    results: list[CaseResult]
    atol: float
    rtol: float
    per_output_atol: dict[str, float] = dataclasses.field(default_factory=dict)
    cosine: float | None = None
    norm_tol: float = 0.0
    generation: list[GenerationCheck] = dataclasses.field(default_factory=list)
    cross_runtime: list[CrossRuntimeDiff] = dataclasses.field(default_factory=list)
    # Judged against eager with the export's int4 weights (validators/quantized.py): each
    # runtime's logits against eager with its float weights, per case: (runtime, diff).
    float_reference: list[tuple[str, OutputDiff]] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            bool(self.results)
            and not self.contract_problems
            and all(r.passed for r in self.results)
            and all(g.passed for g in self.generation)
        )

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        lines = list(self.contract_problems)
        for r in self.results:
            if r.error:
                lines.append(f"{r.runtime} / {r.case}: {r.error.rstrip('.')}")
            for o in r.outputs:
                if not o.passed:
                    lines.append(f"{r.runtime} / {r.case} / {o.name}: {o.failure()}")
        for g in self.generation:
            if g.error:
                lines.append(f"{g.runtime} / generation {g.case}: {g.error.rstrip('.')}")
            elif not g.passed:
                lines.append(
                    f"{g.runtime} / generation {g.case}: tokens differ from transformers' "
                    f"generate() from step {g.first_difference}"
                )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; differences that could not be computed (NaN) become None."""
        data = _finite_or_none(dataclasses.asdict(self))
        # The verdicts are properties, which asdict leaves out: readers of the JSON (the
        # HTML page) take them from here instead of judging the numbers again.
        for result, result_data in zip(self.results, data["results"], strict=True):
            result_data["passed"] = result.passed
            for diff, diff_data in zip(result.outputs, result_data["outputs"], strict=True):
                diff_data["passed"] = diff.passed
                diff_data["failure"] = diff.failure()
        for check, check_data in zip(self.generation, data["generation"], strict=True):
            check_data["passed"] = check.passed
            check_data["first_difference"] = check.first_difference
        data["passed"] = self.passed
        return data

    def summary(self) -> dict[str, Any]:
        """The compact form kept in the manifest: verdict and worst diff per runtime."""
        worst: dict[str, dict[str, float]] = {}
        for r in self.results:
            for o in r.outputs:
                entry = worst.setdefault(
                    r.runtime, {"max_abs": 0.0, "max_rel": 0.0, "min_cosine": 1.0}
                )
                if np.isfinite(o.max_abs):
                    entry["max_abs"] = max(entry["max_abs"], o.max_abs)
                    entry["max_rel"] = max(entry["max_rel"], o.max_rel)
                if np.isfinite(o.min_cosine):
                    entry["min_cosine"] = min(entry["min_cosine"], o.min_cosine)
        return _finite_or_none(
            {
                "passed": self.passed,
                "runtimes": self.runtimes,
                "cases": sorted({r.case for r in self.results}),
                "atol": self.atol,
                "rtol": self.rtol,
                "worst": worst,
                "generation": {
                    f"{g.runtime} / {g.case}": {
                        "tokens": len(g.expected[0]) if g.expected else 0,
                        "first_difference": g.first_difference,
                    }
                    for g in self.generation
                },
                "reference": self.reference,
                "next_token_agreement": self.agreement(),
                "float_weights_min_cosine": self.float_min_cosine(),
                "failures": self.failures(),
            }
        )

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def write_html(self, path: str | Path, manifest: Mapping[str, Any] | None = None) -> Path:
        """The report as one self-contained HTML page (``graphport.validators.html``);
        ``manifest`` defaults to the one in the export directory."""
        from graphport.validators.html import write_html

        return write_html(self, path, manifest)

    def table(self) -> str:
        """A plain-text table, one row per runtime x case x output.

        Differences at padding positions are shown in their own column and not judged.
        """
        header = (
            "runtime",
            "case",
            "output",
            "shape",
            "max abs",
            "mean abs",
            "max rel",
            "padding max abs",
            "min cos",
            "max/rms",
            "max KL",
            "ok",
        )
        rows = [header]
        for r in self.results:
            if r.error:
                rows.append((r.runtime, r.case, *("-",) * 9, "ERROR"))
            for o in r.outputs:
                rows.append(
                    (
                        r.runtime,
                        r.case,
                        o.name,
                        "x".join(map(str, o.expected_shape)),
                        f"{o.max_abs:.2e}",
                        f"{o.mean_abs:.2e}",
                        f"{o.max_rel:.2e}",
                        "-" if o.padding_max_abs is None else f"{o.padding_max_abs:.2e}",
                        f"{o.min_cosine:.6f}",
                        f"{o.norm_max:.2e}",
                        "-" if o.kl_max is None else f"{o.kl_max:.2e}",
                        "yes" if o.passed else "NO",
                    )
                )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for g in self.generation:
            verdict = (
                f"error: {g.error}"
                if g.error
                else "identical"
                if g.passed
                else f"differs from step {g.first_difference}"
            )
            steps = len(g.expected[0]) if g.expected else 0
            lines.append(
                f"generation  {g.runtime}  {g.case}: {len(g.expected)} x {steps} greedy tokens "
                f"against transformers' generate(): {verdict}"
            )
        lines += self._agreement_lines()
        lines += self._localization_lines()
        lines += self._cross_runtime_lines()
        return "\n".join(lines)

    def agreement(self) -> dict[str, float]:
        """Per runtime, the teacher-forced next-token agreement with eager over every
        logits position validated (the share whose top token is eager's)."""
        agreed: dict[str, list[float]] = {}
        diffs = self.float_reference or [(r.runtime, o) for r in self.results for o in r.outputs]
        for runtime, o in diffs:
            if o.top1_agreement is not None and o.top1_positions:
                entry = agreed.setdefault(runtime, [0.0, 0.0])
                entry[0] += o.top1_agreement * o.top1_positions
                entry[1] += o.top1_positions
        return {name: a / n for name, (a, n) in agreed.items() if n}

    def float_min_cosine(self) -> dict[str, float]:
        """Per runtime, the smallest logits cosine to eager with float weights (an export
        judged against its int4 weights; empty otherwise)."""
        worst: dict[str, float] = {}
        for runtime, o in self.float_reference:
            worst[runtime] = min(worst.get(runtime, 1.0), o.min_cosine)
        return worst

    def _agreement_lines(self) -> list[str]:
        if self.cosine is None:  # exact graphs: the table already says they match
            return []
        against = "eager with float weights" if self.float_reference else "eager"
        lines = [
            f"against eager with float weights  {runtime}: logits min cosine {worst:.4f} "
            "(the quantization's own error; the table compares with the int4 weights)"
            for runtime, worst in self.float_min_cosine().items()
        ]
        return lines + [
            f"next-token agreement  {name}: {share:.1%} of the validated positions pick "
            f"the top token of {against} (teacher-forced)"
            for name, share in self.agreement().items()
        ]

    def _localization_lines(self, rows: int = 10) -> list[str]:
        """The first divergence and a short per-layer table of every failing result; for
        an export judged by cosine (quantized), each runtime's layers ranked by cosine
        against fp32 eager, on its worst case: where the error accumulates."""
        lines = []
        summarized: set[str] = set()
        tabled: set[str] = set()
        for r in self.results:
            if r.localized is None:
                continue
            where = f"{r.runtime} / {r.case}"
            counted = f"{r.localized['matched']} of {r.localized['modules']} modules matched"
            if r.passed:
                if r.runtime not in summarized and all(layer.passed for layer in r.layers):
                    summarized.add(r.runtime)
                    lines.append(
                        f"localize  {where}: every matched module within tolerance ({counted})"
                    )
                continue
            first = r.first_divergence
            if first is None:
                lines.append(f"localize  {where}: no matched module leaves tolerance ({counted})")
                continue
            lines.append(
                f"first divergence  {where}: {first['module']} ({first['module_type']}, "
                f"node {first['onnx_node']}): max abs {first['max_abs']:.3g}, mean abs "
                f"{first['mean_abs']:.3g}, cosine {first['cosine']:.6f} ({counted})"
            )
            if r.runtime in tabled:  # one table per runtime: the cases mostly agree
                continue
            tabled.add(r.runtime)
            index = next(i for i, layer in enumerate(r.layers) if not layer.passed)
            lines += _layer_rows(r.layers[max(0, index - 2) : index - 2 + rows])
        if self.cosine is not None:
            worst: dict[str, CaseResult] = {}
            for r in self.results:
                if r.layers and (
                    r.runtime not in worst
                    or _min_cosine(r.layers) < _min_cosine(worst[r.runtime].layers)
                ):
                    worst[r.runtime] = r
            for r in worst.values():
                assert r.localized is not None
                lines.append(
                    f"error budget per layer  {r.runtime} / {r.case}: cosine against fp32 "
                    f"eager, worst first ({r.localized['matched']} of "
                    f"{r.localized['modules']} modules matched)"
                )
                ranked = sorted(r.layers, key=lambda layer: _nan_low(layer.cosine))
                lines += _layer_rows(ranked[:rows])
        return lines

    def _cross_runtime_lines(self) -> list[str]:
        passed = {
            (r.runtime, r.case): r.passed for r in self.results
        }  # both must pass eager for a disagreement to be news
        lines = []
        for d in self.cross_runtime:
            if d.passed:
                continue
            both = passed.get((d.a, d.case)) and passed.get((d.b, d.case))
            lines.append(
                f"cross-runtime  {d.a} vs {d.b}  {d.case}: max abs {d.max_abs:.3g} beyond "
                "tolerance" + (" although both pass against eager" if both else "")
            )
        return lines


def _nan_low(value: float) -> float:
    return value if np.isfinite(value) else -np.inf


def _min_cosine(layers: Sequence[LayerDiff]) -> float:
    return min(_nan_low(layer.cosine) for layer in layers)


def _layer_rows(layers: Sequence[LayerDiff]) -> list[str]:
    header = ("module", "type", "onnx node", "max abs", "mean abs", "cosine", "ok")
    rows = [header] + [
        (
            layer.module,
            layer.module_type,
            layer.onnx_node,
            f"{layer.max_abs:.2e}",
            f"{layer.mean_abs:.2e}",
            f"{layer.cosine:.6f}",
            "yes" if layer.passed else "NO",
        )
        for layer in layers
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def _is_token_aligned(axes: Mapping[int, str]) -> bool:
    """Whether an output's leading axes are the token positions of the attention mask."""
    return "sequence" in axes.values()


def check_contract(
    export_dir: ExportDirectory, config: OnnxConfig, graph: str = "model"
) -> list[str]:
    """Names, order and dynamic axes of the graph against the export config."""
    spec = export_dir.manifest.graph(graph)
    problems = []
    for kind, declared, actual in (
        ("inputs", config.inputs, spec.inputs),
        ("outputs", config.outputs, spec.outputs),
    ):
        names = [t.name for t in actual]
        if names != list(declared):
            problems.append(f"graph {kind} are {names}, the config declares {list(declared)}")
            continue
        for tensor in actual:
            for axis, axis_name in declared[tensor.name].items():
                dim = tensor.shape[axis] if axis < len(tensor.shape) else None
                if isinstance(dim, int):
                    problems.append(
                        f"axis {axis} ({axis_name}) of {tensor.name} was specialized to {dim} "
                        "during tracing; it must stay dynamic"
                    )
    return problems


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


def _valid_positions(
    feeds: Mapping[str, np.ndarray], axes: Mapping[int, str], shape: tuple[int, ...]
) -> np.ndarray | None:
    """Which (batch, position) entries of an output are real tokens, from the attention
    mask; with a KV cache the mask also covers the past, so its last columns are taken."""
    mask = feeds.get("attention_mask")
    if mask is None or not _is_token_aligned(axes) or len(shape) < 2:
        return None
    if mask.ndim != 2 or mask.shape[1] < shape[1]:
        return None
    return mask[:, mask.shape[1] - shape[1] :].astype(bool)


def _run_case(
    runtime: Any,
    label: str,
    sizes: dict[str, int],
    feeds: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    config: OnnxConfig,
    per_output_atol: Mapping[str, float],
    atol: float,
    rtol: float,
    cosine: float | None,
    norm_tol: float,
) -> tuple[CaseResult, dict[str, np.ndarray]]:
    start = time.perf_counter()
    try:
        actual = runtime.run(feeds)
    except Exception as e:
        return CaseResult(runtime.name, label, sizes, [], time.perf_counter() - start, str(e)), {}
    seconds = time.perf_counter() - start
    diffs = [
        compare_output(
            out,
            ref,
            actual.get(out),
            per_output_atol.get(out, atol),
            rtol,
            _valid_positions(feeds, config.outputs[out], ref.shape),
            cosine,
            norm_tol,
        )
        for out, ref in expected.items()
    ]
    return CaseResult(runtime.name, label, sizes, diffs, seconds), actual


def _intermediate_positions(
    feeds: Mapping[str, np.ndarray],
) -> Callable[[tuple[int, ...]], np.ndarray | None]:
    """Which (batch, position) entries of an intermediate value are real tokens: a value
    whose leading axes are the batch and the new positions is masked like an output."""
    mask = feeds.get("attention_mask")
    ids = feeds.get("input_ids")
    new = ids.shape[1] if ids is not None and ids.ndim == 2 else None

    def valid(shape: tuple[int, ...]) -> np.ndarray | None:
        if mask is None or mask.ndim != 2 or len(shape) < 2 or shape[0] != mask.shape[0]:
            return None
        if shape[1] == mask.shape[1]:
            return mask.astype(bool)
        if new is not None and shape[1] == new <= mask.shape[1]:
            return mask[:, mask.shape[1] - new :].astype(bool)
        return None

    return valid


def _localize_case(
    result: CaseResult,
    runtime: Any,
    feeds: dict[str, np.ndarray],
    eager: Sequence[ModuleOutput],
    candidates: Mapping[str, Sequence[tuple[str, str]]],
    atol: float,
    rtol: float,
    cosine: float | None,
) -> None:
    """Fill the result's per-module rows and its first divergence (when it failed)."""
    if result.error is not None or not candidates:
        result.localized = {"matched": 0, "modules": len(eager)}
        return
    try:
        found = localize(
            runtime, feeds, eager, candidates, atol, rtol, cosine, _intermediate_positions(feeds)
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


def cross_runtime_diffs(
    actual: Mapping[tuple[str, str], Mapping[str, np.ndarray]],
    feeds: Mapping[str, Mapping[str, np.ndarray]],
    outputs: Mapping[str, Mapping[int, str]],
    per_output_atol: Mapping[str, float],
    atol: float,
    rtol: float,
    cosine: float | None,
    norm_tol: float = 0.0,
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
                    compare_output(
                        name,
                        first[name],
                        second.get(name),
                        per_output_atol.get(name, atol),
                        rtol,
                        _valid_positions(case_feeds, outputs.get(name, {}), first[name].shape),
                        cosine,
                        norm_tol,
                    )
                    for name in first
                    if name in outputs
                ]
                worst = max((c.max_abs for c in compared if np.isfinite(c.max_abs)), default=0.0)
                diffs.append(CrossRuntimeDiff(a, b, case, worst, all(c.passed for c in compared)))
    return diffs


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
    from graphport.runtimes import get_runtime_class
    from graphport.runtimes.torch import TorchRuntime, load_reference

    directory = (
        export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
    )
    manifest = directory.manifest
    if config is None:
        config = export_config(directory)
    # fp16-compressed weights (OpenVINO IR) carry fp16 rounding even in an fp32 graph.
    weights = "fp16" if manifest.exporter.get("weights") == "fp16" else manifest.dtype
    floor_atol, floor_rtol = DTYPE_TOLERANCE[weights]
    atol = max(atol if atol is not None else manifest.tolerance["atol"], floor_atol)
    rtol = max(rtol if rtol is not None else manifest.tolerance["rtol"], floor_rtol)
    per_output_atol = dict(per_output_atol or {})
    if norm_tol is None:
        norm_tol = manifest.tolerance.get("norm_tol", NORM_TOL)
    if cosine is None:
        cosine = manifest.tolerance.get("min_cosine")

    eager = reference_model if reference_model is not None else load_reference(directory)
    # A half-precision reference of a larger graph (runtimes/torch.py reference_dtype).
    reference_precision = _model_dtype(eager)
    if reference_precision in DTYPE_TOLERANCE:
        ref_atol, ref_rtol = DTYPE_TOLERANCE[reference_precision]
        atol, rtol = max(atol, ref_atol), max(rtol, ref_rtol)
    cached = manifest.kv_cache or manifest.exporter.get("static_cache")
    generate = bool(cached and cosine is None and manifest.dtype == "fp32")
    release = release_reference and not (localize or generate or "torch" in runtimes)
    graphs = config.sub_graphs(eager)
    report = ParityReport(
        str(directory.path),
        manifest.task,
        manifest.dtype,
        "torch eager",
        {},
        [],
        [],
        atol,
        rtol,
        per_output_atol,
        cosine,
        norm_tol,
    )
    # Each graph is validated on its own cases against its own eager module; a composite
    # export's case labels name the graph.
    prefix = {g.name: f"{g.name} / " if len(graphs) > 1 else "" for g in graphs}
    cases: dict[str, list[tuple[str, dict[str, int], dict[str, np.ndarray]]]] = {}
    expected: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    modules: dict[tuple[str, str], list[ModuleOutput]] = {}
    candidates: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for graph in graphs:
        report.contract_problems += [
            prefix[graph.name] + problem
            for problem in check_contract(directory, graph.config, graph.name)
        ]
        cases[graph.name] = _cases(directory, graph.config, shape_sets, seed)
        reference = TorchRuntime(directory, graph=graph.name, model=graph.module)
        for label, _, feeds in cases[graph.name]:
            if not localize:
                expected[graph.name, label] = reference.run(feeds)
                continue
            # One eager run gives the outputs and, through hooks, every module's output.
            modules[graph.name, label], expected[graph.name, label] = eager_module_outputs(
                graph.module, feeds, reference.run
            )
        if localize:
            candidates[graph.name] = _graph_candidates(directory, graph.name)
    float_expected: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    int4_reference = manifest.tolerance.get("reference") == INT4_REFERENCE
    if int4_reference and not localize:
        # Judge the graph against its own int4 weights (validators/quantized.py), and keep
        # the float outputs to report the distance. A caller's model is not ours to change.
        float_expected = dict(expected)
        if reference_model is not None:
            eager = copy.deepcopy(reference_model)
            graphs = config.sub_graphs(eager)
        replaced = sum(apply_int4_weights(eager, directory.path / g.file) for g in manifest.graphs)
        report.reference = f"torch eager with the export's int4 weights ({replaced} Linear layers)"
        for graph in graphs:
            reference = TorchRuntime(directory, graph=graph.name, model=graph.module)
            for label, _, feeds in cases[graph.name]:
                expected[graph.name, label] = reference.run(feeds)
    if release:
        graphs = [dataclasses.replace(g, module=None) for g in graphs]
        eager = reference = None
        gc.collect()

    actual: dict[str, dict[tuple[str, str], dict[str, np.ndarray]]] = {}
    for name in runtimes:
        for graph in graphs:
            try:
                options = dict((runtime_options or {}).get(name, {}))
                if name == "torch":  # eager on one graph: that graph's own module
                    options["model"] = graph.module
                runtime = get_runtime_class(name)(directory, graph=graph.name, **options)
            except GraphportError as e:
                report.runtimes[name] = "unavailable"
                report.results.append(
                    CaseResult(name, f"{prefix[graph.name]}load", {}, [], 0.0, str(e))
                )
                break
            report.runtimes[name] = runtime.describe()
            logger.info("Validating %s on %s", graph.name, report.runtimes[name])
            for label, sizes, feeds in cases[graph.name]:
                result, outputs = _run_case(
                    runtime,
                    prefix[graph.name] + label,
                    sizes,
                    feeds,
                    expected[graph.name, label],
                    graph.config,
                    per_output_atol,
                    atol,
                    rtol,
                    cosine,
                    norm_tol,
                )
                report.results.append(result)
                if name != "torch":  # eager against eager proves nothing
                    actual.setdefault(graph.name, {})[name, label] = outputs
                if float_expected and "logits" in float_expected[graph.name, label]:
                    diff = compare_output(
                        "logits",
                        float_expected[graph.name, label]["logits"],
                        outputs.get("logits"),
                        atol,
                        rtol,
                        _valid_positions(
                            feeds,
                            graph.config.outputs["logits"],
                            float_expected[graph.name, label]["logits"].shape,
                        ),
                        cosine,
                        norm_tol,
                    )
                    report.float_reference.append((name, diff))
                if localize and name != "torch":
                    _localize_case(
                        result,
                        runtime,
                        feeds,
                        modules[graph.name, label],
                        candidates[graph.name],
                        atol,
                        rtol,
                        cosine,
                    )
            if release:  # one graph on one runtime in memory at a time
                del runtime
                gc.collect()
    for graph in graphs:
        report.cross_runtime += [
            dataclasses.replace(d, case=prefix[graph.name] + d.case)
            for d in cross_runtime_diffs(
                actual.get(graph.name, {}),
                {label: feeds for label, _, feeds in cases[graph.name]},
                graph.config.outputs,
                per_output_atol,
                atol,
                rtol,
                cosine,
                norm_tol,
            )
        ]
    # Tokens can only be expected to match where logits do to fp32 precision.
    # An ExecuTorch decoder's cache is inside its program (runtimes/executorch.py).
    if generate:
        # The eager reference against itself proves nothing about generation.
        loaded = [n for n in runtimes if report.runtimes.get(n) != "unavailable" and n != "torch"]
        report.generation = check_generation(
            directory, eager, config, loaded, runtime_options, seed
        )
    return report


# manifest.tolerance["reference"] of an export validated against its own int4 weights.
INT4_REFERENCE = "int4 weights"


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

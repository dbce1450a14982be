"""The parity report: per-runtime, per-case, per-output differences against eager.

``ParityReport`` is data (``to_dict`` for JSON, ``summary`` for the manifest) with its
verdict in ``passed``; ``table`` and ``failures`` word it for people, and ``failure_reasons``
gives each failure's ``Reason`` beside its words. Building it is
``graphport.validators.parity``'s work.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import Reason
from graphport.validators.compare import OutputDiff
from graphport.validators.generation import GenerationCheck
from graphport.validators.html import write_html
from graphport.validators.localize import LayerDiff


@dataclasses.dataclass
class CaseResult:
    runtime: str
    case: str
    sizes: dict[str, int]
    outputs: list[OutputDiff]
    seconds: float
    error: str | None = None
    # The error's Reason where graphport raised it (a runtime's own error has none).
    reason: Reason | None = None
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
        return [line for _, line in self.failure_reasons()]

    def failure_reasons(self) -> list[tuple[Reason, str]]:
        """Each failure as ``(reason, line)``: the reason as data, the line for people."""
        lines = [
            (getattr(p, "reason", Reason.GRAPH_CONTRACT), str(p)) for p in self.contract_problems
        ]
        for r in self.results:
            if r.error:
                line = f"{r.runtime} / {r.case}: {r.error.rstrip('.')}"
                lines.append((r.reason or Reason.RUNTIME_ERROR, line))
            for o in r.outputs:
                if not o.passed:
                    line = f"{r.runtime} / {r.case} / {o.name}: {o.failure()}"
                    lines.append((Reason.OUTPUTS_DIFFER, line))
        for g in self.generation:
            if g.error:
                line = f"{g.runtime} / generation {g.case}: {g.error.rstrip('.')}"
                lines.append((Reason.RUNTIME_ERROR, line))
            elif not g.passed:
                line = (
                    f"{g.runtime} / generation {g.case}: tokens differ from transformers' "
                    f"generate() from step {g.first_difference}"
                )
                lines.append((Reason.GENERATION_DIFFERS, line))
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

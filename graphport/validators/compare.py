"""Compare one output of a runtime against the eager reference: data first, verdict after."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from graphport.metrics import row_cosines


@dataclasses.dataclass
class OutputDiff:
    """How far one output is from the reference, and whether that is within tolerance.

    An element passes when ``|actual - expected| <= atol + rtol * |expected| + norm_tol *
    scale``, where ``scale`` is the root mean square of the reference output (over the
    judged positions). The first two terms are numpy's ``allclose``; the third makes the
    budget follow the output's magnitude: float32 rounding in a graph grows with the size of
    the values it sums, so the logits of a real language model (tens in magnitude) differ
    from eager by a few 1e-4 in a correct export, where a tiny random model's differ by
    1e-6. ``norm_max`` is the largest difference in units of ``scale``. Relative differences
    divide by ``|expected|`` floored at ``atol`` so that near-zero references do not turn
    rounding noise into huge ratios.

    Positions an attention mask marks as padding carry no meaning (every consumer masks
    them), so when a mask is given they are left out of the verdict; their largest
    difference is still recorded in ``padding_max_abs``.

    ``min_cosine`` is the smallest cosine similarity between actual and expected vectors
    along the last axis (per token for hidden states, per row for logits). Quantized and
    half-precision graphs are judged by it (``cosine`` set) instead of by ``atol``: their
    errors are expected, only their direction matters downstream.
    """

    name: str
    expected_shape: list[int]
    actual_shape: list[int] | None
    atol: float
    rtol: float
    max_abs: float = float("nan")
    mean_abs: float = float("nan")
    max_rel: float = float("nan")
    mean_rel: float = float("nan")
    mismatched: int = 0
    total: int = 0
    padding_max_abs: float | None = None
    min_cosine: float = float("nan")
    cosine: float | None = None
    norm_tol: float = 0.0
    scale: float = float("nan")
    norm_max: float = float("nan")
    # For logits: the share of positions whose highest-scoring token is eager's
    # (teacher-forced next-token agreement: both were fed the same tokens), and the KL
    # divergence KL(eager || graph) of the next-token distributions, in nats per position.
    top1_agreement: float | None = None
    top1_positions: int = 0
    kl_mean: float | None = None
    kl_max: float | None = None
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and self.mismatched == 0

    def __bool__(self) -> bool:
        return self.passed

    def failure(self) -> str | None:
        """Why the output fails, in one clause (None when it passes)."""
        if self.passed:
            return None
        if self.problem:
            return self.problem
        if self.cosine is not None:
            return (
                f"{self.mismatched}/{self.total} vectors below cosine {self.cosine:g} "
                f"(min {self.min_cosine:.4f})"
            )
        budget = f"atol {self.atol:g}"
        if self.rtol:
            budget += f" + rtol {self.rtol:g} x |expected|"
        if self.norm_tol and np.isfinite(self.scale):
            budget += f" + {self.norm_tol:g} x rms {self.scale:.3g}"
        off = f"{self.mismatched}/{self.total} values off"
        return f"{off}, max abs diff {self.max_abs:.3g} > {budget}"


def compare_output(
    name: str,
    expected: np.ndarray,
    actual: np.ndarray | None,
    atol: float,
    rtol: float,
    valid: np.ndarray | None = None,
    cosine: float | None = None,
    norm_tol: float = 0.0,
) -> OutputDiff:
    """Compare ``actual`` with ``expected``; ``valid`` (boolean, a prefix of the shape) marks
    the positions to judge, e.g. the attention mask for (batch, sequence, ...) outputs."""
    diff = OutputDiff(
        name,
        list(expected.shape),
        None,
        atol,
        rtol,
        total=int(expected.size),
        cosine=cosine,
        norm_tol=norm_tol,
    )
    if actual is None:
        diff.problem = "missing from the runtime's outputs"
        return diff
    diff.actual_shape = list(actual.shape)
    if actual.shape != expected.shape:
        diff.problem = f"shape {list(actual.shape)} != reference {list(expected.shape)}"
        return diff
    exp = expected.astype(np.float64)
    act = actual.astype(np.float64)
    if valid is not None and valid.shape == exp.shape[: valid.ndim] and not valid.all():
        padding = np.abs(act[~valid] - exp[~valid])
        finite = padding[np.isfinite(padding)]
        diff.padding_max_abs = float(finite.max()) if finite.size else None
        act, exp = act[valid], exp[valid]
        diff.total = int(exp.size)
    if not np.isfinite(act).all() and np.isfinite(exp).all():
        diff.problem = "non-finite values where the reference is finite"
    abs_diff = np.abs(act - exp)
    if abs_diff.size:
        with np.errstate(invalid="ignore"):
            rel_diff = abs_diff / np.maximum(np.abs(exp), max(atol, 1e-12))
            diff.max_abs = float(np.nanmax(abs_diff))
            diff.mean_abs = float(np.nanmean(abs_diff))
            diff.max_rel = float(np.nanmax(rel_diff))
            diff.mean_rel = float(np.nanmean(rel_diff))
        finite = exp[np.isfinite(exp)]
        diff.scale = float(np.sqrt(np.mean(np.square(finite)))) if finite.size else 0.0
        if diff.scale > 0:
            diff.norm_max = diff.max_abs / diff.scale
    vectors = exp.reshape(-1, exp.shape[-1]) if exp.ndim > 1 else exp.reshape(1, -1)
    cosines = row_cosines(act.reshape(vectors.shape), vectors) if vectors.size else vectors[:, 0]
    if cosines.size:
        diff.min_cosine = float(np.nanmin(cosines)) if not np.isnan(cosines).all() else 0.0
    if name == "logits" and vectors.size and vectors.shape[-1] > 1:
        agree = act.reshape(vectors.shape).argmax(-1) == vectors.argmax(-1)
        diff.top1_agreement, diff.top1_positions = float(agree.mean()), int(agree.size)
        if np.isfinite(act).all() and np.isfinite(vectors).all():
            kl = next_token_kl(vectors, act.reshape(vectors.shape))
            diff.kl_mean, diff.kl_max = float(kl.mean()), float(kl.max())
    if cosine is None:
        bound = atol + rtol * np.abs(exp) + norm_tol * diff.scale
        diff.mismatched = int((~(abs_diff <= bound)).sum())
    else:
        diff.total = int(cosines.size)
        diff.mismatched = int((~(cosines >= cosine)).sum())
    return diff


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """The budget an export is judged by, built once per validation and passed around.

    ``atol``, ``rtol`` and ``norm_tol`` are the three terms of ``OutputDiff``'s element
    bound; ``cosine``, when set, judges outputs by their smallest cosine similarity
    instead; ``per_output_atol`` overrides ``atol`` for the outputs it names.
    """

    atol: float
    rtol: float
    norm_tol: float = 0.0
    cosine: float | None = None
    per_output_atol: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def atol_for(self, name: str) -> float:
        """The absolute budget of one output: its override, else ``atol``."""
        return self.per_output_atol.get(name, self.atol)

    def compare(
        self,
        name: str,
        expected: np.ndarray,
        actual: np.ndarray | None,
        valid: np.ndarray | None = None,
    ) -> OutputDiff:
        """``compare_output`` with this budget for the output ``name``."""
        return compare_output(
            name,
            expected,
            actual,
            self.atol_for(name),
            self.rtol,
            valid,
            self.cosine,
            self.norm_tol,
        )


def next_token_kl(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """KL(softmax(expected) || softmax(actual)) per row of two (rows, vocab) logit arrays,
    in nats: how much the graph's next-token distribution departs from eager's."""
    log_p = _log_softmax(expected.astype(np.float64))
    log_q = _log_softmax(actual.astype(np.float64))
    return np.maximum((np.exp(log_p) * (log_p - log_q)).sum(-1), 0.0)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

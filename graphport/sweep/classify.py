"""Why a row failed: its category as data, and one line of words for the table cell.

graphport's own errors carry their cause as a ``Reason`` (``graphport.errors``): the error
class's, or one set at the raise. A parity failure's reason comes from the report
(``ParityReport.failure_reasons``). ``classify`` reads those first, so that rewording an
error never moves a row to another category.

Regular expressions remain for third-party messages only: torch.export, transformers and
the runtimes raise exceptions whose type does not name the cause (a data-dependent guard
and an unsupported operator are both a ``RuntimeError``), so their words are all there is.
They refine the reasons that say where an export failed but not why (``TRACING_FAILED``,
``RUNTIME_ERROR``), and classify errors graphport did not raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from graphport.errors import GraphportError, ParityError, Reason
from graphport.sweep.rows import Category

# (reason, pattern) in order, over third-party messages (see the module docstring): the
# first pattern found names the reason.
THIRD_PARTY_RULES: tuple[tuple[Reason, str], ...] = (
    # transformers' requires_backends, and imports of a model's optional packages
    (Reason.MODEL_CLASS_UNAVAILABLE, r"ImportError|No module named|requires the .* librar"),
    # torch.export's guards on values that are only known at run time
    (Reason.DATA_DEPENDENT, r"data.dependent|GuardOnDataDependent|unbacked"),
    # torch.export's dynamic-shape constraint solver
    (Reason.AXIS_SPECIALIZED, r"specialized|Constraints violated|ConstraintViolation"),
    # torch's decompositions, the ONNX translation, the runtimes' kernels
    (
        Reason.UNSUPPORTED_OPERATOR,
        r"[Uu]nsupported|not supported|No decomposition|not implemented",
    ),
)

# Reasons that say where an export failed, not why: the cause's own words may say more.
WHERE_NOT_WHY = frozenset({Reason.TRACING_FAILED, Reason.RUNTIME_ERROR})

_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:/[\w.@+~-]+){2,}/?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(text: str, limit: int = 200) -> str:
    """The first line of an error, without local paths, short enough for a table cell."""
    text = _ANSI.sub("", str(text))
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    line = _PATH.sub("<path>", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, then its causes, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def root_cause(error: BaseException) -> str:
    """The innermost cause's type and first informative line."""
    *_, inner = _chain(error)
    return f"{type(inner).__name__}: {one_line(str(inner), 400)}"


def match_third_party(text: str) -> Reason | None:
    """The reason a third-party message names (``THIRD_PARTY_RULES``), None if none."""
    for reason, pattern in THIRD_PARTY_RULES:
        if re.search(pattern, text):
            return reason
    return None


def classify(
    error: BaseException | str,
    default: Reason | Category = Category.OTHER,
    detail: str = "",
) -> Reason | Category:
    """The category of a failure.

    For an exception: an ``ImportError`` anywhere in its chain (a model class whose
    packages are missing); else the first reason of graphport's errors in the chain that
    says why; else the third-party words (``detail``, such as the exporter's own first
    failure, the messages of exceptions graphport did not raise, and those of errors that
    say only where); else that where, or ``default``. A string is a third-party message.
    """
    if isinstance(error, str):
        return match_third_party(error) or default
    chain = list(_chain(error))
    if any(isinstance(e, ImportError) for e in chain):
        return Reason.MODEL_CLASS_UNAVAILABLE
    reasons = [e.reason for e in chain if isinstance(e, GraphportError) and e.reason is not None]
    why = next((r for r in reasons if r not in WHERE_NOT_WHY), None)
    if why is not None:
        return why
    words = [
        f"{type(e).__name__}: {e}"
        for e in chain
        if not isinstance(e, GraphportError) or e.reason in WHERE_NOT_WHY
    ]
    return match_third_party(" ".join([detail, *words])) or (reasons[0] if reasons else default)


def parity_failure(error: ParityError) -> tuple[Reason | Category, str]:
    """The category and the line of a parity failure: its report's first failure, whose
    reason the report gives (a runtime's error refined by the runtime's own words)."""
    report: Any = error.report
    failures = report.failure_reasons() if report is not None else []
    if not failures:
        return error.reason or Reason.OUTPUTS_DIFFER, str(error)
    reason, line = failures[0]
    if reason in WHERE_NOT_WHY:
        reason = match_third_party(line) or reason
    return reason, line

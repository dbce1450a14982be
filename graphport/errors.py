"""The graphport error hierarchy.

Every error a user can provoke is a ``GraphportError``: the CLI prints its message as one
clear sentence (what went wrong, why, how to fix it) and exits with ``exit_code``. Errors
from deep inside torch or a runtime are wrapped with ``raise ... from e`` so the cause is
kept for ``--verbose`` runs.

An error also says why it happened as data: its ``reason``, a ``Reason`` (set by its class,
or at the raise where one class covers several causes), so that tools which count failures
by cause (``graphport sweep``) read the error's type and reason instead of its words.
"""

from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why an export stopped, as data; the values are the sweep's category names.

    Most are set where graphport raises; ``DATA_DEPENDENT`` and ``UNSUPPORTED_OPERATOR`` name
    causes found only in third-party messages (torch.export's), and ``MODEL_CLASS_UNAVAILABLE``
    is an ``ImportError`` from transformers. ``TRACING_FAILED`` and ``RUNTIME_ERROR`` say
    where it failed, not why: the cause's own message may say more.
    """

    MODEL_CLASS_UNAVAILABLE = "model class unavailable"
    TASK_NOT_SUPPORTED = "task not supported"
    CONFIG_INCOMPLETE = "checkpoint config incomplete"
    CACHE_NOT_CARRIED = "cache not carried"
    MAIN_INPUT_UNSUPPORTED = "unsupported main input"
    INPUTS_NOT_DERIVED = "forward needs other inputs"
    CONFIG_REJECTS_SMALL_SIZES = "config rejects small sizes"
    EAGER_RUN_FAILED = "eager run on derived inputs"
    OUTPUTS_NOT_FOUND = "outputs not found"
    CHECKPOINT_RELOAD = "checkpoint reload"
    DATA_DEPENDENT = "data-dependent control flow"
    AXIS_SPECIALIZED = "dynamic axis specialized"
    UNSUPPORTED_OPERATOR = "unsupported operator"
    TRACING_FAILED = "tracing failed"
    GRAPH_CONTRACT = "graph contract"
    GENERATION_DIFFERS = "generation differs"
    RUNTIME_ERROR = "runtime error"
    OUTPUTS_DIFFER = "outputs differ"

    def __str__(self) -> str:
        return self.value


class GraphportError(Exception):
    """Base class of every error graphport raises on purpose.

    ``reason`` is the class's own (None: the message alone says why); ``reason=`` at the
    raise overrides it where one class covers several causes.
    """

    exit_code = 1
    reason: Reason | None = None

    def __init__(self, *args: object, reason: Reason | None = None) -> None:
        super().__init__(*args)
        if reason is not None:
            self.reason = reason


class UsageError(GraphportError, ValueError):
    """An argument or path given by the user cannot be used as given."""

    exit_code = 2


class ModelLoadError(GraphportError):
    """A checkpoint directory is missing, incomplete or corrupt."""


class UnsupportedModelError(GraphportError, ValueError):
    """The architecture or task is not supported (the message says what is)."""


class UnsupportedTaskError(UnsupportedModelError):
    """The model type has no head for the task asked (the message names those it has)."""

    exit_code = 2
    reason = Reason.TASK_NOT_SUPPORTED


class ExportError(GraphportError):
    """Tracing or serializing the graph failed."""


class EagerModelError(ExportError, ValueError):
    """The eager model itself fails on inputs built from its config: the checkpoint's sizes
    do not fit together, so there is nothing to trace (the input is at fault: exit 2)."""

    exit_code = 2
    reason = Reason.EAGER_RUN_FAILED


class PassError(GraphportError):
    """A graph pass failed or broke its numerical budget."""


class RuntimeUnavailableError(GraphportError):
    """A runtime is not installed or cannot load the artifact."""


class MissingExtraError(RuntimeUnavailableError):
    """A format or runtime needs a package of an optional extra that is not installed: a
    usage error (exit 2), found before any work, whose message names the extra."""

    exit_code = 2


class ManifestError(GraphportError):
    """An export directory has no readable graphport.json manifest."""


class ParityError(GraphportError, ValueError):
    """A runtime's outputs differ from the eager reference beyond tolerance.

    It is a ``ValueError`` too, as ``transformers.onnx.validate_model_outputs`` raised one,
    so scripts written for that API keep catching it.
    """

    reason = Reason.OUTPUTS_DIFFER

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class BudgetError(GraphportError):
    """No configuration meets an accuracy budget (``quantize --mode auto``); ``result``
    holds what was tried, with the best loss reached."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result

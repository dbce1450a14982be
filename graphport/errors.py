"""The graphport error hierarchy.

Every error a user can provoke is a ``GraphportError``: the CLI prints its message as one
clear sentence (what went wrong, why, how to fix it) and exits with ``exit_code``. Errors
from deep inside torch or a runtime are wrapped with ``raise ... from e`` so the cause is
kept for ``--verbose`` runs.
"""

from __future__ import annotations


class GraphportError(Exception):
    """Base class of every error graphport raises on purpose."""

    exit_code = 1


class UsageError(GraphportError, ValueError):
    """An argument or path given by the user cannot be used as given."""

    exit_code = 2


class ModelLoadError(GraphportError):
    """A checkpoint directory is missing, incomplete or corrupt."""


class UnsupportedModelError(GraphportError, ValueError):
    """The architecture or task is not supported (the message says what is)."""


class ExportError(GraphportError):
    """Tracing or serializing the graph failed."""


class EagerModelError(ExportError, ValueError):
    """The eager model itself fails on inputs built from its config: the checkpoint's sizes
    do not fit together, so there is nothing to trace (the input is at fault: exit 2)."""

    exit_code = 2


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

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class BudgetError(GraphportError):
    """No configuration meets an accuracy budget (``quantize --mode auto``); ``result``
    holds what was tried, with the best loss reached."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result

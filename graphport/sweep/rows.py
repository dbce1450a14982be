"""A sweep row: one (model type, task), how far it got, on which runtimes, and why it stopped.

A row is plain data that crosses process boundaries as JSON (``to_dict`` / ``from_dict``):
its ``category`` is a ``Reason`` (read off the error that stopped it, see
``graphport.sweep.classify``) or a ``Category`` the runner set (a timeout, a memory kill, a
crash), never words to parse again.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any

from graphport.errors import Reason

SWEEP_RUNTIMES = ("onnxruntime", "openvino")
GENERATION_TASKS = ("text-generation-with-past", "text2text-generation-with-past")


class Status(str, enum.Enum):
    VALIDATED = "validated"
    PARITY_FAILED = "exported, failed parity"
    EXPORT_FAILED = "failed to export"
    BUILD_FAILED = "could not build a tiny model"

    def __str__(self) -> str:
        return self.value


class Category(str, enum.Enum):
    """Why a row stopped where no error says so: the runner stopped it, or the sweep's own
    rules judged it (the errors' reasons are ``graphport.errors.Reason``)."""

    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out of memory"
    CRASHED = "crashed"
    TOO_LARGE = "too large even when shrunk"
    MODEL_REFUSED = "model refused"
    GENERATION_NOT_CHECKED = "generation not checked"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


def category_of(value: str | None) -> Reason | Category | str | None:
    """A category read back from JSON as the enum it was written from (a name an older
    cache wrote stays as it is)."""
    if value is None:
        return None
    for kind in (Reason, Category):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


@dataclasses.dataclass
class SweepResult:
    """One model type and task: how far it got, on which runtimes, and why it stopped."""

    model_type: str
    task: str
    family: str
    generic: bool
    status: Status
    runtimes: dict[str, bool] = dataclasses.field(default_factory=dict)
    category: Reason | Category | str | None = None
    reason: str | None = None
    seconds: float = 0.0
    strategy: str | None = None  # the exporter that produced the graph
    tiny: str | None = None  # the tiny config used: the family's, or a generic shrink level
    generation: bool | None = None  # greedy tokens equal to eager's on every runtime
    swept: str | None = None  # the UTC date the row was run

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        data["category"] = None if self.category is None else str(self.category)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["status"] = Status(values["status"])
        values["category"] = category_of(values.get("category"))
        return cls(**values)

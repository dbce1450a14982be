"""The runtime interface: load an export directory, check feeds, run, return numpy arrays.

A backend implements ``_load`` and ``_run_impl``; the base class checks every feed against
the manifest first (names, rank, dtype), so each backend stays small and a wrong feed gets
the same clear error on every runtime.
"""

from __future__ import annotations

import abc
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from graphport.errors import Reason, UsageError
from graphport.manifest import ExportDirectory, GraphSpec


class Runtime(abc.ABC):
    """One loaded graph of an export directory on one runtime."""

    name: ClassVar[str]
    module: ClassVar[str]  # the import that must succeed for the runtime to be available
    # The optional extra that installs ``module``, and the package's name for people; the
    # formats it runs say so themselves (graphport/formats/).
    extra: ClassVar[str | None] = None
    package: ClassVar[str | None] = None

    def __init__(
        self, export_dir: ExportDirectory | str | Path, graph: str = "model", **options: Any
    ) -> None:
        self.export_dir = (
            export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
        )
        self.spec: GraphSpec = self.export_dir.manifest.graph(graph)
        self.options = options
        self._load()

    @classmethod  # noqa: B027 (an optional hook: most runtimes have nothing to check)
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise before any work if ``options`` cannot be honoured here (default: no check)."""

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def version(cls) -> str | None:
        if not cls.is_available():
            return None
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(cls.module)
        except PackageNotFoundError:
            return getattr(importlib.import_module(cls.module), "__version__", "unknown")

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.spec.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.spec.outputs]

    def check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Feeds as arrays of the graph's dtypes; one clear error for any mismatch."""
        expected = {t.name: t for t in self.spec.inputs}
        missing = [n for n in expected if n not in feeds]
        unexpected = [n for n in feeds if n not in expected]
        if missing or unexpected:
            raise UsageError(
                f"The {self.spec.name} graph takes {', '.join(expected)}; "
                + (f"missing {', '.join(missing)}" if missing else "")
                + ("; " if missing and unexpected else "")
                + (f"unexpected {', '.join(unexpected)}" if unexpected else "")
                + "."
            )
        checked = {}
        for name, spec in expected.items():
            array = np.asarray(feeds[name])
            if array.ndim != len(spec.shape):
                raise UsageError(
                    f"Input {name} has {array.ndim} dimensions; the graph expects "
                    f"{len(spec.shape)} ({spec.shape})."
                )
            for axis, (size, dim) in enumerate(zip(array.shape, spec.shape, strict=True)):
                if isinstance(dim, int) and size != dim:
                    raise UsageError(
                        f"Input {name} has size {size} on axis {axis}; the graph was exported "
                        f"with that axis fixed at {dim}.",
                        reason=Reason.AXIS_SPECIALIZED,
                    )
            want = np.dtype(spec.dtype)
            if array.dtype != want:
                if array.dtype.kind != want.kind and not (
                    array.dtype.kind in "iub" and want.kind in "iu"
                ):
                    raise UsageError(f"Input {name} is {array.dtype}; the graph expects {want}.")
                array = array.astype(want)
            checked[name] = np.ascontiguousarray(array)
        return checked

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the graph; returns every output by name, in manifest order."""
        return self._run_impl(self.check_feeds(feeds))

    def run_with_intermediates(
        self, feeds: Mapping[str, Any], values: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run the graph with the named intermediate values exposed as extra outputs;
        returns the outputs and those of ``values`` the runtime still computes (values it
        fused away or folded are absent). Used to localize a parity failure."""
        raise UsageError(
            f"The {self.name} runtime cannot expose intermediate values; localize on "
            "onnxruntime or OpenVINO."
        )

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str:
        return self.name

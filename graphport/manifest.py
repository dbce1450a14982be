"""The export directory and its ``graphport.json`` manifest.

An export directory runs on its own: graph files, the model config and the tokenizer or
processor files, and a manifest that says how to feed each graph (input/output names,
dtypes, symbolic axes), where it came from, how it was made and how well it validated.
Runtimes load a directory, never a loose graph file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx_ir as ir

from graphport.errors import ManifestError, UsageError

MANIFEST_NAME = "graphport.json"
FORMAT_VERSION = 1

# The names a decoder's KV cache goes by in every graph (past inputs, present outputs),
# and the beam-reorder input of a stateful OpenVINO decoder (export/openvino.py).
PAST_PREFIX, PRESENT_PREFIX = "past_key_values.", "present."
BEAM_IDX = "beam_idx"

Dim = int | str | None


@dataclasses.dataclass
class TensorSpec:
    """A graph input or output: name, numpy dtype name, shape with symbolic axes as names."""

    name: str
    dtype: str
    shape: list[Dim]

    @classmethod
    def from_ir(cls, value: ir.Value) -> TensorSpec:
        dtype = value.dtype.numpy().name if value.dtype is not None else "unknown"
        shape: list[Dim] = []
        for dim in value.shape or ():
            shape.append(dim if isinstance(dim, int) else dim.value)
        return cls(value.name, dtype, shape)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if not isinstance(d, int)}


@dataclasses.dataclass
class GraphSpec:
    """One graph file of the export (``model`` for encoders; later encoder/decoder)."""

    name: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    external_data: str | None = None

    @classmethod
    def from_ir(cls, name: str, file: str, model: ir.Model, external_data: str | None) -> GraphSpec:
        return cls(
            name,
            file,
            [TensorSpec.from_ir(v) for v in model.graph.inputs],
            [TensorSpec.from_ir(v) for v in model.graph.outputs],
            external_data,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSpec:
        return cls(
            data["name"],
            data["file"],
            [TensorSpec(**t) for t in data["inputs"]],
            [TensorSpec(**t) for t in data["outputs"]],
            data.get("external_data"),
        )


@dataclasses.dataclass
class Manifest:
    """Everything a runtime or a reader needs to know about an export directory."""

    source: dict[str, Any]
    task: str
    family: str
    modality: str
    format: str
    dtype: str
    opset: int | None
    graphs: list[GraphSpec]
    exporter: dict[str, Any]
    tolerance: dict[str, float]
    versions: dict[str, str]
    files: list[str]
    generic: bool = False
    passes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    kv_cache: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    # Set when a pass made the graph runtime-specific (onnxruntime contrib operators).
    target: str | None = None
    created: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
    )
    format_version: int = FORMAT_VERSION

    def graph(self, name: str = "model") -> GraphSpec:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        names = ", ".join(g.name for g in self.graphs)
        raise ManifestError(f"The export has no graph {name!r}; it has {names}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["graphs"] = [GraphSpec.from_dict(g) for g in data["graphs"]]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class ExportDirectory:
    """A directory written by ``graphport export``, read through its manifest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_file = self.path / MANIFEST_NAME
        if not self.path.is_dir():
            raise ManifestError(
                f"{self.path} is not a directory; pass the output directory of `graphport export`."
            )
        if not manifest_file.is_file():
            raise ManifestError(
                f"{self.path} has no {MANIFEST_NAME}, so it is not a graphport export (or the "
                f"export did not finish); run `graphport export MODEL {self.path}` first."
            )
        try:
            data = json.loads(manifest_file.read_text(encoding="utf-8"))
            self.manifest = Manifest.from_dict(data)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ManifestError(f"{manifest_file} is unreadable ({e}); re-export the model.") from e
        if self.manifest.format_version > FORMAT_VERSION:
            raise ManifestError(
                f"{manifest_file} has format version {self.manifest.format_version}, newer than "
                f"this graphport reads ({FORMAT_VERSION}); upgrade graphport."
            )

    def graph_path(self, name: str = "model") -> Path:
        return self.path / self.manifest.graph(name).file

    def has_tokenizer(self) -> bool:
        return (self.path / "tokenizer.json").is_file() or (
            self.path / "tokenizer_config.json"
        ).is_file()

    def save_manifest(self) -> None:
        self.manifest.write(self.path)


# ---- writing an export directory: staged beside it, moved into place whole ------------


def check_output_path(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise UsageError(
            f"Output path {output} is an existing file; pass a directory path (it is created)."
        )
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(
            f"Output directory {output} already exists and is not empty; pass --overwrite to "
            "replace it, or choose another directory."
        )


@contextlib.contextmanager
def staging_directory(output: Path) -> Iterator[Path]:
    """A scratch directory beside ``output``, removed unless the caller moved it away."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary directory
    try:
        yield staging
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def move_into_place(staging: Path, output: Path) -> None:
    """Replace ``output`` by ``staging`` with renames, so no half state is observable."""
    backup = None
    if output.exists():
        backup = output.with_name(f".{output.name}.old-{time.time_ns()}")
        output.rename(backup)
    staging.rename(output)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)

"""The ``Format`` base class and the registry of output formats.

A format is one module of this package: a ``Format`` subclass registered with
``@register_format("name")`` that declares, as data, what the rest of graphport asks of it:

1. ``writes``: the file suffixes of one graph, and ``write()``: the export step (it calls
   the tracing code in ``graphport.export``).
2. ``runtimes``: the runtimes that run its graphs, the default first.
3. ``deploy_targets``: the ``graphport deploy`` targets that take it, each with the backend
   that serves it there.
4. ``takes_passes``: whether the graph passes (``optimize``, ``quantize``) rewrite it;
   ``streams``: whether a streamed export (weights written from the checkpoint) writes it.
5. ``extra`` and ``requires``: the optional extra that installs it and the import that must
   succeed; ``check()`` refuses before any work, naming the extra.
6. ``options``: its own options dataclass (a ``FormatOptions`` subclass).

7. The CLI reads this registry at start, without torch (``graphport --help`` loads none):
   a format module imports ``graphport.export``, which loads torch and transformers,
   inside its methods only (each such import says ``rule 7``).

Most formats share their ``write()``: ``TorchFormat`` (torch writes one file from the eager
model; the format implements ``export``) and ``OnnxDerivedFormat`` (the graph torch.export
traces to ONNX, then the format's ``convert``).

Nothing outside a format's module tests a format's name: code asks ``get_format(name)``.
Format modules are found by discovery (every module of this package but this one), so
adding a format is adding one module.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from graphport.errors import MissingExtraError, UsageError

if TYPE_CHECKING:
    import torch

    from graphport.export.artifacts import Artifact
    from graphport.export.config import OnnxConfig


@dataclasses.dataclass
class FormatOptions:
    """The knobs of one export format; a format with its own knobs subclasses it.

    ``opset`` is the ONNX opset of the formats traced through ONNX (ignored by the others).
    """

    opset: int | None = None

    @property
    def lowering_mode(self) -> str | None:
        """The quantization mode a format's lowering applies (``--quantize``); None: none."""
        return None

    @property
    def lowering_precision(self) -> str | None:
        """The precision ("int8", "int4") a format's lowering quantizes to; None: float."""
        return None


class Format:
    """One output format (rules 1-6 of the module docstring)."""

    name: ClassVar[str]
    rank: ClassVar[int] = 100  # the order of ``formats()`` (the CLI's choices and help)
    summary: ClassVar[str] = ""  # its entry in ``graphport export --format``'s help
    writes: ClassVar[tuple[str, ...]] = ()  # file suffixes of one graph
    runtimes: ClassVar[tuple[str, ...]] = ()  # the runtimes that run it, the default first
    deploy_targets: ClassVar[Mapping[str, str]] = {}  # deploy target -> backend there
    takes_passes: ClassVar[bool] = False  # optimize / quantize passes rewrite its graphs
    streams: ClassVar[bool] = False  # a streamed export writes it
    validates_bf16: ClassVar[bool] = True  # its bf16 graphs run on the CPU runtimes
    quantizes_in_lowering: ClassVar[bool] = False  # --quantize goes into its lowering
    lowering: ClassVar[str] = ""  # that lowering, for people ("ExecuTorch's lowering")
    static_cache: ClassVar[bool] = False  # a decoder keeps its KV cache in the program
    extra: ClassVar[str | None] = None  # the optional extra that installs its package
    requires: ClassVar[str | None] = None  # the import that must succeed
    package: ClassVar[str | None] = None  # the package's name, for people
    options: ClassVar[type[FormatOptions]] = FormatOptions

    def is_available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def check(self) -> None:
        """Raise before any work when this format cannot be written here (rule 5)."""
        if not self.is_available():
            raise MissingExtraError(missing_extra(self.name, "format", self.package, self.extra))

    def make_options(self, options: FormatOptions | None = None, **given: Any) -> FormatOptions:
        """This format's options: ``options`` (of any format: the fields this one has are
        kept) with the keywords given (not None) that name its fields."""
        own = {f.name for f in dataclasses.fields(self.options)}
        values = {}
        if options is not None:
            values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        values.update({k: v for k, v in given.items() if v is not None})
        return self.options(**{k: v for k, v in values.items() if k in own})

    def check_options(self, options: FormatOptions) -> None:
        """Raise a ``UsageError`` before any work if ``options`` cannot be honoured."""

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        """Trace ``model`` into graph ``name`` in ``directory``: files ``name`` + ``writes``."""
        raise NotImplementedError

    def finish(self, directory: Path) -> list[str]:
        """Files beside the graphs an export of this format needs; returns their names."""
        return []

    def __repr__(self) -> str:
        return f"<format {self.name}>"


class TorchFormat(Format):
    """A format torch writes from the eager model (one file, ``name`` + ``writes[0]``): the
    graph's inputs and outputs come from one eager run, and ``export`` writes the file."""

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.export.artifacts import Artifact, spec_from_eager  # rule 7

        spec = spec_from_eager(model, config)
        spec.name, spec.file = name, f"{name}{self.writes[0]}"
        info = self.export(model, config, directory / spec.file, options)
        return Artifact(spec, [spec.file], info, None)

    def export(
        self, model: torch.nn.Module, config: OnnxConfig, path: Path, options: FormatOptions
    ) -> dict[str, Any]:
        """Write the graph to ``path``; returns what the manifest records of the exporter."""
        raise NotImplementedError


class OnnxDerivedFormat(Format):
    """A format made from the graph torch.export traces: ``write`` traces ``name.onnx``
    (+ its data file), ``convert`` makes the format's files from it, and the traced files
    are removed afterwards unless ``keeps_onnx``."""

    keeps_onnx: ClassVar[bool] = False

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.export.artifacts import remove_files, trace_onnx  # rule 7

        artifact = trace_onnx(model, config, directory, options.opset, name)
        traced = list(artifact.files)
        self.convert(artifact, config, directory / f"{name}.onnx", options)
        if not self.keeps_onnx:
            remove_files(directory, traced)
        return artifact

    def convert(
        self, artifact: Artifact, config: OnnxConfig, onnx: Path, options: FormatOptions
    ) -> None:
        """Make the format's files from the traced graph ``onnx`` (``name.onnx``), beside it,
        and record them in ``artifact`` (its spec's file, its files, what the exporter
        did); the ONNX format itself has nothing to convert."""


def missing_extra(name: str, kind: str, package: str | None, extra: str | None) -> str:
    """One sentence: the format or runtime ``name`` needs ``package``, from ``extra``."""
    install = f"pip install 'graphport[{extra}]'" if extra else f"pip install {package}"
    return f"The {name} {kind} needs {package}; install it with `{install}`."


F = TypeVar("F", bound=type[Format])
_REGISTRY: dict[str, Format] = {}
_discovered = False


def register_format(name: str) -> Any:
    """Class decorator: register an instance of the decorated ``Format`` as ``name``."""

    def register(cls: F) -> F:
        cls.name = name
        _REGISTRY[name] = cls()
        return cls

    return register


def unregister_format(name: str) -> None:
    """Remove ``name`` from the registry (a test's dummy format)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Import every format module of this package once: each registers itself."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = importlib.import_module("graphport.formats")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "base":
            importlib.import_module(f"graphport.formats.{module.name}")


def formats() -> list[Format]:
    """Every registered format, in rank order (then registration order)."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda f: f.rank)


def format_names() -> list[str]:
    return [f.name for f in formats()]


def get_format(name: str) -> Format:
    """The format registered as ``name``, or a ``UsageError`` listing the known ones."""
    _discover()
    if name not in _REGISTRY:
        raise UsageError(f"Unknown format {name!r}; use one of {', '.join(format_names())}.")
    return _REGISTRY[name]


def formats_for_target(target: str) -> list[Format]:
    """The formats a deploy target takes."""
    return [f for f in formats() if target in f.deploy_targets]

"""``ExportPlan``: every decision of one export, taken once before any long work.

``plan_export`` reads the checkpoint (once), asks whether it is GPTQ (once), resolves the
task, the family and the export config, checks the format, dtype, opset, output path and
runtimes, decides whether the weights stream from the checkpoint (api/streaming.py) and
where a quantization happens: in ExecuTorch's lowering (``--format executorch``), while
the streamed weights are written (int4), or as a pass over the finished ONNX graph after
the optional ``-O`` optimization (api/transform.py). Every bad combination is refused here
with one sentence, so ``export_model`` and ``graphport export`` run a plan that already
holds together, and ``graphport export --plan`` prints it without exporting.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graphport.errors import UsageError
from graphport.export.config import OnnxConfig
from graphport.export.onnx import check_opset
from graphport.export.tasks import Task
from graphport.formats import Format, FormatOptions, get_format
from graphport.graphs import DEFAULT_INT4_METHOD, QUANT_MODES
from graphport.graphs.gptq import GptqSpec
from graphport.graphs.quantize import check_int4_options
from graphport.manifest import check_output_path
from graphport.models.loader import DTYPES, Checkpoint, load_checkpoint
from graphport.models.registry import (
    Registration,
    get_onnx_config,
    get_registration,
    resolve_task,
)
from graphport.resources import gigabytes

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Every option of one export: the one list that ``plan_export``, ``export_model`` and
    ``graphport export`` take (the functions as keywords or as this record, the CLI builds
    one from its arguments). ``plan_export`` checks them and turns them into an
    ``ExportPlan``.

    ``task`` None or "auto" infers it from ``config.architectures``. ``runtimes`` defaults
    to every installed runtime that can run the format. ``localize`` compares every
    module's output in validation too (see ``validate_export``). ``streaming`` (default:
    when the in-memory export would not fit in memory) traces the model on the meta device
    and writes each weight from the checkpoint, one at a time (api/streaming.py);
    ``quantize="int4-weight"`` then quantizes each weight on its way to the file.
    Otherwise ``optimize`` (-O level) and ``quantize`` run ``optimize_export`` and
    ``quantize_export`` (with ``calibration``) on the plain export, staged beside the
    output; with ``fmt="executorch"`` ``quantize`` goes to the lowering instead. ``html``
    also writes the final parity report as one HTML page. ``format_options`` may carry the
    format knobs as one record; the format keywords (``openvino_fp16_weights``, ...)
    override it.
    """

    task: str | Task | None = None
    opset: int | None = None
    dtype: str = "fp32"
    atol: float | None = None
    validate: bool = True
    rtol: float | None = None
    runtimes: str | Sequence[str] | None = None
    overwrite: bool = False
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None
    fmt: str = "onnx"
    format_options: FormatOptions | None = None
    localize: bool = False
    quantize: str | None = None
    streaming: bool | None = None
    optimize: int | None = None
    calibration: str | Path | None = None
    html: str | Path | None = None
    openvino_fp16_weights: bool | None = None
    ort_target_platform: str | None = None
    trt_profile: str | Mapping[str, tuple[int, int, int]] | None = None
    max_cache_len: int | None = None
    quantize_options: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What one export will do; every later stage reads it instead of deciding again."""

    output: Path
    checkpoint: Checkpoint
    gptq: GptqSpec | None  # the checkpoint's GPTQ settings (None: float weights)
    registration: Registration
    task: Task
    with_past: bool  # exported with its KV cache
    task_given: bool  # --task named it (an inferred cache may be dropped, a given one not)
    onnx_config: OnnxConfig
    # The config values the eager model is loaded with: the traced config's, except for
    # ExecuTorch, whose decoder keeps its cache in the program (the with-past config's).
    model_overrides: Mapping[str, Any]
    fmt: str
    dtype: str
    opset: int | None
    format_options: FormatOptions  # the format's own (executorch's ``quantize``: its lowering's)
    streaming: bool  # traced on the meta device, weights written from the checkpoint
    streamed_quantize: str | None  # quantized while the streamed weights are written
    optimize: int | None  # -O level of the pass over the finished export
    quantize: str | None  # quantization pass over the finished (optimized) export
    calibration: Path | None
    validate: bool
    runtimes: tuple[str, ...]  # the export's validation runtimes (empty: not validated)
    runtime_options: Mapping[str, Mapping[str, Any]]
    atol: float | None
    rtol: float | None
    localize: bool
    overwrite: bool
    html: Path | None
    peak_memory: int  # bytes the export is expected to need at its peak
    # quantize_export's keywords for the pass (int4 method, block size, ratio, ...).
    quantize_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.checkpoint.source

    @property
    def transforms(self) -> bool:
        """Whether optimize/quantize passes run on the plain export (staged beside OUTPUT)."""
        return self.optimize is not None or self.quantize is not None

    @property
    def quantized_graph(self) -> bool:
        """Whether the exported graph holds MatMulNBits (streamed int4, or GPTQ blocks)."""
        return self.streamed_quantize is not None or self.gptq is not None

    def transform_runtimes(self) -> tuple[str, ...]:
        """The runtimes the final transform validates on (its passes: onnxruntime)."""
        from graphport.runtimes import available_runtimes

        if self.quantize is not None and self.quantize.startswith("openvino-"):
            return ("openvino",)
        if self.quantize is not None or (self.optimize or 0) >= 2 or self.quantized_graph:
            return ("onnxruntime",)
        return tuple(available_runtimes("onnx"))

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON data (``graphport export --plan --json``)."""
        lowering = self.format_options.lowering_mode
        return {
            "model": self.source,
            "checkpoint": str(self.checkpoint.path),
            "model_type": self.checkpoint.model_type,
            "gptq": dataclasses.asdict(self.gptq) if self.gptq is not None else None,
            "output": str(self.output),
            "task": self.task.value,
            "with_past": self.with_past,
            "family": self.registration.family,
            "generic": self.registration.generic,
            "format": self.fmt,
            "dtype": self.dtype,
            "opset": self.opset,
            "device": "meta" if self.streaming else "cpu",
            "streaming": self.streaming,
            "quantize": {
                "lowering": lowering,
                "streamed": self.streamed_quantize,
                "gptq": self.gptq is not None,
                "pass": self.quantize,
                "calibration": str(self.calibration) if self.calibration else None,
                "options": dict(self.quantize_options),
            },
            "optimize": self.optimize,
            "validate": list(self.runtimes),
            "transform_validate": list(self.transform_runtimes()) if self.transforms else [],
            "peak_memory": self.peak_memory,
        }

    def describe(self) -> list[str]:
        """The plan as lines a person reads (``graphport export --plan``)."""
        checkpoint = self.checkpoint
        generic = " (generic path)" if self.registration.generic else ""
        family = f"{self.registration.family}{generic}"
        cache = ", with its KV cache" if self.with_past else ""
        lines = [
            f"model       {self.source} ({checkpoint.model_type}, family {family})",
            f"task        {self.task.value}{cache}" + ("" if self.task_given else " (inferred)"),
            f"format      {self.fmt}, {self.dtype}"
            + (f", opset {self.opset}" if self.opset else ""),
        ]
        if self.streaming:
            lines.append(
                "trace       on the meta device; each weight streamed from the checkpoint "
                "into the graph's data file"
            )
        else:
            lines.append("trace       the eager model loaded in memory (cpu)")
        lines.append(f"quantize    {self._quantization()}")
        lines.append(f"optimize    {f'-O {self.optimize}' if self.optimize else 'no'}")
        if self.validate:
            lines.append(f"validate    against eager on {', '.join(self.runtimes)}")
        else:
            lines.append("validate    skipped (--no-validate)")
        if self.transforms:
            lines.append(
                "then        every pass checked on onnxruntime, the result validated on "
                + ", ".join(self.transform_runtimes())
            )
        lines.append(f"memory      about {gigabytes(self.peak_memory)} at the peak")
        lines.append(f"output      {self.output}")
        return lines

    def _quantization(self) -> str:
        lowering = self.format_options.lowering_mode
        if lowering is not None:
            return f"{lowering} in {get_format(self.fmt).lowering}"
        if self.gptq is not None:
            also = (
                f", {self.streamed_quantize} for the float weights"
                if self.streamed_quantize
                else ""
            )
            return f"the checkpoint's GPTQ int{self.gptq.bits} blocks as MatMulNBits{also}"
        if self.streamed_quantize is not None:
            return f"{self.streamed_quantize} while each weight is written"
        if self.quantize is not None:
            calibrated = f", calibrated on {self.calibration}" if self.calibration else ""
            return f"{self.quantize} on the finished graph{calibrated}"
        return "no"


def plan_export(
    model: str | Path,
    output: str | Path,
    options: ExportOptions | None = None,
    **keywords: Any,
) -> ExportPlan:
    """Check every option of an export of ``model`` into ``output`` and decide it.

    ``options`` holds them as one record; keywords (``ExportOptions``' fields) override it.
    ``quantize`` goes where the format and streaming put it: ExecuTorch's lowering (with
    ``fmt="executorch"`` and no ``optimize``), the streamed weights (int4-weight), or a
    pass after the export (and after ``optimize``); ``quantize_options`` are
    ``quantize_export``'s keywords for that pass (``method``, ``block_size``, ``ratio``,
    ``sensitivity``, ``int8_head``, ``target_cosine``): the options of ``graphport
    quantize``. Raises ``UsageError`` (one sentence) for anything that would fail later.
    """
    from graphport.api.streaming import check_memory, peak_memory, should_stream
    from graphport.runtimes import available_runtimes, parse_runtimes

    opts = dataclasses.replace(options or ExportOptions(), **keywords)
    output = Path(output)
    target = get_format(opts.fmt)
    quantize, html, dtype, validate = opts.quantize, opts.html, opts.dtype, opts.validate
    format_options = target.make_options(
        opts.format_options,
        opset=opts.opset,
        openvino_fp16_weights=opts.openvino_fp16_weights,
        ort_target_platform=opts.ort_target_platform,
        trt_profile=opts.trt_profile,
        max_cache_len=opts.max_cache_len,
    )
    if target.quantizes_in_lowering and opts.optimize is None and quantize is not None:
        # ExecuTorch quantizes while lowering (torchao), not by rewriting an ONNX graph.
        format_options = dataclasses.replace(format_options, quantize=quantize)
        quantize = None
    if html is not None:
        from graphport.validators.html import check_html_path

        if not validate:
            raise UsageError(
                "--html writes the parity report, which --no-validate skips; drop one."
            )
        html = Path(html)
        check_html_path(html)  # before the long work, not after it
    if dtype not in DTYPES:
        raise UsageError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    target.check()  # before any work: its package (the extra), TensorRT's GPU
    if dtype == "bf16" and validate and not target.validates_bf16:
        raise UsageError(
            "A bf16 graph cannot be validated on the CPU runtimes: onnxruntime's CPU provider "
            "has no bfloat16 kernels and OpenVINO's ONNX reader returns float16 results far "
            "from eager for bfloat16 graphs; export with --no-validate and validate where bf16 "
            "kernels exist, or use --dtype fp16."
        )
    if opts.opset is not None:
        check_opset(opts.opset)
    check_output_path(output, opts.overwrite)
    parsed_runtimes = None
    if validate and opts.runtimes is not None:  # bad names fail before any work
        parsed_runtimes = parse_runtimes(opts.runtimes, opts.runtime_options)
    optimize, calibration = opts.optimize, opts.calibration
    if optimize is not None and optimize not in (1, 2, 3):
        raise UsageError(f"Optimization level {optimize} does not exist; use 1, 2 or 3.")
    if quantize is not None and quantize not in QUANT_MODES:
        raise UsageError(f"Unknown mode {quantize!r}; use one of {', '.join(QUANT_MODES)}.")
    target.check_options(format_options)
    quantize_options = _check_quantize_options(quantize, opts.quantize_options or {})

    checkpoint = load_checkpoint(model)
    gptq = GptqSpec.from_config(checkpoint.config)  # refuses unsupported bits and groups
    # int4 streams by default (api/streaming.py) unless -O asks for the in-memory passes.
    # A streamed int4 export rounds (rtn) while it writes: other int4 options quantize the
    # finished graph.
    streams_int4 = optimize is None and not quantize_options
    stream = should_stream(
        checkpoint, gptq, dtype, opts.fmt, quantize if streams_int4 else None, opts.streaming
    )
    if stream and (optimize is not None or calibration is not None or quantize_options):
        raise UsageError(
            "A streamed export takes --quantize int4-weight alone; run `graphport optimize` "
            "on its output, or pass --no-streaming on a machine with more memory."
        )
    # A streamed export quantizes while it writes; others chain the transforms after.
    streamed_quantize, quantize = (quantize, None) if stream else (None, quantize)
    if (optimize is not None or quantize is not None) and not target.takes_passes:
        raise UsageError(
            "--optimize and --quantize rewrite ONNX graphs (executorch takes --quantize "
            "int8-dynamic or int4-weight alone); drop --format."
        )
    if calibration is not None and quantize is None:
        raise UsageError("--calibration is for --quantize; add a quantization mode.")
    if stream:
        check_memory(checkpoint, validate)

    registration = get_registration(checkpoint.model_type)
    parsed_task, with_past = resolve_task(checkpoint, opts.task)
    onnx_config = get_onnx_config(
        checkpoint.config, f"{parsed_task.value}{'-with-past' if with_past else ''}"
    )
    family = getattr(onnx_config, "family", None)
    if family is not None:  # a family's config for one task of a generic type (export/vlm.py)
        registration = dataclasses.replace(registration, family=family, generic=False)
    model_overrides = dict(onnx_config.values_override or {})
    if target.static_cache:
        onnx_config, format_options = _static_cache_graphs(
            target, checkpoint, parsed_task, with_past, onnx_config, format_options
        )
    if validate and parsed_runtimes is None:
        # An int4 graph (MatMulNBits) runs on onnxruntime only.
        quantized_graph = streamed_quantize is not None or gptq is not None
        default = ["onnxruntime"] if quantized_graph else available_runtimes(opts.fmt)
        parsed_runtimes = parse_runtimes(default, opts.runtime_options)
    return ExportPlan(
        output=output,
        checkpoint=checkpoint,
        gptq=gptq,
        registration=registration,
        task=parsed_task,
        with_past=with_past,
        task_given=opts.task not in (None, "auto"),
        onnx_config=onnx_config,
        model_overrides=model_overrides,
        fmt=opts.fmt,
        dtype=dtype,
        opset=opts.opset,
        format_options=format_options,
        streaming=stream,
        streamed_quantize=streamed_quantize,
        optimize=optimize,
        quantize=quantize,
        calibration=Path(calibration) if calibration is not None else None,
        validate=validate,
        runtimes=tuple(parsed_runtimes or ()),
        runtime_options=dict(opts.runtime_options or {}),
        atol=opts.atol,
        rtol=opts.rtol,
        localize=opts.localize,
        overwrite=opts.overwrite,
        html=html,
        peak_memory=peak_memory(checkpoint, dtype, stream, validate),
        quantize_options=quantize_options,
    )


QUANTIZE_OPTIONS = ("method", "block_size", "ratio", "sensitivity", "int8_head", "target_cosine")


def _check_quantize_options(quantize: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """``quantize_options`` checked against the mode before any work."""
    unknown = sorted(set(given) - set(QUANTIZE_OPTIONS))
    if unknown:
        raise UsageError(
            f"Unknown quantize option(s) {', '.join(unknown)}; use {', '.join(QUANTIZE_OPTIONS)}."
        )
    if given and quantize is None:
        raise UsageError("quantize_options are for quantize; add a quantization mode.")
    if quantize == "int4-weight":
        int4 = {k: v for k, v in given.items() if k != "target_cosine"}
        check_int4_options(**{"method": DEFAULT_INT4_METHOD, **int4})
    return dict(given)


def _static_cache_graphs(
    target: Format,
    checkpoint: Checkpoint,
    task: Task,
    with_past: bool,
    onnx_config: OnnxConfig,
    options: FormatOptions,
) -> tuple[OnnxConfig, FormatOptions]:
    """A decoder that keeps its KV cache inside the program (ExecuTorch's: static, batch 1)
    has the graph contract of a decoder without a cache (runtimes/executorch.py)."""
    if with_past and task is not Task.TEXT_GENERATION:
        raise UsageError(
            f"--format {target.name} exports decoder-only models with their KV cache, and "
            f"{checkpoint.model_type} ({task.value}) is an encoder-decoder; export it with "
            "--format onnx."
        )
    return get_onnx_config(checkpoint.config, task.value), dataclasses.replace(
        options, static_cache=with_past
    )

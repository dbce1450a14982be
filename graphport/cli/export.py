"""``graphport export``: a checkpoint into an export directory, or (``--plan``) the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from graphport.cli.common import (
    html_option,
    localize_option,
    print_passes,
    providers_option,
    runtime_options,
    runtimes_option,
    split_names,
)
from graphport.errors import ParityError, UsageError
from graphport.formats import format_names, formats
from graphport.graphs import INT4_METHODS, SENSITIVITY_METRICS
from graphport.graphs import QUANT_MODES as QUANT_MODE_CHOICES


@click.command()
@click.argument("model")
@click.argument("output", type=click.Path(path_type=Path))
@click.option(
    "--task",
    default="auto",
    show_default=True,
    help="Task (HF name or legacy feature); auto infers it from config.architectures.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(format_names()),
    default="onnx",
    show_default=True,
    help="; ".join(f.summary for f in formats()) + ".",
)
@click.option("--opset", type=int, default=None, help="ONNX opset (default 18).")
@click.option(
    "--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True
)
@click.option(
    "--atol",
    type=float,
    default=None,
    help="Absolute tolerance for validation (default: the architecture's, plus 2e-4 of each "
    "output's RMS magnitude; a tolerance given here is absolute).",
)
@click.option(
    "--rtol",
    type=float,
    default=None,
    help="Relative tolerance for validation (default 0: absolute differences).",
)
@click.option("--no-validate", is_flag=True, help="Skip validation against the eager model.")
@runtimes_option()
@providers_option
@click.option("--fp16-weights", is_flag=True, help="openvino: store weights in fp16.")
@click.option(
    "--ort-target-platform",
    type=click.Choice(["amd64", "arm"]),
    default=None,
    help="ort: the platform the graph optimizations target.",
)
@click.option(
    "--trt-profile",
    default=None,
    help="tensorrt: axis ranges AXIS=MIN:OPT:MAX,..., e.g. batch=1:4:16,sequence=1:128:256.",
)
@click.option(
    "--max-cache-len",
    type=click.IntRange(2, None),
    default=None,
    help="executorch: positions of a decoder's static KV cache (default 256, capped at the "
    "model's positions).",
)
@click.option(
    "-O",
    "--optimize",
    type=click.IntRange(1, 3),
    default=None,
    help="Then optimize the ONNX graph at this level for onnxruntime (as `graphport optimize`).",
)
@click.option(
    "--quantize",
    type=click.Choice(QUANT_MODE_CHOICES),
    default=None,
    help="Then quantize the (optimized) graph in this mode (as `graphport quantize`).",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="Calibration inputs for --quantize (see `graphport quantize --help`).",
)
@click.option(
    "--method",
    type=click.Choice(INT4_METHODS),
    default=None,
    help="With --quantize int4-weight: the int4 method, as `graphport quantize --method` "
    "[default: rtn, streamed].",
)
@click.option("--block-size", type=int, default=None, help="With --quantize: as `quantize`.")
@click.option(
    "--ratio",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="With --quantize int4-weight: as `graphport quantize --ratio`.",
)
@click.option(
    "--sensitivity",
    type=click.Choice(SENSITIVITY_METRICS),
    default=None,
    help="With --ratio: as `graphport quantize --sensitivity`.",
)
@click.option(
    "--int8-head",
    is_flag=True,
    default=None,
    help="With --quantize int4-weight: as `graphport quantize --int8-head`.",
)
@click.option(
    "--target-cosine",
    type=float,
    default=None,
    help="With --quantize int8-dynamic: as `graphport quantize --target-cosine`.",
)
@click.option(
    "--streaming/--no-streaming",
    default=None,
    help="Trace on the meta device and write each weight from the checkpoint, one at a "
    "time (a --quantize int4-weight export quantizes each on its way), so a checkpoint "
    "larger than half the memory exports [default: when the export would not fit in memory].",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@html_option
@localize_option
@click.option(
    "--plan",
    "show_plan",
    is_flag=True,
    help="Print what the export would do (trace, streaming, quantization, validation, "
    "memory) and exit without writing anything.",
)
@click.option("--json", "as_json", is_flag=True, help="With --plan: print the plan as JSON.")
def export(
    model: str,
    output: Path,
    task: str,
    fmt: str,
    opset: int | None,
    dtype: str,
    atol: float | None,
    rtol: float | None,
    no_validate: bool,
    runtimes: str | None,
    providers: str | None,
    fp16_weights: bool,
    ort_target_platform: str | None,
    trt_profile: str | None,
    max_cache_len: int | None,
    optimize: int | None,
    quantize: str | None,
    calibration: Path | None,
    method: str | None,
    block_size: int | None,
    ratio: float | None,
    sensitivity: str | None,
    int8_head: bool | None,
    target_cosine: float | None,
    streaming: bool | None,
    overwrite: bool,
    html_file: Path | None,
    localize: bool,
    show_plan: bool,
    as_json: bool,
) -> None:
    """Export MODEL (a checkpoint directory or cached hub id) into the directory OUTPUT,
    optionally optimized (-O) and quantized (--quantize) on the way."""
    from graphport.api.export import ExportResult, run_export
    from graphport.api.plan import ExportOptions, plan_export

    if as_json and not show_plan:
        raise UsageError("--json prints the plan; add --plan, or drop --json.")
    options = ExportOptions(
        task=task,
        opset=opset,
        dtype=dtype,
        atol=atol,
        rtol=rtol,
        validate=not no_validate,
        runtimes=split_names(runtimes),
        runtime_options=runtime_options(providers),
        overwrite=overwrite,
        fmt=fmt,
        openvino_fp16_weights=fp16_weights,
        ort_target_platform=ort_target_platform,
        trt_profile=trt_profile,
        max_cache_len=max_cache_len,
        optimize=optimize,
        quantize=quantize,
        calibration=calibration,
        # The options of `graphport quantize` for its pass, those given only.
        quantize_options={
            name: value
            for name, value in {
                "method": method,
                "block_size": block_size,
                "ratio": ratio,
                "sensitivity": sensitivity,
                "int8_head": int8_head,
                "target_cosine": target_cosine,
            }.items()
            if value is not None
        }
        or None,
        streaming=streaming,
        html=html_file,
        localize=localize,
    )
    plan = plan_export(model, output, options)
    if show_plan:
        click.echo(json.dumps(plan.to_dict(), indent=2) if as_json else "\n".join(plan.describe()))
        return
    done: list[Any] = []

    def show(step: Any) -> None:
        done.append(step)
        if not isinstance(step, ExportResult):
            print_passes(step)
            return
        manifest = step.manifest
        size = sum((step.path / f).stat().st_size for f in manifest.files)
        if step.report is not None:
            click.echo(step.report.table())
        click.echo(
            f"Exported {manifest.source['model_type']} ({manifest.task}, {manifest.format}, "
            f"{manifest.dtype}{f', opset {manifest.opset}' if manifest.opset else ''}, "
            f"{manifest.exporter['strategy']}{_streamed(manifest)}) "
            f"{'for' if plan.transforms else 'to'} {output} "
            f"[{size / 1e6:.1f} MB] in {step.seconds:.1f} s"
            + ("; validation skipped" if step.report is None else "; parity passed")
        )

    try:
        run_export(plan, on_step=show)
    except ParityError as e:
        if not done and e.report is not None:  # the export's own report (a pass's: none)
            click.echo(e.report.table())
        raise


def _streamed(manifest: Any) -> str:
    """ ", streamed, int4-weight" for a streamed export (api/streaming.py)."""
    if "streamed" not in manifest.exporter:
        return ""
    return "".join([", streamed", *(f", {p['name']}" for p in manifest.passes)])

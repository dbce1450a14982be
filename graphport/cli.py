"""The ``graphport`` command line: parse arguments, call the library, print.

Errors graphport raises on purpose become one line on stderr and a non-zero exit code;
a traceback appears only with ``-vv`` (debug). Progress goes to stderr, results to
stdout, so ``--json`` output can be piped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from graphport import __version__
from graphport.errors import GraphportError
from graphport.formats import format_names, formats
from graphport.graphs import DEFAULT_INT4_METHOD, INT4_METHODS, SENSITIVITY_METRICS
from graphport.graphs import QUANT_MODES as QUANT_MODE_CHOICES
from graphport.sweep import GENERATION_TASKS
from graphport.verbosity import set_verbosity

logger = logging.getLogger("graphport.cli")


class _Group(click.Group):
    """Turns graphport errors into one clear message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GraphportError as e:
            logger.debug("Traceback:", exc_info=True)
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _level(verbose: int, quiet: bool) -> int | None:
    if quiet:
        return logging.ERROR
    if verbose:
        return logging.DEBUG if verbose > 1 else logging.INFO
    return None  # the environment variable, else INFO (a CLI shows its progress)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="graphport")
@click.option("-v", "--verbose", count=True, help="More output (-vv: debug, with tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
def cli(verbose: int, quiet: bool) -> None:
    """Export Transformers models to graphs, run them, and prove parity with eager.

    The verbosity can also be set with GRAPHPORT_VERBOSITY=debug|info|warning|error.
    """
    set_verbosity(_level(verbose, quiet), default=logging.INFO)


_providers_option = click.option(
    "--providers",
    default=None,
    help="onnxruntime execution providers, comma-separated (default CPUExecutionProvider).",
)


def _runtime_options(providers: str | None) -> dict[str, dict[str, Any]]:
    return {"onnxruntime": {"providers": providers}} if providers else {}


def _split(names: str | None) -> list[str] | None:
    return names.split(",") if names else None


def _transform_options(command: Any) -> Any:
    """Options shared by the commands that write a new export from an old one."""
    for option in reversed(
        [
            _runtimes_option(),
            click.option(
                "--allow-budget-break",
                is_flag=True,
                help="Keep going when a pass breaks its parity budget (it is recorded).",
            ),
            click.option("--overwrite", is_flag=True, help="Replace DST if it exists."),
            _html_option,
            _localize_option,
        ]
    ):
        command = option(command)
    return command


_localize_option = click.option(
    "--localize",
    is_flag=True,
    help="Compare every module's output too: name the first PyTorch module whose output "
    "leaves tolerance, and each module's error (one more run per runtime and case).",
)


def _runtimes_option() -> Any:
    return click.option(
        "--runtime",
        "runtimes",
        default=None,
        help="Comma-separated runtimes (onnxruntime, openvino, torchscript, aoti, tensorrt, "
        "torch); default: every installed runtime that runs the export's format.",
    )


_html_option = click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the parity report as one self-contained HTML page to this file.",
)


def _check_html(html_file: Path | None) -> None:
    if html_file is not None:
        from graphport.validators.html import check_html_path

        check_html_path(html_file)  # before the long work, not after it


def _write_html(html_file: Path | None, report: Any) -> None:
    if html_file is not None and report is not None:
        from graphport.validators.html import write_html

        write_html(report, html_file)


@contextlib.contextmanager
def _html_on_parity_error(html_file: Path | None) -> Iterator[None]:
    """A failed report is the one most worth reading: write it before the error exits."""
    from graphport.errors import ParityError

    try:
        yield
    except ParityError as e:
        _write_html(html_file, e.report)
        raise


@cli.command()
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
@_runtimes_option()
@_providers_option
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
    "--streaming/--no-streaming",
    default=None,
    help="Trace on the meta device and write each weight from the checkpoint, one at a "
    "time (a --quantize int4-weight export quantizes each on its way), so a checkpoint "
    "larger than half the memory exports [default: when the export would not fit in memory].",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@_html_option
@_localize_option
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
    from graphport.api.plan import plan_export
    from graphport.errors import ParityError, UsageError

    if as_json and not show_plan:
        raise UsageError("--json prints the plan; add --plan, or drop --json.")
    plan = plan_export(
        model,
        output,
        task=task,
        opset=opset,
        dtype=dtype,
        atol=atol,
        rtol=rtol,
        validate=not no_validate,
        runtimes=_split(runtimes),
        runtime_options=_runtime_options(providers),
        overwrite=overwrite,
        fmt=fmt,
        openvino_fp16_weights=fp16_weights,
        ort_target_platform=ort_target_platform,
        trt_profile=trt_profile,
        max_cache_len=max_cache_len,
        optimize=optimize,
        quantize=quantize,
        calibration=calibration,
        streaming=streaming,
        html=html_file,
        localize=localize,
    )
    if show_plan:
        click.echo(json.dumps(plan.to_dict(), indent=2) if as_json else "\n".join(plan.describe()))
        return
    done: list[Any] = []

    def show(step: Any) -> None:
        done.append(step)
        if not isinstance(step, ExportResult):
            _print_passes(step)
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


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@_runtimes_option()
@_providers_option
@click.option(
    "--atol",
    type=float,
    default=None,
    help="Override the absolute tolerance (with --atol or --rtol the budget is absolute: no "
    "term for the output's magnitude).",
)
@click.option("--rtol", type=float, default=None, help="Override the relative tolerance.")
@click.option(
    "--report",
    "report_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the JSON parity report to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_html_option
@_localize_option
def validate(
    export_dir: Path,
    runtimes: str | None,
    providers: str | None,
    atol: float | None,
    rtol: float | None,
    report_file: Path | None,
    as_json: bool,
    html_file: Path | None,
    localize: bool,
) -> None:
    """Check an export against the eager model; exits 1 when a tolerance is exceeded."""
    from graphport.errors import ParityError
    from graphport.manifest import ExportDirectory
    from graphport.runtimes import default_runtimes, parse_runtimes
    from graphport.validators.parity import validate_export

    directory = ExportDirectory(export_dir)
    _check_html(html_file)
    names = runtimes or default_runtimes(directory.manifest)
    report = validate_export(
        directory,
        parse_runtimes(names, _runtime_options(providers)),
        atol=atol,
        rtol=rtol,
        runtime_options=_runtime_options(providers),
        localize=localize,
    )
    directory.manifest.validation = report.summary()
    directory.save_manifest()
    if report_file:
        report.write(report_file)
    _write_html(html_file, report)
    click.echo(
        json.dumps(report.to_dict(), indent=2, allow_nan=False) if as_json else report.table()
    )
    if not report.passed:
        raise ParityError("Parity failed: " + "; ".join(report.failures()[:5]), report)
    if not as_json:
        click.echo(f"Parity passed on {', '.join(report.runtimes)}.")


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--runtime",
    default=None,
    help="Default: onnxruntime for ONNX graphs, the export's own runtime otherwise.",
)
@_providers_option
@click.option("--json", "as_json", is_flag=True, help="Print all outputs as one JSON object.")
def run(
    export_dir: Path,
    inputs: tuple[str, ...],
    runtime: str | None,
    providers: str | None,
    as_json: bool,
) -> None:
    """Run an export on INPUTS: texts (tokenized with the export's tokenizer), image files
    or audio files (wav, flac, ogg, mp3). A generative export generates text; a two-tower
    export embeds each input with its tower and prints their similarities."""
    from graphport.api.run import predict

    options = _runtime_options(providers).get(runtime or "onnxruntime", {})
    prediction = predict(export_dir, list(inputs), runtime, **options)
    if as_json:
        click.echo(json.dumps(prediction.to_json()))
    else:
        click.echo(prediction.render())


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.argument("prompts", nargs=-1, required=True)
@click.option(
    "--max-new-tokens",
    type=int,
    default=None,
    help="Tokens to generate (default: the export's generation config, else 20).",
)
@click.option(
    "--runtime",
    type=click.Choice(["onnxruntime", "openvino", "executorch"]),
    default=None,
    help="Default: onnxruntime for ONNX graphs, else the runtime of the export's format.",
)
@_providers_option
@click.option(
    "--sample/--greedy",
    default=None,
    help="Sample, or decode greedily (default: the export's generation config).",
)
@click.option("--temperature", type=float, default=None, help="Default: the generation config.")
@click.option("--top-k", type=int, default=None, help="0: off. Default: the generation config.")
@click.option("--top-p", type=float, default=None, help="Default: the generation config.")
@click.option("--seed", type=int, default=None, help="Seed for --sample (torch.manual_seed).")
@click.option(
    "--repetition-penalty",
    type=float,
    default=None,
    help="Default: the export's generation config (1.0: none).",
)
@click.option(
    "--num-beams",
    type=int,
    default=None,
    help="Beam search with N beams (needs a KV cache). Default: the generation config.",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "transformers", "onnxruntime-genai", "openvino-genai"]),
    default="auto",
    show_default=True,
    help="The decoding loop. auto: onnxruntime-genai (ONNX) or OpenVINO GenAI (IR) where "
    "installed, for greedy or sampled decoding; transformers' generate() otherwise.",
)
@click.option("--json", "as_json", is_flag=True, help="Print {token_ids, text, engine} as JSON.")
def generate(
    export_dir: Path,
    prompts: tuple[str, ...],
    max_new_tokens: int | None,
    runtime: str | None,
    providers: str | None,
    sample: bool | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    repetition_penalty: float | None,
    num_beams: int | None,
    engine: str,
    as_json: bool,
) -> None:
    """Generate text from PROMPTS with a generative export (several prompts: one batch);
    image-to-text and speech-recognition exports take image or audio files. Decoding is
    the fastest engine installed that can do what is asked (--engine), with the export's
    generation config; the engine used is printed."""
    from graphport.api.generate import generate_text

    result = generate_text(
        export_dir,
        list(prompts),
        runtime,
        _runtime_options(providers).get(runtime),
        seed=seed,
        engine=engine,
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_beams=num_beams,
    )
    if as_json:
        rows = [
            {"token_ids": result.trimmed(row), "text": text, "engine": result.engine}
            for row, text in enumerate(result.texts)
        ]
        click.echo(json.dumps(rows[0] if len(rows) == 1 else rows))
        return
    for text in result.texts:
        click.echo(text)
    click.echo(
        f"[{result.steps} steps, {len(result.texts)} prompt(s), "
        f"{result.tokens_per_second:.1f} tokens/s on {result.runtime} with {result.engine}]",
        err=True,
    )


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest.")
def inspect(export_dir: Path, as_json: bool) -> None:
    """Describe an export directory: source, task, graphs, tensors, validation."""
    from graphport.manifest import ExportDirectory

    directory = ExportDirectory(export_dir)
    m = directory.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    lines = [
        f"source      {m.source.get('model')} ({m.source.get('model_type')})",
        f"task        {m.task}  family {m.family}{'  (generic)' if m.generic else ''}",
        f"format      {m.format}  dtype {m.dtype}  opset {m.opset}",
        f"exporter    {m.exporter.get('strategy')}"
        + (
            f"  fallback: {m.exporter['fallback_reason']}"
            if m.exporter.get("fallback_reason")
            else ""
        ),
    ]
    for graph in m.graphs:
        lines.append(
            f"graph       {graph.name}: {graph.file}"
            + (f" (+ {graph.external_data})" if graph.external_data else "")
        )
        for kind, tensors in (("input", graph.inputs), ("output", graph.outputs)):
            for t in tensors:
                lines.append(f"  {kind:<7} {t.name:<24} {t.dtype:<8} {t.shape}")
    if m.validation:
        verdict = "passed" if m.validation.get("passed") else "FAILED"
        worst = ", ".join(
            f"{rt} max abs {w['max_abs']:.2e}" for rt, w in m.validation.get("worst", {}).items()
        )
        lines.append(f"validation  {verdict}  ({worst})")
    else:
        lines.append("validation  not run")
    files = []
    for name in m.files:
        path = directory.path / name
        files.append(
            f"{name} ({path.stat().st_size / 1e6:.2f} MB)" if path.exists() else f"{name} (MISSING)"
        )
    lines.append("files       " + ", ".join(files))
    click.echo("\n".join(lines))


@cli.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "-O",
    "level",
    type=click.IntRange(1, 3),
    default=2,
    show_default=True,
    help="1: cleanup; 2: + onnxruntime fusions; 3: + offline onnxruntime passes.",
)
@click.option(
    "--for",
    "target",
    type=click.Choice(["onnxruntime", "openvino"]),
    default="onnxruntime",
    show_default=True,
)
@_transform_options
def optimize(
    src: Path,
    dst: Path,
    level: int,
    target: str,
    runtimes: str | None,
    allow_budget_break: bool,
    overwrite: bool,
    html_file: Path | None,
    localize: bool,
) -> None:
    """Optimize the graph of export SRC into a new export DST, checking parity per pass."""
    from graphport.api.transform import optimize_export

    _check_html(html_file)
    with _html_on_parity_error(html_file):
        result = optimize_export(
            src,
            dst,
            level,
            target,
            _split(runtimes),
            allow_budget_break,
            overwrite,
            localize=localize,
        )
    _print_passes(result)
    _write_html(html_file, result.report)


@cli.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice([*QUANT_MODE_CHOICES, "auto"]),
    required=True,
    help="onnxruntime: int8-dynamic, int8-static, int4-weight; OpenVINO (IR, NNCF): "
    "openvino-int8-static (needs --calibration; quantize an -O2 export), "
    "openvino-int8-weight, openvino-int4-weight; auto: the fastest of a few int4 "
    "configurations within --max-metric-loss, evaluated against eager.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="A text file (one sentence per line) or a directory of images: int8-static and "
    "openvino-int8-static calibrate on it, int8-dynamic splits off and smooths activation "
    "outliers with it, int4 gptq uses it.",
)
@click.option(
    "--block-size",
    type=int,
    default=32,
    show_default=True,
    help="int4 block (group) size.",
)
@click.option(
    "--method",
    type=click.Choice(INT4_METHODS),
    default=DEFAULT_INT4_METHOD,
    show_default=True,
    help="int4: rtn/hqq are data-free; gptq (onnxruntime's), awq, scale-estimation and "
    "awq+scale-estimation (NNCF's) calibrate on --calibration (default: the built-in English "
    "text). rtn (uint8 zero points) takes onnxruntime's fast int8 kernel, as do the "
    "calibrated methods; hqq is a little more accurate, but its float zero points make "
    "onnxruntime dequantize the weights on every call (decoding ~20x slower than rtn).",
)
@click.option(
    "--ratio",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="int4 (rtn, awq, scale-estimation): the share of the weights (by size) in int4; the "
    "most sensitive layers, measured by --sensitivity, stay in int8 (NNCF's mixed precision).",
)
@click.option(
    "--sensitivity",
    type=click.Choice(SENSITIVITY_METRICS),
    default=None,
    help="How --ratio ranks the layers: NNCF's sensitivity metrics [default: max-variance "
    "with calibration data; weight-error, the only data-free one, otherwise].",
)
@click.option(
    "--int8-head",
    is_flag=True,
    help="int4: write the last MatMul (a language model's lm_head) in int8.",
)
@click.option(
    "--max-metric-loss",
    default="2%",
    show_default=True,
    help="--mode auto: the largest loss of the task's metric (perplexity up, accuracy down) "
    "against eager, relative (2% or 0.02).",
)
@click.option(
    "--data",
    "eval_data",
    type=click.Path(path_type=Path),
    default=None,
    help="--mode auto: the evaluation data (as `graphport evaluate --data`; default: the "
    "built-in English text).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="--mode auto: tokens (language models) or rows the candidates are evaluated on.",
)
@click.option("--json", "as_json", is_flag=True, help="--mode auto: print the search as JSON.")
@click.option(
    "--target-cosine",
    type=float,
    default=None,
    help="int8-dynamic with --calibration: keep the most sensitive layers (up to 4) in fp32 "
    "until every output vector on the calibration inputs reaches this cosine against fp32.",
)
@click.option(
    "--report",
    "budget_report",
    is_flag=True,
    help="The error budget per layer: each module's cosine against fp32 eager, worst first "
    "(where the quantization error accumulates; --localize, ranked).",
)
@_transform_options
def quantize(
    src: Path,
    dst: Path,
    mode: str,
    calibration: Path | None,
    block_size: int,
    method: str,
    ratio: float,
    sensitivity: str | None,
    int8_head: bool,
    max_metric_loss: str,
    eval_data: Path | None,
    limit: int,
    as_json: bool,
    target_cosine: float | None,
    runtimes: str | None,
    allow_budget_break: bool,
    overwrite: bool,
    html_file: Path | None,
    localize: bool,
    budget_report: bool,
) -> None:
    """Quantize the graph of export SRC into a new export DST, checking parity."""
    from graphport.api.transform import quantize_export

    if mode == "auto":
        _quantize_auto(src, dst, max_metric_loss, calibration, eval_data, limit, overwrite, as_json)
        return
    _check_html(html_file)
    with _html_on_parity_error(html_file):
        result = quantize_export(
            src,
            dst,
            mode,
            calibration,
            block_size,
            method,
            _split(runtimes),
            allow_budget_break,
            overwrite,
            target_cosine,
            localize=localize or budget_report,
            ratio=ratio,
            sensitivity=sensitivity,
            int8_head=int8_head,
        )
    _print_passes(result)
    _write_html(html_file, result.report)


def _quantize_auto(
    src: Path,
    dst: Path,
    budget: str,
    calibration: Path | None,
    data: Path | None,
    limit: int,
    overwrite: bool,
    as_json: bool,
) -> None:
    """``quantize --mode auto``: the table of what was tried (also when no configuration
    meets the budget, before the error's sentence and exit code 1)."""
    from graphport.api.quantize_search import quantize_auto
    from graphport.errors import BudgetError

    try:
        result = quantize_auto(src, dst, budget, calibration, data, limit, overwrite=overwrite)
    except BudgetError as e:
        if e.result is not None:
            click.echo(json.dumps(e.result.to_dict(), indent=2) if as_json else e.result.table())
        raise
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())
    click.echo(f"Wrote {result.path}")


def _print_passes(result: Any) -> None:
    for record in result.passes:
        parity = record.get("parity", {})  # none: a streamed export written unvalidated
        runtimes = [k for k in parity if k != "passed"]
        worst = parity[runtimes[0]] if runtimes else {}
        verdict = "not validated" if not parity else "ok" if parity["passed"] else "BROKEN"
        click.echo(
            f"pass {record['name']:<13} modified={record['modified']!s:<5} "
            f"{record['seconds']:6.2f} s  parity {verdict}: max abs "
            f"{worst.get('max_abs', float('nan')):.2e}, min cosine "
            f"{worst.get('min_cosine', float('nan')):.6f} (budget {record['budget']})"
        )
        graphs = [record, *record.get("graphs", {}).values()]
        for kernel in (g["kernel"] for g in graphs if "kernel" in g):
            click.echo(f"  {kernel['summary']}")
    if result.report is not None:
        click.echo(result.report.table())
    click.echo(f"Wrote {result.path}")


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@_runtimes_option()
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--sequence-length",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens for text (default 128), samples for raw audio (default: the trace's).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Threads per runtime (default: the runtime's own choice).",
)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
def bench(
    export_dir: Path,
    runtimes: str | None,
    batch_size: int,
    sequence_length: int | None,
    threads: int | None,
    runs: int,
) -> None:
    """p50/p90 latency and throughput of an export, runtimes interleaved."""
    from graphport.manifest import ExportDirectory
    from graphport.runtimes import default_runtimes, parse_runtimes
    from graphport.runtimes.bench import bench_export, render

    names = parse_runtimes(runtimes or default_runtimes(ExportDirectory(export_dir).manifest))
    click.echo(
        render(bench_export(export_dir, names, batch_size, sequence_length, threads, runs=runs))
    )


@cli.command()
@click.argument("exports", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="A jsonl, csv, parquet or text file, or a saved dataset directory (default: "
    "English prose from Python's own help topics).",
)
@click.option(
    "--runtime",
    default=None,
    help="Default: onnxruntime for ONNX graphs, the export's own runtime otherwise.",
)
@_providers_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens for a language model, rows otherwise (default: all).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the results as one self-contained HTML page to this file.",
)
def evaluate(
    exports: tuple[Path, ...],
    data: Path | None,
    runtime: str | None,
    providers: str | None,
    limit: int | None,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Task accuracy of one or more exports of a model against eager on a dataset:
    perplexity, KL divergence and top-1 agreement for language models; accuracy, F1,
    cosine, Spearman or agreement with eager for the other tasks."""
    from graphport.api.evaluate import evaluate as run_evaluate

    _check_html(html_file)
    options = _runtime_options(providers).get(runtime or "onnxruntime", {})
    report = run_evaluate(list(exports), data, runtime, limit, runtime_options=options)
    if html_file is not None:
        report.write_html(html_file)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())


@cli.command()
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--target",
    type=click.Choice(["cpp", "triton"]),
    required=True,
    help="cpp: CMake project with graphport_infer; triton: model repository.",
)
@click.option(
    "--model-name", default=None, help="triton: the model's name (default: the export's)."
)
@click.option(
    "--max-batch-size",
    type=int,
    default=8,
    show_default=True,
    help="triton: max_batch_size (0 disables batching).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="cpp: replace DEST; triton: replace DEST/<model>, keeping other models.",
)
def deploy(
    export_dir: Path,
    dest: Path,
    target: str,
    model_name: str | None,
    max_batch_size: int,
    overwrite: bool,
) -> None:
    """Turn an export directory into a deployable C++ project or Triton model repository."""
    from graphport.deploy import deploy as run_deploy

    options: dict[str, Any] = {"overwrite": overwrite}
    if target == "triton":
        options.update(model_name=model_name, max_batch_size=max_batch_size)
    click.echo(f"Wrote {run_deploy(export_dir, dest, target, **options)}")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--formats",
    "show_formats",
    is_flag=True,
    help="List the export formats instead: the runtimes that run each (the default first), "
    "the deploy targets that take it and the extra it needs.",
)
def list_(as_json: bool, show_formats: bool) -> None:
    """Architectures graphport can export, with their tasks (or, --formats, the formats)."""
    if show_formats:
        _list_formats(as_json)
        return
    from graphport.models import registrations

    rows = [(r.family, r.model_type, [t.value for t in r.tasks]) for r in registrations()]
    if as_json:
        click.echo(json.dumps([{"family": f, "model_type": m, "tasks": t} for f, m, t in rows]))
        return
    width = max(len(m) for _, m, _ in rows)
    for family, model_type, tasks in rows:
        click.echo(f"{family:<10} {model_type:<{width}}  {', '.join(tasks)}")


def _list_formats(as_json: bool) -> None:
    rows = [
        {
            "format": f.name,
            "writes": list(f.writes),
            "runtimes": list(f.runtimes),
            "deploy_targets": sorted(f.deploy_targets),
            "passes": f.takes_passes,
            "extra": f.extra,
            "available": f.is_available(),
        }
        for f in formats()
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    width = max(len(r["format"]) for r in rows)
    for r in rows:
        details = [
            f"runtimes {', '.join(r['runtimes']) or '-'}",
            f"deploy {', '.join(r['deploy_targets']) or '-'}",
            *(["passes"] if r["passes"] else []),
            *([f"extra [{r['extra']}]"] if r["extra"] else []),
            *([] if r["available"] else ["not installed"]),
        ]
        click.echo(f"{r['format']:<{width}}  {'; '.join(details)}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def env(as_json: bool) -> None:
    """Versions, runtimes and providers found on this machine."""
    import os

    from graphport.api.export import package_versions
    from graphport.runtimes import runtime_names

    info: dict[str, Any] = {
        "graphport": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": package_versions(),
        "runtimes": {},
    }
    for name in runtime_names():
        info["runtimes"][name] = _runtime_info(name)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"graphport {info['graphport']}  python {info['python']}  {info['platform']}")
    click.echo(f"cpus {info['cpus']}")
    for pkg, ver in info["packages"].items():
        click.echo(f"  {pkg:<14} {ver}")
    for name, details in info["runtimes"].items():
        click.echo(f"runtime {name:<12} {details}")


def _runtime_info(name: str) -> str:
    from graphport.errors import RuntimeUnavailableError
    from graphport.runtimes import get_runtime_class

    try:
        runtime = get_runtime_class(name)
    except RuntimeUnavailableError:
        return "not installed"
    if name == "onnxruntime":
        import onnxruntime

        return f"{runtime.version()} providers: {', '.join(onnxruntime.get_available_providers())}"
    if name == "openvino":
        import openvino

        return f"{runtime.version()} devices: {', '.join(openvino.Core().available_devices)}"
    return f"{runtime.version()} (eager reference)"


# ---- sweep: every model type transformers knows, as a tiny model --------------------------


@cli.command()
@click.option(
    "--only",
    default=None,
    help="Comma-separated model types to (re-)run; default: every type not in the cache.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Model types run at a time, each in its own process (0: in this process, to debug).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds a model type may take before its process is killed.",
)
@click.option(
    "--max-memory",
    type=click.FloatRange(min=0.5),
    default=6.0,
    show_default=True,
    help="GiB of resident memory a model type's process may use before it is killed.",
)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=".graphport-sweep.json",
    show_default=True,
    help="JSON file of results per model type (a sweep resumes from it).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=Path("docs") / "SUPPORTED.md",
    show_default=True,
    help="The support matrix to write (from every result in the cache).",
)
@click.option("--rerun", is_flag=True, help="Re-run the model types already in the cache.")
@click.option(
    "--task",
    "tasks",
    type=click.Choice(["feature-extraction", *GENERATION_TASKS]),
    multiple=True,
    help="Only these of each model type's tasks (repeatable; default: all it has).",
)
def sweep(
    only: str | None,
    jobs: int,
    timeout: float,
    max_memory: float,
    cache: Path,
    output: Path,
    rerun: bool,
    tasks: tuple[str, ...],
) -> None:
    """Export and validate a tiny model of every model type; write the support matrix."""
    from graphport.sweep import Status, counts, run_sweep

    def progress(done: int, total: int, result: Any) -> None:
        why = f": {result.category}" if result.category else ""
        click.echo(
            f"[{done}/{total}] {result.model_type} {result.task}: {result.status}{why} "
            f"({result.seconds:.0f} s)",
            err=True,
        )

    results = run_sweep(
        output,
        cache,
        _split(only),
        jobs,
        timeout,
        max_memory,
        rerun,
        progress=progress,
        tasks=tasks or None,
    )
    rows = [r for rows in results.values() for r in rows]
    table = counts(rows)
    summary = ", ".join(f"{status.value} {sum(table[status].values())}" for status in Status)
    click.echo(f"Wrote {output} ({len(results)} model types, {len(rows)} tasks: {summary})")


def main() -> None:
    cli(prog_name="graphport")


if __name__ == "__main__":
    main()

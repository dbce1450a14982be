"""``graphport optimize`` and ``graphport quantize``: an export into a new export, every
pass checked against eager."""

from __future__ import annotations

import json
from pathlib import Path

import click

from graphport.cli.common import (
    check_html,
    html_on_parity_error,
    print_passes,
    split_names,
    transform_options,
    write_html,
)
from graphport.errors import BudgetError
from graphport.graphs import DEFAULT_INT4_METHOD, INT4_METHODS, SENSITIVITY_METRICS
from graphport.graphs import QUANT_MODES as QUANT_MODE_CHOICES


@click.command()
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
@transform_options
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

    check_html(html_file)
    with html_on_parity_error(html_file):
        result = optimize_export(
            src,
            dst,
            level,
            target,
            split_names(runtimes),
            allow_budget_break,
            overwrite,
            localize=localize,
        )
    print_passes(result)
    write_html(html_file, result.report)


@click.command()
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
@transform_options
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
    check_html(html_file)
    with html_on_parity_error(html_file):
        result = quantize_export(
            src,
            dst,
            mode,
            calibration,
            block_size,
            method,
            split_names(runtimes),
            allow_budget_break,
            overwrite,
            target_cosine,
            localize=localize or budget_report,
            ratio=ratio,
            sensitivity=sensitivity,
            int8_head=int8_head,
        )
    print_passes(result)
    write_html(html_file, result.report)


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

    try:
        result = quantize_auto(src, dst, budget, calibration, data, limit, overwrite=overwrite)
    except BudgetError as e:
        if e.result is not None:
            click.echo(json.dumps(e.result.to_dict(), indent=2) if as_json else e.result.table())
        raise
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.table())
    click.echo(f"Wrote {result.path}")

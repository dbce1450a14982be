"""One sweep row in this process: build a tiny seeded model of the model type, export and
validate it on onnxruntime and OpenVINO, and record how far it got and why it stopped.

The pools (``graphport.sweep.pool``, ``graphport.sweep.ray_pool``) run ``run_one`` in a
process of its own, so that a model that hangs or takes all memory takes down only itself.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from graphport.api.export import export_model
from graphport.errors import ParityError, Reason, UsageError
from graphport.export.generic import GenericOnnxConfig, check_generic_support
from graphport.export.tasks import Task, parse_task
from graphport.models.registry import get_registration
from graphport.models.tiny import (
    CONFIG_REFUSED,
    DOES_NOT_RUN,
    TOO_LARGE,
    TinyModelError,
    build_generic_tiny_model,
    tiny_model,
)
from graphport.sweep.classify import classify, one_line, parity_failure, root_cause
from graphport.sweep.rows import (
    GENERATION_TASKS,
    SWEEP_RUNTIMES,
    Category,
    Status,
    SweepResult,
    today,
)
from graphport.sweep.selection import sweep_task


class _StrategyFailures(logging.Handler):
    """Keeps the exceptions the ONNX exporter logs when a strategy fails: the export error
    itself holds only their first lines, which for torch.export is a generic banner."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def _capture_strategy_failures() -> Iterator[_StrategyFailures]:
    exporter_logger = logging.getLogger("graphport.export.onnx")
    handler, level = _StrategyFailures(), exporter_logger.level
    exporter_logger.addHandler(handler)
    exporter_logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        exporter_logger.removeHandler(handler)
        exporter_logger.setLevel(level)


def _build(model_type: str, task: str, seed: int) -> tuple[Any, str]:
    """A tiny model: the family's, or the first generic shrink level whose model runs on
    the inputs the generic config derives for it."""
    base, _ = parse_task(task)
    overrides = _head_overrides(model_type, base)
    if not get_registration(model_type).generic:
        return tiny_model(model_type, base.value, seed, **overrides), "family"
    check_generic_support(model_type, base)

    def runs(model: Any) -> None:
        GenericOnnxConfig(model.config, base).resolve(model)

    level, model = build_generic_tiny_model(model_type, base, seed, check=runs, **overrides)
    return model, level


def _head_overrides(model_type: str, task: Any) -> dict[str, Any]:
    """Config values a checkpoint of the task's head has: an encoder family's causal-LM head
    (BertLMHeadModel, ErnieForCausalLM...) is saved with ``is_decoder=True``, without which
    it attends both ways and returns no cache; a seq2seq LM names the token its decoder
    starts from (T5-style checkpoints their pad token), which a bare config may not."""
    try:
        config = AutoConfig.for_model(model_type)
    except Exception:
        return {}
    if task is Task.TEXT_GENERATION:
        takes = "is_decoder" in inspect.signature(type(config).__init__).parameters
        return {"is_decoder": True} if takes else {}
    if task is Task.TEXT2TEXT_GENERATION:
        text = config.get_text_config(decoder=True)
        if getattr(text, "decoder_start_token_id", None) is None and (
            getattr(text, "bos_token_id", None) is None
        ):
            return {"decoder_start_token_id": getattr(text, "pad_token_id", None) or 0}
    return {}


def _build_failure(error: Exception) -> tuple[Status, Reason | Category, str]:
    """(status, category, reason) of a failed build: a model type whose tiny model builds
    but does not run on the derived inputs, or whose inputs cannot be derived at all,
    failed to export; one with no tiny model at all could not be built."""
    if isinstance(error, TinyModelError):
        by_stage: dict[str, list[str]] = {}
        for level, stage, reason in error.attempts:
            by_stage.setdefault(stage, []).append(
                f"{level}: {reason}" if stage == TOO_LARGE else reason
            )
        if DOES_NOT_RUN in by_stage:
            reason = by_stage[DOES_NOT_RUN][0]
            reason = reason.split(" on dummy inputs: ", 1)[-1]
            return Status.EXPORT_FAILED, Reason.EAGER_RUN_FAILED, reason
        if set(by_stage) == {TOO_LARGE}:
            return Status.BUILD_FAILED, Category.TOO_LARGE, "; ".join(by_stage[TOO_LARGE])
        stage, reasons = next((k, v) for k, v in by_stage.items() if k != TOO_LARGE)
        if stage == CONFIG_REFUSED:
            return Status.BUILD_FAILED, Reason.CONFIG_REJECTS_SMALL_SIZES, reasons[0]
        return Status.BUILD_FAILED, Category.MODEL_REFUSED, reasons[0]
    category = classify(error, Category.MODEL_REFUSED)
    if category in (Reason.MAIN_INPUT_UNSUPPORTED, Reason.INPUTS_NOT_DERIVED):
        return Status.EXPORT_FAILED, category, str(error)
    return Status.BUILD_FAILED, category, f"{type(error).__name__}: {error}"


def run_one(model_type: str, task: str | None = None, seed: int = 0) -> SweepResult:
    """Build, export and validate one model type in this process."""
    start = time.perf_counter()
    try:
        registration = get_registration(model_type)
        task = task or sweep_task(model_type)
    except Exception as e:
        task = task or "feature-extraction"
        return SweepResult(
            model_type,
            task,
            "-",
            False,
            Status.BUILD_FAILED,
            category=classify(e),
            reason=one_line(f"{type(e).__name__}: {e}"),
            swept=today(),
        )
    result = SweepResult(
        model_type, task, registration.family, registration.generic, Status.BUILD_FAILED
    )
    result.swept = today()
    workdir = Path(tempfile.mkdtemp(prefix="graphport-sweep-"))
    try:
        try:
            model, result.tiny = _build(model_type, task, seed)
            model.save_pretrained(workdir / "checkpoint")
            del model
        except Exception as e:
            result.status, result.category, reason = _build_failure(e)
            result.reason = one_line(reason, 300)
            return result
        _export(result, workdir)
        return result
    finally:
        result.seconds = round(time.perf_counter() - start, 1)
        shutil.rmtree(workdir, ignore_errors=True)


def _export(result: SweepResult, workdir: Path) -> None:
    """Export the checkpoint in ``workdir`` and record how far it got, and why not further."""
    result.status = Status.EXPORT_FAILED
    try:
        with _capture_strategy_failures() as strategy_failures:
            export = export_model(
                workdir / "checkpoint", workdir / "out", task=result.task, runtimes=SWEEP_RUNTIMES
            )
    except ParityError as e:
        result.status = Status.PARITY_FAILED
        _record_report(result, e.report)
        result.category, line = parity_failure(e)
        result.reason = one_line(line)
    except UsageError as e:  # validation fed other sizes to an axis tracing fixed
        result.status = Status.PARITY_FAILED
        result.reason = one_line(str(e))
        result.category = classify(e, Reason.AXIS_SPECIALIZED)
    except Exception as e:
        text = str(e) if str(e).startswith("The ") else f"{type(e).__name__}: {e}"
        if strategy_failures.errors:  # the first strategy's own cause says most
            text = f"torch.export: {root_cause(strategy_failures.errors[0])}"
        result.reason = one_line(text, 300)
        result.category = classify(e, Reason.TRACING_FAILED, detail=text)
    else:
        result.status = Status.VALIDATED
        result.strategy = export.manifest.exporter.get("strategy")
        _record_report(result, export.report)
        if result.strategy != "torch.export":
            result.reason = one_line(f"exported by the {result.strategy} fallback")
        if result.task in GENERATION_TASKS and result.generation is None:
            result.status = Status.PARITY_FAILED  # a generation row proves generation
            result.category = Category.GENERATION_NOT_CHECKED
            result.reason = "the export has no KV cache, so greedy generation was not checked"


def _record_report(result: SweepResult, report: Any) -> None:
    if report is None:
        return
    checks = getattr(report, "generation", None)
    if checks:
        result.generation = all(g.passed for g in checks)
    for runtime in SWEEP_RUNTIMES:
        cases = [r for r in report.results if r.runtime == runtime]
        if cases:
            result.runtimes[runtime] = all(r.passed for r in cases) and not report.contract_problems


def stopped_row(
    model_type: str, task: str, category: Category, reason: str, seconds: float
) -> SweepResult:
    """The row of a process the runner stopped (timeout, memory) or that died without one."""
    try:
        registration = get_registration(model_type)
        family, generic = registration.family, registration.generic
    except Exception:
        family, generic = "-", False
    return SweepResult(
        model_type,
        task,
        family,
        generic,
        Status.EXPORT_FAILED,
        category=category,
        reason=reason,
        seconds=round(seconds, 1),
        swept=today(),
    )

"""``graphport sweep``: export every model type transformers knows, and write the support
matrix (``docs/SUPPORTED.md``) from the results.

For each model type in transformers' ``MODEL_MAPPING_NAMES``, a tiny seeded random model is
built (the family's tiny config, or the generic shrink for unregistered types) for each task
the sweep covers (``sweep_tasks``): feature extraction, and, where transformers has a causal
or sequence-to-sequence LM class for the type, generation with the KV cache. Each is
exported and validated on onnxruntime and OpenVINO against eager; the generation tasks also
check greedy tokens against transformers' ``generate()``.

Each (model type, task) runs in a process of its own, under a wall-clock timeout and a memory cap:
some models hang while tracing or take all memory, and one must not take the sweep down.
Processes are forked from a server that has imported torch and transformers once, which
saves seconds per model type. Results are cached per model type and task in a JSON file,
so an interrupted sweep resumes where it stopped and ``--only`` re-runs a subset; the
matrix is always written from the whole cache.

A failure is classified into a reason category by the rules in ``REASON_RULES`` (first
match wins), so the matrix can count failures by cause.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from graphport.errors import ParityError, UsageError
from graphport.verbosity import set_verbosity

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_CACHE = ".graphport-sweep.json"
DEFAULT_OUTPUT = Path("docs") / "SUPPORTED.md"
SWEEP_RUNTIMES = ("onnxruntime", "openvino")
# Imported once by the fork server, so each model type's process starts warm.
_PRELOAD = ["torch", "transformers", "onnxruntime", "openvino", "graphport.api.export"]


class Status(str, enum.Enum):
    VALIDATED = "validated"
    PARITY_FAILED = "exported, failed parity"
    EXPORT_FAILED = "failed to export"
    BUILD_FAILED = "could not build a tiny model"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass
class SweepResult:
    """One model type and task: how far it got, on which runtimes, and why it stopped."""

    model_type: str
    task: str
    family: str
    generic: bool
    status: Status
    runtimes: dict[str, bool] = dataclasses.field(default_factory=dict)
    category: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    strategy: str | None = None  # the exporter that produced the graph
    tiny: str | None = None  # the tiny config used: the family's, or a generic shrink level
    generation: bool | None = None  # greedy tokens equal to eager's on every runtime
    swept: str | None = None  # the UTC date the row was run

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepResult:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["status"] = Status(values["status"])
        return cls(**values)


# ---- reasons: one line, and a category --------------------------------------------------

# (category, pattern) in order; the first pattern found in the error text names the
# category. Timeouts, memory kills and crashes are set by the runner, not matched here.
REASON_RULES: tuple[tuple[str, str], ...] = (
    ("model class unavailable", r"ImportError|No module named|requires the .* librar"),
    ("task not supported", r"does not support the task"),
    ("checkpoint config incomplete", r"config names no|config of model type .* names no"),
    ("cache not carried", r"UnsupportedCacheError|cannot be exported with one"),
    ("unsupported main input", r"main input is"),
    ("forward needs other inputs", r"forward requires|gives no size for"),
    ("config rejects small sizes", r"No tiny config"),
    ("eager run on derived inputs", r"running the eager"),
    ("outputs not found", r"needs the .* outputs|returns \[.*\], not"),
    ("checkpoint reload", r"Loading .* as \w+ failed"),
    ("data-dependent control flow", r"data.dependent|GuardOnDataDependent|unbacked"),
    (
        "dynamic axis specialized",
        r"specialized|Constraints violated|ConstraintViolation|exported with that axis fixed",
    ),
    ("unsupported operator", r"[Uu]nsupported|not supported|No decomposition|not implemented"),
    ("tracing failed", r"failed at tracing|Every export strategy failed"),
    ("graph contract", r"graph (inputs|outputs) are"),
    ("generation differs", r"tokens differ from transformers"),
    ("runtime error", r"(onnxruntime|openvino) / [^/]*: "),
    ("outputs differ", r"values off|vectors below cosine|NaN"),
)

_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:/[\w.@+~-]+){2,}/?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(text: str, limit: int = 200) -> str:
    """The first line of an error, without local paths, short enough for a table cell."""
    text = _ANSI.sub("", str(text))
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    line = _PATH.sub("<path>", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def classify(text: str, default: str = "other") -> str:
    for category, pattern in REASON_RULES:
        if re.search(pattern, text):
            return category
    return default


# ---- one model type, in its own process --------------------------------------------------


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
    exporter_logger = logging.getLogger("graphport.exporters.onnx")
    handler, level = _StrategyFailures(), exporter_logger.level
    exporter_logger.addHandler(handler)
    exporter_logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        exporter_logger.removeHandler(handler)
        exporter_logger.setLevel(level)


def root_cause(error: BaseException) -> str:
    """The innermost cause's type and first informative line."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return f"{type(error).__name__}: {one_line(str(error), 400)}"


def sweep_task(model_type: str) -> str:
    """The encoder task a sweep exports: feature extraction, unless a family lacks it."""
    from graphport.exporters.tasks import Task
    from graphport.models.registry import get_registration

    tasks = get_registration(model_type).tasks
    if Task.FEATURE_EXTRACTION in tasks or not tasks:
        return Task.FEATURE_EXTRACTION.value
    return tasks[0].value


GENERATION_TASKS = ("text-generation-with-past", "text2text-generation-with-past")


def sweep_tasks(model_type: str) -> list[str]:
    """Every task a sweep exports for ``model_type``: its encoder task, then generation with
    the KV cache where transformers has a causal-LM (or seq2seq-LM) class for the type."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    try:
        tasks = [sweep_task(model_type)]
    except Exception:  # the row says why; no generation row without a registration
        return ["feature-extraction"]
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        tasks.append("text-generation-with-past")
    if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        tasks.append("text2text-generation-with-past")
    return list(dict.fromkeys(tasks))


def _build(model_type: str, task: str, seed: int) -> tuple[Any, str]:
    """A tiny model: the family's, or the first generic shrink level whose model runs on
    the inputs the generic config derives for it."""
    from graphport.exporters.generic import GenericOnnxConfig, check_generic_support
    from graphport.exporters.tasks import parse_task
    from graphport.models.registry import get_registration
    from graphport.models.tiny import build_generic_tiny_model, tiny_model

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
    import inspect

    from transformers import AutoConfig

    from graphport.exporters.tasks import Task

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


def _build_failure(error: Exception) -> tuple[Status, str, str]:
    """(status, category, reason) of a failed build: a model type whose tiny model builds
    but does not run on the derived inputs, or whose inputs cannot be derived at all,
    failed to export; one with no tiny model at all could not be built."""
    from graphport.models.tiny import CONFIG_REFUSED, DOES_NOT_RUN, TOO_LARGE, TinyModelError

    text = f"{type(error).__name__}: {error}"
    if isinstance(error, TinyModelError):
        by_stage: dict[str, list[str]] = {}
        for level, stage, reason in error.attempts:
            by_stage.setdefault(stage, []).append(
                f"{level}: {reason}" if stage == TOO_LARGE else reason
            )
        if DOES_NOT_RUN in by_stage:
            reason = by_stage[DOES_NOT_RUN][0]
            reason = reason.split(" on dummy inputs: ", 1)[-1]
            return Status.EXPORT_FAILED, "eager run on derived inputs", reason
        if set(by_stage) == {TOO_LARGE}:
            return Status.BUILD_FAILED, "too large even when shrunk", "; ".join(by_stage[TOO_LARGE])
        stage, reasons = next((k, v) for k, v in by_stage.items() if k != TOO_LARGE)
        category = "config rejects small sizes" if stage == CONFIG_REFUSED else "model refused"
        return Status.BUILD_FAILED, category, reasons[0]
    category = classify(text, "model refused")
    if category in ("unsupported main input", "forward needs other inputs"):
        return Status.EXPORT_FAILED, category, str(error)
    return Status.BUILD_FAILED, category, text


def run_one(model_type: str, task: str | None = None, seed: int = 0) -> SweepResult:
    """Build, export and validate one model type in this process."""
    from graphport.models.registry import get_registration

    start = time.perf_counter()
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    try:
        registration = get_registration(model_type)
        task = task or sweep_task(model_type)
    except Exception as e:
        text = one_line(f"{type(e).__name__}: {e}")
        task = task or "feature-extraction"
        return SweepResult(
            model_type,
            task,
            "-",
            False,
            Status.BUILD_FAILED,
            category=classify(text),
            reason=text,
            swept=today,
        )
    result = SweepResult(
        model_type, task, registration.family, registration.generic, Status.BUILD_FAILED
    )
    result.swept = today
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
    from graphport.api.export import export_model

    result.status = Status.EXPORT_FAILED
    try:
        with _capture_strategy_failures() as strategy_failures:
            export = export_model(
                workdir / "checkpoint", workdir / "out", task=result.task, runtimes=SWEEP_RUNTIMES
            )
    except ParityError as e:
        result.status = Status.PARITY_FAILED
        _record_report(result, e.report)
        failures = e.report.failures() if e.report is not None else [str(e)]
        result.reason = one_line(failures[0] if failures else str(e))
        result.category = classify(result.reason, "outputs differ")
    except UsageError as e:  # validation fed other sizes to an axis tracing fixed
        result.status = Status.PARITY_FAILED
        result.reason = one_line(str(e))
        result.category = classify(result.reason, "dynamic axis specialized")
    except Exception as e:
        text = str(e) if str(e).startswith("The ") else f"{type(e).__name__}: {e}"
        if strategy_failures.errors:  # the first strategy's own cause says most
            text = f"torch.export: {root_cause(strategy_failures.errors[0])}"
        result.reason = one_line(text, 300)
        result.category = classify(f"{one_line(str(e))} {text}", "tracing failed")
    else:
        result.status = Status.VALIDATED
        result.strategy = export.manifest.exporter.get("strategy")
        _record_report(result, export.report)
        if result.strategy != "torch.export":
            result.reason = one_line(f"exported by the {result.strategy} fallback")
        if result.task in GENERATION_TASKS and result.generation is None:
            result.status = Status.PARITY_FAILED  # a generation row proves generation
            result.category = "generation not checked"
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


def _worker(model_type: str, task: str | None, seed: int, result_file: str) -> None:
    """The body of a model type's process: run it, write its result as JSON."""
    # Exporters and models print warnings of their own; the sweep reports results instead.
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    set_verbosity("error")
    result = run_one(model_type, task, seed)
    Path(result_file).write_text(json.dumps(result.to_dict()), encoding="utf-8")


# ---- the runner: processes, timeouts, memory caps ----------------------------------------


@dataclasses.dataclass
class _Running:
    model_type: str
    task: str
    process: Any
    result_file: Path
    started: float


def _rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (Linux /proc); None where it cannot be read."""
    try:
        pages = Path(f"/proc/{pid}/statm").read_text().split()[1]
    except (OSError, IndexError):
        return None
    return int(pages) * os.sysconf("SC_PAGE_SIZE")


def _killed(
    model_type: str, task: str, status: Status, category: str, reason: str, seconds: float
) -> SweepResult:
    from graphport.models.registry import get_registration

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
        status,
        category=category,
        reason=reason,
        seconds=round(seconds, 1),
        swept=datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
    )


def run_isolated(
    model_types: Sequence[str | tuple[str, str]],
    jobs: int = 2,
    timeout: float = 300.0,
    max_memory_gb: float = 6.0,
    seed: int = 0,
    start_method: str = "forkserver",
    on_result: Callable[[SweepResult], None] | None = None,
) -> list[SweepResult]:
    """Run each model type (or ``(model type, task)``; a bare type runs its encoder task)
    in its own process, ``jobs`` at a time.

    A process past ``timeout`` seconds or ``max_memory_gb`` of resident memory is killed
    and its model type recorded as failed to export (timeout / out of memory); one that
    dies without a result is recorded as crashed.
    """
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload(_PRELOAD)
    pending = [(job, None) if isinstance(job, str) else job for job in model_types]
    running: list[_Running] = []
    results: list[SweepResult] = []
    limit = max_memory_gb * 2**30
    with tempfile.TemporaryDirectory(prefix="graphport-sweep-results-") as scratch:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                model_type, task = pending.pop(0)
                result_file = Path(scratch) / f"{len(results) + len(running)}.json"
                process = context.Process(
                    target=_worker, args=(model_type, task, seed, str(result_file)), daemon=True
                )
                process.start()
                running.append(
                    _Running(
                        model_type,
                        task or "feature-extraction",
                        process,
                        result_file,
                        time.monotonic(),
                    )
                )
            time.sleep(0.2)
            for job in list(running):
                result = _check(job, timeout, limit)
                if result is None:
                    continue
                running.remove(job)
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results


def _check(job: _Running, timeout: float, limit: float) -> SweepResult | None:
    """The job's result once it has one (finished, or killed for time or memory)."""
    elapsed = time.monotonic() - job.started
    process = job.process
    if process.is_alive():
        rss = _rss_bytes(process.pid)
        if elapsed > timeout:
            reason = f"killed after {timeout:.0f} s (tracing or validation did not finish)"
            category = "timeout"
        elif rss is not None and rss > limit:
            reason = f"killed at {rss / 2**30:.1f} GiB of memory (cap {limit / 2**30:.1f} GiB)"
            category = "out of memory"
        else:
            return None
        process.kill()
        process.join()
        return _killed(job.model_type, job.task, Status.EXPORT_FAILED, category, reason, elapsed)
    process.join()
    if job.result_file.is_file():
        return SweepResult.from_dict(json.loads(job.result_file.read_text(encoding="utf-8")))
    reason = f"the process died without a result (exit code {process.exitcode})"
    return _killed(job.model_type, job.task, Status.EXPORT_FAILED, "crashed", reason, elapsed)


# ---- the cache ---------------------------------------------------------------------------


def sweep_versions() -> dict[str, str]:
    from graphport.api.export import package_versions

    return package_versions()


def load_cache(path: Path) -> dict[str, list[SweepResult]]:
    """Cached results by model type (empty when there is no cache yet)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        model_type: [SweepResult.from_dict(r) for r in rows]
        for model_type, rows in data.get("results", {}).items()
    }


def save_cache(path: Path, results: dict[str, list[SweepResult]]) -> None:
    """Write the cache atomically (a sweep killed mid-write keeps the previous one)."""
    data = {
        "format": CACHE_FORMAT,
        "versions": sweep_versions(),
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": {
            model_type: [r.to_dict() for r in rows] for model_type, rows in sorted(results.items())
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


# ---- the sweep ---------------------------------------------------------------------------


def all_model_types() -> list[str]:
    """Every model type transformers has a base model class for."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    return sorted(MODEL_MAPPING_NAMES)


def select_model_types(
    only: Iterable[str] | None, cached: Iterable[str], rerun: bool = False
) -> list[str]:
    """``only`` (always re-run), else every model type not cached yet (all with rerun)."""
    if only:
        known = set(all_model_types())
        unknown = [m for m in only if m not in known]
        if unknown:
            raise UsageError(
                f"Unknown model type(s) {', '.join(unknown)}: a sweep covers the model types "
                "transformers has a model class for (transformers' MODEL_MAPPING_NAMES)."
            )
        return list(dict.fromkeys(only))
    done = set() if rerun else set(cached)
    return [m for m in all_model_types() if m not in done]


def run_sweep(
    output: Path = DEFAULT_OUTPUT,
    cache: Path = Path(DEFAULT_CACHE),
    only: Sequence[str] | None = None,
    jobs: int = 2,
    timeout: float = 300.0,
    max_memory_gb: float = 6.0,
    rerun: bool = False,
    start_method: str = "forkserver",
    progress: Callable[[int, int, SweepResult], None] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, list[SweepResult]]:
    """Run the model types the arguments select, cache each result as it arrives, and
    write the support matrix from the whole cache; returns the cache's results.

    ``tasks`` keeps only those of each type's ``sweep_tasks`` (to refresh the generation
    rows alone, say).

    ``jobs`` processes run at a time; 0 runs the model types in this process, one after
    another, without timeout or memory cap (to debug one model type).
    """
    results = load_cache(cache)
    if results and not only:  # model types transformers dropped leave the matrix
        known = set(all_model_types())
        results = {m: r for m, r in results.items() if m in known}
    fresh = bool(only) or rerun  # else only the (model type, task) rows not cached yet
    selected = [
        (model_type, task)
        for model_type in select_model_types(only, {}, rerun)
        for task in sweep_tasks(model_type)
        if not tasks or task in tasks
        if fresh or not any(r.task == task for r in results.get(model_type, []))
    ]
    done = 0

    def record(result: SweepResult) -> None:
        nonlocal done
        done += 1
        rows = [r for r in results.get(result.model_type, []) if r.task != result.task]
        results[result.model_type] = sorted([*rows, result], key=lambda r: r.task)
        save_cache(cache, results)
        if progress is not None:
            progress(done, len(selected), result)

    if selected and jobs == 0:  # in this process, for debugging: no isolation
        for model_type, task in selected:
            record(run_one(model_type, task))
    elif selected:
        run_isolated(
            selected, jobs, timeout, max_memory_gb, start_method=start_method, on_result=record
        )
    if not only:  # rows of tasks a type is no longer swept for leave the matrix
        results = {m: _current(m, rows) for m, rows in results.items()}
        save_cache(cache, results)
    write_matrix(output, [r for rows in results.values() for r in rows])
    return results


def _current(model_type: str, rows: list[SweepResult]) -> list[SweepResult]:
    tasks = sweep_tasks(model_type)
    return [r for r in rows if r.task in tasks] or rows


# ---- the matrix --------------------------------------------------------------------------

_MARK = {True: "pass", False: "fail", None: "-"}


def counts(results: Sequence[SweepResult]) -> dict[Status, Counter[str]]:
    """Per status, the results by reason category (validated: by path, family or generic)."""
    table: dict[Status, Counter[str]] = {status: Counter() for status in Status}
    for r in results:
        key = (
            ("generic" if r.generic else "family")
            if r.status is Status.VALIDATED
            else (r.category or "other")
        )
        table[r.status][key] += 1
    return table


_TASK_TITLES = {
    "text-generation-with-past": "generation with the KV cache (causal LMs)",
    "text2text-generation-with-past": "generation with the KV cache (encoder-decoders)",
}


def _task_group(task: str) -> str:
    return _TASK_TITLES.get(task, "encoder task (feature extraction, or the family's first)")


def render_matrix(results: Sequence[SweepResult], versions: dict[str, str] | None = None) -> str:
    """SUPPORTED.md: a header, the counts per task, then one row per model type and task."""
    rows = sorted(results, key=lambda r: (r.model_type, r.task in GENERATION_TASKS, r.task))
    versions = versions if versions is not None else sweep_versions()
    stack = ", ".join(
        f"{k} {versions[k]}"
        for k in ("transformers", "torch", "onnxruntime", "openvino")
        if k in versions
    )
    model_types = {r.model_type for r in rows}
    validated = {r.model_type for r in rows if r.status is Status.VALIDATED}
    lines = [
        "# Supported model types",
        "",
        "<!-- Generated by `graphport sweep`; do not edit by hand: re-run the sweep "
        "(`graphport sweep --only TYPE,...` refreshes some rows). -->",
        "",
        "Generated by `graphport sweep`: every model type transformers has a model class "
        "for, as a tiny seeded random model, exported to ONNX and validated against eager "
        "PyTorch on onnxruntime and OpenVINO at shapes other than the trace shapes. Where "
        "transformers has a causal-LM or seq2seq-LM class for the type, a second row exports "
        "it for generation with its KV cache and also checks greedy tokens against "
        "transformers' `generate()` (a prompt alone and a padded batch) on both runtimes. "
        "Model types a family registers use its export config; the others use the generic "
        "path, which derives the graph's inputs from the model's forward signature and "
        f"config. Do not edit by hand. Stack: {stack}.",
        "",
        f"**{len(model_types)} model types, {len(validated)} validated for at least one task**",
    ]
    dates = Counter(r.swept or "unknown" for r in rows)
    if len(dates) > 1:  # a matrix refreshed in parts says which rows are how old
        lines += [
            "",
            "Rows by the date they were swept: "
            + ", ".join(f"{date} {n}" for date, n in sorted(dates.items()))
            + ".",
        ]
    groups: dict[str, list[SweepResult]] = {}
    for r in rows:
        groups.setdefault(_task_group(r.task), []).append(r)
    for title, group in groups.items():
        table = counts(group)
        lines += ["", f"{title}, {len(group)} model types:", ""]
        for status in Status:
            total = sum(table[status].values())
            detail = ", ".join(f"{k} {v}" for k, v in table[status].most_common())
            lines.append(f"- {status.value}: **{total}**" + (f" ({detail})" if detail else ""))
    lines += [
        "",
        "| model type | task | export config | onnxruntime | openvino | greedy generation "
        "| status | reason |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        path = "generic" if r.generic else f"family: {r.family}"
        reason = f"{r.category}: {r.reason}" if r.category else (r.reason or "")
        generation = _MARK[r.generation] if r.task in GENERATION_TASKS else ""
        cells = [
            f"`{r.model_type}`",
            r.task,
            path,
            _MARK[r.runtimes.get("onnxruntime")],
            _MARK[r.runtimes.get("openvino")],
            generation,
            r.status.value,
            reason.replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_matrix(output: Path, results: Sequence[SweepResult]) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_matrix(results), encoding="utf-8")
    return output


def generic_coverage(cache: Path = Path(DEFAULT_CACHE)) -> dict[str, SweepResult]:
    """Validated generic model types from a sweep cache, for ``graphport list``."""
    return {
        m: rows[0]
        for m, rows in load_cache(cache).items()
        if rows and rows[0].generic and rows[0].status is Status.VALIDATED
    }

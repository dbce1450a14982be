"""``graphport evaluate``: task accuracy of exports against eager on a dataset.

Rules:

1. The exports share one task and one source checkpoint (several exports of a model:
   precisions, quantizations, runtimes); eager is that checkpoint, loaded as validation
   loads it, and its row comes first.
2. Bad input fails before any model is loaded: a task with no metric, data that does not
   parse, a missing column, a label outside the model's label set (``UsageError``).
3. The data is batched once and each batch runs on eager once, then on every export, so
   eager's outputs (and the work derived from them, such as its softmax) are computed
   once per batch and shared; only the forward passes count in a row's time.
4. Progress goes to the log every ``PROGRESS_SECONDS`` on long runs.
5. ``ray=`` fans the exports out over a Ray cluster, one task per export, after the checks
   of rule 2 (``graphport.api.evaluate_ray``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphport.api.cluster import import_ray
from graphport.api.evaluate_data import load_data
from graphport.api.evaluate_ray import evaluate_on_ray
from graphport.api.evaluate_tasks import EVALUATORS, TaskEvaluator
from graphport.api.load import load
from graphport.errors import UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes.predict import default_runtime
from graphport.validators.evaluation import EvalReport, EvalRow
from graphport.validators.reference import load_reference

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 10.0
EAGER = "eager"


def evaluate(
    exports: str | Path | ExportDirectory | Sequence[str | Path | ExportDirectory],
    data: str | Path | None = None,
    runtime: str | None = None,
    limit: int | None = None,
    *,
    window: int = 512,
    batch_size: int = 16,
    runtime_options: dict[str, Any] | None = None,
    ray: bool | str = False,
) -> EvalReport:
    """Task metrics of eager and of each export on ``data`` (a jsonl, csv, parquet or
    text file, or a saved dataset directory; default: Python's own help text).

    ``runtime``: the runtime the exports run on (default: onnxruntime for ONNX graphs, the
    export's own otherwise); ``limit``: tokens for a language model, rows otherwise;
    ``window``: a language model's window length in tokens (stride = window);
    ``batch_size``: rows (windows) per forward pass, at most; ``ray``: evaluate each export
    as a task of the Ray cluster at this address (True: a local instance; rule 5).
    """
    if ray is not False:
        import_ray()  # without the extra, fail before any work
    single = isinstance(exports, (str, Path, ExportDirectory))
    directories = [
        e if isinstance(e, ExportDirectory) else ExportDirectory(e)
        for e in ([exports] if single else exports)
    ]
    if not directories:
        raise UsageError("Pass at least one export directory to evaluate.")
    evaluator_class = _evaluator_class(directories)
    first = directories[0]
    if not first.has_tokenizer():
        raise UsageError(
            f"{first.path} has no tokenizer, and evaluate tokenizes its data with the export's "
            "own; export from a checkpoint that has its tokenizer files."
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(first.path, local_files_only=True)
    rows = load_data(data)
    evaluator = evaluator_class(first, rows, tokenizer, limit, window, batch_size)
    if ray is not False:
        one = functools.partial(
            evaluate,
            data=data,
            runtime=runtime,
            limit=limit,
            window=window,
            batch_size=batch_size,
            runtime_options=runtime_options,
        )
        address = ray if isinstance(ray, str) else None
        return evaluate_on_ray(one, [str(d.path) for d in directories], address)
    models = _load_models(directories, runtime, runtime_options or {})
    return _run(evaluator, models, rows.name)


def _evaluator_class(directories: list[ExportDirectory]) -> type[TaskEvaluator]:
    """The evaluator of the exports' one task and source (rules 1-2)."""
    first = directories[0]
    task, source = first.manifest.task, first.manifest.source.get("path")
    for other in directories[1:]:
        if other.manifest.task != task or other.manifest.source.get("path") != source:
            raise UsageError(
                f"evaluate compares exports of one checkpoint and task, and {other.path} is a "
                f"{other.manifest.task} export of {other.manifest.source.get('path')} while "
                f"{first.path} is a {task} export of {source}; evaluate them separately."
            )
    if task not in EVALUATORS:
        raise UsageError(
            f"{first.path} is a {task} export, and evaluate has no metric for {task}; it "
            f"evaluates {', '.join(sorted(EVALUATORS))} exports."
        )
    return EVALUATORS[task]


def _load_models(
    directories: list[ExportDirectory], runtime: str | None, options: dict[str, Any]
) -> list[tuple[str, str, Any]]:
    """(row name, runtime, model): eager first, then each export on its runtime."""
    started = time.perf_counter()
    models = [(EAGER, "torch", load_reference(directories[0]))]
    for directory in directories:
        name = runtime or default_runtime(directory)
        models.append((str(directory.path), name, load(directory, name, **options)))
    logger.info("Loaded eager and %d export(s) in %.1f s", len(directories), _since(started))
    return models


def _run(evaluator: TaskEvaluator, models: list[tuple[str, str, Any]], data: str) -> EvalReport:
    """Each batch on eager once, then on every export (rule 3), with progress (rule 4)."""
    started = last = time.perf_counter()
    sums: list[dict[str, Any]] = [{} for _ in models]
    seconds = [0.0] * len(models)
    done = tokens = 0
    total = evaluator.examples
    for batch in evaluator.batches():
        reference = None
        for i, (_, _, model) in enumerate(models):
            begin = time.perf_counter()
            out = evaluator.gather(model, batch)
            seconds[i] += _since(begin)
            if reference is None:
                reference = evaluator.reference(out, batch)
            evaluator.score(sums[i], out, reference, batch)
        done += len(batch["input_ids"])
        tokens += int(batch.get("tokens", 0))
        if time.perf_counter() - last > PROGRESS_SECONDS:
            last = time.perf_counter()
            logger.info(
                "Evaluated %d/%d %s%s in %.0f s",
                done,
                total,
                "windows" if evaluator.tokens else "examples",
                f" ({tokens} tokens)" if tokens else "",
                _since(started),
            )
    rows = [
        EvalRow(name, runtime, evaluator.finish(s), spent)
        for (name, runtime, _), s, spent in zip(models, sums, seconds, strict=True)
    ]
    return EvalReport(
        evaluator.task,
        data,
        evaluator.examples,
        evaluator.tokens,
        evaluator.metrics,
        rows,
        _since(started),
    )


def _since(started: float) -> float:
    return time.perf_counter() - started

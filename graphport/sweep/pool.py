"""The local pool: each sweep row in a process of its own, under a wall-clock timeout and a
memory cap, ``jobs`` at a time.

Some models hang while tracing or take all memory, and one must not take the sweep down.
Processes are forked from a server that has imported torch and transformers once, which
saves seconds per row. A row's result comes back as the JSON of its ``SweepResult``: its
category is data, read back as the enum it was written from.

The row's own code (``graphport.sweep.row``, which imports torch) is imported by the
process that runs it, not by this module: ``graphport.cli`` imports this package at start,
and ``graphport --help`` loads no torch (docs/DEVELOPING.md, rule 4).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graphport.sweep.rows import Category, SweepResult
from graphport.verbosity import set_verbosity

# Imported once by the fork server, so each row's process starts warm.
_PRELOAD = ["torch", "transformers", "onnxruntime", "openvino", "graphport.sweep.row"]

Job = tuple[str, str | None]  # (model type, task); no task: the type's encoder task


def _worker(model_type: str, task: str | None, seed: int, result_file: str) -> None:
    """The body of a row's process: run it, write its result as JSON."""
    from graphport.sweep.row import run_one  # in the row's process (see the module docstring)

    # Exporters and models print warnings of their own; the sweep reports results instead.
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    set_verbosity("error")
    result = run_one(model_type, task, seed)
    Path(result_file).write_text(json.dumps(result.to_dict()), encoding="utf-8")


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


def _stopped(
    model_type: str, task: str, category: Category, reason: str, seconds: float
) -> SweepResult:
    # Imported only when a row is stopped: see the module docstring.
    from graphport.sweep.row import stopped_row

    return stopped_row(model_type, task, category, reason, seconds)


def jobs_of(model_types: Sequence[str | tuple[str, str]]) -> list[Job]:
    """``(model type, task)`` pairs; a bare type runs its encoder task."""
    return [(job, None) if isinstance(job, str) else job for job in model_types]


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
    pending = jobs_of(model_types)
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
            category = Category.TIMEOUT
        elif rss is not None and rss > limit:
            reason = f"killed at {rss / 2**30:.1f} GiB of memory (cap {limit / 2**30:.1f} GiB)"
            category = Category.OUT_OF_MEMORY
        else:
            return None
        process.kill()
        process.join()
        return _stopped(job.model_type, job.task, category, reason, elapsed)
    process.join()
    if job.result_file.is_file():
        return SweepResult.from_dict(json.loads(job.result_file.read_text(encoding="utf-8")))
    reason = f"the process died without a result (exit code {process.exitcode})"
    return _stopped(job.model_type, job.task, Category.CRASHED, reason, elapsed)

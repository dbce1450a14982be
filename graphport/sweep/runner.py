"""``run_sweep``: select the rows, run them (in this process, the local pool, or Ray),
cache each as it arrives, and write the support matrix from the whole cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from graphport.sweep.cache import DEFAULT_CACHE, load_cache, save_cache
from graphport.sweep.matrix import DEFAULT_OUTPUT, write_matrix
from graphport.sweep.pool import run_isolated
from graphport.sweep.ray_pool import run_on_ray
from graphport.sweep.rows import SweepResult
from graphport.sweep.selection import all_model_types, select_model_types, sweep_tasks


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
    ray: bool | str = False,
) -> dict[str, list[SweepResult]]:
    """Run the model types the arguments select, cache each result as it arrives, and
    write the support matrix from the whole cache; returns the cache's results.

    ``tasks`` keeps only those of each type's ``sweep_tasks`` (to refresh the generation
    rows alone, say).

    ``jobs`` processes run at a time; 0 runs the model types in this process, one after
    another, without timeout or memory cap (to debug one model type). ``ray`` runs the rows
    as tasks of a Ray cluster instead, with the same timeout and memory cap per row: True
    starts a local instance of ``jobs`` CPUs, a string is the address of a running cluster
    (``graphport.sweep.ray_pool``).
    """
    if ray is not False:  # without the extra, fail before any work
        from graphport.api.cluster import import_ray  # graphport.api imports torch

        import_ray()
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

    if selected and ray is not False:
        address = ray if isinstance(ray, str) else None
        run_on_ray(selected, address, jobs, timeout, max_memory_gb, on_result=record)
    elif selected and jobs == 0:  # in this process, for debugging: no isolation
        # Imported here: the row's code imports torch, which `graphport --help` must not
        # load (graphport.cli imports this package; docs/DEVELOPING.md, rule 4).
        from graphport.sweep.row import run_one

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

"""Sweep rows over a Ray cluster: ``graphport sweep --ray [ADDRESS]``.

Rules:

1. A row is one Ray task (one CPU), and the task runs it as the local pool does
   (``run_isolated`` with one job): in a process of its own on the worker node, under the
   same wall-clock timeout and memory cap, recorded as timeout / out of memory / crashed
   when stopped. A task that ends without a row (its Ray worker died, or the node could
   not run it: graphport missing there, say) is recorded as crashed, with why.
2. A task returns its row as the JSON data of a ``SweepResult`` (its category is data,
   never words parsed again); the driver caches each row as it arrives, as with the local
   pool, so the cache and the matrix are the same.
3. The cluster: ``address``, or a local instance of ``jobs`` CPUs; ``ray`` is the optional
   extra ``ray`` (``graphport.api.cluster``, imported where it is used: ``graphport.cli``
   imports this package at start, and ``graphport.api`` imports torch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from graphport.sweep.classify import one_line
from graphport.sweep.pool import jobs_of, run_isolated
from graphport.sweep.rows import Category, SweepResult

logger = logging.getLogger(__name__)


def _run_row(
    model_type: str, task: str | None, seed: int, timeout: float, max_memory_gb: float
) -> dict[str, Any]:
    """The body of a row's Ray task: the local pool with one job (rule 1)."""
    job = model_type if task is None else (model_type, task)
    (result,) = run_isolated([job], jobs=1, timeout=timeout, max_memory_gb=max_memory_gb, seed=seed)
    return result.to_dict()


def run_on_ray(
    model_types: Sequence[str | tuple[str, str]],
    address: str | None = None,
    jobs: int = 2,
    timeout: float = 300.0,
    max_memory_gb: float = 6.0,
    seed: int = 0,
    on_result: Callable[[SweepResult], None] | None = None,
) -> list[SweepResult]:
    """Run each model type (or ``(model type, task)``) as a Ray task, as ``run_isolated``
    runs it in a local process; ``on_result`` gets each row as it arrives."""
    from graphport.api.cluster import ray_cluster  # see rule 3

    results: list[SweepResult] = []
    with ray_cluster(address, jobs) as ray:
        remote = ray.remote(num_cpus=1, max_retries=0)(_run_row)
        pending = {
            remote.remote(model_type, task, seed, timeout, max_memory_gb): (model_type, task)
            for model_type, task in jobs_of(model_types)
        }
        started = time.monotonic()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                model_type, task = pending.pop(ref)
                try:
                    result = SweepResult.from_dict(ray.get(ref))
                except ray.exceptions.RayError as e:  # no row came back (rule 1)
                    from graphport.sweep.row import stopped_row  # torch: see pool.py

                    logger.debug("Ray task of %s failed", model_type, exc_info=True)
                    cause = getattr(e, "cause", None) or e  # a task's own exception
                    reason = (
                        "the Ray task ended without a result: "
                        f"{type(cause).__name__}: {one_line(str(cause))}"
                    )
                    result = stopped_row(
                        model_type,
                        task or "feature-extraction",
                        Category.CRASHED,
                        reason,
                        time.monotonic() - started,
                    )
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results

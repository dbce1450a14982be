"""Sweep rows over a Ray cluster: ``graphport sweep --ray [ADDRESS]``.

Rules:

1. A row is one Ray task (one CPU), and the task runs it as the local pool does
   (``run_isolated`` with one job): in a process of its own on the worker node, under the
   same wall-clock timeout and memory cap, recorded as timeout / out of memory / crashed
   when stopped. A task whose Ray worker itself dies is recorded as crashed.
2. A task returns its row as the JSON data of a ``SweepResult`` (its category is data,
   never words parsed again); the driver caches each row as it arrives, as with the local
   pool, so the cache and the matrix are the same.
3. ``address`` names an existing cluster (``ray.init(address=...)``); without one, a local
   instance is started with ``jobs`` CPUs, and shut down at the end. A Ray already
   initialized in this process (a test's) is used as it is. The cluster's nodes need
   graphport and its dependencies installed, as here.
4. ``ray`` is the optional extra ``ray``: without it, ``--ray`` fails before any work,
   naming the extra.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from graphport.errors import MissingExtraError
from graphport.formats.base import missing_extra
from graphport.sweep.pool import jobs_of, run_isolated
from graphport.sweep.rows import Category, SweepResult

logger = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module, or the error that names the extra installing it."""
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError(missing_extra("--ray", "option", "ray", "ray")) from e
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None, num_cpus: int = 1) -> Iterator[Any]:
    """Ray, connected to ``address`` or to a local instance of ``num_cpus`` CPUs (rule 3)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(1, num_cpus), include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


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
                except ray.exceptions.RayError as e:  # the Ray worker died (rule 1)
                    from graphport.sweep.row import stopped_row  # torch: see pool.py

                    logger.debug("Ray task of %s failed", model_type, exc_info=True)
                    reason = f"the Ray task died without a result ({type(e).__name__})"
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

"""``graphport evaluate OUT1 OUT2 ... --ray [ADDRESS]``: one Ray task per export.

Rules:

1. Each task evaluates one export as ``evaluate`` does in this process (eager, then the
   export, on the same batches), so an export's row is the one a local run gives; the tasks
   run side by side, each on its own CPU.
2. The report is the local one's: eager's row (the first task's: every task computes the
   same) then each export's row in the order given; its time is the wall time of the
   whole fan-out.
3. Bad input fails before any task starts: ``evaluate`` checks the exports, the task and
   the data first. The cluster is ``graphport.api.cluster``'s: ``address``, or a local
   instance of one CPU per export (as many as this machine has).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from graphport.api.cluster import ray_cluster
from graphport.validators.evaluation import EvalReport


def _evaluate_one(run: Callable[[str], EvalReport], export: str) -> EvalReport:
    """The body of an export's Ray task (rule 1)."""
    return run(export)


def evaluate_on_ray(
    run: Callable[[str], EvalReport], exports: Sequence[str], address: str | None = None
) -> EvalReport:
    """``run(export)`` for each export as a Ray task, merged into one report (rule 2)."""
    started = time.perf_counter()
    with ray_cluster(address, min(len(exports), os.cpu_count() or 1)) as ray:
        remote = ray.remote(num_cpus=1, max_retries=0)(_evaluate_one)
        reports: list[EvalReport] = ray.get([remote.remote(run, e) for e in exports])
    first = reports[0]
    return EvalReport(
        first.task,
        first.data,
        first.examples,
        first.tokens,
        first.metrics,
        [first.rows[0], *(report.rows[1] for report in reports)],
        time.perf_counter() - started,
    )

"""``graphport sweep``: export every model type transformers knows, and write the support
matrix (``docs/SUPPORTED.md``) from the results.

For each model type in transformers' ``MODEL_MAPPING_NAMES``, a tiny seeded random model is
built (the family's tiny config, or the generic shrink for unregistered types) for each task
the sweep covers (``sweep_tasks``): feature extraction, and, where transformers has a causal
or sequence-to-sequence LM class for the type, generation with the KV cache. Each is
exported and validated on onnxruntime and OpenVINO against eager; the generation tasks also
check greedy tokens against transformers' ``generate()``.

The modules, in the order a row passes through them:

- ``selection``: which model types and tasks (the rows) a sweep runs.
- ``row``: one row in this process: build, export, validate, record.
- ``pool``: each row in a process of its own, under a wall-clock timeout and a memory cap
  (some models hang while tracing or take all memory, and one must not take the sweep
  down); ``ray_pool``: the same rows as tasks of a Ray cluster (``--ray``).
- ``classify``: why a row failed, as data: the ``Reason`` graphport's errors carry, and
  regular expressions only over third-party messages.
- ``rows``: the row record (``SweepResult``) that crosses process boundaries as JSON.
- ``cache``: rows by model type in a JSON file, so an interrupted sweep resumes where it
  stopped and ``--only`` re-runs a subset; ``matrix``: SUPPORTED.md, always written from
  the whole cache; ``runner``: ``run_sweep``, all of it.

Importing this package loads no torch or transformers (``graphport.cli`` imports it at
start): the modules that need them are imported where they are used.
"""

from graphport.sweep.cache import CACHE_FORMAT, DEFAULT_CACHE, load_cache, save_cache
from graphport.sweep.classify import classify, one_line, parity_failure, root_cause
from graphport.sweep.matrix import (
    DEFAULT_OUTPUT,
    counts,
    generic_coverage,
    render_matrix,
    write_matrix,
)
from graphport.sweep.pool import run_isolated
from graphport.sweep.ray_pool import run_on_ray
from graphport.sweep.rows import (
    GENERATION_TASKS,
    SWEEP_RUNTIMES,
    Category,
    Status,
    SweepResult,
)
from graphport.sweep.runner import run_sweep
from graphport.sweep.selection import (
    all_model_types,
    select_model_types,
    sweep_task,
    sweep_tasks,
)

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_CACHE",
    "DEFAULT_OUTPUT",
    "GENERATION_TASKS",
    "SWEEP_RUNTIMES",
    "Category",
    "Status",
    "SweepResult",
    "all_model_types",
    "classify",
    "counts",
    "generic_coverage",
    "load_cache",
    "one_line",
    "parity_failure",
    "render_matrix",
    "root_cause",
    "run_isolated",
    "run_on_ray",
    "run_sweep",
    "save_cache",
    "select_model_types",
    "sweep_task",
    "sweep_tasks",
    "write_matrix",
]

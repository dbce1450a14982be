"""Ray, the optional extra ``ray``: connect to a cluster, or start a local instance, for the
commands that fan their work out (``graphport sweep --ray``, ``graphport evaluate --ray``).

Rules:

1. ``address`` names a running cluster (``ray.init(address=...)``); without one, a local
   instance of ``num_cpus`` CPUs is started, and shut down when the work is done. A Ray
   already initialized in this process (a caller's, a test's) is used as it is and left
   running.
2. The cluster's nodes need graphport and its dependencies installed, and the paths the
   work names (export directories, data files) visible, as on this machine.
3. Without ray installed, ``import_ray`` raises ``MissingExtraError`` naming the extra,
   before any work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from graphport.errors import MissingExtraError
from graphport.formats.base import missing_extra


def import_ray() -> Any:
    """The ``ray`` module, or the error that names the extra installing it (rule 3)."""
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError(missing_extra("--ray", "option", "ray", "ray")) from e
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None = None, num_cpus: int = 1) -> Iterator[Any]:
    """Ray, connected to ``address`` or to a local instance of ``num_cpus`` CPUs (rule 1)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # The command reports its own progress: Ray's info lines and its workers' output stay
    # in Ray's session logs.
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=max(1, num_cpus), include_dashboard=False, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()

"""The sweep's cache: every row run so far, by model type, in one JSON file, so that an
interrupted sweep resumes where it stopped and ``--only`` re-runs a subset."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from graphport.sweep.rows import SweepResult

CACHE_FORMAT = 1
DEFAULT_CACHE = ".graphport-sweep.json"


def sweep_versions() -> dict[str, str]:
    # Imported here: graphport.api.export imports torch, which `graphport --help` must not
    # load (graphport.cli imports this package; docs/DEVELOPING.md, rule 4).
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

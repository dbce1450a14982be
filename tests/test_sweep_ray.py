"""``graphport sweep --ray``: the rows as tasks of a Ray cluster (a local instance the test
starts), with the local pool's cache, timeout and memory cap; without ray, the extra's name."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from graphport.cli import cli
from graphport.sweep import (
    Status,
    SweepResult,
    load_cache,
    run_isolated,
    run_on_ray,
    run_sweep,
)

# As in tests/test_sweep.py: a generic model type that validates fast, and one refused
# before any model is built.
FAST = "qwen2_audio_encoder"
REFUSED = "patchtst"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _comparable(result: SweepResult) -> dict[str, Any]:
    data = result.to_dict()
    data.pop("seconds")  # the one field that differs from run to run
    return data


def test_rows_on_ray_equal_the_local_pools(local_ray: Any, tmp_path: Path):
    output, cache = tmp_path / "SUPPORTED.md", tmp_path / "sweep.json"
    results = run_sweep(output, cache, only=[FAST, REFUSED], ray=True)
    assert local_ray.is_initialized(), "a Ray the caller started is left running"
    on_ray = {m: rows[0] for m, rows in load_cache(cache).items()}
    assert on_ray[FAST].status is Status.VALIDATED
    assert on_ray[REFUSED].category == "unsupported main input"
    assert {m: rows[0] for m, rows in results.items()} == on_ray
    local = {r.model_type: r for r in run_isolated([FAST, REFUSED], jobs=2)}
    assert {m: _comparable(r) for m, r in on_ray.items()} == {
        m: _comparable(r) for m, r in local.items()
    }
    assert f"| `{FAST}` | feature-extraction | generic | pass | pass |  | validated |" in (
        output.read_text()
    )


def test_a_row_past_its_time_on_ray_is_killed_as_in_the_local_pool(local_ray: Any):
    (result,) = run_on_ray([FAST], timeout=0.5)
    assert (result.model_type, result.status, result.category) == (
        FAST,
        Status.EXPORT_FAILED,
        "timeout",
    )


def test_ray_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    args = ["sweep", "--only", REFUSED, "--cache", str(tmp_path / "c.json"), "--ray"]
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "S.md")])
    assert result.exit_code == 2, result.output
    assert "The --ray option needs ray; install it with `pip install 'graphport[ray]'`." in (
        result.output
    )
    assert not (tmp_path / "c.json").exists(), "nothing runs without the extra"

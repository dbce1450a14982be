"""Latency and throughput of an export on its runtimes, measured side by side.

Runs are interleaved across runtimes (one call each, in turn) after a warm-up, so a
slow phase of the machine affects every runtime alike; the table gives p50/p90 latency
and throughput in samples per second at the chosen batch size.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphport.exporters.config import ShapeSet
from graphport.manifest import ExportDirectory


@dataclasses.dataclass
class BenchRow:
    runtime: str
    p50_ms: float
    p90_ms: float
    throughput: float  # samples per second at p50


def bench_export(
    export_dir: str | Path,
    runtimes: Sequence[str],
    batch_size: int = 1,
    sequence_length: int = 128,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 50,
) -> list[BenchRow]:
    from transformers import AutoConfig

    from graphport.exporters.tasks import Task
    from graphport.models.registry import get_onnx_config
    from graphport.runtimes import get_runtime_class

    directory = ExportDirectory(export_dir)
    config = get_onnx_config(
        AutoConfig.from_pretrained(directory.path, local_files_only=True),
        Task(directory.manifest.task),
    )
    sizes = {**config.trace_sizes, "batch": batch_size, "sequence": sequence_length}
    feeds = {k: v.numpy() for k, v in config.dummy_inputs(ShapeSet(sizes)).items()}
    if "attention_mask" in feeds:
        feeds["attention_mask"][:] = 1  # benchmark full sequences
    options = {"threads": threads} if threads else {}
    engines = {name: get_runtime_class(name)(directory, **options) for name in runtimes}
    for engine in engines.values():
        for _ in range(warmup):
            engine.run(feeds)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.run(feeds)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, samples in times.items():
        p50, p90 = np.percentile(samples, [50, 90])
        rows.append(BenchRow(name, p50 * 1000, p90 * 1000, batch_size / p50))
    return rows


def render(rows: list[BenchRow]) -> str:
    lines = [f"{'runtime':<12} {'p50 ms':>9} {'p90 ms':>9} {'samples/s':>10}"]
    lines += [f"{r.runtime:<12} {r.p50_ms:9.2f} {r.p90_ms:9.2f} {r.throughput:10.1f}" for r in rows]
    return "\n".join(lines)

"""``bench_export``: latency and throughput of every graph of an export, on its runtimes.

The feeds come from the graph's export config, which the families rebuild from the export
directory (``graphport.models``, which a runtime may not import: docs/DEVELOPING.md, rule
3); the measurement is ``bench_graph`` (runtimes/bench.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from graphport.manifest import ExportDirectory
from graphport.models.registry import export_config
from graphport.runtimes.bench import BenchRow, bench_feeds, bench_graph
from graphport.validators.reference import load_reference


def bench_export(
    export_dir: str | Path,
    runtimes: Sequence[str],
    batch_size: int = 1,
    sequence_length: int | None = None,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 50,
) -> list[BenchRow]:
    """p50/p90 of every graph of the export on each runtime. ``sequence_length`` is in
    tokens for text and in samples for raw audio (None: 128 tokens, or the config's
    trace size for other inputs)."""
    directory = ExportDirectory(export_dir)
    # The torch runtime runs the eager model it is handed (the checkpoint is read here).
    options = {"torch": {"model": load_reference(directory)}} if "torch" in runtimes else {}
    rows = []
    for graph, config in export_config(directory).graph_configs().items():
        feeds = bench_feeds(config, batch_size, sequence_length)
        rows += bench_graph(
            directory,
            graph,
            feeds,
            runtimes,
            batch_size,
            sequence_length,
            threads,
            warmup,
            runs,
            runtime_options=options,
        )
    return rows

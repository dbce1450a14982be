"""Latency and throughput of an export's graph on its runtimes, measured side by side.

Runs are interleaved across runtimes (one call each, in turn) after a warm-up, so a
slow phase of the machine affects every runtime alike; the table gives p50/p90 latency
and throughput in samples per second at the chosen batch size. ``bench_export``
(api/bench.py) rebuilds each graph's export config from the families for its feeds and
calls ``bench_graph`` per graph.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphport.errors import GraphportError, UsageError
from graphport.export.config import OnnxConfig, ShapeSet
from graphport.manifest import ExportDirectory
from graphport.runtimes import get_runtime_class


@dataclasses.dataclass
class BenchRow:
    runtime: str
    p50_ms: float
    p90_ms: float
    throughput: float  # samples per second at p50
    graph: str = "model"


# Axes --sequence-length sets: the tokens (or samples) of the input, not a cache's length.
SEQUENCE_AXES = ("sequence", "encoder_sequence")


def bench_feeds(
    config: OnnxConfig, batch_size: int, sequence_length: int | None
) -> dict[str, np.ndarray]:
    """Dummy feeds for one graph at the asked sizes; a KV-cache decoder gets an empty
    past (a prompt's first step); an encoder-decoder's decoder keeps the trace's decoder
    length and past, with the encoder length set to ``sequence_length``."""
    sizes = {**config.trace_shapes().sizes, "batch": batch_size}
    if sequence_length is None and config.modality == "text":
        sequence_length = 128
    if sequence_length is not None:
        sizes.update({axis: sequence_length for axis in SEQUENCE_AXES if axis in sizes})
    if "past_sequence" in sizes:
        sizes["past_sequence"] = 0
    feeds = {k: v.numpy() for k, v in config.dummy_inputs(ShapeSet(sizes)).items()}
    for name in ("attention_mask", "encoder_attention_mask"):
        if name in feeds:
            feeds[name][:] = 1  # benchmark full sequences
    return feeds


def bench_graph(
    directory: ExportDirectory,
    graph: str,
    feeds: dict[str, np.ndarray],
    runtimes: Sequence[str],
    batch_size: int,
    sequence_length: int | None,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 50,
    runtime_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[BenchRow]:
    """p50/p90 of one graph of the export on each runtime, calls interleaved, on ``feeds``
    (``bench_feeds`` at ``batch_size`` and ``sequence_length``, which a graph that does
    not take them names). ``runtime_options`` adds options per runtime (the torch
    runtime's ``model``)."""
    options = {"threads": threads} if threads else {}
    extra = runtime_options or {}
    engines = {
        name: get_runtime_class(name)(directory, graph=graph, **options, **extra.get(name, {}))
        for name in runtimes
    }
    try:
        for engine in engines.values():
            for _ in range(warmup):
                engine.run(feeds)
    except GraphportError:
        raise
    except Exception as e:
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
        raise UsageError(
            f"The {graph} graph does not run on inputs of batch {batch_size} and "
            f"sequence {sequence_length} ({shapes}): {str(e).splitlines()[0]}; pick "
            "sizes the model takes (raw audio is counted in samples, e.g. "
            "--sequence-length 16000 for a second at 16 kHz)."
        ) from e
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.run(feeds)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, samples in times.items():
        p50, p90 = np.percentile(samples, [50, 90])
        rows.append(BenchRow(name, p50 * 1000, p90 * 1000, batch_size / p50, graph))
    return rows


def render(rows: list[BenchRow]) -> str:
    graphs = len({r.graph for r in rows}) > 1
    head = f"{'graph':<10} " if graphs else ""
    lines = [f"{head}{'runtime':<12} {'p50 ms':>9} {'p90 ms':>9} {'samples/s':>10}"]
    lines += [
        (f"{r.graph:<10} " if graphs else "")
        + f"{r.runtime:<12} {r.p50_ms:9.2f} {r.p90_ms:9.2f} {r.throughput:10.1f}"
        for r in rows
    ]
    return "\n".join(lines)

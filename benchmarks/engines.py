"""Decoding engines on one export: transformers' ``generate()`` on onnxruntime (what
``graphport.load(OUT).generate()`` and ``graphport generate --engine transformers`` run)
against onnxruntime-genai's native loop (``--engine onnxruntime-genai``).

Both decode the same graph with the same onnxruntime kernels, so the difference is the
per-step overhead of transformers' Python loop (logits processors, cache objects, feeds)
against genai's C++ loop. Each engine is loaded once; per round it generates 1 token and
``--new-tokens`` tokens (greedy, fp32, end tokens ignored so both run every step) from
``--batch`` copies of a ``--prompt``-token prompt; a decode step is
``(t(N) - t(1)) / (N - 1)`` (min over ``--rounds``, after a warm-up), so the prompt is
excluded. The script checks the greedy tokens are identical.

EXPORT is a graphport ONNX decoder export (with its genai_config.json); without one, a
seeded random Llama of benchmarks/generation.py's shape (125M) is exported into a temp dir.

Usage (from the repository root):

    .venv/bin/python benchmarks/engines.py [EXPORT] [--batch 1] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def random_export(root: Path) -> Path:
    """benchmarks/generation.py's 125M Llama, exported with the defaults."""
    sys.path.insert(0, str(Path(__file__).parent))
    from generation import build_checkpoint  # the same model, built the same way

    from graphport.api.export import export_model

    build_checkpoint(root / "checkpoint", seed=0)
    export_model(root / "checkpoint", root / "onnx", validate=False)
    return root / "onnx"


def engines(
    export: Path, rows: list[list[int]], max_new: int
) -> dict[str, Callable[[int], list[list[int]]]]:
    """engine name -> generate(new tokens) -> new tokens per row, each loaded once."""
    import torch

    import graphport
    from graphport.manifest import ExportDirectory
    from graphport.runtimes.engines import OnnxruntimeGenaiEngine, Settings

    model = graphport.load(export)
    ids = torch.tensor(rows)

    def transformers(new: int) -> list[list[int]]:
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,  # no end token: every step runs
                do_sample=False,
                pad_token_id=0,
            )
        return out[:, ids.shape[1] :].tolist()

    # An end token that eager's greedy tokens never reach: both engines run every step.
    seen = {t for row in transformers(max_new) for t in row} | {t for row in rows for t in row}
    end = next(t for t in range(int(model.config.vocab_size) - 1, 0, -1) if t not in seen)
    genai = OnnxruntimeGenaiEngine(ExportDirectory(export), 0, [end])

    def onnxruntime_genai(new: int) -> list[list[int]]:
        return genai.generate(rows, Settings(max_new_tokens=new, pad_token_id=0))

    return {"transformers": transformers, "onnxruntime-genai": onnxruntime_genai}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        export = args.export or random_export(Path(tmp))
        vocab = json.loads((export / "config.json").read_text())["vocab_size"]
        rng = np.random.default_rng(0)
        rows = [rng.integers(3, min(vocab, 1000), args.prompt).tolist()] * args.batch
        runs = engines(export, rows, args.new_tokens)
        tokens = {name: run(args.new_tokens) for name, run in runs.items()}  # warm-up
        step: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, run in runs.items():  # interleaved: the same machine load for both
                start = time.perf_counter()
                run(1)
                first = time.perf_counter() - start
                start = time.perf_counter()
                run(args.new_tokens)
                total = time.perf_counter() - start
                per_step = (total - first) / (args.new_tokens - 1)
                step[name] = min(step.get(name, float("inf")), per_step)
        base = step["transformers"]
        print(f"{export}: batch {args.batch}, prompt {args.prompt}, {args.new_tokens} tokens")
        print("| engine | ms / decode step | decode tokens/s | speed-up |")
        print("|---|---|---|---|")
        for name, seconds in step.items():
            rate = args.batch / seconds
            print(f"| {name} | {seconds * 1e3:.2f} | {rate:.1f} | {base / seconds:.2f}x |")
        same = tokens["transformers"] == tokens["onnxruntime-genai"]
        print(f"greedy tokens identical: {same}")


if __name__ == "__main__":
    main()

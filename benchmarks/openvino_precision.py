"""OpenVINO GenAI's inference precision on a decoder export: bf16 (OpenVINO's default on
CPUs with bf16 units) against f32 (what graphport's engine asks for an fp32 export).

For each precision, ``openvino_genai.LLMPipeline`` decodes 64 greedy tokens after each of 8
prompts of 32 tokens (English prose from pydoc_data); the tokens are compared with those of
graphport's own OpenVINO runtime (``graphport.load(OUT, runtime="openvino").generate()``,
f32), and the decode rate is timed. Usage (from the repository root):

    .venv/bin/python benchmarks/openvino_precision.py OUT
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import torch
from transformers import AutoTokenizer

import graphport

NEW_TOKENS = 64


def prompts(export: Path, count: int = 8, length: int = 32) -> list[np.ndarray]:
    tokenizer = AutoTokenizer.from_pretrained(export)
    texts = [text for text in topics.values() if len(text) > 2000][:count]
    return [tokenizer(text, return_tensors="np").input_ids[:, :length] for text in texts]


def reference(export: Path, rows: list[np.ndarray]) -> list[list[int]]:
    model = graphport.load(export, runtime="openvino")
    tokens = []
    for row in rows:
        ids = torch.from_numpy(row)
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
            max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
        )
        tokens.append(out[0, row.shape[1]:].tolist())
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="A decoder exported with --format openvino.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import openvino as ov
    import openvino_genai

    rows = prompts(args.export)
    expected = reference(args.export, rows)
    print("| precision | tokens equal to graphport's runtime | first divergence per prompt "
          "| tokens/s |\n|---|---|---|---|")
    for precision in ("bf16", "f32"):
        pipe = openvino_genai.LLMPipeline(
            str(args.export), "CPU", INFERENCE_PRECISION_HINT=precision,
            INFERENCE_NUM_THREADS=args.threads,
        )
        config = pipe.get_generation_config()
        config.max_new_tokens = config.min_new_tokens = NEW_TOKENS
        config.do_sample = False
        equal, first = 0, []
        start = time.perf_counter()
        for row, want in zip(rows, expected, strict=True):
            ids = row.astype(np.int64)
            inputs = openvino_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
            got = list(pipe.generate(inputs, config).tokens[0])
            same = [a == b for a, b in zip(got, want, strict=True)]
            equal += sum(same)
            first.append(same.index(False) if False in same else NEW_TOKENS)
        rate = NEW_TOKENS * len(rows) / (time.perf_counter() - start)
        share = equal / (NEW_TOKENS * len(rows))
        print(f"| {precision} | {share:.3f} | {first} | {rate:.1f} |")


if __name__ == "__main__":
    main()

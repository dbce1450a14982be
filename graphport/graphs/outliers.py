"""Outlier channels of feed-forward activations kept in fp32 beside the int8 path.

A transformer's feed-forward block is ``act(x @ W1 + b1) @ W2``. In trained encoders a
handful of the intermediate channels (after GELU) reach values far above the median
channel (on MiniLM-L6: 13-25x in the first four layers, 24.6 against 0.97 in layer 0).
Dynamic int8 quantizes that activation with one range per call, so those few channels
leave every other channel a few levels. On MiniLM, splitting off 8 channels per block
alone took the minimum sentence cosine of int8 from 0.973 to 0.984 (with smoothing after
it: 0.996). Smoothing (graphs/smooth.py) moves some of the range into the weights;
keeping the whole down-projection fp32 (what ``--target-cosine`` otherwise falls back
to) gives up int8 on the block's largest projection.

This pass splits the outlier channels off instead, the idea of LLM.int8() (Dettmers et
al. 2022) applied where it is free: because the channels are produced by columns of
``W1``, no gather is needed. For the outlier channel set ``C``:

    main path:  act(x @ W1' + b1') @ W2'   with W1'[:, C] = 0, b1'[C] = 0, W2'[C, :] = 0
    side path:  act(x @ W1[:, C] + b1[C]) @ W2[C, :]          (fp32, |C| <= 16 columns)

``act(0) = 0`` for the activations handled, so the main path's activation is exactly zero
on ``C``: its int8 range is set by the ordinary channels. The side path's output is added
where the block's output goes: as one more input of the residual ``Sum`` the
``ort-cpu-kernels`` pass writes (no extra node), else through an ``Add``. The side
MatMuls are named with ``FP32_PREFIX``, which the int8 quantizer leaves alone.

A channel is an outlier when its calibrated max |value| is at least ``ratio`` times the
median channel's. The computation is exact in fp32 (the parity check after the pass
proves it); what changes is what int8 does to it.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common

# Nodes whose names start with this stay fp32 through dynamic int8 (graphs/quantize.py).
FP32_PREFIX = "fp32_outliers/"
OUTLIER_RATIO = 6.0
MAX_CHANNELS = 16
# Unary activations with act(0) == 0.
ACTIVATIONS = {("", "Relu"), ("", "Gelu"), ("com.microsoft", "Gelu")}


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _only_use(value: ir.Value, graph: ir.Graph) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value in graph.outputs:
        return None
    return uses[0].node


def feed_forward_blocks(graph: ir.Graph) -> list[dict[str, ir.Node | None]]:
    """``MatMul -> [Add bias] -> activation -> MatMul`` chains with constant weights and
    single-use intermediates, keyed ``up``, ``bias``, ``act``, ``down``."""
    blocks = []
    for act in graph:
        if (act.domain, act.op_type) not in ACTIVATIONS or act.name.startswith(FP32_PREFIX):
            continue
        producer = act.inputs[0].producer() if act.inputs[0] is not None else None
        bias = None
        if producer is not None and producer.op_type == "Add" and producer.domain == "":
            b = _const(producer.inputs[1])
            if b is None or b.ndim != 1 or _only_use(producer.inputs[0], graph) is not producer:
                continue
            bias, producer = producer, producer.inputs[0].producer()
        up = producer
        if up is None or up.op_type != "MatMul" or up.domain != "":
            continue
        w1 = _const(up.inputs[1])
        if w1 is None or w1.ndim != 2 or len(up.inputs[1].uses()) != 1:
            continue
        down = _only_use(act.outputs[0], graph)
        if down is None or down.op_type != "MatMul" or down.domain != "":
            continue
        w2 = _const(down.inputs[1])
        if w2 is None or w2.ndim != 2 or w2.shape[0] != w1.shape[1]:
            continue
        if len(down.inputs[1].uses()) != 1 or (
            bias is not None and len(bias.inputs[1].uses()) != 1
        ):
            continue
        blocks.append({"up": up, "bias": bias, "act": act, "down": down})
    return blocks


def outlier_channels(
    channel_max: np.ndarray, ratio: float = OUTLIER_RATIO, limit: int = MAX_CHANNELS
) -> np.ndarray:
    """Channels whose max |value| is at least ``ratio`` x the median channel's (the
    largest ``limit`` of them), in channel order. smooth-activations uses the same rule."""
    median = float(np.median(channel_max))
    if median <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(channel_max)[::-1][:limit]
    return np.sort(order[channel_max[order] >= ratio * median])


class SplitOutliersPass(ir.passes.InPlacePass):
    """Compute the outlier channels of feed-forward activations in a small fp32 side path
    (see the module docstring). ``ranges`` maps activation output names to per-channel
    max |value| on calibration inputs (``smooth.activation_ranges``)."""

    def __init__(
        self,
        ranges: dict[str, np.ndarray],
        ratio: float = OUTLIER_RATIO,
        limit: int = MAX_CHANNELS,
    ) -> None:
        super().__init__()
        self.ranges, self.ratio, self.limit = ranges, ratio, limit
        self.split: dict[str, int] = {}  # activation name -> channels split off

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for block in feed_forward_blocks(graph):
            name = block["act"].outputs[0].name
            if name not in self.ranges:
                continue
            channels = outlier_channels(self.ranges[name], self.ratio, self.limit)
            if channels.size:
                self._split(graph, block, channels, f"{FP32_PREFIX}{len(self.split)}")
                self.split[name] = int(channels.size)
        ir.passes.common.RemoveUnusedNodesPass()(model)  # the replaced weights
        return ir.passes.PassResult(model, modified=bool(self.split))

    @staticmethod
    def _split(graph: ir.Graph, block: dict, channels: np.ndarray, prefix: str) -> None:
        up, bias, act, down = block["up"], block["bias"], block["act"], block["down"]

        def initializer(name: str, array: np.ndarray) -> ir.Value:
            value = ir.Value(name=f"{prefix}/{name}", const_value=ir.tensor(array))
            value.shape, value.dtype = ir.Shape(array.shape), ir.DataType.FLOAT
            graph.register_initializer(value)
            return value

        def node(op: str, inputs: list[ir.Value], name: str, like: ir.Node | None = None):
            created = ir.node(
                op,
                inputs,
                attributes=dict(like.attributes) if like is not None else None,
                domain=like.domain if like is not None else "",
                name=f"{prefix}/{name}",
            )
            created.outputs[0].name = f"{prefix}/{name}_out"
            created.outputs[0].dtype = ir.DataType.FLOAT
            return created

        w1, w2 = _const(up.inputs[1]), _const(down.inputs[1])
        b1 = _const(bias.inputs[1]) if bias is not None else None
        x = up.inputs[0]
        side = [node("MatMul", [x, initializer("up_weight", w1[:, channels])], "up")]
        if b1 is not None:
            b = initializer("up_bias", b1[channels])
            side.append(node("Add", [side[-1].outputs[0], b], "up_bias"))
        side.append(node(act.op_type, [side[-1].outputs[0]], "act", like=act))
        side.append(
            node("MatMul", [side[-1].outputs[0], initializer("down", w2[channels])], "down")
        )

        main_w1, main_w2 = w1.copy(), w2.copy()
        main_w1[:, channels] = 0
        main_w2[channels] = 0
        up.replace_input_with(1, initializer("main_up_weight", main_w1))
        down.replace_input_with(1, initializer("main_down", main_w2))
        if b1 is not None:
            main_b1 = b1.copy()
            main_b1[channels] = 0
            bias.replace_input_with(1, initializer("main_up_bias", main_b1))

        # Where the block's output goes: past a bias Add, into a Sum if there is one.
        out = down.outputs[0]
        after = _only_use(out, graph)
        if after is not None and after.op_type == "Add" and _const(after.inputs[1]) is not None:
            out = after.outputs[0]
            after = _only_use(out, graph)
        for created in side:  # x is ready where the main path starts
            graph.insert_before(up, created)
        if after is not None and after.op_type == "Sum" and after.domain == "":
            after.resize_inputs(len(after.inputs) + 1)
            after.replace_input_with(len(after.inputs) - 1, side[-1].outputs[0])
            return
        users = [(use.node, use.idx) for use in out.uses()]  # before the merge uses it too
        total = node("Add", [out, side[-1].outputs[0]], "merge")
        total.outputs[0].shape = out.shape
        is_output = out in graph.outputs
        graph.insert_after(out.producer(), total)
        for user, index in users:
            user.replace_input_with(index, total.outputs[0])
        if is_output:
            total.outputs[0].name, out.name = out.name, f"{out.name}_before_outliers"
            graph.outputs[graph.outputs.index(out)] = total.outputs[0]

"""Decoder attention as onnxruntime's GroupQueryAttention, whose past and present may
share one preallocated buffer.

torch.export writes a decoder layer's attention as a dozen-node chain per layer: the
rotary embedding, ``Concat(past, new)`` for the present, the grouped heads repeated by
Expand/Reshape, the mask built from ``attention_mask`` and the cache length, MatMul,
Softmax, MatMul. onnxscript's fusions (graphs/fusion.py) fuse the RMS norms and the
residual adds into SkipSimplifiedLayerNormalization on this graph, but neither SDPA nor
GQA: the exporter's SDPA decomposition guards the Softmax with
``Where(IsNaN(softmax), 0, softmax)`` (rows that mask everything), where onnxscript's SDPA
pattern wants the Softmax to feed the MatMul with V, and its GQA fusion starts from a
fused SDPA (checked on the tiny Llama, onnxscript 0.7.2). So this pass rewrites the chain
structurally, from the module scopes every node carries: the outputs of ``q_proj``,
``k_proj`` and ``v_proj`` feed one ``com.microsoft.GroupQueryAttention`` whose output
feeds ``o_proj`` and whose present key and value are the graph's ``present.{i}.*``
outputs. onnxruntime-genai's model builder writes the same node.

The graph keeps its inputs and outputs, so every caller feeds it as before (a past of
``P`` positions in, ``P + S`` out): onnxruntime sizes the present as
``max(total_sequence_length, past length)``. A caller that binds one buffer of ``L``
positions as both past and present (IO binding) gets the kernel's in-place append instead:
nothing is copied or allocated per step (runtimes/model.py).

Rules, per layer whose scopes and cache match (others are left as they were):
  1. ``total_sequence_length`` is ``attention_mask``'s length (the positions held plus the
     new ones, as the caller lays them out, left padding included); ``seqlens_k`` is that
     minus one for every row, so the kernel sees the physical layout;
  2. padding is masked by ``attention_bias``: 0 where ``attention_mask`` is 1, a large
     negative number where it is 0 (broadcast over heads and queries); the kernel adds
     the causal mask itself;
  3. rotary runs as onnxruntime's RotaryEmbedding kernel on the projected query and key
     (batch, sequence, hidden), from ``position_ids``, with the model's own cos/sin
     tables; the graph's rotary nodes become dead code. GroupQueryAttention can rotate
     inside (``do_rotary``), but on a first prompt it reads one position id and counts
     up from it for every row: a left-padded row then caches keys rotated from its
     padding on, and its next step is off by the padding (measured on the 125M Llama of
     benchmarks/generation.py: the padded rows' tokens differ from eager from step 1).
     RotaryEmbedding takes every row's positions;
  4. after the rewrite (and dead-code removal: the mask arithmetic that read the past's
     length goes), a shared buffer is allowed (``shared_buffer``) only when the kernels
     are the past's only readers and every layer was rewritten, since a buffer longer
     than the positions held would change what any other reader computes; the pass
     reports the layers rewritten and the reason for any not.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import onnx_ir as ir

from graphport.graphs.scopes import node_modules

logger = logging.getLogger(__name__)

MASK_VALUE = -1.0e30  # finite: a row of padding only (a pad query) must not become NaN
PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)$")


@dataclasses.dataclass
class AttentionShape:
    """What the kernel needs to know about a decoder's attention."""

    num_heads: int
    kv_heads: int
    head_dim: int
    scale: float
    cos: np.ndarray  # (positions, head_dim / 2)
    sin: np.ndarray


class GroupQueryAttentionPass(ir.passes.InPlacePass):
    """Rewrite each decoder layer's attention into one GroupQueryAttention (rules 1-4)."""

    def __init__(self, shape: AttentionShape) -> None:
        super().__init__()
        self.shape = shape
        self.layers: list[int] = []
        self.skipped: dict[int, str] = {}
        self.readers: list[str] = []  # nodes besides the kernels that read a past input
        self._scopes: dict[str, list[ir.Node]] = {}

    @property
    def shared_buffer(self) -> bool:
        """Whether one buffer may serve as past and present (rule 4)."""
        return bool(self.layers) and not self.skipped and not self.readers

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        inputs = {v.name: v for v in graph.inputs}
        outputs = {v.name: v for v in graph.outputs}
        mask = inputs.get("attention_mask")
        if mask is None or "input_ids" not in inputs or "position_ids" not in inputs:
            self.skipped[-1] = "the graph takes no attention_mask, input_ids and position_ids"
            return ir.passes.PassResult(model, modified=False)
        layers = sorted({int(m.group(1)) for name in inputs if (m := PAST.match(name)) is not None})
        # module path -> its nodes in graph order, read once (a 7B graph has ~10k nodes)
        self._scopes: dict[str, list[ir.Node]] = {}
        for node in graph:
            for scope in node_modules(node):
                self._scopes.setdefault(scope, []).append(node)
        shared: dict[str, ir.Value] | None = None
        for layer in layers:
            found = self._match(graph, inputs, outputs, layer)
            if isinstance(found, str):
                self.skipped[layer] = found
                continue
            if shared is None:
                shared = _shared_inputs(graph, inputs, self.shape)
            self._rewrite(graph, found, shared, inputs, layer)
            self.layers.append(layer)
        if self.skipped:
            logger.warning(
                "GroupQueryAttention left %d layer(s) as they were: %s",
                len(self.skipped),
                "; ".join(f"layer {k}: {v}" for k, v in self.skipped.items()),
            )
        if self.layers:
            ir.passes.common.RemoveUnusedNodesPass()(model)
            self.readers = _other_past_readers(graph)  # rule 4
        return ir.passes.PassResult(model, modified=bool(self.layers))

    def _match(
        self,
        graph: ir.Graph,
        inputs: dict[str, ir.Value],
        outputs: dict[str, ir.Value],
        layer: int,
    ) -> dict[str, ir.Value] | str:
        """The values the rewrite connects, or why the layer does not match."""
        found: dict[str, ir.Value] = {}
        for kind in ("key", "value"):
            past = inputs[f"past_key_values.{layer}.{kind}"]
            present = outputs.get(f"present.{layer}.{kind}")
            concat = present.producer() if present is not None else None
            if concat is None or concat.op_type != "Concat" or concat.inputs[0] is not past:
                return f"present.{layer}.{kind} is not Concat(past, new)"
            found[f"past_{kind}"], found[f"present_{kind}"] = past, present
            found[f"new_{kind}"] = concat.inputs[1]
        scopes = node_modules(found["present_key"].producer())
        attention = scopes[-1] if scopes else ""
        if not attention:
            return "the present's Concat carries no module scope"
        for proj in ("q_proj", "k_proj", "v_proj"):
            value = _scope_output(graph, self._scopes.get(f"{attention}.{proj}", []))
            if value is None:
                return f"no single output of {attention}.{proj}"
            found[proj] = value
        o_proj = self._scopes.get(f"{attention}.o_proj", [])
        if not o_proj or o_proj[0].op_type not in ("MatMul", "MatMulNBits"):  # fp32 or int4
            return f"{attention}.o_proj does not start with a MatMul"
        found["attention_output"] = o_proj[0].inputs[0]
        return found

    def _rewrite(
        self,
        graph: ir.Graph,
        found: dict[str, ir.Value],
        shared: dict[str, ir.Value],
        inputs: dict[str, ir.Value],
        layer: int,
    ) -> None:
        shape = self.shape
        anchor = found["attention_output"].producer()
        query = _rotary(graph, anchor, found["q_proj"], shared, shape.num_heads, shape.head_dim)
        key = _rotary(graph, anchor, found["k_proj"], shared, shape.kv_heads, shape.head_dim)
        gqa_inputs = [
            query,
            key,
            found["v_proj"],
            found["past_key"],
            found["past_value"],
            shared["seqlens_k"],
            shared["total_length"],
            None,  # cos/sin and position ids: rotary ran before (rule 3)
            None,
            None,
            shared["bias"],
        ]
        node = ir.node(
            "GroupQueryAttention",
            gqa_inputs,
            attributes={
                "num_heads": shape.num_heads,
                "kv_num_heads": shape.kv_heads,
                "scale": float(shape.scale),
                "do_rotary": 0,
            },
            domain="com.microsoft",
            num_outputs=3,
            name=f"GroupQueryAttention_{layer}",
        )
        node.metadata_props.update(found["present_key"].producer().metadata_props)
        graph.insert_before(anchor, node)
        output, present_key, present_value = node.outputs
        old = found["attention_output"]
        output.dtype, output.shape = old.dtype, old.shape
        old.replace_all_uses_with(output)
        for new, name in ((present_key, "present_key"), (present_value, "present_value")):
            before = found[name]
            new.dtype, new.shape = before.dtype, before.shape
            index = graph.outputs.index(before)
            new.name, before.name = before.name, f"{before.name}_replaced"
            graph.outputs[index] = new


def _other_past_readers(graph: ir.Graph) -> list[str]:
    readers = []
    for value in graph.inputs:
        if PAST.match(value.name or ""):
            readers += [
                user.name or user.op_type
                for user, _ in value.uses()
                if user.op_type != "GroupQueryAttention" and not _reads_batch_only(user)
            ]
    return readers


def _reads_batch_only(node: ir.Node) -> bool:
    """A Shape of the past that reads its batch and heads only (the exporter takes the
    batch size from it), which a longer buffer does not change."""
    if node.op_type != "Shape":
        return False
    end = node.attributes.get("end")
    return end is not None and 0 < end.as_int() <= 2


def _scope_output(graph: ir.Graph, nodes: list[ir.Node]) -> ir.Value | None:
    """The one value computed by ``nodes`` (one module's) and read outside them."""
    inside = set(map(id, nodes))
    leaving = [
        v
        for n in nodes
        for v in n.outputs
        if any(id(user) not in inside for user, _ in v.uses()) or v in graph.outputs
    ]
    return leaving[0] if len(leaving) == 1 else None


def _rotary(
    graph: ir.Graph,
    before: ir.Node,
    value: ir.Value,
    shared: dict[str, ir.Value],
    heads: int,
    head_dim: int,
) -> ir.Value:
    node = ir.node(
        "RotaryEmbedding",
        [value, shared["position_ids"], shared["cos"], shared["sin"]],
        attributes={"num_heads": heads, "rotary_embedding_dim": head_dim},
        domain="com.microsoft",
    )
    node.outputs[0].dtype, node.outputs[0].shape = value.dtype, value.shape
    graph.insert_before(before, node)
    return node.outputs[0]


def _constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.tensor(array, name=name),
    )
    graph.register_initializer(value)
    return value


def _shared_inputs(
    graph: ir.Graph, inputs: dict[str, ir.Value], shape: AttentionShape
) -> dict[str, ir.Value]:
    """seqlens_k, total_sequence_length and the padding bias (rules 1-2), built once at
    the top of the graph from ``attention_mask``; the rotary tables as initializers."""
    mask, ids = inputs["attention_mask"], inputs["input_ids"]
    first = graph.node(0)
    nodes: list[ir.Node] = []

    def add(op: str, args: list[ir.Value | None], **attributes: object) -> ir.Value:
        node = ir.node(op, args, attributes=attributes)
        nodes.append(node)
        return node.outputs[0]

    one = _constant(graph, "gqa_one_i64", np.array([1], dtype=np.int64))
    zero_axis = _constant(graph, "gqa_axis0", np.array([0], dtype=np.int64))
    total = add("Shape", [mask], start=1, end=2)  # [T]
    batch = add("Shape", [ids], start=0, end=1)  # [B]
    total_i32 = add("Cast", [total], to=ir.DataType.INT32)
    total_scalar = add("Squeeze", [total_i32, zero_axis])
    last = add("Sub", [total, one])
    seqlens = add("Cast", [add("Expand", [last, batch])], to=ir.DataType.INT32)
    # rule 2: (B, T) -> (B, 1, 1, T) of 0 / MASK_VALUE
    valid = add("Cast", [mask], to=ir.DataType.BOOL)
    zero_f = _constant(graph, "gqa_zero_f", np.array(0.0, dtype=np.float32))
    low_f = _constant(graph, "gqa_mask_value", np.array(MASK_VALUE, dtype=np.float32))
    bias_2d = add("Where", [valid, zero_f, low_f])
    axes = _constant(graph, "gqa_bias_axes", np.array([1, 2], dtype=np.int64))
    sequence = add("Shape", [ids], start=1, end=2)  # [S]
    bias_shape = add("Concat", [batch, one, sequence, total], axis=0)
    bias = add("Expand", [add("Unsqueeze", [bias_2d, axes]), bias_shape])  # the kernel's form
    for node in nodes:
        graph.insert_before(first, node)
    names = ("gqa_total_length", "gqa_seqlens_k", "gqa_attention_bias")
    for value, name in zip((total_scalar, seqlens, bias), names, strict=True):
        value.name = name
    total_scalar.dtype, seqlens.dtype, bias.dtype = (
        ir.DataType.INT32,
        ir.DataType.INT32,
        ir.DataType.FLOAT,
    )
    return {
        "total_length": total_scalar,
        "seqlens_k": seqlens,
        "bias": bias,
        "position_ids": inputs["position_ids"],
        "cos": _constant(graph, "gqa_cos_cache", shape.cos.astype(np.float32)),
        "sin": _constant(graph, "gqa_sin_cache", shape.sin.astype(np.float32)),
    }


# Families whose decoder layers are the Llama layout (q/k/v/o projections, rotate-half
# rotary, no norms on Q and K): the pass is written for them.
FAMILIES = frozenset({"llama"})

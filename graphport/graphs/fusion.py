"""onnxruntime fusions (attention, skip + layer/RMS norm, bias + GELU, rotary, GQA) with a
report of which expected fusions fired.

The fusions are onnxscript's rewriter rules for torch.export graphs (``fuse_ort``); this
pass runs them and compares the counts with what the architecture should yield, so a
fusion that silently stopped matching (after a transformers or torch upgrade) is reported
as data. The fused graph uses com.microsoft operators: it runs on onnxruntime only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import onnx_ir as ir
import onnxscript.optimizer
from onnx_ir.passes import common as common_passes
from onnxscript.rewriter.ort_fusions import (
    attention,
    bias_gelu,
    cos_sin_cache,
    erfgelu,
    gelu,
    gqa,
    gqa_packed_qkv,
    mha,
    mha_bias,
    mha_scale,
    rms_normalization,
    rotary_embedding,
    sdpa,
    sdpa_via_mha,
    shape_optimization,
    skip_normalization,
)

logger = logging.getLogger(__name__)

# Fusions an architecture family should get, one per layer unless noted.
EXPECTED_FUSIONS: dict[str, tuple[str, ...]] = {
    "bert": ("attention", "skip_layer_normalization", "bias_gelu"),
    "vit": ("skip_layer_normalization",),
    "swin": ("skip_layer_normalization",),
}


@dataclasses.dataclass
class FusionReport:
    counts: dict[str, int]
    expected: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        """Expected fusions that did not fire, with the reason as data."""
        return [name for name in self.expected if not self.counts.get(name)]

    def to_dict(self) -> dict[str, object]:
        fired = {k: v for k, v in self.counts.items() if v}
        return {"fired": fired, "expected": list(self.expected), "missing": self.missing}


class OrtFusionPass(ir.passes.InPlacePass):
    """Fuse transformer subgraphs into onnxruntime's contrib operators.

    Rules:
      1. run the onnxruntime fusions of ``fuse_ort`` (which pre-optimize the graph);
      2. record per-fusion counts against the family's expected fusions in ``report``.
    """

    def __init__(self, family: str = "") -> None:
        super().__init__()
        self.family = family
        self.report = FusionReport({}, EXPECTED_FUSIONS.get(family, ()))

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        counts = fuse_ort(model)  # rule 1
        self.report = FusionReport(dict(counts), EXPECTED_FUSIONS.get(self.family, ()))  # 2
        if self.report.missing:
            logger.warning("Expected fusions did not fire: %s", ", ".join(self.report.missing))
        return ir.passes.PassResult(model, modified=any(counts.values()))


def fuse_ort(model: ir.Model) -> dict[str, int]:
    """Fuse in place; how often each fusion fired, by the names of the fusion report.

    onnxscript's transformer fusions in onnxscript's own order, each through the
    ``fuse_*`` function of its ``onnxscript.rewriter.ort_fusions`` module (public names
    of public modules, though the package's ``__all__`` lists only ``optimize_for_ort``
    and ``ORT_PATTERN_REWRITE_RULES``). ``optimize_for_ort`` is not used: around these
    fusions it also rewrites Gemm as MatMul + Add, applies its FusedMatMul, Softmax and
    GroupNormalization rules, lifts constants to initializers and infers shapes again,
    rewrites graphport does not ask for (the fusion sequence alone is the private
    ``ort_fusions._core.fuse_xformers``).
    SkipLayerNormalization and BiasGelu are fused here although ``OrtCpuKernelsPass``
    trades them back: without them the residual stays Add + LayerNormalization, which
    onnxruntime's session optimizer fuses back into the slow kernel; the trade writes Sum.
    """
    # Shapes inferred and folded first, so that the patterns see static dimensions. This is
    # onnxscript's optimizer with its default rules, approximate no-ops included (unlike
    # CleanupPass): with ``optimize_graph`` instead, ``x + 0`` and ``x * 1`` survive into
    # the fused graphs.
    common_passes.ShapeInferencePass()(model)
    onnxscript.optimizer.optimize(model)
    shape_optimization.rules.apply_to_model(model)
    onnxscript.optimizer.optimize(model)
    counts: dict[str, int] = {}

    def fuse(name: str, fusion: Callable[..., int], **options: bool) -> None:
        counts[name] = fusion(model, **options)

    fuse("erf_gelu", erfgelu.fuse_erfgelu)
    fuse("rms_normalization", rms_normalization.fuse_rms_normalization)
    fuse("skip_layer_normalization", skip_normalization.fuse_skip_layer_normalization)
    fuse("skip_rms_normalization", skip_normalization.fuse_skip_rms_normalization)
    fuse("rotary_embedding", rotary_embedding.fuse_rotary_embedding)
    fuse("cos_sin_cache", cos_sin_cache.fuse_cos_sin_cache)
    common_passes.CommonSubexpressionEliminationPass()(model)
    fuse("partial_rotary_embedding", rotary_embedding.fuse_partial_rotary_embedding)
    # Some SDPA patterns add nodes whose shapes the attention fusions after it read.
    fuse("sdpa", sdpa.fuse_sdpa, apply_shape_inference=True)
    fuse("gqa", gqa.fuse_gqa)
    fuse("packed_qkv_for_gqa", gqa_packed_qkv.fuse_qkv_gqa)
    fuse("mha1", mha.fuse_mha1)
    fuse("mha2", mha.fuse_mha2)
    fuse("mha_scale", mha_scale.fuse_mha_scale)
    if counts["mha1"] or counts["mha2"]:  # both build on a fused MultiHeadAttention
        fuse("mha_bias", mha_bias.fuse_mha_bias)
        fuse("attention", attention.fuse_attention)
    else:
        counts["mha_bias"] = counts["attention"] = 0
    fuse("gelu", gelu.fuse_gelu)
    fuse("bias_gelu", bias_gelu.fuse_bias_gelu)
    fuse("sdpa_via_mha", sdpa_via_mha.replace_sdpa_by_mha)
    # Intermediate ops no later fusion consumed (an SDPA) are inlined back; dead code goes.
    onnxscript.optimizer.optimize(model)
    return counts


# Families whose attention bias is the padding mask only (bidirectional encoders): their
# fused Attention can take the raw mask instead of a precomputed bias.
PADDING_MASK_FAMILIES = frozenset({"bert"})


class PackAttentionPass(ir.passes.InPlacePass):
    """Put fused Attention nodes in the form onnxruntime's int8 quantizer and its fastest
    kernels take.

    The fusion leaves the packed QKV weight as a runtime Concat of three weights, with
    ``qkv_hidden_sizes``, and the padding mask as a precomputed additive bias of shape
    (batch, 1, sequence, sequence) built by a chain of Range/Where nodes. Then the
    quantizer skips attention (its weight is not an initializer) and every call rebuilds
    the bias. Rules, per Attention node:
      1. fold a Concat of initializers into one packed weight (and bias) initializer;
      2. drop ``qkv_hidden_sizes`` when Q, K and V have the same width;
      3. for encoder families whose bias is only the padding mask, feed the raw
         ``attention_mask`` (int32, batch x sequence) as ``mask_index`` instead, so the
         kernel masks while it computes and the bias chain becomes dead code.
    The parity check that follows every pass proves rule 3 on padded masks.
    """

    def __init__(self, family: str = "") -> None:
        super().__init__()
        self.family = family
        self.counts = {"packed_weights": 0, "dropped_qkv_sizes": 0, "raw_masks": 0}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        mask_index: ir.Value | None = None
        for node in [n for n in graph if n.op_type == "Attention" and n.domain == "com.microsoft"]:
            for index in (1, 2):  # rule 1: weight, bias
                folded = _fold_concat(graph, node.inputs[index])
                if folded is not None:
                    node.replace_input_with(index, folded)
                    self.counts["packed_weights"] += 1
            sizes = node.attributes.get("qkv_hidden_sizes")  # rule 2
            if sizes is not None and len(set(sizes.as_ints())) == 1:
                del node.attributes["qkv_hidden_sizes"]
                self.counts["dropped_qkv_sizes"] += 1
            if self.family in PADDING_MASK_FAMILIES and _takes_bias_only(node):  # rule 3
                mask_index = mask_index or _raw_mask(graph)
                if mask_index is not None:
                    inputs = [*node.inputs[:3], mask_index]
                    node.resize_inputs(len(inputs))
                    node.replace_input_with(3, mask_index)
                    self.counts["raw_masks"] += 1
        ir.passes.common.RemoveUnusedNodesPass()(model)
        return ir.passes.PassResult(model, modified=any(self.counts.values()))


def _fold_concat(graph: ir.Graph, value: ir.Value | None) -> ir.Value | None:
    producer = value.producer() if value is not None else None
    if producer is None or producer.op_type != "Concat":
        return None
    parts = [v.const_value for v in producer.inputs]
    if any(p is None for p in parts):
        return None
    axis = producer.attributes["axis"].as_int()
    packed = np.concatenate([p.numpy() for p in parts], axis=axis)
    folded = ir.Value(
        name=f"{value.name}_packed",
        shape=ir.Shape(packed.shape),
        type=value.type,
        const_value=ir.tensor(packed),
    )
    graph.register_initializer(folded)
    return folded


def _takes_bias_only(node: ir.Node) -> bool:
    """Attention with an attention_bias input (5) and no mask_index/past/other inputs."""
    inputs = list(node.inputs)
    return len(inputs) == 6 and inputs[5] is not None and all(v is None for v in inputs[3:5])


def _raw_mask(graph: ir.Graph) -> ir.Value | None:
    """``attention_mask`` cast to int32, computed once at the top of the graph."""
    mask = next((v for v in graph.inputs if v.name == "attention_mask"), None)
    if mask is None:
        return None
    cast = ir.node("Cast", [mask], attributes={"to": ir.DataType.INT32})
    cast.outputs[0].name = "attention_mask_int32"
    cast.outputs[0].dtype = ir.DataType.INT32
    cast.outputs[0].shape = mask.shape
    graph.insert_before(graph.node(0), cast)
    return cast.outputs[0]


class OrtCpuKernelsPass(ir.passes.InPlacePass):
    """Trade fused contrib operators for the standard ones onnxruntime's CPU provider runs
    faster.

    The fusions above are written for onnxruntime in general, but on its CPU provider two
    of the fused kernels are slower than what they replace (onnxruntime 1.32, 2 threads,
    MiniLM sizes; ``benchmarks/ort_kernels.py`` measures them side by side):
    SkipLayerNormalization takes 3.2-4.4x as long as Sum + LayerNormalization, and
    BiasGelu 1.2-1.4x as long as Gelu once a quantized projection absorbs the bias.
    Rules:
      1. SkipLayerNormalization(x, skip, gamma, beta, bias) becomes
         LayerNormalization(Sum(Add(x, bias), skip), gamma, beta). The bias stays a
         separate Add on the projection output, which onnxruntime folds into a quantized
         MatMul; the residual sum is written as Sum because onnxruntime's session
         optimizer fuses Add + LayerNormalization straight back into the slow kernel.
         Skipped where the mean or inverse-std outputs are used.
      2. BiasGelu(x, bias) becomes Gelu(Add(x, bias)): after int8 quantization the Add
         folds into the DynamicQuantizeMatMul that produces x; in fp32 graphs
         onnxruntime fuses it back into BiasGelu, so nothing is lost there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"skip_layer_norm": 0, "bias_gelu": 0}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for node in list(graph):
            if node.domain != "com.microsoft":
                continue
            if node.op_type == "SkipLayerNormalization" and self._split_skip_norm(graph, node):
                self.counts["skip_layer_norm"] += 1
            elif node.op_type == "BiasGelu":
                biased = _add(graph, node, node.inputs[0], node.inputs[1])
                gelu = ir.node("Gelu", [biased], domain="com.microsoft")
                _replace(graph, node, gelu, [(node.outputs[0], gelu.outputs[0])])
                self.counts["bias_gelu"] += 1
        return ir.passes.PassResult(model, modified=any(self.counts.values()))

    @staticmethod
    def _split_skip_norm(graph: ir.Graph, node: ir.Node) -> bool:
        outputs = list(node.outputs)
        if any(_used(graph, v) for v in outputs[1:3]):
            return False
        x, skip, gamma = node.inputs[0], node.inputs[1], node.inputs[2]
        beta = node.inputs[3] if len(node.inputs) > 3 else None
        bias = node.inputs[4] if len(node.inputs) > 4 else None
        if bias is not None:
            x = _add(graph, node, x, bias)
        total = ir.node("Sum", [x, skip])
        graph.insert_before(node, total)
        total.outputs[0].dtype = node.outputs[0].dtype
        total.outputs[0].shape = node.outputs[0].shape
        epsilon = node.attributes.get("epsilon")
        norm = ir.node(
            "LayerNormalization",
            [total.outputs[0], gamma, *([beta] if beta is not None else [])],
            attributes={"axis": -1, "epsilon": epsilon.as_float() if epsilon else 1e-12},
        )
        pairs = [(outputs[0], norm.outputs[0])]
        if len(outputs) > 3 and _used(graph, outputs[3]):
            pairs.append((outputs[3], total.outputs[0]))
        _replace(graph, node, norm, pairs)
        return True


def _used(graph: ir.Graph, value: ir.Value | None) -> bool:
    return value is not None and (bool(value.uses()) or value in graph.outputs)


def _add(graph: ir.Graph, before: ir.Node, x: ir.Value, bias: ir.Value) -> ir.Value:
    add = ir.node("Add", [x, bias])
    add.outputs[0].dtype, add.outputs[0].shape = x.dtype, x.shape
    graph.insert_before(before, add)
    return add.outputs[0]


def _replace(
    graph: ir.Graph, old: ir.Node, new: ir.Node, pairs: list[tuple[ir.Value, ir.Value]]
) -> None:
    """Put ``new`` where ``old`` was, moving each (old output -> new output) over."""
    graph.insert_before(old, new)
    for before, after in pairs:
        after.dtype, after.shape = before.dtype, before.shape
        after.name, before.name = before.name, f"{before.name}_replaced"
        if before in graph.outputs:
            graph.outputs[graph.outputs.index(before)] = after
        before.replace_all_uses_with(after)
    graph.remove(old, safe=True)

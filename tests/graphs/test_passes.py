"""Each pass on tiny graphs: modified flag, op types, parity before and after."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from graphport.export.config import ShapeSet
from graphport.graphs.cleanup import CleanupPass
from graphport.graphs.fusion import OrtCpuKernelsPass, OrtFusionPass, PackAttentionPass
from graphport.graphs.outliers import FP32_PREFIX, SplitOutliersPass, outlier_channels
from graphport.graphs.quantize import (
    FeedReader,
    convert_fp16,
    int8_candidates,
    quantize_int4_weights,
    quantize_int8_dynamic,
    quantize_int8_dynamic_to_target,
    quantize_int8_static,
)
from graphport.graphs.smooth import SmoothActivationsPass, activation_ranges, smoothable
from graphport.models.registry import get_onnx_config
from graphport.models.tiny import tiny_config


@pytest.fixture(scope="module")
def feeds() -> list[dict[str, np.ndarray]]:
    config = get_onnx_config(tiny_config("bert"), "default")
    return [
        {
            k: v.numpy()
            for k, v in config.dummy_inputs(ShapeSet({"batch": b, "sequence": s}), seed=b).items()
        }
        for b, s in ((1, 9), (3, 21), (2, 32))
    ]


def run(path: Path, feeds: list[dict]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, f)[0] for f in feeds]


def op_types(path: Path) -> Counter:
    return Counter(node.op_type for node in ir.load(path).graph)


@pytest.fixture
def graph(bert_export: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model.onnx"
    shutil.copy2(bert_export / "model.onnx", target)
    return target


def test_cleanup_keeps_the_numbers_and_is_idempotent(graph: Path, feeds, tmp_path: Path):
    model = ir.load(graph)
    # A duplicated initializer and an Identity give the cleanup something to remove.
    first = next(iter(model.graph.initializers.values()))
    twin = ir.Value(name="twin", const_value=first.const_value)
    model.graph.register_initializer(twin)
    node = next(n for n in model.graph if n.inputs and n.inputs[0] is first)
    identity = ir.node("Identity", [twin])
    model.graph.insert_before(node, identity)
    node.replace_input_with(0, identity.outputs[0])
    assert CleanupPass()(model).modified
    assert "Identity" not in Counter(n.op_type for n in model.graph)
    assert "twin" not in model.graph.initializers
    ir.save(model, tmp_path / "clean.onnx")
    for a, b in zip(run(graph, feeds), run(tmp_path / "clean.onnx", feeds), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert not CleanupPass()(model).modified, "a second cleanup finds nothing left"


def test_fusion_fires_the_expected_bert_fusions(graph: Path, feeds, tmp_path: Path):
    model = ir.load(graph)
    fusion = OrtFusionPass("bert")
    result = fusion(model)
    assert result.modified
    assert fusion.report.missing == []
    assert fusion.report.counts["attention"] == 2  # one per layer of the tiny model
    ir.save(result.model, tmp_path / "fused.onnx")
    ops = op_types(tmp_path / "fused.onnx")
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= set(ops)
    assert "Softmax" not in ops
    for a, b in zip(run(graph, feeds), run(tmp_path / "fused.onnx", feeds), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fusion_report_names_what_did_not_fire(graph: Path):
    fusion = OrtFusionPass("vit")  # expects skip_layer_normalization, which bert also has
    fusion(ir.load(graph))
    assert fusion.report.missing == []
    fusion = OrtFusionPass("bert")
    fusion.report.expected = ("rotary_embedding",)
    assert fusion.report.missing == ["rotary_embedding"]


def test_pack_attention_makes_attention_quantizable(graph: Path, feeds, tmp_path: Path):
    fused = OrtFusionPass("bert")(ir.load(graph)).model
    # On real sizes the fusion leaves QKV as a runtime Concat of three weights (the tiny
    # graph's is small enough to be folded already): rebuild that form for one layer.
    node = next(n for n in fused.graph if n.op_type == "Attention")
    parts = []
    for i, part in enumerate(np.split(node.inputs[1].const_value.numpy(), 3, axis=1)):
        parts.append(ir.Value(name=f"qkv_part_{i}", const_value=ir.tensor(part)))
        fused.graph.register_initializer(parts[-1])
    concat = ir.node("Concat", parts, attributes={"axis": 1})
    fused.graph.insert_before(node, concat)
    node.replace_input_with(1, concat.outputs[0])
    ir.save(fused, tmp_path / "fused.onnx")
    pack = PackAttentionPass("bert")
    result = pack(fused)
    assert result.modified
    assert pack.counts == {"packed_weights": 1, "dropped_qkv_sizes": 2, "raw_masks": 2}
    attention = [n for n in result.model.graph if n.op_type == "Attention"]
    for node in attention:
        assert node.inputs[1].const_value is not None, "the packed weight is an initializer"
        assert "qkv_hidden_sizes" not in node.attributes
        assert node.inputs[3].dtype == ir.DataType.INT32 and len(node.inputs) == 4
    ir.save(result.model, tmp_path / "packed.onnx")
    ops = op_types(tmp_path / "packed.onnx")
    assert "Where" not in ops and "Range" not in ops, "the mask-to-bias chain is gone"
    for f, a, b in zip(
        feeds,
        run(tmp_path / "fused.onnx", feeds),
        run(tmp_path / "packed.onnx", feeds),
        strict=True,
    ):
        valid = f["attention_mask"].astype(bool)
        np.testing.assert_allclose(a[valid], b[valid], atol=1e-5)
    quantize_int8_dynamic(tmp_path / "packed.onnx", tmp_path / "q.onnx")
    assert op_types(tmp_path / "q.onnx")["QAttention"] == 2
    # Left alone where the bias may be more than padding (a family not known to be so).
    other = PackAttentionPass("vit")
    other(ir.load(tmp_path / "fused.onnx"))
    assert other.counts["raw_masks"] == 0


def session_op_types(path: Path, tmp_path: Path) -> Counter:
    """Op types after onnxruntime's own session optimizations (what actually runs)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / f"{path.stem}.session.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return op_types(tmp_path / f"{path.stem}.session.onnx")


def test_cpu_kernels_trade_slow_fused_kernels_back(graph: Path, feeds, tmp_path: Path):
    model = PackAttentionPass("bert")(OrtFusionPass("bert")(ir.load(graph)).model).model
    ir.save(model, tmp_path / "fused.onnx")
    kernels = OrtCpuKernelsPass()
    result = kernels(model)
    assert result.modified
    assert kernels.counts == {"skip_layer_norm": 4, "bias_gelu": 2}  # 2 per layer, 1 per layer
    ir.save(result.model, tmp_path / "cpu.onnx")
    ops = op_types(tmp_path / "cpu.onnx")
    assert "SkipLayerNormalization" not in ops and "BiasGelu" not in ops
    assert ops["Sum"] == 4 and ops["LayerNormalization"] == 5  # + the embeddings' norm
    for a, b in zip(
        run(tmp_path / "fused.onnx", feeds), run(tmp_path / "cpu.onnx", feeds), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # What onnxruntime runs: the norms stay unfused, and once quantized the projections
    # take the GELU biases, leaving plain Gelu.
    assert "SkipLayerNormalization" not in session_op_types(tmp_path / "cpu.onnx", tmp_path)
    quantize_int8_dynamic(tmp_path / "cpu.onnx", tmp_path / "q.onnx")
    session = session_op_types(tmp_path / "q.onnx", tmp_path)
    assert "SkipLayerNormalization" not in session and "BiasGelu" not in session
    assert session["Gelu"] == 2
    assert not OrtCpuKernelsPass()(result.model).modified, "nothing left to trade"


def test_cpu_kernels_keep_a_norm_whose_statistics_are_used(graph: Path):
    model = OrtFusionPass("bert")(ir.load(graph)).model
    norm = next(n for n in model.graph if n.op_type == "SkipLayerNormalization")
    mean = norm.outputs[1]
    mean.name = "mean"
    model.graph.outputs.append(mean)
    kernels = OrtCpuKernelsPass()
    kernels(model)
    assert kernels.counts["skip_layer_norm"] == 3
    assert norm in list(model.graph)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min())


def test_int8_dynamic(graph: Path, feeds, tmp_path: Path):
    details = quantize_int8_dynamic(graph, tmp_path / "q.onnx")
    assert "per-channel" in details["weights"]
    ops = op_types(tmp_path / "q.onnx")
    assert "MatMul" not in ops or ops["MatMul"] < op_types(graph)["MatMul"]
    assert ops["DynamicQuantizeLinear"] or ops["MatMulIntegerToFloat"] or ops["MatMulInteger"]
    for a, b in zip(run(graph, feeds), run(tmp_path / "q.onnx", feeds), strict=True):
        assert cosine(a, b) > 0.9


def test_int8_target_cosine_keeps_the_most_sensitive_nodes_fp32(
    graph: Path, feeds, tmp_path: Path, caplog, monkeypatch
):
    monkeypatch.setattr(logging.getLogger("graphport"), "propagate", True)  # into caplog
    caplog.set_level(logging.WARNING, logger="graphport")
    candidates = int8_candidates(onnx.load(graph))
    assert len(candidates) == 12  # 6 MatMuls per layer of the unfused tiny graph
    easy = quantize_int8_dynamic_to_target(graph, tmp_path / "easy.onnx", feeds, target=0.5)
    assert easy["fp32_nodes"] == [] and easy["calibration_min_cosine"] >= 0.5
    # Out of reach: up to max_fp32_nodes are kept, each still a float MatMul, with a warning.
    hard = quantize_int8_dynamic_to_target(
        graph, tmp_path / "hard.onnx", feeds, target=0.99999999, max_fp32_nodes=2
    )
    assert len(hard["fp32_nodes"]) == 2 and set(hard["fp32_nodes"]) <= set(candidates)
    float_matmuls = {
        n.name for n in onnx.load(tmp_path / "hard.onnx").graph.node if n.op_type == "MatMul"
    }
    assert set(hard["fp32_nodes"]) <= float_matmuls
    assert "short of the target" in caplog.text
    reference = run(graph, feeds)
    measured = min(
        cosine(a, b) for a, b in zip(reference, run(tmp_path / "hard.onnx", feeds), strict=True)
    )
    assert measured == pytest.approx(hard["calibration_min_cosine"], abs=1e-5)
    assert hard["calibration_min_cosine"] >= easy["calibration_min_cosine"] - 1e-6


def test_int8_static_qdq(graph: Path, feeds, tmp_path: Path):
    details = quantize_int8_static(graph, tmp_path / "q.onnx", FeedReader(feeds))
    assert details["calibration_samples"] == 3
    # The FFN down-projection after GELU stays fp32: one per layer of the tiny model.
    assert len(details["fp32_nodes"]) == 2
    ops = op_types(tmp_path / "q.onnx")
    assert ops["QuantizeLinear"] and ops["DequantizeLinear"]
    for a, b in zip(run(graph, feeds), run(tmp_path / "q.onnx", feeds), strict=True):
        assert cosine(a, b) > 0.8


@pytest.mark.parametrize("method", ["rtn", "hqq"])
def test_int4_weight_only(graph: Path, feeds, tmp_path: Path, method: str):
    details = quantize_int4_weights(graph, tmp_path / "q.onnx", block_size=16, method=method)
    kernel = details.pop("kernel")
    assert details == {
        "bits": 4,
        "block_size": 16,
        "method": method,
        "accuracy_level": 4,
        "int8_layers": [],  # all of them int4
    }
    assert kernel["fast"] is (method == "rtn")  # hqq's float zero points: the slow path
    assert op_types(tmp_path / "q.onnx")["MatMulNBits"] >= 8  # 4 linear layers x 2 layers
    nbits = [n for n in ir.load(tmp_path / "q.onnx").graph if n.op_type == "MatMulNBits"]
    assert all(n.attributes["accuracy_level"].as_int() == 4 for n in nbits)
    for a, b in zip(run(graph, feeds), run(tmp_path / "q.onnx", feeds), strict=True):
        assert cosine(a, b) > 0.8


def test_default_int4_takes_onnxruntimes_packed_int8_kernel(
    graph: Path, feeds, tmp_path: Path, capfd: pytest.CaptureFixture
):
    """What `graphport quantize --mode int4-weight` writes with no --method: MatMulNBits
    nodes onnxruntime prepacks for its int8-activation kernel, within the int4 budget."""
    quantize_int4_weights(graph, tmp_path / "q.onnx")
    model = onnx.load(tmp_path / "q.onnx")
    types = {t.name: t.data_type for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) >= 8  # 4 linear layers x 2 layers
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["accuracy_level"] == 4 and attrs["block_size"] == 32
        inputs = [*node.input, "", ""]
        # uint8 (packed) zero points or none; float ones turn the prepacking off.
        assert not inputs[3] or types[inputs[3]] == onnx.TensorProto.UINT8, node.name
        assert not inputs[4], "no g_idx"
    # onnxruntime agrees: no node logs its fallback to dequantizing the weights.
    options = ort.SessionOptions()
    options.log_severity_level = 1
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), options, ["CPUExecutionProvider"])
    capfd.readouterr()
    quantized = [session.run(None, f)[0] for f in feeds]
    assert "Falling back to using unpacked compute" not in capfd.readouterr().err
    for a, b in zip(run(graph, feeds), quantized, strict=True):
        assert cosine(a, b) > 0.90  # the int4 budget of api/transform.py


def test_int4_gptq_uses_calibration(graph: Path, feeds, tmp_path: Path):
    quantize_int4_weights(graph, tmp_path / "q.onnx", 16, "gptq", FeedReader(feeds))
    assert op_types(tmp_path / "q.onnx")["MatMulNBits"] >= 8


def test_fp16_keeps_io_types_and_blocks_overflowing_nodes(graph: Path, feeds, tmp_path: Path):
    details = convert_fp16(graph, tmp_path / "h.onnx", feeds)
    # The additive attention mask holds float32's minimum: those nodes must stay fp32.
    islands = details["fp32_islands"]
    assert islands
    names = {node.name: node.op_type for node in ir.load(graph).graph}
    assert {names[n] for n in islands} <= {"Add", "Where", "Mul", "Sub", "Cast", "Expand"}
    converted = ir.load(tmp_path / "h.onnx")
    assert converted.graph.outputs[0].dtype == ir.DataType.FLOAT
    assert any(init.dtype == ir.DataType.FLOAT16 for init in converted.graph.initializers.values())
    for a, b in zip(run(graph, feeds), run(tmp_path / "h.onnx", feeds), strict=True):
        assert cosine(a, b) > 0.999


def test_smoothing_keeps_the_numbers_on_a_fused_graph(graph: Path, feeds, tmp_path: Path):
    fused = tmp_path / "fused.onnx"
    ir.save(PackAttentionPass("bert")(OrtFusionPass("bert")(ir.load(graph)).model).model, fused)
    model = ir.load(fused)
    groups = smoothable(model.graph)
    # Per layer: the attention input, its output projection, FFN up and FFN down.
    assert len(groups) == 8
    assert Counter(n.op_type for nodes in groups.values() for n in nodes) == {
        "Attention": 2,
        "MatMul": 6,
    }
    ranges = activation_ranges(fused, feeds, list(groups))
    # A random model has no outlier channels: by default nothing is worth a Mul.
    assert not SmoothActivationsPass(ranges)(ir.load(fused)).modified
    smooth = SmoothActivationsPass(ranges, min_ratio=0.0)
    result = smooth(model)
    assert result.modified and len(smooth.smoothed) == 8
    ir.save(result.model, tmp_path / "smooth.onnx")
    assert op_types(tmp_path / "smooth.onnx")["Mul"] == op_types(fused)["Mul"] + 8
    for a, b in zip(run(fused, feeds), run(tmp_path / "smooth.onnx", feeds), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not SmoothActivationsPass({})(ir.load(fused)).modified, "no ranges, nothing to do"


def test_smoothing_moves_an_outlier_channel_into_the_weights(tmp_path: Path):
    """One activation channel 100x the others: dynamic int8 gives the rest a few levels
    unless smoothing first divides the outlier down (and scales its weight row up)."""
    rng = np.random.default_rng(0)
    x = ir.Value(name="x", shape=ir.Shape(["n", 16]), type=ir.TensorType(ir.DataType.FLOAT))
    w = ir.Value(name="w", const_value=ir.tensor(rng.normal(size=(16, 8)).astype(np.float32)))
    matmul = ir.node("MatMul", [x, w])
    matmul.outputs[0].name = "y"
    model = ir.Model(
        ir.Graph([x], matmul.outputs, nodes=[matmul], initializers=[w], opset_imports={"": 18}),
        ir_version=10,
    )
    ir.save(model, tmp_path / "plain.onnx")
    samples = rng.normal(size=(64, 16)).astype(np.float32)
    samples[:, 3] *= 100.0
    feeds = [{"x": samples}]
    ranges = activation_ranges(tmp_path / "plain.onnx", feeds, ["x"])
    assert ranges["x"].shape == (16,) and ranges["x"].argmax() == 3
    smoothed = SmoothActivationsPass(ranges)(ir.load(tmp_path / "plain.onnx")).model
    ir.save(smoothed, tmp_path / "s.onnx")
    want = run(tmp_path / "plain.onnx", feeds)[0]
    np.testing.assert_allclose(run(tmp_path / "s.onnx", feeds)[0], want, rtol=1e-4, atol=1e-3)
    errors = {}
    for name in ("plain", "s"):
        quantize_int8_dynamic(tmp_path / f"{name}.onnx", tmp_path / f"{name}-q.onnx")
        errors[name] = np.abs(run(tmp_path / f"{name}-q.onnx", feeds)[0] - want).mean()
    assert errors["s"] < errors["plain"] / 2, errors


def feed_forward_model(residual: bool) -> ir.Model:
    """``act(x @ w1 + b1) @ w2 + b2``, added to ``x`` by a Sum when ``residual``."""
    rng = np.random.default_rng(1)

    def const(name: str, *shape: int) -> ir.Value:
        array = (rng.normal(size=shape) * 0.3).astype(np.float32)
        return ir.Value(name=name, const_value=ir.tensor(array))

    x = ir.Value(name="x", shape=ir.Shape(["n", 8]), type=ir.TensorType(ir.DataType.FLOAT))
    weights = [const("w1", 8, 32), const("b1", 32), const("w2", 32, 8), const("b2", 8)]
    up = ir.node("MatMul", [x, weights[0]])
    bias = ir.node("Add", [up.outputs[0], weights[1]])
    act = ir.node("Gelu", [bias.outputs[0]], domain="com.microsoft")
    act.outputs[0].name = "hidden"
    down = ir.node("MatMul", [act.outputs[0], weights[2]])
    out = ir.node("Add", [down.outputs[0], weights[3]])
    nodes = [up, bias, act, down, out]
    if residual:
        nodes.append(ir.node("Sum", [out.outputs[0], x]))
    nodes[-1].outputs[0].name = "y"
    for node in nodes:  # the quantizer needs types past the com.microsoft Gelu
        node.outputs[0].dtype = ir.DataType.FLOAT
    graph = ir.Graph(
        [x],
        nodes[-1].outputs,
        nodes=nodes,
        initializers=weights,
        opset_imports={"": 18, "com.microsoft": 1},
    )
    return ir.Model(graph, ir_version=10)


def test_outlier_channels_are_the_ones_far_above_the_median():
    ranges = np.ones(64, dtype=np.float32)
    ranges[[5, 40]] = [30.0, 7.0]
    ranges[9] = 5.0  # below 6x the median
    assert outlier_channels(ranges).tolist() == [5, 40]
    assert outlier_channels(ranges, limit=1).tolist() == [5]
    assert outlier_channels(np.zeros(8, dtype=np.float32)).size == 0


@pytest.mark.parametrize("residual", [True, False])
def test_split_outliers_keeps_the_numbers_and_saves_int8_levels(tmp_path: Path, residual: bool):
    """Two intermediate channels 40x the others: split off into an fp32 side path, they
    stop setting the int8 range of the down-projection's input."""
    model = feed_forward_model(residual)
    up = next(n for n in model.graph if n.op_type == "MatMul")
    w1 = up.inputs[1].const_value.numpy().copy()
    w1[:, [3, 17]] *= 40.0
    up.inputs[1].const_value = ir.tensor(w1)
    ir.save(model, tmp_path / "plain.onnx")
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.normal(size=(256, 8)).astype(np.float32)}]
    ranges = activation_ranges(tmp_path / "plain.onnx", feeds, ["hidden"])
    split = SplitOutliersPass(ranges)
    result = split(ir.load(tmp_path / "plain.onnx"))
    assert result.modified and split.split == {"hidden": 2}
    ir.save(result.model, tmp_path / "split.onnx")
    ops = op_types(tmp_path / "split.onnx")
    assert ops["MatMul"] == 4 and ops["Gelu"] == 2
    assert ops["Sum" if residual else "Add"] == (1 if residual else 4)  # 2 biases, 1 merge
    if residual:
        (total,) = [n for n in ir.load(tmp_path / "split.onnx").graph if n.op_type == "Sum"]
        assert len(total.inputs) == 3, "the side path joins the residual Sum"
    want = run(tmp_path / "plain.onnx", feeds)[0]
    np.testing.assert_allclose(run(tmp_path / "split.onnx", feeds)[0], want, atol=1e-4)
    errors = {}
    for name in ("plain", "split"):
        quantize_int8_dynamic(tmp_path / f"{name}.onnx", tmp_path / f"{name}-q.onnx")
        errors[name] = np.abs(run(tmp_path / f"{name}-q.onnx", feeds)[0] - want).mean()
    assert errors["split"] < errors["plain"] / 2, errors
    quantized = onnx.load(tmp_path / "split-q.onnx")
    side = [n.op_type for n in quantized.graph.node if n.name.startswith(FP32_PREFIX)]
    assert side.count("MatMul") == 2, "the side path stays fp32"
    assert not SplitOutliersPass({})(ir.load(tmp_path / "plain.onnx")).modified

"""GPTQ tensors repacked for MatMulNBits: onnxruntime against GPTQ's own dequantization."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from graphport.errors import UsageError
from graphport.graphs.gptq import (
    GptqSpec,
    NBitsWeight,
    dequantize_gptq,
    gptq_to_nbits,
    pack_gptq,
)
from graphport.graphs.nbits import DEQUANTIZE, PACKED_FP32, PACKED_INT8, kernel_report

FALLBACK = "Falling back to using unpacked compute"  # onnxruntime's INFO log (test_nbits.py)


def graph(weight: NBitsWeight, accuracy_level: int) -> onnx.ModelProto:
    nodes, initializers = weight.to_onnx("x", "y", "layer", accuracy_level=accuracy_level)
    return helper.make_model(
        helper.make_graph(
            nodes,
            "gptq",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weight.K])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weight.N])],
            initializers,
        ),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)],
    )


def run(model: onnx.ModelProto, x: np.ndarray, capfd: pytest.CaptureFixture) -> np.ndarray:
    """One run on the CPU provider; fails when onnxruntime logs a dequantizing fallback."""
    options = ort.SessionOptions()
    options.log_severity_level = 1
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    capfd.readouterr()
    (y,) = session.run(None, {"x": x})
    assert FALLBACK not in capfd.readouterr().err
    return y


def checkpoint(spec: GptqSpec, K: int, N: int, perm: np.ndarray | None = None):
    rng = np.random.default_rng(K * N + spec.bits)
    weight = rng.standard_normal((K, N)).astype(np.float32)
    tensors = pack_gptq(weight, spec, perm)
    reference = dequantize_gptq(*tensors.values(), spec, K, N)
    # The writer and the reference agree: round to nearest, a step at most (where the
    # largest weight rounds past the top code).
    step = tensors["scales"].astype(np.float32)[tensors["g_idx"]]
    assert (np.abs(reference - weight) <= 1.0001 * step).all()
    x = rng.standard_normal((3, K)).astype(np.float32)
    return tensors, reference, x


def check(weight: NBitsWeight, reference: np.ndarray, x: np.ndarray, capfd) -> None:
    """Both fast kernels where MLAS has them: fp32 activations (4 bits) are float rounding
    away from x @ W; int8 activations (accuracy level 4) a percent."""
    expected = x @ reference
    for level, path, rtol in [(0, PACKED_FP32, 1e-5), (4, PACKED_INT8, 2e-2)]:
        if weight.bits == 8 and level == 0:
            continue  # no fp32-activation MLAS kernel for 8 bits (graphs/nbits.py rule 4)
        model = graph(weight, level)
        (group,) = kernel_report(model).groups
        assert group.path == path
        got = run(model, x, capfd)
        scale = np.abs(expected).max()
        assert np.abs(got - expected).max() <= rtol * scale


@pytest.mark.parametrize(
    ("K", "N", "group_size", "bits", "sym", "fmt", "block"),
    [
        (64, 32, 32, 4, True, "gptq", 32),
        (128, 96, 64, 4, False, "gptq", 64),
        (128, 32, 32, 4, False, "gptq_v2", 32),
        (64, 96, 64, 4, True, "gptq_v2", 64),
        (128, 32, 32, 8, False, "gptq_v2", 32),
        (128, 96, 64, 8, True, "gptq", 64),
        (128, 32, -1, 4, False, "gptq_v2", 128),  # per column: one block of K
        (1024, 32, 512, 4, False, "gptq", 256),  # two MLAS blocks per group
        (96, 32, 48, 4, False, "gptq_v2", 16),  # three
    ],
)
def test_matmulnbits_computes_the_gptq_weight(K, N, group_size, bits, sym, fmt, block, capfd):
    spec = GptqSpec(bits=bits, group_size=group_size, sym=sym, checkpoint_format=fmt)
    tensors, reference, x = checkpoint(spec, K, N)
    weight = gptq_to_nbits(*tensors.values(), spec, K, N)
    assert (weight.block_size, weight.perm) == (block, None)
    assert weight.b.shape == (N, K // block, block * bits // 8) and weight.b.dtype == np.uint8
    assert weight.scales.shape == (N, K // block) and weight.scales.dtype == np.float32
    # Symmetric GPTQ's zero point is MatMulNBits's default: the input is dropped.
    assert (weight.zero_points is None) == sym
    if not sym:
        assert weight.zero_points.dtype == np.uint8
        assert weight.zero_points.shape == (N, -(-K // block * bits // 8))
    check(weight, reference, x, capfd)


def test_codes_are_moved_not_dequantized():
    spec = GptqSpec(bits=4, group_size=32, sym=False, checkpoint_format="gptq_v2")
    tensors, _, _ = checkpoint(spec, 128, 32)
    weight = gptq_to_nbits(*tensors.values(), spec, 128, 32)
    # Every byte of B is a byte of qweight: the same words, transposed.
    words = weight.b.reshape(32, -1).view("<u4")
    assert np.array_equal(words, tensors["qweight"].view("<u4").T)
    # Scales are only widened.
    assert np.array_equal(weight.scales, tensors["scales"].astype(np.float32).T)


@pytest.mark.parametrize(("bits", "sym"), [(4, False), (4, True), (8, False)])
def test_act_order_regroups_rows_and_gathers_the_input(bits, sym, capfd):
    K, N = 128, 32
    spec = GptqSpec(bits=bits, group_size=32, sym=sym, desc_act=True)
    perm = np.random.default_rng(bits).permutation(K)
    tensors, reference, x = checkpoint(spec, K, N, perm)
    assert not np.array_equal(tensors["g_idx"], np.arange(K) // 32)
    weight = gptq_to_nbits(*tensors.values(), spec, K, N)
    assert weight.perm is not None
    assert np.array_equal(np.sort(tensors["g_idx"][weight.perm]), tensors["g_idx"][weight.perm])
    nodes, _ = weight.to_onnx("x", "y", "layer")
    assert [n.op_type for n in nodes] == ["Gather", "MatMulNBits"]
    assert len(nodes[1].input) == 3 + (not sym)  # no g_idx input: the fast kernel
    check(weight, reference, x, capfd)


def test_a_trivial_g_idx_is_dropped():
    spec = GptqSpec(group_size=32, desc_act=True)
    tensors, _, _ = checkpoint(spec, 64, 32)
    weight = gptq_to_nbits(*tensors.values(), spec, 64, 32)
    nodes, _ = weight.to_onnx("x", "y", "layer")
    assert weight.perm is None and [n.op_type for n in nodes] == ["MatMulNBits"]
    assert kernel_report(graph(weight, 4)).groups[0].path != DEQUANTIZE


def test_an_act_order_layout_without_whole_groups_is_refused():
    spec = GptqSpec(group_size=32, desc_act=True)
    tensors, _, _ = checkpoint(spec, 64, 32)
    g_idx = np.zeros(64, np.int32)
    g_idx[-8:] = 1  # group 0 holds 56 rows, group 1 holds 8
    with pytest.raises(UsageError, match="exactly 32 rows"):
        gptq_to_nbits(tensors["qweight"], tensors["qzeros"], tensors["scales"], g_idx, spec, 64, 32)


def test_from_config_reads_transformers_configs():
    from transformers import GPTQConfig, PretrainedConfig

    assert GptqSpec.from_config({"hidden_size": 32}) is None
    assert GptqSpec.from_config({"quantization_config": {"quant_method": "awq", "bits": 4}}) is None
    assert GptqSpec.from_config(PretrainedConfig()) is None
    config = PretrainedConfig(
        quantization_config={
            "quant_method": "gptq",
            "bits": 8,
            "group_size": 64,
            "sym": False,
            "desc_act": True,
            "checkpoint_format": "gptq_v2",
        }
    )
    expected = GptqSpec(8, 64, sym=False, desc_act=True, checkpoint_format="gptq_v2")
    assert GptqSpec.from_config(config) == expected
    assert GptqSpec.from_config(config.to_dict()) == expected
    qc = GPTQConfig(bits=4, group_size=32, format="gptq_v2")
    assert GptqSpec.from_config({"quantization_config": qc}) == GptqSpec(
        4, 32, checkpoint_format="gptq_v2"
    )
    assert GptqSpec.from_config({"quant_method": "gptq", "bits": 4}) == GptqSpec()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"bits": 3}, "bits=3 cannot"),
        ({"bits": 2}, "bits=2 cannot"),
        ({"group_size": 100}, "group_size=100 cannot"),
        ({"group_size": 0}, "group_size=0 cannot"),
        ({"checkpoint_format": "marlin"}, "format 'marlin' is not supported"),
    ],
)
def test_from_config_refuses_layouts_it_cannot_convert(settings, match):
    config = {"quantization_config": {"quant_method": "gptq", "bits": 4, **settings}}
    with pytest.raises(UsageError, match=match):
        GptqSpec.from_config(config)


def test_tensors_that_do_not_fit_the_layer_are_refused():
    spec = GptqSpec(group_size=64, checkpoint_format="gptq_v2", sym=False)
    tensors, _, _ = checkpoint(spec, 128, 32)
    with pytest.raises(UsageError, match="group_size=64 does not divide the layer's 96 inputs"):
        gptq_to_nbits(*tensors.values(), spec, 96, 32)
    with pytest.raises(UsageError, match=r"qweight has shape \[16, 32\] .* give \[16, 64\]"):
        gptq_to_nbits(*tensors.values(), spec, 128, 64)
    v1 = GptqSpec(group_size=64, sym=False)
    overflow = np.full_like(tensors["qzeros"], -1)  # every stored code 15: zero point 16
    with pytest.raises(UsageError, match="zero point of 16"):
        gptq_to_nbits(tensors["qweight"], overflow, tensors["scales"], None, v1, 128, 32)

"""The int4 reference (validators/quantized.py): MatMulNBits blocks read back into the
float weights onnxruntime computes with."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphport.graphs.weight_only import quantize_blocks
from graphport.validators.quantized import dequantize_nbits


def matmul_nbits(
    blocks: Any, k: int, n: int, block: int, accuracy_level: int
) -> tuple[onnx.ModelProto, ort.InferenceSession]:
    """One MatMulNBits node over ``blocks`` ([3, K] input) and its onnxruntime session."""
    node = helper.make_node(
        "MatMulNBits",
        ["x", "b", "scales", "zero_points"],
        ["y"],
        domain="com.microsoft",
        K=k,
        N=n,
        bits=4,
        block_size=block,
        accuracy_level=accuracy_level,
    )
    graph = helper.make_graph(
        [node],
        "nbits",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])],
        [
            numpy_helper.from_array(blocks.packed, "b"),
            numpy_helper.from_array(blocks.scales, "scales"),
            numpy_helper.from_array(blocks.zero_points, "zero_points"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return model, session


@pytest.mark.parametrize(("k", "n", "block"), [(64, 48, 32), (96, 32, 32), (128, 16, 64)])
def test_dequantized_blocks_are_what_onnxruntime_multiplies_by(k: int, n: int, block: int):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(k, n)).astype(np.float32)  # [K, N], as MatMul reads it
    blocks = quantize_blocks(weight, block)
    # accuracy level 0: fp32 activations, the product is the dequantized weight's
    model, session = matmul_nbits(blocks, k, n, block, accuracy_level=0)
    x = rng.normal(size=(3, k)).astype(np.float32)
    (y,) = session.run(None, {"x": x})

    dequantized = dequantize_nbits(blocks.packed, blocks.scales, blocks.zero_points, 4, k)
    assert dequantized.shape == (n, k)
    np.testing.assert_allclose(y, x @ dequantized.T, rtol=1e-4, atol=1e-4)
    # ...and it is the rounded weight: close to the float one, not equal to it.
    error = np.abs(dequantized.T - weight).max()
    assert 0 < error <= np.abs(weight).max() / 7
    onnx.checker.check_model(model)


def test_int8_activations_are_what_accuracy_level_4_computes_with():
    import torch

    from graphport.validators.quantized import int8_activations

    rng = np.random.default_rng(1)
    k, n, block = 256, 64, 32
    blocks = quantize_blocks(rng.normal(size=(k, n)).astype(np.float32), block)
    # accuracy level 4: int8 activations, rounded per block by the kernel
    _, session = matmul_nbits(blocks, k, n, block, accuracy_level=4)
    x = rng.normal(size=(3, k)).astype(np.float32)
    x[:, 5] *= 30  # an outlier channel, as real activations have: it sets its block's range
    (y,) = session.run(None, {"x": x})
    weight = dequantize_nbits(blocks.packed, blocks.scales, blocks.zero_points, 4, k)

    float_error = np.abs(y - x @ weight.T).max()
    rounded = int8_activations(torch.from_numpy(x), block).numpy()
    assert np.abs(y - rounded @ weight.T).max() < float_error / 1000
    # The rounding is per block: a whole-row scale is not what the kernel does.
    whole_row = int8_activations(torch.from_numpy(x), k).numpy()
    assert np.abs(y - whole_row @ weight.T).max() > float_error / 10

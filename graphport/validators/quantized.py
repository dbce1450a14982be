"""The eager model with the int4 weights an export holds: the reference that tells an
export's own error from its quantization's.

An int4 graph differs from the float model in two ways: its weights are rounded to 16
levels per block (the quantization's error, a property of the model and the scheme), and
it computes with them (where an export bug would show). On a trained model the first is
small; on a random deep checkpoint it is not: random layers amplify the rounding noise
from layer to layer (a random 22-layer 1.1B Llama's int4 logits reach cosine 0.86 to its
float logits, with the graph computing exactly what its weights say). Validating such a
graph against the float model conflates the two. Against this reference (each quantized
Linear's weight replaced by the dequantized blocks read back from the graph file) only the
graph's own error is left; the distance to the float model is reported beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from graphport.graphs.scopes import node_modules

logger = logging.getLogger(__name__)

# Initializer names the streamed int4 pass writes: ``<weight>.T_Q4`` (graphs/weight_only.py).
_SUFFIXES = (".T_Q4", ".T_Q8")


def dequantize_nbits(
    packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, bits: int, k: int
) -> np.ndarray:
    """MatMulNBits blocks -> the float weight they stand for, [N, K] (a Linear's layout)."""
    n, blocks, _ = packed.shape
    if bits == 4:
        codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, blocks, -1)
    else:
        codes = packed
    if zero_points is None:
        zeros = np.full((n, blocks), 1 << (bits - 1), dtype=np.float32)
    elif bits == 4:
        zeros = np.stack([zero_points & 0x0F, zero_points >> 4], axis=-1).reshape(n, -1)
        zeros = zeros[:, :blocks].astype(np.float32)
    else:
        zeros = zero_points[:, :blocks].astype(np.float32)
    scale = scales.reshape(n, blocks).astype(np.float32)
    weight = (codes.astype(np.float32) - zeros[..., None]) * scale[..., None]
    return weight.reshape(n, -1)[:, :k]


def apply_int4_weights(eager: Any, graph_path: Path) -> int:
    """Replace, in place, each eager Linear weight a MatMulNBits node of ``graph_path``
    holds by that node's dequantized blocks; returns how many were replaced.

    A node at accuracy level 4 also has its activations rounded as onnxruntime's kernel
    rounds them (``int8_activations``, a forward pre-hook on the Linear): on real weights
    that rounding, not the weights, is most of the graph's distance to float activations
    (SmolLM2-135M: one decode row's logits at cosine 0.85 against the int4 weights alone,
    1.000000 with the node at level 0).
    """
    import torch

    if graph_path.suffix == ".xml":
        return _apply_ir_weights(eager, graph_path)
    # Tied weights are listed under every name: an int4 lm_head tied to the embedding
    # gets a parameter of its own, and the embedding keeps its float values (as the graph's
    # Gather does).
    params = dict(eager.named_parameters(remove_duplicate=False))
    model = ir.load(graph_path)
    count = 0
    for node in model.graph:
        if node.op_type != "MatMulNBits" or node.inputs[1] is None:
            continue
        name = node.inputs[1].name or ""
        base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), None)
        found = _parameter(params, base) or _scoped_parameter(params, node)
        if found is None:
            continue
        attrs = {a.name: a.value for a in node.attributes.values()}
        zero_points = node.inputs[3] if len(node.inputs) > 3 else None
        weight = dequantize_nbits(
            node.inputs[1].const_value.numpy(),
            node.inputs[2].const_value.numpy(),
            zero_points.const_value.numpy() if zero_points is not None else None,
            int(attrs["bits"]),
            int(attrs["K"]),
        )
        perm = node.inputs[0].producer()
        order = None
        if perm is not None and perm.op_type == "Gather" and perm.inputs[1].const_value:
            # A regrouped (act-order) weight: row i of the blocks is input perm[i].
            order = perm.inputs[1].const_value.numpy()
            weight = weight[:, np.argsort(order)]
        owner, attribute = found.rsplit(".", 1)
        module = eager.get_submodule(owner)
        replaced = torch.from_numpy(weight).to(params[found].dtype)
        setattr(module, attribute, torch.nn.Parameter(replaced, requires_grad=False))
        if int(attrs.get("accuracy_level", 0)) == INT8_ACTIVATIONS_LEVEL:
            block = int(attrs["block_size"])
            module.register_forward_pre_hook(
                lambda _, args, block=block, order=order: (
                    int8_activations(args[0], block, order),
                    *args[1:],
                )
            )
        count += 1
    return count


def _apply_ir_weights(eager: Any, xml_path: Path) -> int:
    """The OpenVINO IR form of ``apply_int4_weights``: every MatMul weight and Gather table
    computed from constants alone (NNCF's compressed blocks, Convert, Subtract, Multiply)
    is evaluated once, in float, and put into the eager Linear or Embedding it stands for.
    NNCF's IR keeps no module names, so a weight is matched by shape and value: its module
    is the one of that shape whose float weight it is closest to (rounding moves a weight
    far less than the distance between two layers' weights).

    OpenVINO's CPU plugin also rounds the activations of compressed MatMuls (dynamic
    quantization, in groups); that is not emulated here: on SmolLM2-135M it leaves the
    worst KV vector at cosine 0.962 against this reference (0.9999999997 with it off)."""
    import openvino as ov
    import torch
    from openvino import opset13 as ops

    core = ov.Core()
    model = core.read_model(str(xml_path))

    def is_constant(node: Any, depth: int = 8) -> bool:
        """Whether ``node`` is computed from constants alone, within a few steps: a
        decompression chain is short, and an activation is not followed to the inputs."""
        kind = node.get_type_name()
        if kind == "Constant":
            return True
        if depth == 0 or node.get_input_size() == 0 or kind in ("Parameter", "ReadValue"):
            return False
        return all(is_constant(i.get_source_output().get_node(), depth - 1) for i in node.inputs())

    # (module type, weight as the module holds it): a MatMul's [K, N] weight is a Linear's
    # transposed; a Gather's table (NNCF compresses the embedding to int8) an Embedding's.
    weights = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "MatMul" and is_constant(op.input_value(1).get_node()):
            transposed = op.get_attributes().get("transpose_b", False)
            weights.append((torch.nn.Linear, not transposed, op.input_value(1)))
        elif (
            kind == "Gather"
            and op.input_value(0).get_node().get_type_name() != "Constant"  # decompressed
            and is_constant(op.input_value(0).get_node())
        ):
            weights.append((torch.nn.Embedding, False, op.input_value(0)))
    if not weights:
        return 0
    folded = ov.Model([ops.result(w) for _, _, w in weights], [], "weights")
    values = core.compile_model(folded, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({})
    count = 0
    for index, (kind, transpose, _) in enumerate(weights):
        weight = np.asarray(values[index], dtype=np.float32)
        weight = weight.T if transpose else weight
        modules = [m for m in eager.modules() if isinstance(m, kind)]
        module = _closest(modules, weight)
        if module is None:
            continue
        replaced = torch.from_numpy(np.ascontiguousarray(weight)).to(module.weight.dtype)
        module.weight = torch.nn.Parameter(replaced, requires_grad=False)
        count += 1
    return count


def _closest(modules: list[Any], weight: np.ndarray) -> Any:
    """The module of ``weight``'s shape whose weight is nearest to it (on a fixed sample of
    positions; None when no module has that shape)."""
    candidates = [m for m in modules if tuple(m.weight.shape) == weight.shape]
    if not candidates:
        return None
    flat = weight.reshape(-1)
    sample = np.random.default_rng(0).choice(flat.size, min(4096, flat.size), replace=False)
    distances = [
        float(np.square(m.weight.detach().float().numpy().reshape(-1)[sample] - flat[sample]).sum())
        for m in candidates
    ]
    return candidates[int(np.argmin(distances))]


# MatMulNBits' accuracy_level at which onnxruntime's CPU kernel rounds activations to int8.
INT8_ACTIVATIONS_LEVEL = 4


def int8_activations(x: Any, block: int, order: np.ndarray | None = None) -> Any:
    """``x`` rounded as MatMulNBits at accuracy level 4 rounds its input on the CPU: per
    block of ``block`` values along the last axis (in the node's input order, ``order``
    for a regrouped weight), symmetric int8 with scale max|x| / 127, round half to even.
    Written by hand: onnxruntime exposes the kernel, not its activation rounding."""
    import torch

    if order is not None:
        x = x[..., torch.as_tensor(order)]
    k = x.shape[-1]
    pad = -k % block
    blocks = torch.nn.functional.pad(x.float(), (0, pad)).unflatten(-1, (-1, block))
    scale = blocks.abs().amax(-1, keepdim=True) / 127.0
    inverse = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    rounded = (torch.round(blocks * inverse).clamp(-127, 127) * scale).flatten(-2)[..., :k]
    rounded = rounded.to(x.dtype)
    if order is not None:
        rounded = rounded[..., torch.as_tensor(np.argsort(order))]
    return rounded


def _scoped_parameter(params: dict[str, Any], node: ir.Node) -> str | None:
    """The weight of the module a node was traced from, by the module scopes the exporter
    records on each node (kept by graphport's passes): onnxruntime's int4 quantizer names
    its blocks after the traced constant (``val_196_Q4``), not after the parameter."""
    modules = node_modules(node)
    return _parameter(params, f"{modules[-1]}.weight") if modules else None


def _parameter(params: dict[str, Any], base: str | None) -> str | None:
    """The name of the eager parameter a graph weight was traced from: the graph names it
    by its path in the traced wrapper, which may prefix the model's own names."""
    if base is None:
        return None
    parts = base.split(".")
    for start in range(len(parts)):
        name = ".".join(parts[start:])
        if name in params:
            return name
    return None

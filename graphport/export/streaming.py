"""Export a checkpoint without loading its weights: trace on the meta device, then read
each weight from the checkpoint's files only while the graph is being saved.

The usual export holds the eager model (4 bytes a parameter in fp32), the traced graph,
and, for a quantized export, a second graph: a 7B decoder needs several times this
machine's memory. Here:

  1. the model is built on the meta device (``load_meta_model``): shapes, no storage;
  2. torch.onnx traces it on meta inputs, without its optimizer (which reads weight
     values), so tracing allocates no weight;
  3. every weight initializer becomes an ``onnx_ir.LazyTensor`` that reads its tensor
     from the safetensors files when asked for its bytes (``bind_checkpoint``); the
     transpose a Linear applies to its weight becomes a lazily transposed initializer;
  4. passes that rewrite weights (int4, graphs/weight_only.py) stay lazy too, and
     ``onnx_ir.save`` writes the external data tensor by tensor, with a bound on the
     bytes in flight, so at most a few tensors are in memory at any time.

A weight is read with ``safetensors.safe_open`` opened for that tensor alone: the file
mapping (whose touched pages count towards the process's RSS while it is mapped) is
closed as soon as the tensor is copied out.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
import torch
from onnx_ir.tensor_adapters import TorchTensor, from_torch_dtype

from graphport.checkpoint import safetensors_header
from graphport.errors import ExportError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StoredTensor:
    file: Path
    nbytes: int


class CheckpointReader:
    """The tensors of a safetensors checkpoint by name, read one at a time."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.tensors: dict[str, StoredTensor] = {}
        for file in files:
            for name, entry in safetensors_header(file).items():
                if name == "__metadata__":
                    continue
                start, end = entry["data_offsets"]
                self.tensors[name] = StoredTensor(file, end - start)

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def read(self, name: str) -> torch.Tensor:
        """The tensor ``name``, copied out of the file (no mapping stays open)."""
        from safetensors import safe_open

        stored = self.tensors[name]
        with safe_open(str(stored.file), framework="pt") as handle:
            return handle.get_tensor(name).clone()


def _to_ir_tensor(tensor: torch.Tensor, name: str) -> ir.TensorProtocol:
    return TorchTensor(tensor.contiguous(), name=name)


def checkpoint_keys(model: torch.nn.Module, reader: CheckpointReader) -> dict[int, str]:
    """id(tensor) -> the checkpoint key it is stored under, for every parameter and
    persistent buffer of ``model`` found in the checkpoint (tied tensors: any alias)."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    found: dict[int, str] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        for key in (name, name.removeprefix(prefix + "."), f"{prefix}.{name}"):
            if key in reader and id(tensor) not in found:
                found[id(tensor)] = key
    return found


class _Lazy:
    """One checkpoint tensor, read on demand, cast to ``dtype`` and optionally
    transposed (a Linear's weight as its MatMul reads it)."""

    def __init__(
        self, reader: CheckpointReader, key: str, dtype: torch.dtype, transpose: bool
    ) -> None:
        self.reader, self.key, self.dtype, self.transpose = reader, key, dtype, transpose

    def __call__(self) -> ir.TensorProtocol:
        if self.key.startswith(_PROVIDED):
            raise ExportError(
                f"{self.key.removeprefix(_PROVIDED)} has no float weight in the checkpoint "
                "and no pass replaced the MatMul that reads it."
            )
        tensor = self.reader.read(self.key).to(self.dtype)
        if self.transpose:
            tensor = tensor.t().contiguous()
        return _to_ir_tensor(tensor, self.key)


def _lazy(
    reader: CheckpointReader, key: str, tensor: torch.Tensor, name: str, transpose: bool
) -> ir.LazyTensor:
    """The initializer of checkpoint tensor ``key`` (shaped and typed as the meta
    ``tensor``, transposed for a MatMul), read when it is written."""
    shape = tuple(reversed(tensor.shape)) if transpose else tuple(tensor.shape)
    return ir.LazyTensor(
        _Lazy(reader, key, tensor.dtype, transpose),
        dtype=from_torch_dtype(tensor.dtype),
        shape=ir.Shape(shape),
        name=name,
    )


def bind_checkpoint(
    graph_model: ir.Model,
    module: torch.nn.Module,
    eager: torch.nn.Module,
    reader: CheckpointReader,
    provided: Iterable[str] = (),
) -> dict[str, str]:
    """Point every initializer of a meta-traced graph at its checkpoint tensor (lazily),
    or at the eager model's materialized buffer (rotary frequencies and the like).

    ``provided`` names eager parameters whose graph weights a later pass supplies in
    another form (a GPTQ Linear's int4 blocks): they get a placeholder that refuses to
    be read. Returns, for each of those, the graph value its MatMul reads (the
    transposed weight). Raises ``ExportError`` for an initializer with no source: a
    constant the forward pass computes from a weight, which a meta trace cannot hold.
    """
    keys = checkpoint_keys(eager, reader)
    eager_names = {id(t): n for n, t in eager.named_parameters(remove_duplicate=False)}
    for name in provided:
        keys[id(eager.get_parameter(name))] = _PROVIDED + name
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    graph = graph_model.graph
    missing = []
    for name, value in list(graph.initializers.items()):
        tensor = tensors.get(name)
        if tensor is None:
            if value.const_value is not None and not _is_meta(value.const_value):
                continue  # a real constant the exporter lifted
            missing.append(name)
            continue
        key = keys.get(id(tensor))
        if key is not None:
            value.const_value = _lazy(reader, key, tensor, name, transpose=False)
        elif tensor.device.type != "meta":
            value.const_value = _to_ir_tensor(tensor.detach(), name)
        else:
            missing.append(name)
    if missing:
        raise ExportError(
            f"The checkpoint has no tensor for {', '.join(missing[:3])}"
            f"{' and others' if len(missing) > 3 else ''}: this architecture stores or "
            "renames its weights in a way a streamed export cannot read; export it "
            "without --streaming."
        )
    _fold_weight_transposes(graph, tensors, keys, reader)
    return {
        eager_names[id(tensors[name.removesuffix(".T")])]: name
        for name, value in graph.initializers.items()
        if name.endswith(".T")
        and name.removesuffix(".T") in tensors
        and keys.get(id(tensors[name.removesuffix(".T")]), "").startswith(_PROVIDED)
    }


# The key prefix of a weight another pass supplies (``bind_checkpoint``'s ``provided``).
_PROVIDED = "provided:"


def _is_meta(tensor: Any) -> bool:
    raw = getattr(tensor, "raw", None)
    return isinstance(raw, torch.Tensor) and raw.device.type == "meta"


def _fold_weight_transposes(
    graph: ir.Graph,
    tensors: Mapping[str, torch.Tensor],
    keys: Mapping[int, str],
    reader: CheckpointReader,
) -> None:
    """``Transpose(W)`` of a 2-D checkpoint weight -> a lazily transposed initializer
    (what torch.onnx's optimizer would fold, without reading the weight now)."""
    for node in list(graph):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
            continue
        source = node.inputs[0]
        perm = node.attributes.get("perm")
        if (
            source is None
            or not source.is_initializer()
            or source.name not in tensors
            or perm is None
            or list(perm.as_ints()) != [1, 0]
        ):
            continue
        tensor = tensors[source.name]
        key = keys.get(id(tensor))
        if key is None or tensor.dim() != 2:
            continue
        name = f"{source.name}.T"
        if name not in graph.initializers:
            folded = ir.Value(
                name=name,
                shape=ir.Shape((tensor.shape[1], tensor.shape[0])),
                type=ir.TensorType(from_torch_dtype(tensor.dtype)),
                const_value=_lazy(reader, key, tensor, name, transpose=True),
            )
            graph.register_initializer(folded)
        ir.convenience.replace_all_uses_with(node.outputs[0], graph.initializers[name])
        graph.remove(node, safe=True)
        if not source.uses() and source.name in graph.initializers:
            graph.initializers.pop(source.name)

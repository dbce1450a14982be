"""MRA (multi-resolution attention): a BERT-like encoder with block-sparse attention.

Its attention calls three custom CUDA kernels (``index_max``, ``mm_to_sparse``,
``sparse_dense_mm``) that transformers loads from the Hub's kernel repository. Without
them (on CPU, or offline) transformers silently returns zeros for every attention
output: the eager model and a graph traced from it would agree, and both be wrong. So
the graph is traced from the model with ``TorchMraKernels`` installed, the same block
arithmetic written with gather/einsum/scatter, which torch.export traces and every
runtime runs; validation runs the eager model with them too.

``TorchMraKernels`` follows the CUDA source, layouts included (a sparse block is
[key, query]); ``index_max`` keeps the kernel's rounding of row maxima to 1/1000 (it
takes ``atomicMax`` over ints). With every block selected, MRA is exact softmax
attention, which the tests use to check the kernels.

Sequence-length constraints: the attention works on blocks of 32 positions, so the length
is a multiple of 32, and it keeps the ``num_block`` highest-scoring of the
(length / 32)^2 blocks, so (length / 32)^2 >= num_block, where num_block =
min(max_position_embeddings // 32 * block_per_row, (max_position_embeddings // 32)^2):
for the released 512-position checkpoints (block_per_row 4) that is 256 to 512. The
trace and validation lengths are chosen inside that range, from the config.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

from graphport.errors import UnsupportedModelError
from graphport.export.config import ShapeSet, SubGraph
from graphport.export.modalities import TextOnnxConfig
from graphport.models.registry import register

BLOCK = 32  # the kernels' block size (a GPU warp)


class TorchMraKernels:
    """The MRA CUDA kernels in plain torch (shapes as the kernels document them)."""

    @staticmethod
    def index_max(
        index_vals: torch.Tensor, indices: torch.Tensor, a_blocks: int, b_blocks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per query row, the max over the selected blocks of that row's block-row.

        ``index_vals``: [batch, 32, num_block] (each selected block's per-query max);
        returns ``max_vals`` [batch, a_blocks * 32] and ``max_vals_scatter``
        [batch, 32, num_block] (each block's row max, read back per block). Rows no block
        selects keep the kernel's -1e8 / 1000.
        """
        batch, _, _ = index_vals.shape
        rows = torch.arange(BLOCK, device=indices.device)
        target = _row_blocks(indices, b_blocks)[:, None, :] * BLOCK + rows[None, :, None]
        scaled = torch.trunc(index_vals * 1000.0)  # the kernel's (int)(x * 1000)
        start = index_vals.new_full((batch, a_blocks * BLOCK), -1e8)
        buffer = start.scatter_reduce(1, target.flatten(1), scaled.flatten(1), "amax")
        return buffer / 1000.0, buffer.gather(1, target.flatten(1)).view_as(index_vals) / 1000.0

    @staticmethod
    def mm_to_sparse(
        dense_a: torch.Tensor, dense_b: torch.Tensor, indices: torch.Tensor
    ) -> torch.Tensor:
        """Selected blocks of A B^T: [batch, num_block, 32 (b), 32 (a)] from
        [batch, blocks, dim, 32] operands; block k pairs A block k // B blocks with B
        block k % B blocks."""
        b_blocks = dense_b.shape[1]
        a = _blocks(dense_a, _row_blocks(indices, b_blocks))
        b = _blocks(dense_b, _column_blocks(indices, b_blocks))
        return torch.einsum("nkdi,nkdj->nkji", a, b)

    @staticmethod
    def sparse_dense_mm(
        sparse_a: torch.Tensor, indices: torch.Tensor, dense_b: torch.Tensor, a_blocks: int
    ) -> torch.Tensor:
        """Block-sparse times dense: [batch, a_blocks, dim, 32], each selected block's
        ``B_block @ S_block`` summed into its block-row."""
        b_blocks = dense_b.shape[1]
        values = _blocks(dense_b, _column_blocks(indices, b_blocks))
        products = torch.einsum("nkdj,nkji->nkdi", values, sparse_a)
        return _sum_into_block_rows(products, _row_blocks(indices, b_blocks), a_blocks)


def sparse_mask(mask: torch.Tensor, indices: torch.Tensor, block_size: int = BLOCK) -> torch.Tensor:
    """transformers' ``sparse_mask``: each selected block's key mask [batch, num_block, 32]."""
    batch, length = mask.shape
    blocks = mask.reshape(batch, length // block_size, block_size)
    keys = _column_blocks(indices, length // block_size)
    return blocks.gather(1, keys[:, :, None].expand(-1, -1, block_size))


def reduce_sum(
    sparse: torch.Tensor, indices: torch.Tensor, a_blocks: int, b_blocks: int
) -> torch.Tensor:
    """transformers' ``MraReduceSum``: per query, the sum of its selected blocks' rows."""
    batch, _, block_size, _ = sparse.shape
    out = _sum_into_block_rows(sparse.sum(dim=2), _row_blocks(indices, b_blocks), a_blocks)
    return out.reshape(batch, a_blocks * block_size)


def self_attention_forward(
    self: Any, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor]:
    """transformers' ``MraSelfAttention.forward`` without its bare ``mask.squeeze()``.

    That squeeze exports as an ONNX Squeeze of unknown output rank, which OpenVINO's CPU
    plugin cannot compile. ``mask.squeeze().repeat(1, heads, 1)`` followed by the
    reshape to (batch * heads, length) equals ``mask.repeat(heads, 1)`` for every batch
    size (row ``h * batch + b`` holds sample ``b``, as in transformers), so that is used.
    """
    from transformers.models.mra.modeling_mra import mra2_attention

    batch, length, _ = hidden_states.shape
    heads, head_size = self.num_attention_heads, self.attention_head_size

    def split(layer: torch.nn.Module) -> torch.Tensor:
        return layer(hidden_states).view(batch, -1, heads, head_size).transpose(1, 2)

    query, key, value = split(self.query), split(self.key), split(self.value)
    if attention_mask.ndim == 4 and attention_mask.is_floating_point():
        attention_mask = (attention_mask[:, 0, -1, :] == 0).int()  # additive -> 1 = token
    attention_mask = attention_mask.reshape(batch, length).repeat(heads, 1).int()
    if head_size < BLOCK:  # the kernels work on 32-wide heads: pad with zeros
        pad = hidden_states.new_zeros(batch, heads, length, BLOCK - head_size)
        query, key, value = (torch.cat([t, pad], dim=-1) for t in (query, key, value))
    context = mra2_attention(
        query.float(),
        key.float(),
        value.float(),
        attention_mask.float(),
        self.num_block,
        approx_mode=self.approx_mode,
        initial_prior_first_n_blocks=self.initial_prior_first_n_blocks,
        initial_prior_diagonal_n_blocks=self.initial_prior_diagonal_n_blocks,
    )
    context = context[..., :head_size].reshape(batch, heads, length, head_size)
    return (context.permute(0, 2, 1, 3).reshape(batch, length, self.all_head_size),)


# Block counts are symbolic when the sequence axis is dynamic, and the ONNX exporter cannot
# convert ``tensor % count`` or ``tensor // count`` with a symbolic Python count; the count
# is made a tensor first.
def _count(count: int, like: torch.Tensor) -> torch.Tensor:
    return torch.full((), count, dtype=torch.long, device=like.device)


def _row_blocks(indices: torch.Tensor, b_blocks: int) -> torch.Tensor:
    """The query (A) block of each selected block: index // B blocks."""
    return torch.div(indices.long(), _count(b_blocks, indices), rounding_mode="floor")


def _column_blocks(indices: torch.Tensor, b_blocks: int) -> torch.Tensor:
    """The key (B) block of each selected block: index % B blocks."""
    return torch.remainder(indices.long(), _count(b_blocks, indices))


def _sum_into_block_rows(
    per_block: torch.Tensor, rows: torch.Tensor, a_blocks: int
) -> torch.Tensor:
    """Sum each selected block's values into its block-row: [batch, num_block, ...] ->
    [batch, a_blocks, ...].

    This is ``scatter_add`` along the block axis (ONNX ScatterElements), not
    ``index_add`` (ONNX ScatterND): onnxruntime's CPU ScatterND with ``reduction="add"``
    splits the index rows among its intra-op threads and adds without atomics, so two
    threads adding blocks of one block-row race and an update can be lost. The same graph
    then gave different answers run to run (max abs against eager from 1.8e-7 to 4.7e-4 on
    a tiny 512-position model, atol 1e-4). ScatterElements gives each output element to
    one thread, which adds its updates in index order: onnxruntime, OpenVINO and torch
    each return the same bits every run (and onnxruntime at every thread count).
    """
    out = per_block.new_zeros(per_block.shape[0], a_blocks, *per_block.shape[2:])
    index = rows.reshape(*rows.shape, *(1,) * (per_block.ndim - 2)).expand_as(per_block)
    return out.scatter_add(1, index, per_block)


def _blocks(dense: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """``dense[n, block_ids[n, k]]`` for every n, k: [batch, num_block, dim, 32]."""
    index = block_ids[:, :, None, None].expand(-1, -1, *dense.shape[2:])
    return dense.gather(1, index)


@contextlib.contextmanager
def torch_mra_kernels() -> Iterator[None]:
    """Install ``TorchMraKernels`` where transformers' MRA looks for its CUDA kernels, and
    the exportable ``sparse_mask`` and ``reduce_sum`` in place of its own."""
    from transformers.models.mra import modeling_mra

    replaced = {
        (modeling_mra, "mra_cuda_kernel"): TorchMraKernels,
        (modeling_mra, "sparse_mask"): sparse_mask,
        (modeling_mra.MraReduceSum, "operator_call"): staticmethod(reduce_sum),
        (modeling_mra.MraSelfAttention, "forward"): self_attention_forward,
    }
    previous = {key: vars(key[0])[key[1]] for key in replaced}
    try:
        for (owner, name), value in replaced.items():
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name), value in previous.items():
            setattr(owner, name, value)


class MraWithTorchKernels(torch.nn.Module):
    """An MRA model that runs its attention with ``TorchMraKernels``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)  # not training mode, whatever exporters restore

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> Any:
        with torch_mra_kernels():
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )


def sequence_lengths(config: Any) -> list[int]:
    """Every sequence length the config's block selection accepts (see the module doc)."""
    blocks_per_row = config.max_position_embeddings // BLOCK
    num_block = min(blocks_per_row * config.block_per_row, blocks_per_row**2)
    shortest = math.ceil(math.sqrt(num_block))
    return [BLOCK * n for n in range(shortest, blocks_per_row + 1)]


# 128 positions, one block per row: 4 blocks chosen among (length / 32)^2, so lengths 64
# (every block: exact attention), 96 and 128 (sparse) all occur.
_TINY = {"block_per_row": 1}


@register("mra", family="mra", tiny=_TINY)
class MraOnnxConfig(TextOnnxConfig):
    @property
    def profile_ranges(self) -> dict[str, tuple[int, int, int]]:  # type: ignore[override]
        """The sequence range is the config's (see ``sequence_lengths``), not BERT's."""
        lengths = sequence_lengths(self._config)
        middle = lengths[len(lengths) // 2] if lengths else 0
        return {
            **TextOnnxConfig.profile_ranges,
            "sequence": (lengths[0], middle, lengths[-1]) if lengths else (0, 0, 0),
        }

    @property
    def takes_sentences(self) -> bool:
        """Sentences padded to the longest are rarely a multiple of 32 of the right size."""
        return False

    def _lengths(self) -> list[int]:
        lengths = sequence_lengths(self._config)
        if len(lengths) < 3:
            raise UnsupportedModelError(
                f"This MRA config accepts only sequence lengths {lengths}, too few to export "
                "a graph with a dynamic sequence axis and validate it at other lengths; "
                "use a config with more max_position_embeddings or fewer block_per_row."
            )
        return lengths

    def trace_shapes(self) -> ShapeSet:
        lengths = self._lengths()
        return ShapeSet({**self.trace_sizes, "sequence": lengths[len(lengths) // 2]}, "trace")

    def validation_shapes(self) -> list[ShapeSet]:
        lengths = self._lengths()
        return [
            ShapeSet({**sizes, "sequence": length}, f"shape set {i + 1}")
            for i, (sizes, length) in enumerate(
                zip(self.validation_sizes, (lengths[0], lengths[-1]), strict=True)
            )
        ]

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        return [SubGraph("model", MraWithTorchKernels(model), self)]

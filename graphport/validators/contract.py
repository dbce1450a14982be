"""The graph contract: what the export config declares about the graph's names and axes.

``check_contract`` holds the graph to the config (input/output names and order, every
dynamic axis symbolic), each problem a sentence that carries its ``Reason``;
``valid_positions`` and ``intermediate_positions`` read the axes to tell real tokens from
padding, so that comparisons judge only the former.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from graphport.errors import Reason
from graphport.export.config import OnnxConfig
from graphport.manifest import ExportDirectory


class ContractProblem(str):
    """One broken rule of the contract, worded for people, with its ``reason`` as data. A
    ``str``, so the report's ``contract_problems`` keep their JSON form."""

    reason: Reason

    def __new__(cls, text: str, reason: Reason = Reason.GRAPH_CONTRACT) -> ContractProblem:
        problem = super().__new__(cls, text)
        problem.reason = reason
        return problem

    def with_prefix(self, prefix: str) -> ContractProblem:
        """The same problem, named after its graph (``decoder: ...``)."""
        return ContractProblem(prefix + self, self.reason)


def _is_token_aligned(axes: Mapping[int, str]) -> bool:
    """Whether an output's leading axes are the token positions of the attention mask."""
    return "sequence" in axes.values()


def check_contract(
    export_dir: ExportDirectory, config: OnnxConfig, graph: str = "model"
) -> list[ContractProblem]:
    """Names, order and dynamic axes of the graph against the export config."""
    spec = export_dir.manifest.graph(graph)
    problems: list[ContractProblem] = []
    for kind, declared, actual in (
        ("inputs", config.inputs, spec.inputs),
        ("outputs", config.outputs, spec.outputs),
    ):
        names = [t.name for t in actual]
        if names != list(declared):
            problems.append(
                ContractProblem(f"graph {kind} are {names}, the config declares {list(declared)}")
            )
            continue
        for tensor in actual:
            for axis, axis_name in declared[tensor.name].items():
                dim = tensor.shape[axis] if axis < len(tensor.shape) else None
                if isinstance(dim, int):
                    problems.append(
                        ContractProblem(
                            f"axis {axis} ({axis_name}) of {tensor.name} was specialized to "
                            f"{dim} during tracing; it must stay dynamic",
                            Reason.AXIS_SPECIALIZED,
                        )
                    )
    return problems


def valid_positions(
    feeds: Mapping[str, np.ndarray], axes: Mapping[int, str], shape: tuple[int, ...]
) -> np.ndarray | None:
    """Which (batch, position) entries of an output are real tokens, from the attention
    mask; with a KV cache the mask also covers the past, so its last columns are taken."""
    mask = feeds.get("attention_mask")
    if mask is None or not _is_token_aligned(axes) or len(shape) < 2:
        return None
    if mask.ndim != 2 or mask.shape[1] < shape[1]:
        return None
    return mask[:, mask.shape[1] - shape[1] :].astype(bool)


def intermediate_positions(
    feeds: Mapping[str, np.ndarray],
) -> Callable[[tuple[int, ...]], np.ndarray | None]:
    """Which (batch, position) entries of an intermediate value are real tokens: a value
    whose leading axes are the batch and the new positions is masked like an output."""
    mask = feeds.get("attention_mask")
    ids = feeds.get("input_ids")
    new = ids.shape[1] if ids is not None and ids.ndim == 2 else None

    def valid(shape: tuple[int, ...]) -> np.ndarray | None:
        if mask is None or mask.ndim != 2 or len(shape) < 2 or shape[0] != mask.shape[0]:
            return None
        if shape[1] == mask.shape[1]:
            return mask.astype(bool)
        if new is not None and shape[1] == new <= mask.shape[1]:
            return mask[:, mask.shape[1] - new :].astype(bool)
        return None

    return valid

"""Cleanup: constant folding, shape simplification, dead code, duplicate initializers."""

from __future__ import annotations

import logging

import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from graphport.exporters.onnx import optimize_graph

logger = logging.getLogger(__name__)


def _fingerprint(model: ir.Model) -> tuple[int, int, int]:
    return (len(model.graph), len(model.graph.initializers), len(model.functions))


class CleanupPass(ir.passes.InPlacePass):
    """Simplify a graph without changing what it computes.

    Rules, in order:
      1. fold constants and simplify shape computations (onnxscript's optimizer, which also
         inlines local functions and removes dead code; without its approximate no-op
         rules, see ``optimize_graph``);
      2. merge initializers with identical contents;
      3. eliminate common subexpressions and Identity nodes;
      4. drop nodes, functions and opset imports nothing uses.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _fingerprint(model)
        optimize_graph(model)  # rule 1
        common_passes.DeduplicateHashedInitializersPass()(model)  # rule 2
        common_passes.CommonSubexpressionEliminationPass()(model)  # rule 3
        common_passes.IdentityEliminationPass()(model)
        common_passes.RemoveUnusedNodesPass()(model)  # rule 4
        common_passes.RemoveUnusedFunctionsPass()(model)
        common_passes.RemoveUnusedOpsetsPass()(model)
        after = _fingerprint(model)
        logger.debug("cleanup: nodes/initializers/functions %s -> %s", before, after)
        return ir.passes.PassResult(model, modified=after != before)

"""Cleanup: constant folding, shape simplification, dead code, duplicate initializers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import onnx_ir as ir
from onnx_ir.passes import common as common_passes

logger = logging.getLogger(__name__)


def _fingerprint(model: ir.Model) -> tuple[int, int, int]:
    return (len(model.graph), len(model.graph.initializers), len(model.functions))


class CleanupPass(ir.passes.InPlacePass):
    """Simplify a graph without changing what it computes.

    Rules, in order (one onnx-ir pass manager run):
      1. fold constants and simplify shape computations (onnxscript's optimizer, which also
         inlines local functions and removes dead code; without its approximate no-op
         rules, see ``optimize_graph``);
      2. merge initializers with identical contents;
      3. eliminate common subexpressions and Identity nodes;
      4. drop nodes, functions and opset imports nothing uses.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _fingerprint(model)
        passes = ir.passes.PassManager(
            [
                OptimizeGraphPass(),  # rule 1
                common_passes.DeduplicateHashedInitializersPass(),  # rule 2
                common_passes.CommonSubexpressionEliminationPass(),  # rule 3
                common_passes.IdentityEliminationPass(),
                common_passes.RemoveUnusedNodesPass(),  # rule 4
                common_passes.RemoveUnusedFunctionsPass(),
                common_passes.RemoveUnusedOpsetsPass(),
            ]
        )
        passes(model)
        after = _fingerprint(model)
        logger.debug("cleanup: nodes/initializers/functions %s -> %s", before, after)
        # Judged by the graph's size, not by the manager's flag, which also counts an
        # unused opset import dropped alone.
        return ir.passes.PassResult(model, modified=after != before)


class OptimizeGraphPass(ir.passes.InPlacePass):
    """``optimize_graph`` as a pass, so that it runs in a pass manager (onnxscript's
    optimizer is a function, not a pass)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _fingerprint(model)
        optimize_graph(model)
        return ir.passes.PassResult(model, modified=_fingerprint(model) != before)


def _exact_rewrite_rules() -> tuple[Any, ...] | None:
    """onnxscript's default rewrite rules, less its no-op rules that match their constant
    only approximately (None where onnxscript no longer has them where they were).

    Those rules take ``x + c`` for ``x + 0`` (and ``x * c`` for ``x * 1``) when ``c`` is
    within an absolute 1e-8, so ``variance + 1e-8``, the epsilon of an RMSNorm (Helium's
    default), was dropped and a zero vector, such as a padding token's zeroed embedding,
    normalized to NaN, which attention then spread to every position of its row. The
    runtimes' own graph optimizers remove exact no-ops. Dropout removal is exact and kept.
    """
    try:
        from onnxscript.rewriter import _DEFAULT_REWRITE_RULES
        from onnxscript.rewriter.rules.common import _no_op
    except ImportError:
        return None
    kept = {id(_no_op.dropout_zero_rule), id(_no_op.dropout_inference_rule)}
    approximate = {id(rule) for rule in _no_op.rules.rules} - kept
    return tuple(rule for rule in _DEFAULT_REWRITE_RULES if id(rule) not in approximate)


@contextlib.contextmanager
def exact_rewrite_rules() -> Iterator[None]:
    """Within the block, onnxscript's optimizer (the one ``torch.onnx.export(optimize=True)``
    runs) applies ``_exact_rewrite_rules``. onnxscript takes its rule list from a module
    attribute at each call and has no argument for it, hence the swap."""
    rules = _exact_rewrite_rules()
    if rules is None:
        yield
        return
    from onnxscript import rewriter

    saved = rewriter._DEFAULT_REWRITE_RULES
    rewriter._DEFAULT_REWRITE_RULES = rules
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = saved


def optimize_graph(model: ir.Model) -> None:
    """onnxscript's optimizer in place (inlining, constant folding, shape simplification,
    its rewrite rules, dead code, initializer deduplication) with ``_exact_rewrite_rules``."""
    import onnxscript.optimizer

    with exact_rewrite_rules():
        onnxscript.optimizer.optimize(model)

"""Carry the exporter's module scopes onto the nodes a graph pass or quantizer created.

Parity failures are localized to a PyTorch module through the module path every node
carries (``pkg.torch.onnx.name_scopes``, see graphport/validators/localize.py). onnx-ir
passes and onnxscript's rewriter keep a node's metadata, or merge it into a fused node,
but nodes written from scratch (graphport's kernel rewrites, onnxruntime's quantizer)
carry none. No library restores it, so this does, from the graph before the step.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import onnx_ir as ir

logger = logging.getLogger(__name__)

# The node metadata torch.export writes with the module path of each node (a list of the
# dotted paths of the enclosing modules, then the op); kept in saved graphs so parity
# failures can be localized to a module (graphport/validators/localize.py).
MODULE_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def node_modules(node: ir.Node) -> list[str]:
    """A node's enclosing module paths, outermost first (the root and the op dropped)."""
    text = node.metadata_props.get(MODULE_SCOPES_KEY)
    if not text:
        return []
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    if not isinstance(scopes, list):
        return []
    return [s for s in scopes[1:-1] if isinstance(s, str) and s]


def _scope_text(modules: list[str], node: ir.Node) -> str:
    return repr(["", *modules, node.op_type])


class CarryScopesPass(ir.passes.InPlacePass):
    """Give nodes without a module scope the scope of their counterpart in ``before``.

    Rules, in order:
      1. a node that produces a value of the same name as a value of ``before`` takes the
         scope of that value's producer (a rewrite that keeps its output's name computes
         the same value: onnxruntime's quantizer does, so do graphport's kernel rewrites);
      2. a node named like a node of ``before``, or like it plus a suffix (the quantizer
         names ``node_MatMul_7_quant``... after ``node_MatMul_7``), takes that node's
         scope (the longest such name);
      3. a node whose computed inputs all come from nodes of one scope continues that
         module (a bias Add split off a fused MatMul, a Cast after MatMulInteger);
      4. a node whose readers all have scopes takes the part they share (a residual Sum
         split off a fused norm sits in the norm's module; its output stays inside it);
      5. any other node stays without one: it maps to no module, and localization
         ignores it rather than guess.
    """

    def __init__(self, before: ir.Model) -> None:
        super().__init__()
        self.by_value: dict[str, str] = {}
        self.by_node: dict[str, str] = {}
        for node in ir.traversal.RecursiveGraphIterator(before.graph):
            scope = node.metadata_props.get(MODULE_SCOPES_KEY)
            if not scope:
                continue
            if node.name:
                self.by_node[node.name] = scope
            for value in node.outputs:
                if value.name:
                    self.by_value.setdefault(value.name, scope)
        self.carried = 0

    def _scope(self, node: ir.Node) -> str | None:
        for value in node.outputs:  # rule 1
            if value.name in self.by_value:
                return self.by_value[value.name]
        name = node.name or ""
        if name in self.by_node:  # rule 2
            return self.by_node[name]
        prefixes = [n for n in self.by_node if name.startswith(n + "_")]
        return self.by_node[max(prefixes, key=len)] if prefixes else None

    def _set(self, node: ir.Node, scope: str) -> None:
        node.metadata_props[MODULE_SCOPES_KEY] = scope
        self.carried += 1

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes = list(model.graph)  # topologically sorted
        for node in nodes:
            if not node.metadata_props.get(MODULE_SCOPES_KEY):
                scope = self._scope(node)  # rules 1 and 2
                if scope is not None:
                    self._set(node, scope)
        for node in nodes:  # rule 3, producers before readers
            if node.metadata_props.get(MODULE_SCOPES_KEY):
                continue
            producers = [
                value.producer()
                for value in node.inputs
                if value is not None
                and value.producer() is not None
                and value.producer().op_type != "Constant"
            ]
            scopes = {p.metadata_props.get(MODULE_SCOPES_KEY) for p in producers}
            if producers and len(scopes) == 1 and None not in scopes:
                self._set(node, _scope_text(node_modules(producers[0]), node))
        for node in reversed(nodes):  # rule 4, readers before producers
            if node.metadata_props.get(MODULE_SCOPES_KEY):
                continue
            readers = [user for value in node.outputs for user, _ in value.uses()]
            chains = [node_modules(user) for user in readers]
            if not readers or not all(chains):
                continue
            shared = chains[0]
            for chain in chains[1:]:
                common = 0
                while common < min(len(shared), len(chain)) and shared[common] == chain[common]:
                    common += 1
                shared = shared[:common]
            if shared:
                self._set(node, _scope_text(shared, node))
        logger.debug("carried module scopes onto %d nodes", self.carried)
        return ir.passes.PassResult(model, modified=self.carried > 0)


def carry_scopes(before: str | Path, after: str | Path) -> int:
    """Rewrite the graph file ``after`` with scopes carried from ``before``; returns how
    many nodes got one (nothing is rewritten when ``before`` has none)."""
    source = ir.load(before)
    graph_pass = CarryScopesPass(source)
    if not graph_pass.by_node:
        return 0
    model = ir.load(after)
    if graph_pass(model).modified:
        ir.save(model, after)
    return graph_pass.carried

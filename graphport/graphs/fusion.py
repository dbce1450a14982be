"""onnxruntime fusions (attention, skip + layer/RMS norm, bias + GELU, rotary, GQA) with a
report of which expected fusions fired.

The fusions are onnxscript's rewriter rules for torch.export graphs; this pass runs them
and compares the counts with what the architecture should yield, so a fusion that
silently stopped matching (after a transformers or torch upgrade) is reported as data.
The fused graph uses com.microsoft operators: it runs on onnxruntime only.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_ir as ir
from onnxscript.rewriter.ort_fusions._core import fuse_xformers

logger = logging.getLogger(__name__)

# Fusions an architecture family should get, one per layer unless noted.
EXPECTED_FUSIONS: dict[str, tuple[str, ...]] = {
    "bert": ("attention", "skip_layer_normalization", "bias_gelu"),
    "vit": ("skip_layer_normalization",),
    "swin": ("skip_layer_normalization",),
}


@dataclasses.dataclass
class FusionReport:
    counts: dict[str, int]
    expected: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        """Expected fusions that did not fire, with the reason as data."""
        return [name for name in self.expected if not self.counts.get(name)]

    def to_dict(self) -> dict[str, object]:
        fired = {k: v for k, v in self.counts.items() if v}
        return {"fired": fired, "expected": list(self.expected), "missing": self.missing}


class OrtFusionPass(ir.passes.InPlacePass):
    """Fuse transformer subgraphs into onnxruntime's contrib operators.

    Rules:
      1. run onnxscript's onnxruntime fusions (which pre-optimize the graph);
      2. record per-fusion counts against the family's expected fusions in ``report``.
    """

    def __init__(self, family: str = "") -> None:
        super().__init__()
        self.family = family
        self.report = FusionReport({}, EXPECTED_FUSIONS.get(family, ()))

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model, counts = fuse_xformers(model)  # rule 1 (works in place, returns the model)
        self.report = FusionReport(dict(counts), EXPECTED_FUSIONS.get(self.family, ()))  # 2
        if self.report.missing:
            logger.warning("Expected fusions did not fire: %s", ", ".join(self.report.missing))
        return ir.passes.PassResult(model, modified=any(counts.values()))

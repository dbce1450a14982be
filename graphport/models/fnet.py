"""FNet: a BERT-like encoder whose token mixing is a 2-D Fourier transform, not attention.

It has no attention mask at all (its forward takes none: every position, padding
included, is mixed into every other), so its graph takes ``input_ids`` and
``token_type_ids`` only. The Fourier transform traces to ONNX ``DFT``, which onnxruntime
and OpenVINO both run.
"""

from __future__ import annotations

from collections.abc import Mapping

from graphport.export.config import Axes
from graphport.export.modalities import TextOnnxConfig
from graphport.models.registry import register


@register("fnet", family="fnet")
class FNetOnnxConfig(TextOnnxConfig):
    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {name: axes for name, axes in super().inputs.items() if name != "attention_mask"}

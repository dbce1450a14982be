"""Two-tower exports (a dual encoder's ``text`` and ``vision`` graphs, CLAP's ``text`` and
``audio``) as one transformers model.

``RuntimeModelForTwoTowers.forward`` takes the text inputs and the image (or audio) inputs,
runs each tower graph, and returns the eager model's output class (``CLIPOutput`` for
``VisionTextDualEncoderModel``, ``ClapOutput`` for ``ClapModel``), so the zero-shot image
and audio classification pipelines accept it. Its rules:

1. Each tower's feeds are filled as ``RuntimeModel`` fills them (a missing mask is ones,
   token types zeros); inputs the tower graph does not take and eager ignores
   (``is_longer`` of an unfused CLAP) are dropped.
2. The embeddings are L2-normalized and the logits are ``logit_scale.exp()`` times their
   cosine similarities, as eager computes them (CLAP: ``logit_scale_t`` for
   ``logits_per_text``, ``logit_scale_a`` for ``logits_per_audio``).
3. The logit scales are weights the tower graphs do not hold. They are read from the
   source checkpoint the manifest names (only those tensors); where it is gone they fall
   back to the config's ``logit_scale_init_value``, with a warning that the scores (not
   the ranking) may then differ from eager.
4. ``get_text_features`` / ``get_image_features`` / ``get_audio_features`` run one tower
   and return ``BaseModelOutputWithPooling`` with the projected embedding as
   ``pooler_output``, as Transformers 5's feature methods do.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, PretrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes import get_runtime_class
from graphport.runtimes.base import Runtime
from graphport.runtimes.model import IGNORED, RuntimeModel

logger = logging.getLogger(__name__)

# The second tower's graph -> (its embedding, the logits field per other input, its scale).
SECOND_TOWERS = {
    "vision": ("image_embeds", "logits_per_image", "logit_scale"),
    "audio": ("audio_embeds", "logits_per_audio", "logit_scale_a"),
}
TEXT_SCALE = {"vision": "logit_scale", "audio": "logit_scale_t"}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


class RuntimeModelForTwoTowers(RuntimeModel):
    """A two-tower export as one transformers model (rules 1-4)."""

    def __init__(self, config: PretrainedConfig, text: Runtime, other: Runtime) -> None:
        super().__init__(config, text)
        self.second = other.spec.name
        self.other_tower = RuntimeModel(config, other)
        self.embeds, self.logits_name, scale_name = SECOND_TOWERS[self.second]
        scales = logit_scales(self.export_dir, config, {scale_name, TEXT_SCALE[self.second]})
        self.other_scale = scales[scale_name]
        self.text_scale = scales[TEXT_SCALE[self.second]]
        self.output_class = _output_class(self.second)

    @classmethod
    def from_export(
        cls, export_dir: ExportDirectory | str, runtime: str = "onnxruntime", **options: Any
    ) -> RuntimeModelForTwoTowers:
        """Load both tower graphs on ``runtime``."""
        directory = (
            export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
        )
        runtime_class = get_runtime_class(runtime)
        second = next(g.name for g in directory.manifest.graphs if g.name != "text")
        text = runtime_class(directory, graph="text", **options)
        other = runtime_class(directory, graph=second, **options)
        config = AutoConfig.from_pretrained(directory.path, local_files_only=True)
        return cls(config, text, other)

    def _tower(self, tower: RuntimeModel, inputs: dict[str, Any], output: str) -> torch.Tensor:
        taken = {n: v for n, v in inputs.items() if n in tower.graph_inputs or n in TEXT_INPUTS}
        if not any(n in taken for n in tower.graph_inputs):
            raise UsageError(
                f"The {tower.runtime.spec.name} tower takes {', '.join(tower.graph_inputs)}; "
                "none were passed."
            )
        feeds = tower._feeds((), taken)
        return torch.from_numpy(tower.runtime.run(feeds)[output])

    def get_text_features(self, **inputs: Any) -> BaseModelOutputWithPooling:
        text = {n: v for n, v in inputs.items() if n in TEXT_INPUTS}
        return BaseModelOutputWithPooling(pooler_output=self._tower(self, text, "text_embeds"))

    def _other_features(self, **inputs: Any) -> BaseModelOutputWithPooling:
        other = {
            n: v for n, v in inputs.items() if n in self.other_tower.graph_inputs and v is not None
        }
        embeds = self._tower(self.other_tower, other, self.embeds)
        return BaseModelOutputWithPooling(pooler_output=embeds)

    def get_image_features(self, **inputs: Any) -> BaseModelOutputWithPooling:
        return self._other_features(**inputs)

    def get_audio_features(self, **inputs: Any) -> BaseModelOutputWithPooling:
        return self._other_features(**inputs)

    def forward(self, **inputs: Any) -> ModelOutput:
        if inputs.get("return_loss"):
            raise UsageError(
                "graphport models compute no loss; compute it from the returned logits."
            )
        known = {*TEXT_INPUTS, *self.other_tower.graph_inputs, "is_longer", "return_loss"}
        unknown = [n for n, v in inputs.items() if v is not None and n not in known | IGNORED]
        if unknown:
            raise UsageError(
                f"The two-tower model takes {', '.join(self.graph_inputs)} and "
                f"{', '.join(self.other_tower.graph_inputs)}; {', '.join(unknown)} is not one."
            )
        text = self.get_text_features(**inputs).pooler_output
        other = self._other_features(**inputs).pooler_output
        text = text / text.norm(p=2, dim=-1, keepdim=True)
        other = other / other.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = text @ other.T * math.exp(self.text_scale)
        logits_per_other = other @ text.T * math.exp(self.other_scale)
        return self.output_class(
            **{
                self.logits_name: logits_per_other,
                "logits_per_text": logits_per_text,
                "text_embeds": text,
                self.embeds: other,
            }
        )


def _output_class(second: str) -> type[ModelOutput]:
    if second == "audio":
        from transformers.models.clap.modeling_clap import ClapOutput

        return ClapOutput
    from transformers.models.clip.modeling_clip import CLIPOutput

    return CLIPOutput


def logit_scales(
    directory: ExportDirectory, config: PretrainedConfig, names: set[str]
) -> dict[str, float]:
    """The (log) logit scales ``names`` from the source checkpoint's weights (rule 3)."""
    source = directory.manifest.source.get("path")
    found = _read_scalars(Path(source), names) if source else {}
    missing = names - set(found)
    if missing:
        initial = float(getattr(config, "logit_scale_init_value", math.log(1 / 0.07)))
        logger.warning(
            "%s: the source checkpoint %s is not readable, so its %s is taken from the "
            "config's logit_scale_init_value (%.4f); a trained model's scores (not their "
            "order) then differ from eager. Keep the checkpoint beside the export to fix it.",
            directory.path,
            source,
            ", ".join(sorted(missing)),
            initial,
        )
        found.update(dict.fromkeys(missing, initial))
    return found


def _read_scalars(checkpoint: Path, names: set[str]) -> dict[str, float]:
    """Only the tensors ``names`` of a checkpoint directory's weights, as floats."""
    if not checkpoint.is_dir():
        return {}
    index = checkpoint / "model.safetensors.index.json"
    files = [checkpoint / "model.safetensors"]
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = sorted({checkpoint / weight_map[n] for n in names if n in weight_map})
    found: dict[str, float] = {}
    for file in files:
        if not file.is_file():
            continue
        from safetensors import safe_open

        with safe_open(str(file), framework="np") as weights:
            for name in names & set(weights.keys()):
                found[name] = float(np.asarray(weights.get_tensor(name)).reshape(-1)[0])
    bin_file = checkpoint / "pytorch_model.bin"
    if not found and bin_file.is_file():
        state = torch.load(bin_file, map_location="cpu", weights_only=True, mmap=True)
        found = {n: float(state[n].reshape(-1)[0]) for n in names if n in state}
    return found

"""Decoding engines that run a whole generation loop in native code: onnxruntime-genai on
an ONNX decoder export (its ``genai_config.json``, export/genai_config.py) and
OpenVINO GenAI's ``LLMPipeline`` on a stateful IR export (export/openvino.py).

``graphport generate`` picks one where it can do what is asked (api/generate.py);
transformers' ``generate()`` on the runtime does everything else. Rules:

1. An engine takes token rows and returns each row's new tokens, a finished row padded
   with the pad token to the longest (as ``generate()`` pads it).
2. Rows of equal length decode as one batch; rows of different lengths decode as one
   batch per length, unpadded. onnxruntime-genai 0.18's ``append_tokens`` treats every
   token of a padded batch as real (its attention mask is all ones, its positions count
   the padding), so a left-padded row would attend its padding and be decoded from the
   wrong positions; without padding the positions are eager's.
3. Settings are transformers' names (``do_sample``, ``temperature``, ``top_k`` with 0 for
   off, ``top_p``, ``repetition_penalty``); ``seed`` seeds the engine's own sampler, so
   sampled tokens are reproducible per engine but not equal to torch's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from itertools import groupby
from typing import Any

import numpy as np

from graphport.errors import RuntimeUnavailableError
from graphport.export.genai_config import GENAI_CONFIG
from graphport.manifest import ExportDirectory
from graphport.runtimes.openvino import INFERENCE_PRECISION

ENGINE_EXTRAS = {"onnxruntime-genai": "genai", "openvino-genai": ""}
ENGINE_MODULES = {"onnxruntime-genai": "onnxruntime_genai", "openvino-genai": "openvino_genai"}


@dataclasses.dataclass
class Settings:
    """What an engine is asked to do (rule 3)."""

    max_new_tokens: int
    pad_token_id: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None


def engine_installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(ENGINE_MODULES[name]) is not None


class Engine:
    """A loaded engine; ``generate`` decodes rows by equal-length batches (rules 1-2)."""

    name = ""

    def __init__(self, directory: ExportDirectory) -> None:
        if not engine_installed(self.name):
            extra = ENGINE_EXTRAS[self.name]
            how = f"pip install graphport[{extra}]" if extra else f"pip install {self.name}"
            raise RuntimeUnavailableError(f"{self.name} is not installed; {how}.")
        self.directory = directory

    def generate(self, rows: Sequence[Sequence[int]], settings: Settings) -> list[list[int]]:
        new: dict[int, list[int]] = {}
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        for _, group in groupby(order, key=lambda i: len(rows[i])):
            indices = list(group)
            batch = np.array([list(rows[i]) for i in indices], dtype=np.int32)
            for i, tokens in zip(indices, self._generate(batch, settings), strict=True):
                new[i] = [int(t) for t in tokens]
        width = max((len(t) for t in new.values()), default=0)
        pad = settings.pad_token_id
        return [new[i] + [pad] * (width - len(new[i])) for i in range(len(rows))]

    def _generate(self, batch: np.ndarray, settings: Settings) -> list[Sequence[int]]:
        raise NotImplementedError


class OnnxruntimeGenaiEngine(Engine):
    """``onnxruntime_genai.Model(OUT)`` and a ``Generator`` per batch."""

    name = "onnxruntime-genai"

    def __init__(
        self,
        directory: ExportDirectory,
        pad_token_id: int | None = None,
        eos_token_id: Sequence[int] | None = None,
    ) -> None:
        super().__init__(directory)
        import onnxruntime_genai as og

        genai_config = json.loads((directory.path / GENAI_CONFIG).read_text(encoding="utf-8"))
        self.vocab_size = int(genai_config["model"]["vocab_size"])
        config = og.Config(str(directory.path))
        # The generation config as it is now (as generate() reads it), not as exported;
        # finished rows padded as generate() pads them. End ids the logits cannot hold
        # are left out (genai refuses them; transformers ignores them).
        overlay: dict[str, Any] = {}
        if pad_token_id is not None:
            overlay["pad_token_id"] = int(pad_token_id)
        eos = [int(i) for i in eos_token_id or () if 0 <= int(i) < self.vocab_size]
        if eos:
            overlay["eos_token_id"] = eos
        if overlay:
            config.overlay(json.dumps({"model": overlay}))
        self.model = og.Model(config)

    def _generate(self, batch: np.ndarray, settings: Settings) -> list[Sequence[int]]:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        options: dict[str, Any] = {
            "batch_size": batch.shape[0],
            "max_length": batch.shape[1] + settings.max_new_tokens,
            "do_sample": settings.do_sample,
            "num_beams": 1,
        }
        if settings.do_sample:
            options.update(
                temperature=settings.temperature,
                top_k=min(settings.top_k or 0, self.vocab_size),  # 0: off, as in transformers
                top_p=settings.top_p,
            )
        if settings.repetition_penalty != 1.0:
            options["repetition_penalty"] = settings.repetition_penalty
        if settings.seed is not None:
            options["random_seed"] = settings.seed
        params.set_search_options(**options)
        generator = og.Generator(self.model, params)
        generator.append_tokens(batch)
        # Each step's tokens, not the sequences: genai leaves the step that ends the last
        # row out of them, its end token included.
        steps = []
        while not generator.is_done():
            generator.generate_next_token()
            steps.append(generator.get_next_tokens().copy())
        return [list(row) for row in np.array(steps).T] if steps else [[]] * len(batch)


class OpenvinoGenaiEngine(Engine):
    """``openvino_genai.LLMPipeline(OUT, "CPU")`` on tokenized batches, computing in the
    export's own precision as graphport's OpenVINO runtime does (not OpenVINO's bf16
    default: on SmolLM2-135M int4 that agreed with the f32 tokens on 28 % of 512 greedy
    tokens, and decoded slower)."""

    name = "openvino-genai"

    def __init__(self, directory: ExportDirectory, device: str = "CPU") -> None:
        super().__init__(directory)
        import openvino_genai

        precision = INFERENCE_PRECISION[directory.manifest.dtype]
        self.pipeline = openvino_genai.LLMPipeline(
            str(directory.path), device, INFERENCE_PRECISION_HINT=precision
        )

    def _generate(self, batch: np.ndarray, settings: Settings) -> list[Sequence[int]]:
        import openvino as ov
        import openvino_genai

        config = self.pipeline.get_generation_config()
        config.max_new_tokens = settings.max_new_tokens
        config.do_sample = settings.do_sample
        config.num_beams = 1
        config.repetition_penalty = settings.repetition_penalty
        if settings.do_sample:
            config.temperature = settings.temperature
            config.top_k = settings.top_k or 0
            config.top_p = settings.top_p
        if settings.seed is not None:
            config.rng_seed = settings.seed
        ids = batch.astype(np.int64)
        inputs = openvino_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
        return [list(tokens) for tokens in self.pipeline.generate(inputs, config).tokens]


ENGINES: dict[str, type[Engine]] = {
    OnnxruntimeGenaiEngine.name: OnnxruntimeGenaiEngine,
    OpenvinoGenaiEngine.name: OpenvinoGenaiEngine,
}

"""Encoder-decoder exports (graphs ``encoder`` and ``decoder``) as transformers models.

``RuntimeModelForSeq2SeqLM`` is a parameter-less ``PreTrainedModel`` with
``GenerationMixin`` over the two graphs of a text2text, image-to-text or speech
recognition export, so transformers' own ``generate()`` (greedy, beam search, sampling,
streamers) runs on the runtime. Its rules, on top of ``RuntimeModel``'s:

1. ``get_encoder()`` returns a module whose forward runs the ``encoder`` graph on the
   encoder inputs it takes (``input_ids`` + ``attention_mask``, ``input_features`` or
   ``pixel_values``) and returns a ``BaseModelOutput``; ``generate()`` calls it once,
   and beam search expands its output, which is what the decoder graph is fed.
2. ``forward`` takes ``encoder_outputs`` (or the encoder inputs, then runs the encoder)
   and ``decoder_input_ids``, feeds the decoder graph ``encoder_hidden_states``,
   ``encoder_attention_mask`` (the encoder's ``attention_mask``; ones when left out) when
   the graph has it, and the self-attention past, and returns ``Seq2SeqLMOutput``.
3. The past is an ``EncoderDecoderCache``: its self-attention layers hold the runtime's
   ``present`` arrays (``torch.from_numpy``, no copy), fed back as ``.numpy()`` views, so
   beam search reorders them with transformers' cache code. Its cross-attention cache stays
   empty: the decoder graph recomputes cross-attention from ``encoder_hidden_states``.
4. Whisper exports get ``WhisperGenerationMixin`` too, so ``generate()`` detects the
   language, builds the task and no-timestamps prompt and suppresses tokens exactly as
   eager Whisper does (its convolution strides, fixed by the architecture, are declared).
"""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    DynamicCache,
    EncoderDecoderCache,
    GenerationMixin,
    PretrainedConfig,
)
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.utils import ModelOutput

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes import get_runtime_class
from graphport.runtimes.base import Runtime
from graphport.runtimes.model import (
    IGNORED,
    MAIN_INPUTS,
    PAST,
    RuntimeModel,
    _generation_config,
    _store_present,
    empty_past,
    to_array,
)

logger = logging.getLogger(__name__)


class _NotSupportedFilter(logging.Filter):
    """Drops the pipelines' "The model 'RuntimeModel...' is not supported" error (they check
    the class name against eager head names; a runtime model serves any of them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("The model 'RuntimeModelFor")


logging.getLogger("transformers.pipelines.base").addFilter(_NotSupportedFilter())


class RuntimeEncoder(torch.nn.Module):
    """The ``encoder`` graph as the module ``get_encoder()`` returns (rule 1)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        inputs = list(runtime.input_names)
        self.main_input_name = next((n for n in MAIN_INPUTS if n in inputs), inputs[0])

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        input_features: Any = None,
        pixel_values: Any = None,
        flattened_patches: Any = None,
        output_attentions: Any = None,
        output_hidden_states: Any = None,
        return_dict: Any = None,
    ) -> BaseModelOutput:
        # Named parameters, not **kwargs: generate() passes the encoder only the inputs
        # its forward names (pix2struct's encoder takes flattened_patches).
        given = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "input_features": input_features,
            "pixel_values": pixel_values,
            "flattened_patches": flattened_patches,
        }
        feeds = {n: to_array(v) for n, v in given.items() if v is not None}
        if "attention_mask" not in self.runtime.input_names:
            # Whisper's and image encoders ignore a mask (eager does too).
            feeds.pop("attention_mask", None)
        elif "attention_mask" not in feeds and "input_ids" in feeds:
            feeds["attention_mask"] = np.ones(feeds["input_ids"].shape, dtype=np.int64)
        results = self.runtime.run(feeds)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(results["last_hidden_state"]))


class RuntimeModelForSeq2SeqLM(RuntimeModel, GenerationMixin):
    """An encoder-decoder export as a transformers seq2seq LM (rules 1-3)."""

    generate = GenerationMixin.generate

    def __init__(self, config: PretrainedConfig, encoder: Runtime, decoder: Runtime) -> None:
        super().__init__(config, decoder)
        self.encoder = RuntimeEncoder(encoder)
        self.main_input_name = self.encoder.main_input_name
        self.output_class = Seq2SeqLMOutput
        self.kv_cache = self.export_dir.manifest.kv_cache
        self.num_layers = int(self.kv_cache["num_layers"])
        self.takes_encoder_mask = "encoder_attention_mask" in decoder.input_names
        self.generation_config = _generation_config(self.export_dir, config)

    @classmethod
    def from_export(
        cls, export_dir: ExportDirectory | str, runtime: str = "onnxruntime", **options: Any
    ) -> RuntimeModelForSeq2SeqLM:
        """Load the export's encoder and decoder graphs on ``runtime``."""
        directory = (
            export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
        )
        contract = directory.manifest.kv_cache or {}
        runtime_class = get_runtime_class(runtime)
        encoder = runtime_class(
            directory, graph=contract.get("encoder_graph", "encoder"), **options
        )
        decoder = runtime_class(directory, graph=contract.get("graph", "decoder"), **options)
        config = AutoConfig.from_pretrained(directory.path, local_files_only=True)
        return cls(config, encoder, decoder)

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def get_encoder(self, *args: Any, **kwargs: Any) -> RuntimeEncoder:
        return self.encoder

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        decoder_input_ids: Any = None,
        encoder_outputs: Any = None,
        cache: EncoderDecoderCache | DynamicCache | None = None,
        input_features: Any = None,
        pixel_values: Any = None,
        decoder_attention_mask: Any = None,
        flattened_patches: Any = None,
        **inputs: Any,
    ) -> ModelOutput:
        cache = inputs.pop("past_key_values", None) if cache is None else cache
        for name, value in inputs.items():
            if name == "labels" and value is not None:
                raise UsageError(
                    "graphport models compute no loss (the graph has no labels input); "
                    "compute it from the returned logits."
                )
            if value is not None and name not in IGNORED:
                raise UsageError(
                    f"The encoder-decoder takes no {name}; its encoder takes "
                    f"{', '.join(self.encoder.runtime.input_names)} and its decoder "
                    "decoder_input_ids."
                )
        if decoder_input_ids is None:
            raise UsageError(
                "An encoder-decoder forward needs decoder_input_ids (the graph computes no "
                "labels shift); pass them, or call generate()."
            )
        if decoder_attention_mask is not None and not to_array(decoder_attention_mask).all():
            raise UsageError(
                "The decoder graph takes no decoder_attention_mask, so it cannot mask decoder "
                "padding; pass unpadded decoder_input_ids (generate() does)."
            )
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                input_features=input_features,
                pixel_values=pixel_values,
                flattened_patches=flattened_patches,
            )
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
        hidden = to_array(encoder_outputs[0])
        ids = to_array(decoder_input_ids).astype(np.int64)
        feeds = {"decoder_input_ids": ids, "encoder_hidden_states": hidden}
        if self.takes_encoder_mask:
            mask = to_array(attention_mask) if attention_mask is not None else None
            feeds["encoder_attention_mask"] = (
                mask if mask is not None else np.ones(hidden.shape[:2], dtype=np.int64)
            )
        self_attention = (
            cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        )
        past_length = self_attention.get_seq_length() if self_attention is not None else 0
        feeds.update(self._past(self_attention, past_length, len(ids)))
        results = self.runtime.run(feeds)
        if past_length == 0:  # a fresh cache of plain layers, as in RuntimeModelForCausalLM
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        elif not isinstance(cache, EncoderDecoderCache):
            cache = EncoderDecoderCache(cache, DynamicCache())
        _store_present(cache.self_attention_cache, results, self.num_layers)
        return Seq2SeqLMOutput(
            logits=torch.from_numpy(results["logits"]),
            cache=cache,
            encoder_last_hidden_state=encoder_outputs[0],
        )

    def _past(self, cache: Any, past_length: int, batch: int) -> dict[str, np.ndarray]:
        if past_length == 0:  # per layer where the contract lists layers
            return empty_past(self.kv_cache, batch)
        feeds = {}
        for i, layer in enumerate(cache.layers[: self.num_layers]):
            feeds[PAST[0].format(i)] = to_array(layer.keys)
            feeds[PAST[1].format(i)] = to_array(layer.values)
        return feeds


@functools.cache  # one class, built on first use (transformers' Whisper code is large)
def _whisper_class() -> type[RuntimeModelForSeq2SeqLM]:
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    class RuntimeModelForSpeechSeq2Seq(WhisperGenerationMixin, RuntimeModelForSeq2SeqLM):
        """A Whisper export: ``generate()`` is eager Whisper's (rule 4)."""

        generate = WhisperGenerationMixin.generate

        def __init__(self, config: PretrainedConfig, encoder: Runtime, decoder: Runtime) -> None:
            super().__init__(config, encoder, decoder)
            # WhisperGenerationMixin reads the encoder's stride from its two convolutions
            # (1 and 2 in every Whisper) and config from ``self.model``.
            convolutions = SimpleNamespace(
                conv1=SimpleNamespace(stride=(1,)), conv2=SimpleNamespace(stride=(2,))
            )
            self.model = SimpleNamespace(encoder=convolutions, config=config)

        def _postprocess_outputs(self, seek_outputs: Any, *args: Any, **kwargs: Any) -> Any:
            # With return_dict_in_generate, Whisper splits the cache per row, cross-attention
            # layers included; this cache keeps none (rule 3), so it is left out.
            if isinstance(seek_outputs, ModelOutput) and seek_outputs.get("cache") is not None:
                kept = {k: v for k, v in seek_outputs.items() if k != "cache"}
                seek_outputs = type(seek_outputs)(**kept)
            return super()._postprocess_outputs(seek_outputs, *args, **kwargs)

    return RuntimeModelForSpeechSeq2Seq


def seq2seq_class(directory: ExportDirectory) -> type[RuntimeModelForSeq2SeqLM]:
    """The class for an encoder-decoder export (Whisper gets eager Whisper's generate)."""
    if directory.manifest.source.get("model_type") == "whisper":
        return _whisper_class()
    return RuntimeModelForSeq2SeqLM

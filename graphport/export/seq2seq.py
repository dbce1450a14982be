"""The export config of an encoder-decoder, split into an encoder and a decoder graph.

``OnnxSeq2SeqConfigWithPast`` describes the whole model and, narrowed with ``for_graph``,
each graph: the encoder run once, the decoder run per step on its self-attention cache.
A family that exports feature-extraction gets the bare model as one graph instead.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from graphport.errors import ExportError, Reason, UnsupportedModelError, UsageError
from graphport.export.cache_layout import CacheLayout, UnsupportedCacheError
from graphport.export.config import Axes, OnnxConfig, ShapeSet, SubGraph
from graphport.export.decoder import OnnxConfigWithPast
from graphport.export.kv_cache import (
    Seq2SeqDecoderWithCache,
    Seq2SeqEncoder,
    past_names,
    present_names,
)
from graphport.export.tasks import Task


class OnnxSeq2SeqConfigWithPast(OnnxConfigWithPast):
    """An encoder-decoder, exported as two graphs that generation runs in turn.

    * ``encoder``: the family's ``encoder_inputs`` -> ``last_hidden_state``, run once.
    * ``decoder``: ``decoder_input_ids``, ``encoder_hidden_states``, ``encoder_attention_mask``
      (when ``uses_encoder_attention_mask``) and, with ``use_past``, the self-attention
      past -> ``logits`` and ``present.{i}.key/value``. Cross-attention keys and values are
      recomputed from ``encoder_hidden_states`` at each step, so the first step (an empty
      past) and every later one go through the same graph. The decoder takes no attention
      mask of its own: ``generate()`` gives it none (every row's decoder tokens are real).

    ``graph`` selects which graph an instance describes (``for_graph``); the config of the
    whole model (``graph`` None) takes the encoder's inputs, as generation is fed. Axis
    sizes are shared by both graphs: ``batch``, ``encoder_sequence`` (the encoder output's
    length, free in the decoder graph even where the encoder fixes it), ``decoder_sequence``
    and ``past_decoder_sequence``.

    The decoder's cache is sized by a dry run of the eager model (``read_cache_layout``,
    at ``sub_graphs``), not by config names: its encoder on the family's dummy encoder
    input, then the model on three decoder tokens, whose ``EncoderDecoderCache`` gives the
    layer count, KV heads and head dims of both halves (``CacheLayout.read_encoder_decoder``).
    A later command takes the layout the manifest records (``adopt_kv_cache_contract``).

    A family that lists ``feature-extraction`` also exports the bare model (``T5Model``,
    ``BartModel``...) as one graph, ``model``, with no KV cache: the encoder's inputs,
    ``decoder_input_ids`` and, where the model takes it, ``decoder_attention_mask`` ->
    ``last_hidden_state`` (the decoder's) and ``encoder_last_hidden_state``, as the model
    returns them. Its axes are ``batch``, ``sequence`` (the encoder's) and
    ``decoder_sequence``, as for any other model's feature extraction.
    """

    tasks = (Task.TEXT2TEXT_GENERATION,)
    uses_encoder_attention_mask: ClassVar[bool] = True
    trace_sizes: ClassVar[dict[str, int]] = {
        "batch": 2,
        "encoder_sequence": 9,
        "decoder_sequence": 7,
        "past_decoder_sequence": 5,
    }
    # A multi-token first step on an empty past, and one token on a longer past.
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {"batch": 1, "encoder_sequence": 13, "decoder_sequence": 4, "past_decoder_sequence": 0},
        {"batch": 3, "encoder_sequence": 29, "decoder_sequence": 1, "past_decoder_sequence": 11},
    )
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        "batch": (1, 1, 16),
        "encoder_sequence": (1, 128, 512),
        "decoder_sequence": (1, 1, 128),
        "past_decoder_sequence": (0, 64, 512),
        "sequence": (1, 128, 512),  # the bare model's encoder input
    }
    # The bare model's sizes (feature-extraction): its decoder is fed whole, with no past.
    model_trace_sizes: ClassVar[dict[str, int]] = {
        "batch": 2,
        "sequence": 9,
        "decoder_sequence": 7,
    }
    model_validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {"batch": 1, "sequence": 13, "decoder_sequence": 4},
        {"batch": 3, "sequence": 29, "decoder_sequence": 11},
    )
    # The encoder input of the dry run that reads the cache layout.
    dry_run_sizes: ClassVar[dict[str, int]] = {"batch": 1, "encoder_sequence": 4}
    graph: str | None = None

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.FEATURE_EXTRACTION,
        patching_specs: list[Any] | None = None,
        use_past: bool = False,
    ) -> None:
        super().__init__(config, task, patching_specs, use_past)
        if self.is_bare_model and self.use_past:
            raise UnsupportedModelError(
                f"{type(self).__name__} exports feature-extraction without a KV cache, as "
                "one graph the decoder is fed whole; drop '-with-past', or export "
                "text2text-generation for a decoder with a cache."
            )

    @property
    def is_bare_model(self) -> bool:
        """Whether this config exports the bare model as one graph (feature-extraction)."""
        return self.task is Task.FEATURE_EXTRACTION

    def graph_configs(self) -> dict[str, OnnxConfig]:
        if self.is_bare_model:
            return {"model": self}
        return {graph: self.for_graph(graph) for graph in ("encoder", "decoder")}

    def for_graph(self, graph: str) -> OnnxSeq2SeqConfigWithPast:
        """This config narrowed to one graph (``encoder`` or ``decoder``)."""
        if graph not in ("encoder", "decoder"):
            raise ValueError(f"an encoder-decoder has no graph {graph!r}")
        part = copy.copy(self)
        part.graph = graph
        return part

    # ---- what a family declares ---------------------------------------------------------

    @property
    def encoder_inputs(self) -> Mapping[str, Axes]:
        """The encoder graph's inputs (tokens by default)."""
        return {
            "input_ids": {0: "batch", 1: "encoder_sequence"},
            "attention_mask": {0: "batch", 1: "encoder_sequence"},
        }

    @property
    def encoder_output_axes(self) -> Axes:
        """Axes of ``last_hidden_state``; its length is fixed where the input size is."""
        return {0: "batch", 1: "encoder_sequence"}

    @property
    def encoder_hidden_size(self) -> int:
        """Width of ``last_hidden_state`` (before any projection to the decoder's width)."""
        return int(self._config.hidden_size)

    def dummy_encoder_input(
        self, name: str, sizes: Mapping[str, int], rng: np.random.Generator
    ) -> np.ndarray:
        """Token ids past the special tokens, and a mask that right-pads rows after the
        first (as tokenizers pad encoder inputs)."""
        shape = (sizes["batch"], sizes["encoder_sequence"])
        if name == "input_ids":
            return self._random_ids(shape, rng)
        if name == "attention_mask":
            return _right_padding_mask(shape, rng)
        raise NotImplementedError(f"{type(self).__name__} cannot make a dummy {name!r}.")

    # ---- the decoder: its vocabulary, and its cache from the dry run ---------------------

    @property
    def decoder_config(self) -> Any:
        """The decoder's config (its vocabulary): a composite model's ``decoder`` sub-config,
        else the model's own (``get_text_config`` would rebuild T5's or BART's from
        defaults)."""
        from transformers import PretrainedConfig

        decoder = getattr(self._config, "decoder", None)
        return decoder if isinstance(decoder, PretrainedConfig) else self._config

    @property
    def num_layers(self) -> int:
        return self._layout().num_layers

    @property
    def num_kv_heads(self) -> int:
        return self._layout().layers[0].num_kv_heads

    @property
    def head_dim(self) -> int:
        return self._layout().layers[0].head_dim

    def _layout(self) -> CacheLayout:
        if self.cache_layout is None:
            raise ExportError(
                f"The decoder cache of model type {self._config.model_type!r} is sized by a dry "
                "run of its model, and none has run yet; call sub_graphs(model) first (or "
                "adopt_kv_cache_contract with an export's manifest entry)."
            )
        return self.cache_layout

    def read_cache_layout(self, model: torch.nn.Module) -> None:
        """Both halves of the model's ``EncoderDecoderCache``, from one dry run on the
        family's dummy encoder input; a model without one cannot be exported to generate."""
        feeds = self.for_graph("encoder").dummy_inputs(ShapeSet(dict(self.dry_run_sizes)))
        try:
            self.cache_layout = CacheLayout.read_encoder_decoder(model, feeds)
        except UnsupportedCacheError as e:
            # Not an UnsupportedCacheError: without its cache the export could not generate,
            # so there is no export without one to fall back to.
            raise UnsupportedModelError(str(e)) from e

    @property
    def vocab_size(self) -> int:
        return int(self.decoder_config.vocab_size)

    @property
    def uses_position_ids(self) -> bool:
        return False

    # ---- graph contracts -----------------------------------------------------------------

    @property
    def decoder_inputs(self) -> Mapping[str, Axes]:
        inputs: dict[str, Axes] = {
            "decoder_input_ids": {0: "batch", 1: "decoder_sequence"},
            "encoder_hidden_states": {0: "batch", 1: "encoder_sequence"},
        }
        if self.uses_encoder_attention_mask:
            inputs["encoder_attention_mask"] = {0: "batch", 1: "encoder_sequence"}
        if self.use_past:
            for name in past_names(self.num_layers):
                inputs[name] = {0: "batch", 2: "past_decoder_sequence"}
        return inputs

    @property
    def model_inputs(self) -> Mapping[str, Axes]:
        """The bare model's inputs: the encoder's, then the decoder's tokens and their mask."""
        inputs = {name: _as_sequence(axes) for name, axes in self.encoder_inputs.items()}
        inputs["decoder_input_ids"] = {0: "batch", 1: "decoder_sequence"}
        if "decoder_attention_mask" in self.model_parameters:
            inputs["decoder_attention_mask"] = {0: "batch", 1: "decoder_sequence"}
        return inputs

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if self.is_bare_model:
            return self.model_inputs
        if self.graph == "decoder":
            return self.decoder_inputs
        return self.encoder_inputs

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.is_bare_model:
            return {
                "last_hidden_state": {0: "batch", 1: "decoder_sequence"},
                "encoder_last_hidden_state": _as_sequence(self.encoder_output_axes),
            }
        if self.graph == "encoder":
            return {"last_hidden_state": dict(self.encoder_output_axes)}
        outputs: dict[str, Axes] = {"logits": {0: "batch", 1: "decoder_sequence"}}
        if self.use_past and self.graph == "decoder":
            for name in present_names(self.num_layers):
                outputs[name] = {0: "batch", 2: "total_decoder_sequence"}
        return outputs

    @property
    def takes_sentences(self) -> bool:
        """Tokenized sentences feed the encoder graph of a text model, nothing else."""
        return self.modality == "text" and self.graph == "encoder"

    def trace_shapes(self) -> ShapeSet:
        sizes = self.model_trace_sizes if self.is_bare_model else self.trace_sizes
        return ShapeSet(dict(sizes), "trace")

    def validation_shapes(self) -> list[ShapeSet]:
        sizes = self.model_validation_sizes if self.is_bare_model else self.validation_sizes
        return [ShapeSet(dict(s), f"shape set {i + 1}") for i, s in enumerate(sizes)]

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(self.dummy_inputs(ShapeSet(sizes))[name].shape)

    def dummy_inputs(self, shapes: ShapeSet, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded inputs of this config's graph at the given axis sizes."""
        rng = np.random.default_rng(seed)
        sizes = shapes.sizes
        if self.is_bare_model:
            feeds = self._dummy_model_inputs(sizes, rng)
        elif self.graph != "decoder":
            feeds = {name: self.dummy_encoder_input(name, sizes, rng) for name in self.inputs}
        else:
            feeds = self._dummy_decoder_inputs(sizes, rng)
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in feeds.items()}

    def _dummy_model_inputs(
        self, sizes: Mapping[str, int], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """The family's encoder inputs at ``sequence``, random decoder tokens, and a decoder
        mask that right-pads rows after the first (as padded labels are masked)."""
        encoder_sizes = {**sizes, "encoder_sequence": sizes["sequence"]}
        feeds = {
            name: self.dummy_encoder_input(name, encoder_sizes, rng) for name in self.encoder_inputs
        }
        decoder = (sizes["batch"], sizes["decoder_sequence"])
        feeds["decoder_input_ids"] = self._random_ids(decoder, rng)
        if "decoder_attention_mask" in self.inputs:
            feeds["decoder_attention_mask"] = _right_padding_mask(decoder, rng)
        return feeds

    def _dummy_decoder_inputs(
        self, sizes: Mapping[str, int], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        batch, encoder_length = sizes["batch"], sizes["encoder_sequence"]
        feeds = {
            "decoder_input_ids": self._random_ids((batch, sizes["decoder_sequence"]), rng),
            "encoder_hidden_states": rng.standard_normal(
                (batch, encoder_length, self.encoder_hidden_size), dtype=np.float32
            ),
        }
        if self.uses_encoder_attention_mask:
            feeds["encoder_attention_mask"] = _right_padding_mask((batch, encoder_length), rng)
        past = sizes.get("past_decoder_sequence", 0)
        for name in self.decoder_inputs:
            if name.startswith("past_key_values."):
                layer = self._layout().layers[int(name.split(".")[1])]
                shape = layer.shape(batch, past, value=name.endswith(".value"))
                feeds[name] = rng.standard_normal(shape, dtype=np.float32)
        return feeds

    def _random_ids(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        low = min(5, self.vocab_size - 1)
        return rng.integers(low, self.vocab_size, size=shape, dtype=np.int64)

    def kv_cache_contract(self) -> dict[str, Any] | None:
        contract = super().kv_cache_contract()
        if contract is None:
            return None
        contract.update(
            {
                "graph": "decoder",
                "encoder_graph": "encoder",
                "encoder_attention_mask": self.uses_encoder_attention_mask,
                "cross_attention": "recomputed from encoder_hidden_states at every step "
                "(not cached)",
            }
        )
        return contract

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        """Encoder inputs generation is validated on: one alone, and three of different
        lengths right-padded into one batch, as a tokenizer pads an encoder's input."""
        rng = np.random.default_rng(seed)
        pad = getattr(self._config, "pad_token_id", None) or 0
        cases = []
        for label, lengths in (("single input", (9,)), ("padded batch of 3", (7, 3, 12))):
            width = max(lengths)
            ids = np.full((len(lengths), width), pad, dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, length in enumerate(lengths):
                ids[row, :length] = self._random_ids((length,), rng)
                mask[row, :length] = 1
            cases.append((label, {"input_ids": ids, "attention_mask": mask}))
        return cases

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        if self.is_bare_model:
            return [SubGraph("model", model, self)]
        if self.use_past:
            _check_decoder_start(model)
            self.read_cache_layout(model)
        encoder, decoder = self.for_graph("encoder"), self.for_graph("decoder")
        layers = self.num_layers if self.use_past else 0
        return [
            SubGraph("encoder", Seq2SeqEncoder(model, list(encoder.inputs)), encoder),
            SubGraph(
                "decoder", Seq2SeqDecoderWithCache(model, list(decoder.inputs), layers), decoder
            ),
        ]


def _check_decoder_start(model: torch.nn.Module) -> None:
    """Refuse, before anything is written, a checkpoint whose decoder generate() cannot
    start (transformers needs a decoder start or BOS token in the generation config)."""
    generation = getattr(model, "generation_config", None)
    names = ("decoder_start_token_id", "bos_token_id")
    if all(getattr(generation, name, None) is None for name in names):
        raise UsageError(
            f"The checkpoint's config names no {' or '.join(names)}, so generate() cannot "
            "start its decoder; set decoder_start_token_id in config.json (T5-style models "
            "start from their pad token) and export again.",
            reason=Reason.CONFIG_INCOMPLETE,
        )


def _as_sequence(axes: Axes) -> Axes:
    """An encoder's axes with ``encoder_sequence`` named ``sequence`` (the bare model's)."""
    return {i: "sequence" if name == "encoder_sequence" else name for i, name in axes.items()}


def _right_padding_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Row 0 full, the others right-padded by up to half their length."""
    mask = np.ones(shape, dtype=np.int64)
    for row in range(1, shape[0]):
        mask[row, shape[1] - int(rng.integers(0, shape[1] // 2 + 1)) :] = 0
    return mask

"""Graph modules for decoders with a KV cache: flat tensors in, flat tensors out.

Transformers models take their cache as a ``Cache`` object and return one; a graph takes
and returns plain tensors. ``CausalLMWithCache`` rebuilds a ``DynamicCache`` from the
``past_key_values.{i}.key/value`` inputs, runs the model, and returns ``logits`` followed by
``present.{i}.key/value`` (past and new positions concatenated, the layout transformers
keeps: batch, kv heads, positions, head dim).

The first generation step feeds an empty past (zero positions) through the same graph,
so no runtime needs a second "without past" graph or an If node to choose between them.

Given a ``CacheLayout`` (read from the model's own cache), the cache is rebuilt layer by
layer as transformers builds it: a sliding-window layer keeps and returns only its last
``sliding_window - 1`` positions, as ``DynamicSlidingWindowLayer`` does. Its mask sizes are
taken from the tensors' shapes instead of from Python comparisons on its length, so one
traced graph serves a window not yet full and a full one.

Encoder-decoders are two graphs: ``Seq2SeqEncoder`` (encoder inputs -> ``last_hidden_state``)
and ``Seq2SeqDecoderWithCache``, whose cache is the decoder's self-attention only. Its
cross-attention keys and values are recomputed from ``encoder_hidden_states`` at every step
(an ``EncoderDecoderCache`` with an empty cross-attention half makes the model compute
them): one decoder graph serves every step, and a runtime carries one kind of cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, EncoderDecoderCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
from transformers.modeling_outputs import BaseModelOutput

from graphport.export.cache_layout import (
    CacheLayout,
    cache_argument,
    decoder_cache,
    output_cache,
)

KEY = "past_key_values.{}.key"
VALUE = "past_key_values.{}.value"
PRESENT_KEY = "present.{}.key"
PRESENT_VALUE = "present.{}.value"
LAYOUT = ("batch", "kv_heads", "sequence", "head_dim")


def past_names(num_layers: int) -> list[str]:
    return [name.format(i) for i in range(num_layers) for name in (KEY, VALUE)]


def present_names(num_layers: int) -> list[str]:
    return [name.format(i) for i in range(num_layers) for name in (PRESENT_KEY, PRESENT_VALUE)]


def cache_layers(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers cache object."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class _WithCache(torch.nn.Module):
    """A positional wrapper of ``model`` whose inputs include the past of ``num_layers``
    layers and whose outputs are the logits and the present of each layer."""

    positional = True

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str], num_layers: int) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.num_layers = num_layers
        self.cache_argument = cache_argument(model)
        # A wrapper starts in training mode; an exporter that restores modes recursively
        # (the TorchScript fallback) would then switch dropout on in the wrapped model.
        self.train(model.training)

    def past(self, named: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (key, value) past of every layer, taken out of ``named``."""
        return [
            (named.pop(KEY.format(i)), named.pop(VALUE.format(i))) for i in range(self.num_layers)
        ]

    @staticmethod
    def outputs(logits: torch.Tensor, cache: object) -> dict[str, torch.Tensor]:
        result = {"logits": logits}
        for i, (key, value) in enumerate(cache_layers(cache)):
            result[PRESENT_KEY.format(i)] = key
            result[PRESENT_VALUE.format(i)] = value
        return result


class _PastLayer(DynamicLayer):
    """A full layer holding a given past (``DynamicLayer`` after its first update)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.device, self.dtype = keys.device, keys.dtype
        self.is_initialized = True


class _WindowPastLayer(DynamicSlidingWindowLayer):
    """A sliding-window layer holding the last ``keys.shape[-2]`` of ``seen`` positions.

    ``update`` is transformers' own (it keeps the last ``sliding_window - 1`` positions).
    The mask sizes follow from the shapes: the keys attended are the past held plus the
    new ones, starting ``seen - held`` positions in, which equals transformers' rule for a
    window not yet full (everything held) and a full one (``sliding_window - 1`` held),
    without a branch on the length that tracing would have to specialize.
    """

    def __init__(
        self, sliding_window: int, keys: torch.Tensor, values: torch.Tensor, seen: int
    ) -> None:
        super().__init__(sliding_window=sliding_window)
        self.keys, self.values = keys, values
        self.device, self.dtype = keys.device, keys.dtype
        self._sliding_window_tensor = self._sliding_window_tensor.to(self.device)
        self.is_initialized = True
        self.cumulative_length = seen
        self._held = keys.shape[-2]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._held + query_length, self.cumulative_length - self._held


def layered_cache(
    past: Sequence[tuple[torch.Tensor, torch.Tensor]], layout: CacheLayout, seen: int
) -> DynamicCache:
    """A ``DynamicCache`` of ``layout``'s layer kinds holding ``past``; ``seen`` is the
    number of positions before the new tokens (what a sliding layer no longer holds
    included)."""
    layers: list[DynamicLayer] = []
    for shape, (keys, values) in zip(layout.layers, past, strict=True):
        if shape.sliding_window is None:
            layers.append(_PastLayer(keys, values))
        else:
            layers.append(_WindowPastLayer(shape.sliding_window, keys, values, seen))
    cache = DynamicCache()
    cache.layers = layers
    cache.layer_class_to_replicate = None
    return cache


class CausalLMWithCache(_WithCache):
    """``forward(*inputs)`` in ``input_names`` order -> ``{logits, present.{i}.key/value}``.

    Positional, because graph input names such as ``past_key_values.0.key`` are not Python
    identifiers; the export config gives the order. With a ``layout``, each layer's cache
    is of the kind the model's own cache has (see ``layered_cache``); without one, every
    layer keeps every position.
    """

    head_output = "logits"  # the model output returned first (named logits)

    def __init__(
        self,
        model: torch.nn.Module,
        input_names: Sequence[str],
        num_layers: int,
        layout: CacheLayout | None = None,
    ) -> None:
        super().__init__(model, input_names, num_layers)
        self.layout = layout

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        named = dict(zip(self.input_names, inputs, strict=True))
        past = self.past(named)
        if self.layout is None:
            cache = DynamicCache(ddp_cache_data=past)
        else:
            seen = named["attention_mask"].shape[-1] - named["input_ids"].shape[-1]
            cache = layered_cache(past, self.layout, seen)
        output = self.model(**named, **{self.cache_argument: cache}, use_cache=True)
        head = getattr(output, self.head_output)
        return self.outputs(head, decoder_cache(output_cache(output)))


class Seq2SeqEncoder(torch.nn.Module):
    """``forward(*inputs)`` in ``input_names`` order -> ``{last_hidden_state}``: the encoder
    of an encoder-decoder alone, as generation runs it once per input.

    Positional like the decoder, so torch.export sees a fixed signature whichever inputs
    the encoder takes (tokens, log-mel features, pixels).
    """

    positional = True

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.encoder = model.get_encoder()
        self.input_names = list(input_names)
        self.train(model.training)  # see _WithCache

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        named = dict(zip(self.input_names, inputs, strict=True))
        return {"last_hidden_state": self.encoder(**named).last_hidden_state}


class Seq2SeqDecoderWithCache(_WithCache):
    """``forward(*inputs)`` in ``input_names`` order -> ``{logits, present.{i}.key/value}``.

    The inputs are ``decoder_input_ids``, ``encoder_hidden_states`` (the encoder graph's
    output), ``encoder_attention_mask`` when the model masks its encoder, and, with
    ``num_layers`` > 0, the self-attention past. The full model's forward is called with
    the encoder output given, so whatever it does between encoder and decoder (a vision
    encoder-decoder's projection to the decoder's width) stays in this graph.
    """

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        named = dict(zip(self.input_names, inputs, strict=True))
        kwargs: dict[str, object] = {
            "decoder_input_ids": named["decoder_input_ids"],
            "encoder_outputs": BaseModelOutput(last_hidden_state=named["encoder_hidden_states"]),
        }
        if "encoder_attention_mask" in named:
            kwargs["attention_mask"] = named["encoder_attention_mask"]
        if not self.num_layers:
            return {"logits": self.model(**kwargs, use_cache=False).logits}
        # The cross-attention half starts empty, so every step recomputes it.
        cache = EncoderDecoderCache(DynamicCache(ddp_cache_data=self.past(named)), DynamicCache())
        output = self.model(**kwargs, **{self.cache_argument: cache}, use_cache=True)
        return self.outputs(output.logits, output_cache(output).self_attention_cache)

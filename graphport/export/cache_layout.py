"""The KV-cache layout of a causal LM or an encoder-decoder, read from the cache its eager
model returns.

Configs name their sizes in many ways (``num_key_value_heads``, ``n_head_kv``, per-layer
lists...), and some layers keep less than the whole past: transformers' ``DynamicCache``
holds a ``DynamicSlidingWindowLayer`` (the last ``sliding_window - 1`` positions) for a
sliding-window layer and a ``DynamicLayer`` (every position) for a global one. So the
layout is not read from config names: the model runs once on a few tokens with
``use_cache=True`` (``CacheLayout.read``) and each layer of the cache it returns gives its
kind, its number of KV heads and its head dim.

An encoder-decoder returns an ``EncoderDecoderCache``: ``CacheLayout.read_encoder_decoder``
runs the model once on the encoder inputs it is given and three decoder tokens, and reads
the self-attention half (the decoder graph's past) and the cross-attention half (recorded,
though the decoder graph recomputes it from the encoder's output at every step).

Only layers that hold plain (batch, kv heads, positions, head dim) keys and values can be
a graph's past; a cache of any other kind (recurrent or linear-attention states, quantized
or offloaded layers) is refused with ``UnsupportedCacheError``, naming the layer kind.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from graphport.errors import Reason, UnsupportedModelError

logger = logging.getLogger(__name__)

# The axis names of a layer's past and present positions.
FULL_PAST = "past_sequence"
FULL_PRESENT = "total_sequence"
SLIDING_PAST = "sliding_past_sequence"
SLIDING_PRESENT = "sliding_present_sequence"

# The dry run's prompt length: more than one token (a one-token prompt could hide a layer
# that keeps nothing), fewer than any sliding window keeps.
DRY_RUN_TOKENS = 3


class UnsupportedCacheError(UnsupportedModelError):
    """The model's cache is not one a graph can take and return as past/present tensors."""

    reason = Reason.CACHE_NOT_CARRIED


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One layer's cache: KV heads, head dim (the values' when it differs from the keys',
    as in multi-head latent attention), and the sliding window (None: global) of a layer
    that keeps only the last ``sliding_window - 1`` positions."""

    num_kv_heads: int
    head_dim: int
    sliding_window: int | None = None
    value_head_dim: int | None = None

    def shape(self, batch: int, positions: int, value: bool = False) -> tuple[int, int, int, int]:
        dim = self.value_head_dim if value and self.value_head_dim is not None else self.head_dim
        return (batch, self.num_kv_heads, positions, dim)

    @property
    def keeps(self) -> int | None:
        """The most positions the layer's cache holds (None: all)."""
        return None if self.sliding_window is None else self.sliding_window - 1


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """Every layer's cache shape; ``cross_layers`` is an encoder-decoder's cross-attention
    half (empty for a causal LM), ``layers`` its self-attention half."""

    layers: tuple[LayerShape, ...]
    cross_layers: tuple[LayerShape, ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def uniform(self) -> bool:
        """Whether every layer keeps every position at one size for keys and values (the
        families' case, which the manifest records without a per-layer list)."""
        first = self.layers[0]
        plain = first.sliding_window is None and first.value_head_dim is None
        return plain and all(layer == first for layer in self.layers)

    @property
    def windows(self) -> list[int]:
        return sorted({la.sliding_window for la in self.layers if la.sliding_window is not None})

    def past_axis(self, index: int) -> str:
        return self._axis(index, FULL_PAST, SLIDING_PAST)

    def present_axis(self, index: int) -> str:
        return self._axis(index, FULL_PRESENT, SLIDING_PRESENT)

    def _axis(self, index: int, full: str, sliding: str) -> str:
        window = self.layers[index].sliding_window
        if window is None:
            return full
        # Layers with different windows keep different lengths: an axis per window.
        return sliding if len(self.windows) == 1 else f"{sliding}_{window}"

    def past_length(self, index: int, sizes: Mapping[str, int]) -> int:
        """Layer ``index``'s past positions at the axis sizes: ``sizes`` may give its axis
        explicitly (tracing does), else it is the past a generation would hold."""
        axis = self.past_axis(index)
        if axis in sizes:
            return int(sizes[axis])
        keeps = self.layers[index].keeps
        past = int(sizes["past_sequence"])
        return past if keeps is None else min(past, keeps)

    def contract(self) -> dict[str, Any]:
        """The manifest's kv_cache entries: the first layer's sizes, as the families record
        them, and where layers differ or slide, every layer's."""
        first = self.layers[0]
        contract: dict[str, Any] = {
            "num_layers": self.num_layers,
            "num_kv_heads": first.num_kv_heads,
            "head_dim": first.head_dim,
        }
        if not self.uniform:
            contract["layers"] = [_entry(layer) for layer in self.layers]
            if self.windows:
                contract["sliding_window"] = (
                    "a layer with a sliding_window keeps its last sliding_window - 1 positions: "
                    "its past and present are that long at most"
                )
        if self.cross_layers:
            contract["cross_attention_layers"] = [_entry(layer) for layer in self.cross_layers]
        return contract

    @classmethod
    def from_contract(cls, contract: Mapping[str, Any]) -> CacheLayout:
        """The layout a manifest's kv_cache entry records."""
        cross = tuple(LayerShape(**layer) for layer in contract.get("cross_attention_layers", ()))
        if contract.get("layers"):
            return cls(tuple(LayerShape(**layer) for layer in contract["layers"]), cross)
        layer = LayerShape(int(contract["num_kv_heads"]), int(contract["head_dim"]))
        return cls((layer,) * int(contract["num_layers"]), cross)

    @classmethod
    def read(cls, model: torch.nn.Module, input_ids: Sequence[int] | None = None) -> CacheLayout:
        """Run ``model`` once with ``use_cache=True`` and read the layout off its cache."""
        ids = list(input_ids or ())[:DRY_RUN_TOKENS] or [min(5, _vocab_size(model) - 1)] * 3
        tokens = torch.tensor([ids], dtype=torch.long)
        try:
            with torch.no_grad():
                output = model(
                    input_ids=tokens, attention_mask=torch.ones_like(tokens), use_cache=True
                )
            cache = decoder_cache(output_cache(output))
        except Exception as e:
            raise UnsupportedCacheError(
                f"{type(model).__name__} returns no KV cache on a dry run with use_cache=True "
                f"({_first_line(e)}), so it cannot be exported with one; export it without "
                "-with-past."
            ) from e
        return cls(tuple(_layer_shape(model, i, layer, len(ids)) for i, layer in _layers(cache)))

    @classmethod
    def read_encoder_decoder(
        cls, model: torch.nn.Module, encoder_inputs: Mapping[str, torch.Tensor]
    ) -> CacheLayout:
        """Run ``model``'s encoder on ``encoder_inputs`` (one row), then the model on its
        ``last_hidden_state`` alone and three decoder tokens with ``use_cache=True``, as the
        decoder graph runs it, and read both halves of the ``EncoderDecoderCache`` it
        returns. A second step feeds two more tokens on that cache: the decoder graph takes
        several new tokens on a past (ProphetNet's decoder takes one at most)."""
        from transformers import EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        decoder_ids = torch.full((1, DRY_RUN_TOKENS), min(5, _vocab_size(model) - 1))
        try:
            with torch.no_grad():
                encoded = model.get_encoder()(**encoder_inputs)[0]
                # What the decoder graph is fed: the encoder graph's one output.
                kwargs: dict[str, Any] = {"encoder_outputs": BaseModelOutput(encoded)}
                if "attention_mask" in encoder_inputs:
                    kwargs["attention_mask"] = encoder_inputs["attention_mask"]
                cache = output_cache(model(**kwargs, decoder_input_ids=decoder_ids, use_cache=True))
                if not isinstance(cache, EncoderDecoderCache):
                    raise UnsupportedCacheError(
                        f"{type(model).__name__} returns a {type(cache).__name__} as its cache, "
                        "not an EncoderDecoderCache of self- and cross-attention layers, so "
                        "graphport cannot make it the decoder graph's past."
                    )
                # Read before the second step extends the cache.
                layout = cls._of_encoder_decoder(model, cache, int(encoded.shape[1]))
                more = {"decoder_input_ids": decoder_ids[:, :2], cache_argument(model): cache}
                model(**kwargs, **more, use_cache=True)
        except UnsupportedCacheError:
            raise
        except Exception as e:
            raise UnsupportedCacheError(
                f"{type(model).__name__} fails on a dry run of its decoder (three tokens, then "
                "two more on their cache, fed the encoder's last_hidden_state, use_cache=True) "
                f"with {_first_line(e)}, so graphport cannot export its decoder with a KV cache."
            ) from e
        return layout

    @classmethod
    def _of_encoder_decoder(
        cls, model: torch.nn.Module, cache: Any, encoder_positions: int
    ) -> CacheLayout:
        return cls(
            tuple(
                _layer_shape(model, i, layer, DRY_RUN_TOKENS)
                for i, layer in _layers(cache.self_attention_cache)
            ),
            tuple(
                _layer_shape(model, i, layer, encoder_positions)
                for i, layer in _layers(cache.cross_attention_cache)
            ),
        )


def cache_argument(model: torch.nn.Module) -> str:
    """The keyword the model's forward takes its cache by (``cache`` since Transformers 5,
    ``past_key_values`` before)."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def output_cache(output: object) -> object:
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else None
        if value is not None:
            return value
    raise ValueError("the model returned no cache; was it called with use_cache=True?")


def decoder_cache(cache: object) -> object:
    """The self-attention half of an ``EncoderDecoderCache`` whose cross-attention half
    holds nothing (a decoder-only head of an encoder family, such as Megatron-BERT's, keeps
    its cache in one), else ``cache`` itself."""
    from transformers import EncoderDecoderCache

    if isinstance(cache, EncoderDecoderCache) and cache.cross_attention_cache.get_seq_length() == 0:
        return cache.self_attention_cache
    return cache


def _entry(layer: LayerShape) -> dict[str, int]:
    return {k: v for k, v in dataclasses.asdict(layer).items() if v is not None}


def _layers(cache: Any) -> list[tuple[int, Any]]:
    from transformers import Cache

    if not isinstance(cache, Cache) or not getattr(cache, "layers", None):
        raise UnsupportedCacheError(
            f"The model returns a {type(cache).__name__} as its cache, not a transformers "
            "Cache of layers, so graphport cannot make it a graph's past; export it without "
            "-with-past."
        )
    return list(enumerate(cache.layers))


def _layer_shape(model: torch.nn.Module, index: int, layer: Any, tokens: int) -> LayerShape:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    kind = type(layer)
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    plain = kind in (DynamicLayer, DynamicSlidingWindowLayer)
    shaped = (
        isinstance(keys, torch.Tensor)
        and isinstance(values, torch.Tensor)
        and keys.dim() == 4
        and keys.shape[:2] == values.shape[:2]
        and keys.shape[2] == values.shape[2] == tokens
    )
    if not (plain and shaped):
        what = f"a {kind.__name__}" + ("" if plain else " (not a plain key/value layer)")
        raise UnsupportedCacheError(
            f"Layer {index} of {type(model).__name__}'s cache is {what}, which graphport cannot "
            "carry as (batch, kv heads, positions, head dim) past tensors; export it without "
            "-with-past."
        )
    window = getattr(layer, "sliding_window", None) if layer.is_sliding else None
    value_dim = int(values.shape[3]) if values.shape[3] != keys.shape[3] else None
    return LayerShape(
        int(keys.shape[1]), int(keys.shape[3]), int(window) if window else None, value_dim
    )


def _vocab_size(model: torch.nn.Module) -> int:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "num_embeddings"):
        return int(embeddings.num_embeddings)
    return int(getattr(model.config.get_text_config(), "vocab_size", 8))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]

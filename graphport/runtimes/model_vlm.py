"""An image-text-to-text export (the ``vision``, ``embed`` and ``decoder`` graphs of
graphport/export/vlm.py) as one transformers model that generates.

``RuntimeModelForImageTextToText`` is a ``RuntimeModelForCausalLM`` whose main graph is
the decoder; ``generate()`` is transformers' own (greedy, sampling, beam search), and
``transformers.pipeline("image-text-to-text", model=..., processor=...)`` accepts it. Its
rules, beside those of the causal LM (graphport/runtimes/model.py, rules 4-5):

1. ``forward`` takes what the processor returns (``input_ids``, ``attention_mask``,
   ``pixel_values``) or ``inputs_embeds``. The token ids go through the ``embed`` graph;
   where ``pixel_values`` are given (generate() passes them on the first step only), the
   ``vision`` graph's features replace the image tokens' embeddings in order, as eager's
   ``masked_scatter`` does. Image tokens without as many features (or features without
   their tokens) are refused in one sentence.
2. A prompt without images never runs the vision graph (text-only prompts).
3. ``attention_mask`` defaults to ones over past and new positions, ``position_ids`` to
   the mask's running count, as ``generate()`` builds them.
4. Pixels of (batch, images, channels, height, width), as Idefics3's processor pads
   prompts with fewer images by all-zero images, are flattened to one image axis without
   that padding, as eager's ``get_image_features`` does; a ``pixel_attention_mask`` goes
   with them (ones where none is given).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import AutoConfig, DynamicCache, PretrainedConfig
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import ModelOutput

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes import get_runtime_class
from graphport.runtimes.base import Runtime
from graphport.runtimes.model import (
    RuntimeModelForCausalLM,
    _store_present,
    positions_from_mask,
    to_array,
)


class RuntimeModelForImageTextToText(RuntimeModelForCausalLM):
    """A vision-language export as a transformers model that generates (rules 1-3)."""

    main_input_name = "input_ids"

    def __init__(
        self, config: PretrainedConfig, decoder: Runtime, embed: Runtime, vision: Runtime
    ) -> None:
        super().__init__(config, decoder)
        self.main_input_name = "input_ids"  # what generate() starts from, as eager's
        self.input_modalities = ("image", "text")
        self.output_class = CausalLMOutputWithPast
        self.embed, self.vision = embed, vision
        self.image_token_id = int(self.kv_cache["image_token_id"])
        self.shares_buffer = False  # the decoder takes embeddings, not one token per row
        text = config.get_text_config()
        self.max_positions = getattr(text, "max_position_embeddings", None) or self.max_positions

    @classmethod
    def from_export(
        cls, export_dir: ExportDirectory | str, runtime: str = "onnxruntime", **options: Any
    ) -> RuntimeModelForImageTextToText:
        """Load the decoder, embedding and vision graphs on ``runtime``."""
        directory = (
            export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
        )
        contract = directory.manifest.kv_cache or {}
        runtime_class = get_runtime_class(runtime)
        graphs = [contract.get(k) for k in ("graph", "embed_graph", "vision_graph")]
        adapters = [runtime_class(directory, graph=graph, **options) for graph in graphs]
        config = AutoConfig.from_pretrained(directory.path, local_files_only=True)
        return cls(config, *adapters)

    def get_input_embeddings(self) -> None:
        return None

    def embed_tokens(self, input_ids: Any, pixels: dict[str, Any] | None = None) -> np.ndarray:
        """The prompt's embeddings with the images' features in place (rules 1-2)."""
        ids = to_array(input_ids).astype(np.int64)
        embeds = np.array(self.embed.run({"input_ids": ids})["inputs_embeds"])
        places = ids == self.image_token_id
        if not pixels:
            return embeds
        feeds = vision_feeds(pixels, self.vision.input_names)
        images = len(feeds["pixel_values"])
        features = self.vision.run(feeds)["image_features"] if images else embeds[:0]
        features = features.reshape(-1, embeds.shape[-1])
        if int(places.sum()) != len(features):
            raise UsageError(
                f"The prompt has {int(places.sum())} image tokens, but its {images} "
                f"image(s) give {len(features)} features; pass as many images as the "
                "prompt has image placeholders (the processor expands each into its tokens)."
            )
        embeds[places] = features.astype(embeds.dtype)
        return embeds

    def forward(
        self,
        input_ids: Any = None,
        pixel_values: Any = None,
        attention_mask: Any = None,
        pixel_attention_mask: Any = None,  # named, so generate() passes Idefics3's on
        position_ids: Any = None,
        cache: DynamicCache | None = None,
        inputs_embeds: Any = None,
        **kwargs: Any,
    ) -> ModelOutput:
        cache = kwargs.pop("past_key_values", None) if cache is None else cache
        pixels = {"pixel_values": pixel_values} if pixel_values is not None else {}
        if pixels and pixel_attention_mask is not None:
            pixels["pixel_attention_mask"] = pixel_attention_mask
        if inputs_embeds is None:
            if input_ids is None:
                raise UsageError("Pass input_ids (or inputs_embeds) to the model.")
            embeds = self.embed_tokens(input_ids, pixels)
        else:
            embeds = to_array(inputs_embeds).astype(np.float32)
        past_length = cache.get_seq_length() if cache is not None else 0
        batch, length = embeds.shape[:2]
        feeds = self._feeds((), {"inputs_embeds": embeds, **kwargs}, past_length)
        mask = to_array(attention_mask) if attention_mask is not None else None
        if mask is None:
            mask = np.ones((batch, past_length + length), dtype=np.int64)
        feeds["attention_mask"] = mask.astype(np.int64)
        if position_ids is None:
            feeds["position_ids"] = positions_from_mask(feeds["attention_mask"], length)
        else:
            feeds["position_ids"] = to_array(position_ids).astype(np.int64)
        feeds.update(self._past(cache, past_length, batch))
        results = self.runtime.run(feeds)
        if past_length == 0:
            cache = DynamicCache()
        _store_present(cache, results, self.num_layers, self.windows, past_length + length)
        return self._wrap(results, cache=cache)


def vision_feeds(pixels: dict[str, Any], names: list[str]) -> dict[str, np.ndarray]:
    """The vision graph's feeds (rule 4): pixels of (batch, images, ...) flattened to one
    image axis without the all-zero padding images, a pixel mask likewise (all ones where
    none was given)."""
    values = to_array(pixels["pixel_values"]).astype(np.float32)
    mask = pixels.get("pixel_attention_mask")
    mask = to_array(mask) if mask is not None else None
    if values.ndim == 5:
        values = values.reshape(-1, *values.shape[2:])
        mask = mask.reshape(-1, *mask.shape[2:]) if mask is not None else None
        real = values.reshape(len(values), -1).any(axis=1)
        values, mask = values[real], (mask[real] if mask is not None else None)
    feeds = {"pixel_values": values}
    if "pixel_attention_mask" in names:
        shape = (values.shape[0], *values.shape[2:])
        feeds["pixel_attention_mask"] = (
            mask.astype(np.int64) if mask is not None else np.ones(shape, dtype=np.int64)
        )
    return feeds

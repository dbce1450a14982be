"""The export config of a vision-language model (image-text-to-text), as three graphs.

A VLM generates text from images and text; transformers' ``generate()`` runs it as a
decoder whose first step has the image features put in place of the prompt's image
tokens. ``ImageTextOnnxConfig`` exports it as the graphs that step and every later one
need (the split optimum-intel writes for OpenVINO GenAI's ``VLMPipeline``, under other
names):

* ``vision``: ``pixel_values`` (image, channels, height, width), and the pixel mask a
  family takes (Idefics3's ``pixel_attention_mask``), -> ``image_features`` (image, image
  tokens, hidden): the vision tower and the projector, as the model's
  ``get_image_features`` runs them. Validation feeds images padded as a processor pads
  them (bottom and right, mask 0), so a graph that ignored its mask would fail.
* ``embed``: ``input_ids`` -> ``inputs_embeds``: the language model's token embeddings.
* ``decoder``: ``inputs_embeds``, ``attention_mask``, ``position_ids`` and the past
  (``past_key_values.{i}.key/value``) -> ``logits`` and ``present.{i}.key/value``: the
  whole model called with ``inputs_embeds`` and no pixels, so its language model and head
  run as in eager. Its cache is the decoder-only contract (graphport.export.decoder),
  read from a dry run of the model on text.

Putting the features in place (``inputs_embeds[input_ids == image_token_id] =
image_features``, the ``masked_scatter`` of eager) is left to the runtime model
(graphport/runtimes/model_vlm.py): it is one indexing step, and no graph then depends on
how many images a prompt has.

A family registers its config with ``register_image_text`` (graphport/models/llava.py);
the registry offers image-text-to-text for exactly those model types, beside whatever
the model type exports otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import DynamicCache

from graphport.export.cache_layout import decoder_cache, output_cache
from graphport.export.config import Axes, OnnxConfig, ShapeSet, SubGraph
from graphport.export.decoder import OnnxConfigWithPast
from graphport.export.kv_cache import (
    CausalLMWithCache,
    layered_cache,
    past_names,
    present_names,
)
from graphport.export.tasks import Task

GRAPHS = ("vision", "embed", "decoder")

_IMAGE_TEXT_CONFIGS: dict[str, type[ImageTextOnnxConfig]] = {}


def register_image_text(
    *model_types: str,
) -> Callable[[type[ImageTextOnnxConfig]], type[ImageTextOnnxConfig]]:
    """Register the image-text-to-text export config of ``model_types``."""

    def wrap(cls: type[ImageTextOnnxConfig]) -> type[ImageTextOnnxConfig]:
        for model_type in model_types:
            if model_type in _IMAGE_TEXT_CONFIGS:
                raise ValueError(f"model type {model_type!r} has two image-text configs")
            _IMAGE_TEXT_CONFIGS[model_type] = cls
        return cls

    return wrap


def image_text_config(model_type: str) -> type[ImageTextOnnxConfig] | None:
    """The image-text-to-text export config of ``model_type`` (None: not exportable)."""
    return _IMAGE_TEXT_CONFIGS.get(model_type)


# ---- graph modules --------------------------------------------------------------------------


class ImageFeatures(torch.nn.Module):
    """``forward(*inputs)`` -> ``{image_features}``: the config's ``image_features`` call."""

    positional = True

    def __init__(self, model: torch.nn.Module, config: ImageTextOnnxConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.input_names = list(config.inputs)
        self.train(model.training)  # see kv_cache._WithCache

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        named = dict(zip(self.input_names, inputs, strict=True))
        return {"image_features": self.config.image_features(self.model, named)}


class TokenEmbeddings(torch.nn.Module):
    """``forward(input_ids)`` -> ``{inputs_embeds}``: the language model's embeddings (a
    scaled embedding, as Gemma's, is its own module and scales here too)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.embeddings = model.get_input_embeddings()
        self.train(model.training)

    def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"inputs_embeds": self.embeddings(input_ids)}


class EmbedsLMWithCache(CausalLMWithCache):
    """``forward(*inputs)`` in ``input_names`` order -> ``{logits, present.{i}.key/value}``:
    the model called with ``inputs_embeds`` (no pixels) on a past rebuilt as
    ``CausalLMWithCache`` rebuilds it."""

    def forward(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        named = dict(zip(self.input_names, inputs, strict=True))
        past = self.past(named)
        if self.layout is None:
            cache = DynamicCache(ddp_cache_data=past)
        else:
            seen = named["attention_mask"].shape[-1] - named["inputs_embeds"].shape[1]
            cache = layered_cache(past, self.layout, seen)
        output = self.model(**named, **{self.cache_argument: cache}, use_cache=True)
        return self.outputs(output.logits, decoder_cache(output_cache(output)))


# ---- the export config ----------------------------------------------------------------------


class ImageTextOnnxConfig(OnnxConfigWithPast):
    """A vision-language model as the ``vision``, ``embed`` and ``decoder`` graphs.

    The config of the whole model (``graph`` None) describes the decoder's cache and the
    generation inputs; ``for_graph`` narrows it to one graph. Axes: ``image`` (images in a
    call), ``batch``, ``sequence``, ``past_sequence`` and ``total_sequence``; the image
    size is the vision config's, which the processor resizes to.

    A family declares ``image_features`` (how eager turns pixels into the features that
    replace the image tokens) and, where its config names them otherwise,
    ``image_token_id`` and ``image_tokens``.
    """

    modality: ClassVar[str] = "text"
    tasks = (Task.IMAGE_TEXT_TO_TEXT,)
    # The family the manifest records (the model type's other tasks may be generic).
    family: ClassVar[str | None] = None
    trace_sizes: ClassVar[dict[str, int]] = {**OnnxConfigWithPast.trace_sizes, "image": 3}
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {**OnnxConfigWithPast.validation_sizes[0], "image": 1},
        {**OnnxConfigWithPast.validation_sizes[1], "image": 2},
    )
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        **OnnxConfigWithPast.profile_ranges,
        "image": (1, 1, 8),
    }
    graph: str | None = None

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.IMAGE_TEXT_TO_TEXT,
        patching_specs: list[Any] | None = None,
        use_past: bool = True,
    ) -> None:
        # Generation needs the cache: a VLM is exported with it whatever the task says.
        super().__init__(config, task, patching_specs, use_past=True)

    def for_graph(self, graph: str) -> ImageTextOnnxConfig:
        if graph not in GRAPHS:
            raise ValueError(f"a vision-language model has no graph {graph!r}")
        part = copy.copy(self)
        part.graph = graph
        return part

    def graph_configs(self) -> dict[str, OnnxConfig]:
        return {graph: self.for_graph(graph) for graph in GRAPHS}

    # ---- what a family declares ---------------------------------------------------------

    @property
    def text_config(self) -> Any:
        return self._config.get_text_config()

    @property
    def vision_config(self) -> Any:
        return self._config.vision_config

    @property
    def image_token_id(self) -> int:
        for name in ("image_token_id", "image_token_index"):
            value = getattr(self._config, name, None)
            if value is not None:
                return int(value)
        raise AttributeError("the model config names no image token id")

    @property
    def image_tokens(self) -> int:
        """Image tokens per image (the features one image gives)."""
        vision = self.vision_config
        return int((vision.image_size // vision.patch_size) ** 2)

    def image_features(self, model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> Any:
        """(image, image tokens, hidden) features of the images in ``inputs``."""
        raise NotImplementedError(f"{type(self).__name__} must define `image_features`.")

    @property
    def vision_inputs(self) -> Mapping[str, Axes]:
        """The vision graph's inputs: pixels, and whatever mask of them the family takes."""
        return {"pixel_values": {0: "image"}}

    def generation_pixels(
        self, images: list[int], rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Eager's pixel inputs for prompts of ``images`` images each: (image, channels,
        height, width), every prompt's images one after the other."""
        shape = (sum(images), *self.pixel_shape())
        return {"pixel_values": rng.standard_normal(shape, dtype=np.float32)}

    def pixel_shape(self) -> tuple[int, ...]:
        """One image's pixel values (channels, height, width)."""
        vision = self.vision_config
        size = vision.image_size
        return (int(getattr(vision, "num_channels", 3)), int(size), int(size))

    # ---- sizes from the text config ------------------------------------------------------

    @property
    def num_attention_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def num_layers(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.num_layers
        return int(self.text_config.num_hidden_layers)

    @property
    def num_kv_heads(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.layers[0].num_kv_heads
        text = self.text_config
        return int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)

    @property
    def head_dim(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.layers[0].head_dim
        text = self.text_config
        return int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def uses_position_ids(self) -> bool:
        return True

    @property
    def takes_sentences(self) -> bool:
        """Sentences feed the embedding graph alone."""
        return self.graph == "embed"

    # ---- graph contracts -----------------------------------------------------------------

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if self.graph == "vision":
            return dict(self.vision_inputs)
        if self.graph == "embed":
            return {"input_ids": {0: "batch", 1: "sequence"}}
        inputs: dict[str, Axes] = {
            "inputs_embeds": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
        }
        for index, name in enumerate(past_names(self.num_layers)):
            inputs[name] = {0: "batch", 2: self._past_axis(index // 2)}
        return inputs

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self.graph == "vision":
            return {"image_features": {0: "image"}}
        if self.graph == "embed":
            return {"inputs_embeds": {0: "batch", 1: "sequence"}}
        outputs: dict[str, Axes] = {"logits": {0: "batch", 1: "sequence"}}
        for index, name in enumerate(present_names(self.num_layers)):
            outputs[name] = {0: "batch", 2: self._present_axis(index // 2)}
        return outputs

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if name == "pixel_values":
            return (sizes["image"], *self.pixel_shape())
        if name == "pixel_attention_mask":
            return (sizes["image"], *self.pixel_shape()[1:])
        if name == "inputs_embeds":
            return (sizes["batch"], sizes["sequence"], self.hidden_size)
        return super().input_shape(name, sizes)

    def dummy_inputs(self, shapes: ShapeSet, seed: int = 0) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(seed)
        if self.graph == "vision":
            shape = self.input_shape("pixel_values", shapes.sizes)
            feeds = {"pixel_values": rng.standard_normal(shape, np.float32)}
            if "pixel_attention_mask" in self.inputs:
                feeds.update(self._padded_images(feeds["pixel_values"], rng))
            return {name: torch.from_numpy(value) for name, value in feeds.items()}
        if self.graph == "embed":
            shape = self.input_shape("input_ids", shapes.sizes)
            ids = rng.integers(0, self.text_vocab_size, size=shape, dtype=np.int64)
            return {"input_ids": torch.from_numpy(ids)}
        return super().dummy_inputs(shapes, seed)

    def _padded_images(self, pixels: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        """Pixels and their mask as a processor pads images to the largest: the first
        whole, the others cut at the bottom and right by whole patches (zero pixels, mask
        0), so that a graph which ignored the mask would fail validation."""
        patch = int(self.vision_config.patch_size)
        mask = np.ones((pixels.shape[0], *pixels.shape[2:]), dtype=np.int64)
        for image in range(1, len(pixels)):
            height, width = (
                patch * int(rng.integers(1, size // patch + 1)) for size in pixels.shape[2:]
            )
            mask[image, height:, :] = 0
            mask[image, :, width:] = 0
        return {"pixel_values": pixels * mask[:, None], "pixel_attention_mask": mask}

    def kv_cache_contract(self) -> dict[str, Any] | None:
        contract = super().kv_cache_contract()
        if contract is not None:
            contract.update(
                {
                    "graph": "decoder",
                    "main_input": "inputs_embeds",
                    "embed_graph": "embed",
                    "vision_graph": "vision",
                    "image_token_id": self.image_token_id,
                    "image_tokens": self.image_tokens,
                }
            )
        return contract

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        """Prompts generation is validated on: an image in a prompt, two prompts of
        different lengths left-padded into one batch with an image each, and a prompt
        without an image (random ids, none of them the image token)."""
        rng = np.random.default_rng(seed)
        pad = getattr(self.text_config, "pad_token_id", None) or 0
        image = [self.image_token_id] * self.image_tokens
        cases = []
        for label, prompts in (
            ("one image", ((3, 5),)),
            ("padded batch of 2 with an image each", ((2, 6), (4, 1))),
            ("text only", ((9, 0),)),
        ):
            rows = [
                [*self._text_ids(before, rng), *image, *self._text_ids(after, rng)]
                if after
                else self._text_ids(before, rng)
                for before, after in prompts
            ]
            width = max(len(row) for row in rows)
            ids = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros_like(ids)
            for i, row in enumerate(rows):
                ids[i, width - len(row) :] = row
                mask[i, width - len(row) :] = 1
            inputs = {"input_ids": ids, "attention_mask": mask}
            images = [1 if after else 0 for _, after in prompts]
            if any(images):
                inputs.update(self.generation_pixels(images, rng))
            cases.append((label, inputs))
        return cases

    def _text_ids(self, length: int, rng: np.random.Generator) -> list[int]:
        low = min(5, self.text_vocab_size - 1)
        ids = rng.integers(low, self.text_vocab_size, length)
        ids[ids == self.image_token_id] = low if low != self.image_token_id else low + 1
        return [int(i) for i in ids]

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        self.read_cache_layout(model)
        vision, embed, decoder = (self.for_graph(graph) for graph in GRAPHS)
        return [
            SubGraph("vision", ImageFeatures(model, vision), vision),
            SubGraph("embed", TokenEmbeddings(model), embed),
            SubGraph(
                "decoder",
                EmbedsLMWithCache(model, list(decoder.inputs), self.num_layers, self.cache_layout),
                decoder,
            ),
        ]

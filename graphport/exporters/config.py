"""Export configs: what a graph takes and returns, for one architecture and task.

The class names and contracts are those of the removed ``transformers.onnx`` API
(``OnnxConfig``, ``OnnxConfigWithPast``, ``OnnxSeq2SeqConfigWithPast``) so code written for
it migrates by changing an import. ``inputs``/``outputs`` map a graph input/output name to
``{axis index: symbolic axis name}``; every axis not listed is static.

Beyond the old API, a config knows the full shape of each input (``input_shape``) and how
to fill it (``dummy_input``), so dummy inputs can be generated at any set of axis sizes:
tracing uses one set, validation others, which is how graphport proves the axes really
are dynamic.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from graphport.errors import ExportError, UnsupportedModelError, UsageError
from graphport.exporters.cache_layout import CacheLayout, UnsupportedCacheError
from graphport.exporters.kv_cache import (
    CausalLMWithCache,
    Seq2SeqDecoderWithCache,
    Seq2SeqEncoder,
    past_names,
    present_names,
)
from graphport.exporters.tasks import Task, parse_task

logger = logging.getLogger(__name__)

Axes = dict[int, str]

# The torch.export-based exporter writes opset 18 natively (torchlib is authored against
# it): lower opsets need the onnx version converter, which fails or silently keeps 18 on
# transformer graphs. 18 has LayerNormalization, is read by onnxruntime >= 1.14, OpenVINO
# and TensorRT >= 8.6, so it is both the floor and the default.
MIN_ONNX_OPSET = 18
DEFAULT_ONNX_OPSET = 18


@dataclasses.dataclass
class SubGraph:
    """One graph of an export: its manifest name (the file stem), the module traced, and
    the config that names its inputs/outputs and makes its dummy inputs.

    Most exports are one graph, ``model``. Composite models export several: an
    encoder-decoder an ``encoder`` and a ``decoder``, a dual encoder a ``text`` and a
    ``vision`` tower. ``module`` is called with the config's inputs as keyword arguments
    (or positionally when it has ``positional = True``) and returns an output whose
    flattened names include the config's outputs.
    """

    name: str
    module: torch.nn.Module
    config: OnnxConfig


@dataclasses.dataclass(frozen=True)
class ShapeSet:
    """Sizes for the symbolic axes (``{"batch": 2, "sequence": 16}``) and a label."""

    sizes: Mapping[str, int]
    label: str = ""

    def __str__(self) -> str:
        return self.label or ", ".join(f"{k}={v}" for k, v in self.sizes.items())


_COMMON_OUTPUTS: dict[Task, dict[str, Axes]] = {
    Task.FEATURE_EXTRACTION: {"last_hidden_state": {0: "batch", 1: "sequence"}},
    Task.FILL_MASK: {"logits": {0: "batch", 1: "sequence"}},
    Task.TEXT_CLASSIFICATION: {"logits": {0: "batch"}},
    Task.TOKEN_CLASSIFICATION: {"logits": {0: "batch", 1: "sequence"}},
    Task.QUESTION_ANSWERING: {
        "start_logits": {0: "batch", 1: "sequence"},
        "end_logits": {0: "batch", 1: "sequence"},
    },
    Task.MULTIPLE_CHOICE: {"logits": {0: "batch"}},
    Task.IMAGE_CLASSIFICATION: {"logits": {0: "batch"}},
    Task.SEMANTIC_SEGMENTATION: {"logits": {0: "batch"}},
    Task.AUDIO_CLASSIFICATION: {"logits": {0: "batch"}},
    Task.AUTOMATIC_SPEECH_RECOGNITION: {"logits": {0: "batch", 1: "frames"}},
    Task.TEXT_GENERATION: {"logits": {0: "batch", 1: "sequence"}},
    Task.TEXT2TEXT_GENERATION: {"logits": {0: "batch", 1: "decoder_sequence"}},
}


class OnnxConfig:
    """Base export config; subclasses declare ``inputs`` and, where needed, outputs.

    Class attributes a family may override:
      * ``tasks``: the tasks the family has inputs/outputs for (the head must also exist
        in transformers for the model type, which ``supported_tasks`` checks);
      * ``atol_for_validation`` / ``rtol_for_validation``: the parity tolerance at fp32;
      * ``trace_sizes`` / ``validation_sizes``: axis sizes used to trace and to validate.
    """

    tasks: ClassVar[tuple[Task, ...]] = (Task.FEATURE_EXTRACTION,)
    # Whether a family without a causal-LM task lends its model type's causal-LM head to
    # the generic KV-cache path (graphport.models.registry.Registration.borrows_decoder).
    lends_decoder: ClassVar[bool] = True
    modality: ClassVar[str] = "text"
    default_fixed_batch: ClassVar[int] = 2
    default_fixed_sequence: ClassVar[int] = 16
    default_fixed_num_choices: ClassVar[int] = 3
    ATOL_FOR_VALIDATION: ClassVar[float] = 1e-4
    # Parity is judged on absolute differences, as transformers.onnx did; rtol is there for
    # families whose outputs span large magnitudes.
    RTOL_FOR_VALIDATION: ClassVar[float] = 0.0
    # Trace sizes avoid 0 and 1 (torch.export specializes on them) and avoid equal values
    # on different axes; validation sizes differ from the trace sizes on every axis.
    trace_sizes: ClassVar[dict[str, int]] = {
        "batch": 2,
        "sequence": 16,
        "choice": 3,
        "height": 64,
        "width": 64,
    }
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {"batch": 1, "sequence": 11, "choice": 2, "height": 96, "width": 80},
        {"batch": 3, "sequence": 29, "choice": 4, "height": 48, "width": 112},
    )

    # min/opt/max per dynamic axis for engines with optimization profiles (TensorRT).
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        "batch": (1, 1, 16),
        "sequence": (1, 128, 512),
        "choice": (2, 4, 8),
        "height": (32, 224, 512),
        "width": (32, 224, 512),
    }

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.FEATURE_EXTRACTION,
        patching_specs: list[Any] | None = None,
        use_past: bool = False,
    ) -> None:
        parsed, with_past = parse_task(task)
        if parsed not in self.tasks:
            raise UnsupportedModelError(
                f"{type(self).__name__} does not support the task {parsed.value!r}; it "
                f"supports {', '.join(t.value for t in self.tasks)}."
            )
        self._config = config
        self.task = parsed
        self.use_past = use_past or with_past
        self._patching_specs = list(patching_specs or [])

    @classmethod
    def from_model_config(cls, config: Any, task: str | Task = "default") -> OnnxConfig:
        return cls(config, task=task)

    # ---- the transformers.onnx contract -------------------------------------------------

    @property
    def inputs(self) -> Mapping[str, Axes]:
        raise NotImplementedError(f"{type(self).__name__} must define `inputs`.")

    @property
    def outputs(self) -> Mapping[str, Axes]:
        return copy.deepcopy(_COMMON_OUTPUTS[self.task])

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        """Config attributes set before tracing (no KV cache unless exporting with past)."""
        if hasattr(self._config, "use_cache"):
            return {"use_cache": self.use_past}
        return None

    @property
    def default_batch_size(self) -> int:
        return self.default_fixed_batch

    @property
    def default_sequence_length(self) -> int:
        return self.default_fixed_sequence

    @property
    def default_num_choices(self) -> int:
        return self.default_fixed_num_choices

    @property
    def default_onnx_opset(self) -> int:
        return DEFAULT_ONNX_OPSET

    @property
    def atol_for_validation(self) -> float:
        return self.ATOL_FOR_VALIDATION

    @property
    def rtol_for_validation(self) -> float:
        return self.RTOL_FOR_VALIDATION

    @property
    def is_torch_support_for_image(self) -> bool:
        return True

    @staticmethod
    def use_external_data_format(num_parameters: int) -> bool:
        """Whether the weights exceed protobuf's 2 GiB limit at fp32."""
        return num_parameters * 4 >= 2**31

    def generate_dummy_inputs(
        self,
        preprocessor: Any = None,
        batch_size: int = -1,
        seq_length: int = -1,
        num_choices: int = -1,
        is_pair: bool = False,
        framework: Any = None,
        num_channels: int = 3,
        image_width: int = 40,
        image_height: int = 40,
        sampling_rate: int = 22050,
        time_duration: float = 5.0,
        frequency: int = 220,
        tokenizer: Any = None,
    ) -> dict[str, torch.Tensor]:
        """Dummy inputs as the old API made them; -1 means the traced default size.

        The preprocessor is not needed: inputs are generated from the model config, so
        every axis size can be chosen (the old API let the tokenizer decide).
        """
        sizes = dict(self.trace_sizes)
        if batch_size > 0:
            sizes["batch"] = batch_size
        if seq_length > 0:
            sizes["sequence"] = seq_length
        if num_choices > 0:
            sizes["choice"] = num_choices
        return self.dummy_inputs(ShapeSet(sizes))

    def generate_dummy_inputs_onnxruntime(
        self, reference_model_inputs: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        return reference_model_inputs

    # ---- graphport extensions -----------------------------------------------------------

    @property
    def config(self) -> Any:
        return self._config

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The full shape of input ``name``; static axes come from the model config."""
        axes = self.inputs[name]
        return tuple(sizes[axes[i]] for i in range(len(axes)))

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} cannot make a dummy {name!r}.")

    def dummy_inputs(self, shapes: ShapeSet, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded dummy inputs for every graph input at the given axis sizes."""
        rng = np.random.default_rng(seed)
        return {
            name: torch.from_numpy(
                self.dummy_input(name, self.input_shape(name, shapes.sizes), rng)
            )
            for name in self.inputs
        }

    def trace_shapes(self) -> ShapeSet:
        return ShapeSet(dict(self.trace_sizes), "trace")

    def validation_shapes(self) -> list[ShapeSet]:
        return [
            ShapeSet(dict(s), f"shape set {i + 1}") for i, s in enumerate(self.validation_sizes)
        ]

    @property
    def takes_sentences(self) -> bool:
        """Whether tokenized sentences alone feed the graph (validation adds such a case)."""
        return self.modality == "text"

    def kv_cache_contract(self) -> dict[str, Any] | None:
        """The KV-cache layout the manifest records (None: the graph takes no cache)."""
        return None

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        """The graphs to export from ``model`` (one, ``model``, unless a family says more)."""
        return [SubGraph("model", model, self)]

    def graph_configs(self) -> dict[str, OnnxConfig]:
        """The config of each graph by name, without a model (feeds for one graph)."""
        return {"model": self}

    @contextlib.contextmanager
    def patch_model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Temporarily patch the model for tracing; families override when they must."""
        yield model

    def patch_ops(self) -> None:  # legacy API; patching happens in ``patch_model``
        pass

    def restore_ops(self) -> None:
        pass

    @classmethod
    def flatten_output_collection_property(cls, name: str, field: Any) -> dict[str, Any]:
        """Flatten a list/tuple output into ``{name.i: value}`` as the old API did."""
        return {f"{name}.{idx}": item for idx, item in enumerate(_flatten(field))}


def _flatten(field: Any) -> list[Any]:
    if isinstance(field, list | tuple):
        return [leaf for item in field for leaf in _flatten(item)]
    return [field]


class OnnxConfigWithPast(OnnxConfig):
    """A decoder-only language model; with ``use_past`` its graph takes and returns a KV
    cache (``past_key_values.{i}.key/value`` -> ``present.{i}.key/value``).

    The graph takes ``attention_mask`` over past and new positions and, when the model's
    forward has them, explicit ``position_ids``, so left-padded batches generate exactly as
    transformers does. An empty past (``past_sequence`` = 0) is the first step.

    Against a model (``sub_graphs``), the cache's layout is read from a dry run of the
    model (``CacheLayout.read``): every layer's KV heads and head dim, and which layers keep
    a sliding window. A sliding layer's past and present are its own axes
    (``sliding_past_sequence``, ``sliding_present_sequence``: at most ``sliding_window - 1``
    positions); without a layout the sizes come from the config's attribute names.
    """

    modality: ClassVar[str] = "text"
    tasks = (Task.FEATURE_EXTRACTION, Task.TEXT_GENERATION)
    # Set by ``sub_graphs`` (or from a manifest's contract); None: sizes from the config.
    cache_layout: CacheLayout | None = None
    # A sliding layer's past while tracing: shorter than the other past axes, and than the
    # window, so that the graph stays general in both.
    SLIDING_TRACE_PAST: ClassVar[int] = 3
    trace_sizes: ClassVar[dict[str, int]] = {"batch": 2, "sequence": 7, "past_sequence": 5}
    # The two shapes generation uses: a prompt with an empty cache, one token on a cache.
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {"batch": 1, "sequence": 11, "past_sequence": 0},
        {"batch": 3, "sequence": 1, "past_sequence": 29},
    )
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        "batch": (1, 1, 16),
        "sequence": (1, 128, 512),
        "past_sequence": (0, 128, 1024),
    }

    @classmethod
    def with_past(cls, config: Any, task: str | Task = "default") -> OnnxConfigWithPast:
        return cls(config, task=task, use_past=True)

    @property
    def num_layers(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.num_layers
        for attr in ("num_hidden_layers", "n_layer", "num_layers"):
            if hasattr(self._config, attr):
                return int(getattr(self._config, attr))
        raise AttributeError("could not find the number of layers in the model config")

    @property
    def num_attention_heads(self) -> int:
        for attr in ("num_attention_heads", "n_head", "num_heads"):
            if hasattr(self._config, attr):
                return int(getattr(self._config, attr))
        raise AttributeError("could not find the number of attention heads in the model config")

    @property
    def num_kv_heads(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.layers[0].num_kv_heads
        return int(getattr(self._config, "num_key_value_heads", None) or self.num_attention_heads)

    @property
    def head_dim(self) -> int:
        if self.cache_layout is not None:
            return self.cache_layout.layers[0].head_dim
        return int(
            getattr(self._config, "head_dim", None)
            or self._config.hidden_size // self.num_attention_heads
        )

    def _past_axis(self, layer: int) -> str:
        layout = self.cache_layout
        return layout.past_axis(layer) if layout is not None else "past_sequence"

    def _present_axis(self, layer: int) -> str:
        layout = self.cache_layout
        return layout.present_axis(layer) if layout is not None else "total_sequence"

    def adopt_kv_cache_contract(self, contract: Mapping[str, Any]) -> None:
        """Take the cache layout an export's manifest records (no model at hand)."""
        self.cache_layout = CacheLayout.from_contract(contract)

    def read_cache_layout(self, model: torch.nn.Module) -> None:
        """The layout of ``model``'s own cache (a family whose model returns a cache of
        another kind keeps the sizes its config names)."""
        try:
            self.cache_layout = CacheLayout.read(model)
        except UnsupportedCacheError:
            logger.debug("No cache layout read for %s", type(model).__name__, exc_info=True)

    @property
    def model_parameters(self) -> frozenset[str]:
        """Keyword arguments the task's model class takes (decides optional inputs)."""
        import inspect

        import transformers

        name = self.task.model_class_name(self._config.model_type)
        model_class = getattr(transformers, name, None) if name else None
        if model_class is None:
            return frozenset()
        return frozenset(inspect.signature(model_class.forward).parameters)

    @property
    def uses_position_ids(self) -> bool:
        return self.use_past and "position_ids" in self.model_parameters

    @property
    def takes_sentences(self) -> bool:
        return not self.use_past

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if not self.use_past:
            return {
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
            }
        inputs: dict[str, Axes] = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
        }
        if self.uses_position_ids:
            inputs["position_ids"] = {0: "batch", 1: "sequence"}
        for index, name in enumerate(past_names(self.num_layers)):
            inputs[name] = {0: "batch", 2: self._past_axis(index // 2)}
        return inputs

    @property
    def outputs(self) -> Mapping[str, Axes]:
        outputs = dict(super().outputs)
        if self.use_past:
            for index, name in enumerate(present_names(self.num_layers)):
                outputs[name] = {0: "batch", 2: self._present_axis(index // 2)}
        return outputs

    @property
    def values_override(self) -> Mapping[str, Any] | None:
        return {"use_cache": self.use_past} if hasattr(self._config, "use_cache") else None

    def validation_shapes(self) -> list[ShapeSet]:
        if self.use_past:
            return super().validation_shapes()
        return [
            ShapeSet({"batch": 1, "sequence": 11}, "shape set 1"),
            ShapeSet({"batch": 3, "sequence": 29}, "shape set 2"),
        ]

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if not self.use_past:
            return super().input_shape(name, sizes)
        batch, sequence, past = sizes["batch"], sizes["sequence"], sizes["past_sequence"]
        if name == "attention_mask":
            return (batch, past + sequence)
        if name.startswith("past_key_values.") and self.cache_layout is not None:
            layer = int(name.split(".")[1])
            shape = self.cache_layout.layers[layer]
            length = self.cache_layout.past_length(layer, sizes)
            return shape.shape(batch, length, value=name.endswith(".value"))
        if name.startswith("past_key_values."):
            return (batch, self.num_kv_heads, past, self.head_dim)
        return (batch, sequence)

    def trace_shapes(self) -> ShapeSet:
        shapes = super().trace_shapes()
        if not self.use_past or self.cache_layout is None:
            return shapes
        sizes = dict(shapes.sizes)
        for layer, shape in enumerate(self.cache_layout.layers):
            if shape.keeps is not None:
                past = min(self.SLIDING_TRACE_PAST, shape.keeps, sizes["past_sequence"])
                sizes[self.cache_layout.past_axis(layer)] = past
        return ShapeSet(sizes, shapes.label)

    def dummy_inputs(self, shapes: ShapeSet, seed: int = 0) -> dict[str, torch.Tensor]:
        """Left-padded prompts (as generation pads them), their positions, a random past
        (no past without ``use_past``)."""
        rng = np.random.default_rng(seed)
        sizes = {**shapes.sizes, "past_sequence": shapes.sizes.get("past_sequence", 0)}
        if not self.use_past:
            sizes["past_sequence"] = 0
        total = sizes["past_sequence"] + sizes["sequence"]
        mask = np.ones((sizes["batch"], total), dtype=np.int64)
        for row in range(1, sizes["batch"]):
            mask[row, : int(rng.integers(0, total // 2 + 1))] = 0
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        positions[mask == 0] = 1
        feeds = {}
        for name in self.inputs:
            shape = self.input_shape(name, sizes)
            if name == "input_ids":
                low = min(5, self.text_vocab_size - 1)
                value = rng.integers(low, self.text_vocab_size, size=shape, dtype=np.int64)
            elif name == "attention_mask":
                value = mask
            elif name == "position_ids":
                value = positions[:, total - sizes["sequence"] :]
            else:
                value = rng.standard_normal(shape, dtype=np.float32)
            feeds[name] = torch.from_numpy(np.ascontiguousarray(value))
        return feeds

    @property
    def text_vocab_size(self) -> int:
        """The vocabulary token inputs are drawn from: the config's, or its text config's
        (a vision-language model generating from text alone keeps it there)."""
        size = getattr(self._config, "vocab_size", None)
        return int(size if size is not None else self._config.get_text_config().vocab_size)

    def kv_cache_contract(self) -> dict[str, Any] | None:
        if not self.use_past:
            return None
        return {
            "graph": "model",
            "inputs": "past_key_values.{i}.key / past_key_values.{i}.value",
            "outputs": "present.{i}.key / present.{i}.value",
            "layout": ["batch", "kv_heads", "sequence", "head_dim"],
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            **(self.cache_layout.contract() if self.cache_layout is not None else {}),
            "position_ids": self.uses_position_ids,
            "empty_past": "the first step feeds past tensors with 0 positions",
        }

    def generation_inputs(self, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
        """Prompts generation is validated on: one alone, three of different lengths
        left-padded into one batch (random ids past the special tokens)."""
        rng = np.random.default_rng(seed)
        low = min(5, self.text_vocab_size - 1)
        pad = getattr(self._config, "pad_token_id", None) or 0
        cases = []
        for label, lengths in (("single prompt", (9,)), ("padded batch of 3", (7, 3, 12))):
            width = max(lengths)
            ids = np.full((len(lengths), width), pad, dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, length in enumerate(lengths):
                ids[row, width - length :] = rng.integers(low, self.text_vocab_size, length)
                mask[row, width - length :] = 1
            cases.append((label, {"input_ids": ids, "attention_mask": mask}))
        return cases

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        if not self.use_past:
            return super().sub_graphs(model)
        self.read_cache_layout(model)
        module = CausalLMWithCache(model, list(self.inputs), self.num_layers, self.cache_layout)
        return [SubGraph("model", module, self)]


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
            "start from their pad token) and export again."
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


# ---- modality bases: inputs and dummy data shared by every family of a modality ----------


class TextOnnxConfig(OnnxConfig):
    """Token inputs: ``input_ids``, ``attention_mask`` and, when used, ``token_type_ids``."""

    modality: ClassVar[str] = "text"
    tasks = (
        Task.FEATURE_EXTRACTION,
        Task.FILL_MASK,
        Task.TEXT_CLASSIFICATION,
        Task.TOKEN_CLASSIFICATION,
        Task.QUESTION_ANSWERING,
        Task.MULTIPLE_CHOICE,
    )

    @property
    def uses_token_type_ids(self) -> bool:
        """Models trained with one segment type (RoBERTa, DeBERTa-v2...) take none."""
        return getattr(self._config, "type_vocab_size", 0) > 1

    @property
    def inputs(self) -> Mapping[str, Axes]:
        if self.task is Task.MULTIPLE_CHOICE:
            axes = {0: "batch", 1: "choice", 2: "sequence"}
        else:
            axes = {0: "batch", 1: "sequence"}
        names = ["input_ids", "attention_mask"]
        if self.uses_token_type_ids:
            names.append("token_type_ids")
        return {name: dict(axes) for name in names}

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        if name == "input_ids":
            # Skip the first few ids, where the special tokens usually sit.
            low = min(5, self._config.vocab_size - 1)
            return rng.integers(low, self._config.vocab_size, size=shape, dtype=np.int64)
        if name == "attention_mask":
            # Right padding of different lengths: row 0 is full, the others lose up to
            # half their tokens, so validation exercises masked positions.
            mask = np.ones(shape, dtype=np.int64)
            rows = mask.reshape(-1, shape[-1])
            for i in range(1, rows.shape[0]):
                rows[i, shape[-1] - int(rng.integers(0, shape[-1] // 2 + 1)) :] = 0
            return mask
        if name == "token_type_ids":
            types = np.zeros(shape, dtype=np.int64)
            types[..., shape[-1] // 2 :] = 1
            return types
        return super().dummy_input(name, shape, rng)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, list | tuple):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class VisionOnnxConfig(OnnxConfig):
    """``pixel_values`` of shape (batch, channels, height, width).

    Height and width are static at the config's ``image_size`` unless a family sets
    ``dynamic_image_size`` (convolutional models that accept any resolution).
    """

    modality: ClassVar[str] = "vision"
    tasks = (Task.FEATURE_EXTRACTION, Task.IMAGE_CLASSIFICATION)
    dynamic_image_size: ClassVar[bool] = False
    ATOL_FOR_VALIDATION = 1e-4

    @property
    def inputs(self) -> Mapping[str, Axes]:
        axes = {0: "batch", 2: "height", 3: "width"}  # channels are fixed by the weights
        if not self.dynamic_image_size:
            axes = {0: "batch"}
        return {"pixel_values": axes}

    @property
    def outputs(self) -> Mapping[str, Axes]:
        outputs = super().outputs
        if self.task is Task.FEATURE_EXTRACTION:
            outputs = {"last_hidden_state": {0: "batch"}}
        return outputs

    @property
    def image_size(self) -> tuple[int, int]:
        return _pair(getattr(self._config, "image_size", 224))

    @property
    def num_channels(self) -> int:
        return int(getattr(self._config, "num_channels", 3))

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        if self.dynamic_image_size:
            return (sizes["batch"], self.num_channels, sizes["height"], sizes["width"])
        return (sizes["batch"], self.num_channels, *self.image_size)

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        # Normalized pixels: roughly zero mean, unit variance, as processors produce.
        return rng.standard_normal(shape, dtype=np.float32)


class AudioOnnxConfig(OnnxConfig):
    """Raw waveform ``input_values`` of shape (batch, sequence)."""

    modality: ClassVar[str] = "audio"
    trace_sizes: ClassVar[dict[str, int]] = {"batch": 2, "sequence": 3200}
    profile_ranges: ClassVar[dict[str, tuple[int, int, int]]] = {
        "batch": (1, 1, 16),
        "sequence": (1600, 16000, 480000),
    }
    validation_sizes: ClassVar[tuple[dict[str, int], ...]] = (
        {"batch": 1, "sequence": 2400},
        {"batch": 3, "sequence": 4800},
    )

    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {"input_values": {0: "batch", 1: "sequence"}}

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        # A normalized waveform: a few sines plus noise, per row.
        t = np.arange(shape[-1], dtype=np.float32) / 16000.0
        freqs = rng.uniform(100.0, 2000.0, size=(shape[0], 3)).astype(np.float32)
        wave = np.sin(2 * np.pi * freqs[:, :, None] * t[None, None, :]).sum(axis=1)
        wave += 0.1 * rng.standard_normal(wave.shape, dtype=np.float32)
        return ((wave - wave.mean(-1, keepdims=True)) / wave.std(-1, keepdims=True)).astype(
            np.float32
        )

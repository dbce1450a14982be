"""The export config base: what a graph takes and returns, for one architecture and task.

The class names and contracts are those of the removed ``transformers.onnx`` API
(``OnnxConfig``, ``OnnxConfigWithPast``, ``OnnxSeq2SeqConfigWithPast``) so code written for
it migrates by changing an import. ``inputs``/``outputs`` map a graph input/output name to
``{axis index: symbolic axis name}``; every axis not listed is static.

Beyond the old API, a config knows the full shape of each input (``input_shape``) and how
to fill it (``dummy_input``), so dummy inputs can be generated at any set of axis sizes:
tracing uses one set, validation others, which is how graphport proves the axes really
are dynamic.

The other configs build on this one: ``graphport.export.modalities`` (text, vision and
audio inputs), ``graphport.export.decoder`` (a decoder with a KV cache) and
``graphport.export.seq2seq`` (an encoder-decoder as two graphs).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from graphport.errors import Reason, UnsupportedModelError
from graphport.export.tasks import Task, parse_task

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
                f"supports {', '.join(t.value for t in self.tasks)}.",
                reason=Reason.TASK_NOT_SUPPORTED,
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

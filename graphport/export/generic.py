"""The generic export path: a model type no family registers, exported from what its model
class says about itself.

A family module declares its inputs; here they are derived, in three steps:

1. The modality comes from the model class's ``main_input_name`` (or, where the forward
   does not take that, its first parameter the path can make): ``input_ids`` is text,
   ``pixel_values`` vision, ``input_values`` / ``input_features`` audio, ``states`` a
   trajectory (the decision transformer: states, actions, rewards, returns-to-go and time
   steps, sized by the config). Any other main input (time series, video, latents) is
   refused with the reason.
2. The inputs are the main input plus those the forward signature takes and the config
   can fill: ``attention_mask`` and ``token_type_ids`` for text (the latter when the model
   has more than one segment type), ``decoder_input_ids`` for encoder-decoders. A forward
   parameter without a default that is none of these is refused by name. Image and
   feature sizes come from the config (``image_size``, ``num_channels``, ``num_mel_bins``,
   ...). Where several layouts are plausible, each is a candidate, in order: audio
   features as frames x bins or bins x frames, then with a mask of valid frames; a text
   or vision model alone, then with the other modality's input too (dual encoders).
3. Against the model (``sub_graphs``), the candidates are run eagerly at two shape sets:
   the first that runs is kept, and the outputs are read off the result. Feature
   extraction exports ``last_hidden_state`` when the model returns it, else its first
   output; other tasks export the outputs the families use. An output axis whose size
   follows an input axis gets that axis' name, one that changes with the inputs in another
   way gets a name of its own, and the others are static. The model runs without a KV
   cache, and mixture-of-experts layers trace in their batched form.

Failures name the model type and the step that failed, so a sweep over every model type
can classify them. Steps 1 and 2's reading of the class and the config, and the filling of
each kind of input, live in ``graphport.export.generic_inputs``; which outputs a task
exports, in ``graphport.export.task_outputs``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import PretrainedConfig

from graphport.errors import EagerModelError, ExportError, Reason, UnsupportedModelError
from graphport.export.config import _COMMON_OUTPUTS, Axes, OnnxConfig, ShapeSet, SubGraph
from graphport.export.generic_inputs import (
    AUDIO_MASKS,
    FEATURE_SIZES,
    MODALITIES,
    SIZES,
    Dims,
    GenericInput,
    Layout,
    check_generic_support,
    config_value,
    describe,
    first_line,
    main_input,
    model_class,
    required_parameters,
    requires_message,
    right_padded_mask,
    special_token_ids,
    text_config,
    trajectory_inputs,
    waveform,
)
from graphport.export.onnx import named_output_tensors
from graphport.export.task_outputs import (
    default_output_names,
    output_axes,
    task_output_names,
)
from graphport.export.tasks import Task

# The order in which an output axis is matched to the input axis whose size it follows.
_AXIS_PREFERENCE = ("batch", "sequence", "decoder_sequence", "choice", "frames", "image_batch")
# Zero-shot tasks score every text against every image: their images are a batch of their
# own (one image, several candidate labels).
_ZERO_SHOT = (Task.ZERO_SHOT_IMAGE_CLASSIFICATION, Task.ZERO_SHOT_OBJECT_DETECTION)
_TRACEABLE_EXPERTS = "batched_mm"


__all__ = ["GenericOnnxConfig", "check_generic_support", "model_class"]


class GenericOnnxConfig(OnnxConfig):
    """Inputs derived from the model class's forward signature; outputs read off an eager
    run (see the module docstring for the rules)."""

    # Every task but image-to-text (a vision encoder and a text decoder: a family's).
    # Vision-language generation has graphs of its own (export/vlm.py, per family).
    tasks: ClassVar[tuple[Task, ...]] = tuple(
        t for t in Task if t not in (Task.IMAGE_TO_TEXT, Task.IMAGE_TEXT_TO_TEXT)
    )

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.FEATURE_EXTRACTION,
        patching_specs: list[Any] | None = None,
        use_past: bool = False,
    ) -> None:
        super().__init__(config, task, patching_specs, use_past)
        if self.use_past:
            raise UnsupportedModelError(
                f"Model type {self.model_type!r} has no family in graphport, and the generic "
                "export path exports no KV cache; export the task without -with-past."
            )
        self.model_class = model_class(self.model_type, self.task)
        self.main_input = main_input(self.model_class, self.model_type)
        self.modality = MODALITIES[self.main_input]
        self.parameters = inspect.signature(self.model_class.forward).parameters
        self.candidates = self._candidate_layouts()
        if not self.candidates:
            raise UnsupportedModelError(
                f"Model type {self.model_type!r} cannot be exported generically: its config "
                f"gives no size for {self.main_input} (none of {', '.join(FEATURE_SIZES)}); "
                "it needs an export config of its own.",
                reason=Reason.INPUTS_NOT_DERIVED,
            )
        self.layout: Layout = self.candidates[0]
        self._outputs: dict[str, Axes] | None = None
        self._check_required_parameters()

    @property
    def model_type(self) -> str:
        return str(self._config.model_type)

    # ---- step 2: inputs from the signature and the config --------------------------------

    def _takes(self, name: str) -> bool:
        return name in self.parameters

    def _decoder_inputs(self) -> tuple[GenericInput, ...]:
        if self._takes("decoder_input_ids") and getattr(self._config, "is_encoder_decoder", False):
            return (GenericInput("decoder_input_ids", ("batch", "decoder_sequence"), "ids"),)
        return ()

    def _candidate_layouts(self) -> list[Layout]:
        # A dual encoder or a grounded model may need both kinds of input: after the main
        # modality alone, both are a candidate.
        if self.modality == "text":
            mains = [self._text_inputs()]
            if self._takes("pixel_values"):
                mains.append((*mains[0], self._pixels(self._image_batch)))
        elif self.modality == "vision":
            mains = [(self._pixels(),)]
            if self._takes("input_ids"):
                mains.append((self._pixels(self._image_batch), *self._text_inputs()))
        elif self.modality == "trajectory":
            mains = [trajectory_inputs(self._config, self.model_type, self.parameters)]
        else:
            mains = [(main,) for main in self._audio_candidates()]
            mains += [
                (main, mask)
                for main in self._audio_candidates()
                if (mask := self._audio_mask(main))
            ]
        return [(*main, *self._decoder_inputs()) for main in mains]

    def _audio_mask(self, main: GenericInput) -> GenericInput | None:
        """A mask of valid frames, for audio models that fail without one: all ones (every
        frame valid), over the main input's time axis."""
        name = next((n for n in AUDIO_MASKS if self._takes(n)), None)
        time = next((d for d in main.dims[1:] if isinstance(d, str)), None)
        if time is None and main.kind == "floats" and len(main.dims) == 3:
            time = main.dims[-1]  # bins x a fixed number of frames (Whisper-like)
        if name is None or time is None:
            return None
        return GenericInput(name, ("batch", time), "ones")

    def _text_inputs(self) -> Layout:
        dims: Dims = ("batch", "sequence")
        if self.task is Task.MULTIPLE_CHOICE:
            dims = ("batch", "choice", "sequence")
        inputs = [GenericInput("input_ids", dims, "ids")]
        if self._takes("attention_mask"):
            inputs.append(GenericInput("attention_mask", dims, "mask"))
        segment_types = config_value(self._config, "type_vocab_size") or 0
        if self._takes("token_type_ids") and segment_types > 1:
            inputs.append(GenericInput("token_type_ids", dims, "segments"))
        return tuple(inputs)

    @property
    def _image_batch(self) -> str:
        """The batch axis of images beside text: their own in a zero-shot task."""
        return "image_batch" if self.task in _ZERO_SHOT else "batch"

    def _pixels(self, batch: str = "batch") -> GenericInput:
        return GenericInput("pixel_values", self._image_dims(batch), "floats")

    def _image_dims(self, batch: str = "batch") -> Dims:
        channels = config_value(self._config, "num_channels", "in_channels", "in_chans") or 3
        size = config_value(self._config, "image_size", "img_size") or 64
        height, width = (size, size) if isinstance(size, int) else (size[0], size[-1])
        return (batch, int(channels), int(height), int(width))

    def _audio_candidates(self) -> list[GenericInput]:
        """Layouts of the main audio input, most specific first."""
        bins = config_value(self._config, "num_mel_bins")
        if self.main_input == "input_values":
            candidates = []
            length = config_value(self._config, "max_length")
            if bins and length:  # a spectrogram of fixed length (Audio Spectrogram Transformer)
                candidates.append(GenericInput("input_values", ("batch", length, bins), "floats"))
            channels = int(config_value(self._config, "audio_channels", "channels") or 1)
            for dims in (("batch", "sequence"), ("batch", channels, "sequence")):
                candidates.append(GenericInput("input_values", dims, "waveform"))
            return candidates
        sizes = [config_value(self._config, name) for name in FEATURE_SIZES]
        per_channel = config_value(self._config, "input_feat_per_channel")
        channels = config_value(self._config, "input_channels")
        if per_channel and channels:
            sizes.insert(0, per_channel * channels)
        features = list(dict.fromkeys(int(s) for s in sizes if isinstance(s, int) and s > 0))
        layouts: list[Dims] = []
        positions = config_value(self._config, "max_source_positions")
        if bins and positions:  # Whisper-like: bins x a fixed 2 x max_source_positions frames
            layouts.append(("batch", int(bins), 2 * int(positions)))
        layouts += [("batch", "frames", size) for size in features]
        layouts += [("batch", size, "frames") for size in features]
        return [GenericInput("input_features", dims, "floats") for dims in layouts]

    def _check_required_parameters(self) -> None:
        given = {i.name for layout in self.candidates for i in layout}
        missing = required_parameters(self.model_class, given)
        if missing:
            raise UnsupportedModelError(
                requires_message(self.model_type, self.model_class, missing),
                reason=Reason.INPUTS_NOT_DERIVED,
            )

    # ---- the OnnxConfig contract ---------------------------------------------------------

    @property
    def inputs(self) -> Mapping[str, Axes]:
        return {i.name: i.axes for i in self.layout}

    @property
    def outputs(self) -> Mapping[str, Axes]:
        if self._outputs is None:  # not resolved against a model yet: the task's defaults
            if self.task in _COMMON_OUTPUTS:
                return super().outputs
            return {name: {0: "batch"} for name in default_output_names(self.task)}
        return {name: dict(axes) for name, axes in self._outputs.items()}

    @property
    def takes_sentences(self) -> bool:
        return {i.name for i in self.layout} <= {"input_ids", "attention_mask", "token_type_ids"}

    def input_shape(self, name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        spec = next(i for i in self.layout if i.name == name)
        return tuple(sizes[d] if isinstance(d, str) else d for d in spec.dims)

    def _sizes(self) -> list[dict[str, int]]:
        """The modality's trace and validation sizes; token sequences stay within the
        position embeddings of models that have few (OWL-ViT's text tower has 16)."""
        sizes = [dict(s) for s in SIZES[self.modality]]
        limit = config_value(self._config, "max_position_embeddings")
        text = any(i.kind == "ids" and "sequence" in i.dims for i in self.layout)
        if text and isinstance(limit, int) and 3 < limit < max(s["sequence"] for s in sizes):
            for s, length in zip(sizes, (limit * 2 // 3, limit // 2, limit), strict=True):
                s["sequence"] = length
        if self.task is Task.ZERO_SHOT_OBJECT_DETECTION:
            # Every image has the same number of text queries (OWL-ViT reshapes the texts
            # to images x queries): the text batch is a multiple of the image batch.
            for s, (texts, images) in zip(sizes, ((4, 2), (3, 1), (6, 3)), strict=True):
                s["batch"], s["image_batch"] = texts, images
        return sizes

    def trace_shapes(self) -> ShapeSet:
        return ShapeSet(self._sizes()[0], "trace")

    def validation_shapes(self) -> list[ShapeSet]:
        return [ShapeSet(sizes, f"shape set {i + 1}") for i, sizes in enumerate(self._sizes()[1:])]

    def dummy_input(
        self, name: str, shape: tuple[int, ...], rng: np.random.Generator
    ) -> np.ndarray:
        kind = next(i.kind for i in self.layout if i.name == name)
        if kind == "ids":
            return rng.choice(self._ordinary_ids(), size=shape).astype(np.int64)
        if kind == "mask":
            return right_padded_mask(shape, rng)
        if kind == "segments":
            segments = np.zeros(shape, dtype=np.int64)
            segments[..., shape[-1] // 2 :] = 1
            return segments
        if kind == "waveform":
            return waveform(shape, rng)
        if kind == "ones":
            return np.ones(shape, dtype=np.int64)
        if kind == "steps":  # time steps within the episodes the model embeds
            episode = int(config_value(self._config, "max_ep_len") or 16)
            return rng.integers(0, episode, size=shape, dtype=np.int64)
        return rng.standard_normal(shape, dtype=np.float32)

    def _ordinary_ids(self) -> np.ndarray:
        """Token ids clear of the special ones (the first few ids usually hold them)."""
        vocab = int(config_value(self._config, "vocab_size") or 2)
        specials = list(special_token_ids(self._config))
        ids = np.setdiff1d(np.arange(min(5, vocab - 1), vocab), specials)
        return ids if ids.size else np.arange(vocab)

    # ---- step 3: settle the layout and the outputs against the model ---------------------

    def sub_graphs(self, model: torch.nn.Module) -> list[SubGraph]:
        if self._outputs is None:
            self.resolve(model)
        return [SubGraph("model", model, self)]

    @staticmethod
    def disable_cache(model: torch.nn.Module) -> None:
        """No KV cache anywhere in the model: a composite model's language model reads
        ``use_cache`` from its own sub-config, which ``values_override`` does not reach, and
        a cache object in the outputs cannot be traced."""
        for module in model.modules():
            config = getattr(module, "config", None)
            if isinstance(config, PretrainedConfig):
                for sub in (config, text_config(config)):
                    if getattr(sub, "use_cache", None):
                        sub.use_cache = False

    def resolve(self, model: torch.nn.Module) -> None:
        """Choose the first candidate layout the model runs, and read off its outputs."""
        self.disable_cache(model)
        failures = []
        for layout in self.candidates:
            self.layout = layout
            try:
                runs = [self._run(model, shapes) for shapes in self._probe_shapes()]
            except Exception as e:
                failures.append(f"{describe(layout)}: {first_line(e)}")
                continue
            self._outputs = self._output_axes(*runs)
            return
        self.layout = self.candidates[0]
        raise EagerModelError(
            f"The generic export of model type {self.model_type!r} failed at its first step, "
            f"running the eager {self.model_class.__name__} on dummy inputs built from its "
            "config: " + "; ".join(failures) + "; fix the checkpoint's config.json sizes, or "
            "pass --task for inputs the model takes."
        )

    def _probe_shapes(self) -> list[ShapeSet]:
        return [self.trace_shapes(), self.validation_shapes()[0]]

    def _run(self, model: torch.nn.Module, shapes: ShapeSet) -> tuple[ShapeSet, dict]:
        dtype = next(model.parameters()).dtype
        inputs = {
            k: v.to(dtype) if v.is_floating_point() else v
            for k, v in self.dummy_inputs(shapes).items()
        }
        with torch.no_grad():
            tensors = named_output_tensors(model(**inputs))
        if not tensors:
            raise ExportError(f"{type(model).__name__} returned no tensors")
        return shapes, tensors

    def _output_names(self, tensors: Mapping[str, torch.Tensor]) -> list[str]:
        if self.task is Task.FEATURE_EXTRACTION:
            return ["last_hidden_state" if "last_hidden_state" in tensors else next(iter(tensors))]
        named = task_output_names(self.task, tensors)
        if named is not None:
            return named
        wanted = list(_COMMON_OUTPUTS[self.task])
        missing = [name for name in wanted if name not in tensors]
        if missing:
            raise ExportError(
                f"The generic export of model type {self.model_type!r} needs the "
                f"{self.task.value} outputs {missing}, but {self.model_class.__name__} returns "
                f"{list(tensors)}.",
                reason=Reason.OUTPUTS_NOT_FOUND,
            )
        return wanted

    def _output_axes(
        self, first: tuple[ShapeSet, dict], second: tuple[ShapeSet, dict]
    ) -> dict[str, Axes]:
        """Name each output axis after the input axis it follows, across two runs."""
        used = {d for i in self.layout for d in i.dims if isinstance(d, str)}
        names = self._output_names(first[1])
        return output_axes(names, first, second, [n for n in _AXIS_PREFERENCE if n in used])

    @contextlib.contextmanager
    def patch_model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Mixture-of-experts layers trace as batched matmuls over gathered expert weights:
        transformers' default, grouped_mm, is a custom operator no ONNX function exists for,
        and the eager loop over experts is data-dependent. A tracing failure is reported as
        the generic path's step."""
        experts = _experts_implementation(model)
        if experts not in (None, _TRACEABLE_EXPERTS):
            model.set_experts_implementation(_TRACEABLE_EXPERTS)
        try:
            yield model
        except ExportError as e:
            raise ExportError(
                f"The generic export of model type {self.model_type!r} failed at tracing "
                f"{self.model_class.__name__}: {e}",
                reason=e.reason or Reason.TRACING_FAILED,
            ) from e
        finally:
            if experts not in (None, _TRACEABLE_EXPERTS):
                model.set_experts_implementation(experts)


def _experts_implementation(model: torch.nn.Module) -> str | None:
    """The model's mixture-of-experts implementation, None where it has no setting."""
    if not hasattr(model, "set_experts_implementation"):
        return None
    return getattr(getattr(model, "config", None), "_experts_implementation", None)

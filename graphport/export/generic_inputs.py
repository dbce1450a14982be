"""The generic export path's inputs: which modality a model class takes, what the config
says about its sizes, and how each kind of input is filled (steps 1 and 2 of
``graphport.export.generic``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
from transformers import PretrainedConfig

from graphport.errors import Reason, UnsupportedModelError
from graphport.export.config import Axes
from graphport.export.tasks import Task

Dims = tuple[int | str, ...]

# Axis sizes per modality, for tracing and for the two validation shape sets. Trace sizes
# avoid 0, 1 and equal values on different axes; validation sizes differ on every axis.
SIZES: dict[str, tuple[dict[str, int], ...]] = {
    "text": (
        {"batch": 2, "sequence": 16, "choice": 3, "decoder_sequence": 5, "image_batch": 3},
        {"batch": 1, "sequence": 11, "choice": 2, "decoder_sequence": 7, "image_batch": 2},
        {"batch": 3, "sequence": 29, "choice": 4, "decoder_sequence": 9, "image_batch": 1},
    ),
    "vision": (
        {"batch": 2, "sequence": 16, "decoder_sequence": 5, "image_batch": 3},
        {"batch": 1, "sequence": 11, "decoder_sequence": 7, "image_batch": 2},
        {"batch": 3, "sequence": 29, "decoder_sequence": 9, "image_batch": 1},
    ),
    # ``sequence`` counts waveform samples, ``frames`` feature frames (multiples of 16, so
    # convolutional subsampling divides them evenly).
    "audio": (
        {"batch": 2, "sequence": 3200, "frames": 64, "decoder_sequence": 5},
        {"batch": 1, "sequence": 2400, "frames": 48, "decoder_sequence": 7},
        {"batch": 3, "sequence": 4800, "frames": 96, "decoder_sequence": 9},
    ),
    # ``sequence`` counts the steps of a trajectory (states, actions, returns).
    "trajectory": (
        {"batch": 2, "sequence": 16},
        {"batch": 1, "sequence": 11},
        {"batch": 3, "sequence": 29},
    ),
}
MODALITIES = {
    "input_ids": "text",
    "pixel_values": "vision",
    "input_values": "audio",
    "input_features": "audio",
    "states": "trajectory",  # the decision transformer (reinforcement-learning)
}
# A trajectory's inputs beside its states: name -> (the config's size of one step, kind).
TRAJECTORY = {
    "actions": ("act_dim", "floats"),
    "rewards": (None, "floats"),
    "returns_to_go": (None, "floats"),
    "timesteps": (None, "steps"),
    "attention_mask": (None, "ones"),
}
# Names audio models give a mask of valid frames or samples.
AUDIO_MASKS = ("attention_mask", "input_features_mask", "padding_mask")
# Names under which configs give the size of one audio feature frame.
FEATURE_SIZES = (
    "num_mel_bins",
    "feature_size",
    "input_feat_per_channel",
    "n_mels",
    "feature_projection_input_dim",
)


@dataclasses.dataclass(frozen=True)
class GenericInput:
    """A graph input: its name, its dims (names are dynamic axes, ints are static) and
    what kind of data fills it."""

    name: str
    dims: Dims
    kind: str  # ids | mask | segments | waveform | floats | ones | steps

    @property
    def axes(self) -> Axes:
        return {i: d for i, d in enumerate(self.dims) if isinstance(d, str)}


Layout = tuple[GenericInput, ...]


def model_class(model_type: str, task: Task) -> type:
    """The transformers class that implements ``task`` for ``model_type``."""
    import transformers

    name = task.model_class_name(model_type)
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise UnsupportedModelError(
            f"transformers has no {task.value} model class for model type {model_type!r}."
        )
    return cls


def main_input(cls: type, model_type: str) -> str:
    """The class's ``main_input_name``; where its forward does not take that (a vision
    tower that inherited ``input_ids``), the first forward parameter the generic path can
    make."""
    main = getattr(cls, "main_input_name", "input_ids")
    parameters = inspect.signature(cls.forward).parameters
    if isinstance(main, str) and main not in parameters:
        main = next((name for name in parameters if name in MODALITIES), main)
    if not isinstance(main, str) or main not in MODALITIES:
        raise UnsupportedModelError(
            f"Model type {model_type!r} cannot be exported generically: {cls.__name__}'s main "
            f"input is {main!r}, and the generic path makes inputs only for "
            f"{', '.join(MODALITIES)}; it needs an export config of its own.",
            reason=Reason.MAIN_INPUT_UNSUPPORTED,
        )
    return main


def text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def config_value(config: Any, *names: str) -> Any:
    """The first of ``names`` the config has set, else its text, vision, audio or other
    sub-configs (a speech model keeps its feature size in its encoder's config)."""
    candidates = [
        config,
        text_config(config),
        getattr(config, "vision_config", None),
        getattr(config, "audio_config", None),
        *(v for v in vars(config).values() if isinstance(v, PretrainedConfig)),
    ]
    for candidate in candidates:
        for name in names:
            try:
                value = getattr(candidate, name, None) if candidate is not None else None
            except Exception:  # a per-layer attribute, not readable globally
                value = None
            if value is not None:
                return value
    return None


def special_token_ids(config: Any) -> set[int]:
    """Every id a config (and its sub-configs) names as a special token: dummy ids avoid
    them (an image token without an image, an end-of-sequence mid-sentence)."""
    ids: set[int] = set()
    for name, value in vars(config).items():
        if isinstance(value, PretrainedConfig):
            ids |= special_token_ids(value)
        elif name.endswith(("token_id", "token_index", "token_ids")):
            values = value if isinstance(value, list | tuple) else [value]
            ids |= {v for v in values if isinstance(v, int) and not isinstance(v, bool)}
    return ids


def required_parameters(cls: type, given: set[str]) -> list[str]:
    """Forward parameters without a default that are not among ``given``."""
    return [
        name
        for name, p in inspect.signature(cls.forward).parameters.items()
        if name != "self"
        and p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in given
    ]


def check_generic_support(model_type: str, task: Task = Task.FEATURE_EXTRACTION) -> None:
    """Refuse, before any model is built, a model class whose inputs the generic path
    cannot make: its main input, or a forward parameter it requires."""
    cls = model_class(model_type, task)
    main = main_input(cls, model_type)
    known = {main, "input_ids", "attention_mask", "token_type_ids", "pixel_values"}
    missing = required_parameters(cls, known | {"decoder_input_ids"})
    if missing:
        raise UnsupportedModelError(
            requires_message(model_type, cls, missing), reason=Reason.INPUTS_NOT_DERIVED
        )


def requires_message(model_type: str, cls: type, missing: list[str]) -> str:
    return (
        f"Model type {model_type!r} cannot be exported generically: {cls.__name__}.forward "
        f"requires {', '.join(missing)}, which the generic path cannot derive; it needs an "
        "export config of its own."
    )


def describe(layout: Layout) -> str:
    return ", ".join(f"{i.name}{list(i.dims)}" for i in layout)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def right_padded_mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Row 0 full, the others lose up to half their positions at the end, so validation
    exercises masked positions (as TextOnnxConfig's masks do)."""
    mask = np.ones(shape, dtype=np.int64)
    rows = mask.reshape(-1, shape[-1])
    for i in range(1, rows.shape[0]):
        rows[i, shape[-1] - int(rng.integers(0, shape[-1] // 2 + 1)) :] = 0
    return mask


def waveform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A normalized waveform per row (last axis is time): a few sines plus noise."""
    rows = int(np.prod(shape[:-1]))
    t = np.arange(shape[-1], dtype=np.float32) / 16000.0
    freqs = rng.uniform(100.0, 2000.0, size=(rows, 3)).astype(np.float32)
    wave = np.sin(2 * np.pi * freqs[:, :, None] * t[None, None, :]).sum(axis=1)
    wave += 0.1 * rng.standard_normal(wave.shape, dtype=np.float32)
    wave = (wave - wave.mean(-1, keepdims=True)) / wave.std(-1, keepdims=True)
    return wave.reshape(shape).astype(np.float32)


def trajectory_inputs(config: Any, model_type: str, parameters: Mapping[str, Any]) -> Layout:
    """States, actions, rewards, returns-to-go and time steps, one row per step (the
    decision transformer), those of ``TRAJECTORY`` the forward's ``parameters`` name;
    rewards and returns are one number a step."""

    def step_size(name: str) -> int:
        value = config_value(config, name)
        if not isinstance(value, int):
            raise UnsupportedModelError(
                f"Model type {model_type!r} cannot be exported generically: its config gives "
                f"no {name} for its trajectory inputs; it needs an export config of its own.",
                reason=Reason.INPUTS_NOT_DERIVED,
            )
        return value

    inputs = [GenericInput("states", ("batch", "sequence", step_size("state_dim")), "floats")]
    for name, (size, kind) in TRAJECTORY.items():
        if name in parameters:
            step = (step_size(size),) if size else (1,) if kind == "floats" else ()
            inputs.append(GenericInput(name, ("batch", "sequence", *step), kind))
    return tuple(inputs)

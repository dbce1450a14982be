"""Pipeline inputs checked against the export's modality before transformers sees them.

``graphport.pipeline`` builds each transformers pipeline as a subclass with
``CheckedInputs`` first, so every input item goes through ``check_input`` in
``preprocess``:

1. A text export takes strings (and the dicts or pairs its pipeline takes); an image,
   an array or bytes is refused in one sentence naming the export's task.
2. An image export takes images, image files, URLs and base64 strings; other text is
   refused (transformers' "Incorrect image source" names no export).
3. An audio export takes waveforms (arrays or the ``{"raw", "sampling_rate"}`` dicts
   the pipelines take); an audio file path or its bytes is decoded here with libsndfile
   and resampled to the feature extractor's rate, since transformers would need ffmpeg;
   what cannot be decoded, and an image, is refused in one sentence.
"""

from __future__ import annotations

import base64
import binascii
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import UsageError
from graphport.runtimes.predict import read_audio

logger = logging.getLogger(__name__)


def describe(item: Any) -> str:
    """What ``item`` is, for an error message."""
    if _is_image(item):
        return "an image"
    if isinstance(item, np.ndarray):
        return f"a {item.ndim}-d array"
    if isinstance(item, bytes | bytearray):
        return f"{len(item)} bytes"
    return f"a {type(item).__name__}"


def _is_image(item: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with the vision extras
        return False
    return isinstance(item, Image.Image)


def _is_image_reference(item: str) -> bool:
    if item.startswith(("http://", "https://", "data:image/")) or Path(item).is_file():
        return True
    try:
        base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(item) >= 16


def check_input(item: Any, modality: str, export: str, sampling_rate: int | None = None) -> Any:
    """``item`` as the pipeline should get it (rules 1-3), or a ``UsageError``."""
    if modality == "text":
        if _is_image(item) or isinstance(item, np.ndarray | bytes | bytearray):
            raise UsageError(
                f"{export}, which takes text, was given {describe(item)}; pass a string "
                "(or use an export of a model for that input)."
            )
        return item
    if modality == "image":
        if isinstance(item, str) and not _is_image_reference(item):
            raise UsageError(
                f"{export}, which takes images, was given the text {item[:40]!r}; pass a "
                "PIL image, an image file path or a URL."
            )
        if isinstance(item, np.ndarray) and item.ndim < 2:
            raise UsageError(
                f"{export}, which takes images, was given {describe(item)}; pass a PIL "
                "image, an image file path or a URL."
            )
        return item
    if modality == "audio":
        if _is_image(item):
            raise UsageError(
                f"{export}, which takes audio, was given an image; pass a waveform array "
                "or an audio file (wav, flac, ogg, mp3)."
            )
        if isinstance(item, str | Path | bytes | bytearray):
            return decode_audio(item, sampling_rate or 16000, export)
    return item


def decode_audio(item: str | Path | bytes | bytearray, sampling_rate: int, export: str) -> Any:
    """An audio file (its path or its bytes) as a float32 waveform at ``sampling_rate``."""
    if isinstance(item, str | Path):
        if not Path(item).is_file():
            raise UsageError(
                f"{export}, which takes audio, was given {str(item)[:60]!r}, which is no "
                "audio file; pass a waveform array or the path of a wav, flac, ogg or mp3."
            )
        return read_audio(item, sampling_rate)
    with tempfile.NamedTemporaryFile(suffix=".audio") as file:
        file.write(bytes(item))
        file.flush()
        try:
            return read_audio(file.name, sampling_rate)
        except UsageError as e:
            # libsndfile names the scratch file; the reason is what follows it.
            reason = str(e.__cause__).rsplit(": ", 1)[-1].rstrip(".")
            raise UsageError(
                f"{export} was given {len(item)} bytes that cannot be decoded as audio "
                f"({reason}); pass a waveform array, or wav, flac, ogg or mp3 bytes."
            ) from e.__cause__


class CheckedInputs:
    """Mixed in before a transformers pipeline class: ``preprocess`` checks each input."""

    graphport_modality = "text"
    graphport_export = "the export"

    def preprocess(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        extractor = getattr(self, "feature_extractor", None)
        rate = getattr(extractor, "sampling_rate", None)
        inputs = check_input(inputs, self.graphport_modality, self.graphport_export, rate)
        return super().preprocess(inputs, *args, **kwargs)  # type: ignore[misc]


def checked_class(impl: type | str, modality: str, export: str) -> type:
    """``impl`` (a transformers pipeline class, or its dotted name as transformers' task
    table may hold it) with ``CheckedInputs`` in front."""
    if isinstance(impl, str):
        import importlib

        module, _, name = impl.rpartition(".")
        impl = getattr(importlib.import_module(module), name)
    return type(
        impl.__name__,
        (CheckedInputs, impl),
        {"graphport_modality": modality, "graphport_export": export, "__module__": __name__},
    )

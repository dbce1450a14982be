"""``graphport run``: raw inputs -> task-level results, through the same pipelines as
``graphport.pipeline``.

Rules:

1. Each input is a text, an image file or an audio file (by suffix). The pipelines open
   files themselves; only the zero-shot ones, which take two kinds of input, get them
   opened here (images with PIL, audio decoded and resampled to the extractor's rate).
2. A feature-extraction export is read as embeddings with their cosine similarities
   (``graphport.runtimes.predict.embed``): no pipeline returns sentence embeddings. A
   two-tower export given texts and images (or audio) classifies each file against the
   texts as candidate labels (the zero-shot pipeline); given one kind, it embeds them.
3. Every other task goes through ``graphport.pipeline`` (transformers' pipeline, or
   graphport's own where Transformers 5 removed it: question-answering takes QUESTION
   CONTEXT, text2text, image-to-text); one result per input.
4. Results are plain JSON data: images (masks, depth maps) become their size and mode,
   tensors their shape and values.
5. An image-text-to-text export takes its inputs, image files and texts in the order
   given, as one user message through the processor's chat template; the result is the
   reply's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from graphport.api.image_text import IMAGE_TEXT_TASK, open_image
from graphport.api.load import pipeline, preprocessors
from graphport.errors import UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes.generate import generation_defaults
from graphport.runtimes.predict import (
    Prediction,
    default_runtime,
    embed,
    input_kind,
    read_audio,
)
from graphport.validators.reference import load_reference


def predict(
    export_dir: str | Path,
    inputs: list[str],
    runtime: str | None = None,
    **runtime_options: Any,
) -> Prediction:
    """Task-level results of the export on ``inputs`` (rules 1-3 of the module)."""
    directory = ExportDirectory(export_dir)
    runtime = runtime or default_runtime(directory)
    if runtime.strip().lower() == "torch" and "model" not in runtime_options:
        # The torch runtime runs the eager model it is handed; it reads no checkpoint.
        runtime_options = {**runtime_options, "model": load_reference(directory)}
    kinds = [input_kind(item) for item in inputs]
    if "text" in kinds and not directory.has_tokenizer():
        raise UsageError(
            f"{directory.path} has no tokenizer files, so texts cannot be tokenized; "
            "re-export from a checkpoint that includes its tokenizer."
        )
    towers = len(directory.manifest.graphs) > 1 and not directory.manifest.kv_cache
    if directory.manifest.task == "feature-extraction" and not (towers and len(set(kinds)) > 1):
        return embed(directory, inputs, runtime, **runtime_options)
    pipe = pipeline(directory, runtime=runtime, runtime_options=runtime_options)
    if towers:  # rule 2: texts are the candidate labels of each file
        labels = [item for item, kind in zip(inputs, kinds, strict=True) if kind == "text"]
        files = [item for item, kind in zip(inputs, kinds, strict=True) if kind != "text"]
        readings = [
            _jsonable(pipe(_open(directory, item), candidate_labels=labels)) for item in files
        ]
        return Prediction(directory.manifest.task, runtime, files, {}, readings)
    if directory.manifest.task == "question-answering":
        if len(inputs) != 2 or kinds != ["text", "text"]:
            raise UsageError("question-answering takes two texts: QUESTION CONTEXT.")
        answer = pipe(question=inputs[0], context=inputs[1])
        return Prediction(
            directory.manifest.task, runtime, [" | ".join(inputs)], {}, [_jsonable(answer)]
        )
    generate: dict[str, Any] = {}
    if directory.manifest.kv_cache:  # the export's own length, as `graphport generate`
        generate["max_new_tokens"] = generation_defaults(directory)["max_new_tokens"]
    if directory.manifest.task == IMAGE_TEXT_TASK:  # rule 5: one prompt of them all
        content = [
            {"type": "image", "image": open_image(item)}
            if kind == "image"
            else {"type": "text", "text": item}
            for item, kind in zip(inputs, kinds, strict=True)
        ]
        answer = pipe(text=[{"role": "user", "content": content}], **generate)
        reply = answer[0]["generated_text"][-1]["content"]
        return Prediction(
            directory.manifest.task, runtime, [" | ".join(inputs)], {}, [{"generated_text": reply}]
        )
    # Image and audio file paths go to the pipeline as they are: it opens images, and
    # graphport.pipeline decodes audio files itself (api/inputs.py).
    readings = [_jsonable(pipe(item, **generate)) for item in inputs]
    return Prediction(directory.manifest.task, runtime, list(inputs), {}, readings)


def _open(directory: ExportDirectory, item: str) -> Any:
    """A file for a zero-shot pipeline, opened (rule 1)."""
    kind = input_kind(item)
    if kind == "image":
        from PIL import Image

        return Image.open(item).convert("RGB")
    if kind == "audio":
        extractor = preprocessors(directory).get("feature_extractor")
        if extractor is None:
            raise UsageError(
                f"{directory.path} has no feature extractor, so audio cannot be prepared; "
                "re-export from a checkpoint that includes its processor files."
            )
        rate = int(extractor.sampling_rate)
        return {"raw": read_audio(item, rate), "sampling_rate": rate}
    return item


def _jsonable(value: Any) -> Any:
    """Pipeline results as JSON data (rule 4)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
        return {"image": {"size": list(value.size), "mode": value.mode}}
    array = np.asarray(value.detach() if hasattr(value, "detach") else value)
    return {"shape": list(array.shape), "data": array.round(6).tolist()}

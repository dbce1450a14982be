"""The Python surface for applications: an export as a transformers model or pipeline.

``load(OUT)`` returns the export as a transformers model running on a runtime (see
graphport/runtimes/model.py); ``pipeline(OUT)`` builds ``transformers.pipeline`` around it
with the tokenizer, image processor or feature extractor copied into the export, for the
task the manifest records.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from graphport.api.generated_text import SERVED, GeneratedTextPipeline
from graphport.api.inputs import checked_class
from graphport.api.question_answering import QuestionAnsweringPipeline
from graphport.errors import UnsupportedModelError, UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes.model import RuntimeModel
from graphport.runtimes.model_factory import load_model

logger = logging.getLogger(__name__)

# An export's task -> the transformers pipeline task that serves it, where they differ.
PIPELINE_TASKS = {
    "semantic-segmentation": "image-segmentation",
    "instance-segmentation": "image-segmentation",
    "panoptic-segmentation": "image-segmentation",
    "universal-segmentation": "image-segmentation",
}
# Pipeline tasks an export of another task also serves (its own task aside).
ALSO_SERVES = {"feature-extraction": ("image-feature-extraction",)}
# Two-tower exports (feature-extraction, a graph per tower) serve zero-shot classification.
TWO_TOWER_TASKS = {
    "vision": "zero-shot-image-classification",
    "audio": "zero-shot-audio-classification",
}
# Pipelines that take images and text together (their inputs are not checked here).
MULTIMODAL_TASKS = ("image-text-to-text",)
# Exported tasks Transformers 5 has no pipeline for (it removed some).
NO_PIPELINE = (
    "question-answering",
    "multiple-choice",
    "text2text-generation",
    "image-to-text",
    "masked-im",
    "image-to-image",
    "audio-xvector",
    "audio-frame-classification",
    "text-to-spectrogram",
    "time-series-forecasting",
    "reinforcement-learning",
)


def load(
    export_dir: str | Path | ExportDirectory, runtime: str = "onnxruntime", **runtime_options: Any
) -> RuntimeModel:
    """The export as a transformers model whose forward runs on ``runtime``.

    ``runtime_options`` go to the runtime adapter (``threads``, onnxruntime ``providers``,
    OpenVINO ``device`` / ``precision``).
    """
    return load_model(export_dir, runtime, **runtime_options)


def pipeline(
    export_dir: str | Path | ExportDirectory,
    task: str | None = None,
    runtime: str = "onnxruntime",
    runtime_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """``transformers.pipeline`` for the export's task, on ``runtime``, with the
    preprocessors copied into the export (``kwargs`` go to ``transformers.pipeline``)."""
    import transformers

    directory = (
        export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
    )
    served = SERVED.get(directory.manifest.task, ())
    if served and (task is None or task.split("_")[0] in served):
        # Transformers 5 removed these pipelines: generate() and decode (api/generated_text.py).
        found = {**preprocessors(directory), **kwargs}
        model = load(directory, runtime, **(runtime_options or {}))
        return GeneratedTextPipeline(model, task or directory.manifest.task, **found)
    if directory.manifest.task == "question-answering" and task in (None, "question-answering"):
        # Transformers 5 removed this pipeline too: graphport's (api/question_answering.py).
        model = load(directory, runtime, **(runtime_options or {}))
        tokenizer = kwargs.pop("tokenizer", None) or preprocessors(directory).get("tokenizer")
        return QuestionAnsweringPipeline(model, tokenizer, **kwargs)
    task = pipeline_task(directory, task)
    model = load(directory, runtime, **(runtime_options or {}))
    for name, value in preprocessors(directory).items():
        kwargs.setdefault(name, value)
    kwargs.setdefault("device", "cpu")
    if task in MULTIMODAL_TASKS and "processor" not in kwargs:
        # These pipelines take the processor whole (tokenizer, image processor, template).
        from transformers import AutoProcessor

        kwargs["processor"] = AutoProcessor.from_pretrained(directory.path, local_files_only=True)
    if (
        "pipeline_class" not in kwargs
        and not task.startswith("zero-shot-")
        and task not in MULTIMODAL_TASKS
    ):
        # Inputs of the wrong modality get one sentence (api/inputs.py), audio files are
        # decoded without ffmpeg (a zero-shot pipeline takes two modalities: unchecked).
        from transformers.pipelines import check_task

        export = f"The {directory.manifest.task} export {directory.path}"
        impl = check_task(task)[1]["impl"]
        kwargs["pipeline_class"] = checked_class(impl, model.input_modalities, export)
    return transformers.pipeline(task, model=model, **kwargs)


def pipeline_task(directory: ExportDirectory, task: str | None) -> str:
    """The transformers pipeline task for ``task`` (default: the export's), checked."""
    from transformers.pipelines import TASK_ALIASES

    exported = directory.manifest.task
    towers = {g.name for g in directory.manifest.graphs} - {"text"}
    if len(towers) == 1 and towers <= set(TWO_TOWER_TASKS):  # a dual encoder or CLAP
        exported = TWO_TOWER_TASKS[towers.pop()]
    if task is None:
        if exported in NO_PIPELINE:
            raise UnsupportedModelError(
                f"{directory.path} is a {exported} export, and Transformers 5 has no "
                f"{exported} pipeline; use graphport.load({str(directory.path)!r}) and call "
                "the model (or generate()) directly."
            )
        return PIPELINE_TASKS.get(exported, exported)
    wanted = TASK_ALIASES.get(task, task)
    served = {PIPELINE_TASKS.get(exported, exported), exported, *ALSO_SERVES.get(exported, ())}
    if wanted not in served:
        raise UsageError(
            f"{directory.path} is a {exported} export, so it cannot serve a {task} pipeline; "
            f"pass task={PIPELINE_TASKS.get(exported, exported)!r} (or leave it out), or "
            f"export the model with --task {task}."
        )
    return PIPELINE_TASKS.get(wanted, wanted)


def preprocessors(directory: ExportDirectory) -> dict[str, Any]:
    """The tokenizer, image processor and feature extractor saved in the export, by the
    keyword ``transformers.pipeline`` takes each with."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    found: dict[str, Any] = {}
    if directory.has_tokenizer():
        found["tokenizer"] = AutoTokenizer.from_pretrained(directory.path, local_files_only=True)
    config_file = directory.path / "preprocessor_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if "image_processor_type" in config:
            found["image_processor"] = AutoImageProcessor.from_pretrained(
                directory.path, local_files_only=True
            )
        elif "feature_extractor_type" in config:
            found["feature_extractor"] = AutoFeatureExtractor.from_pretrained(
                directory.path, local_files_only=True
            )
    elif (directory.path / "processor_config.json").is_file():
        # Transformers 5 saves a processor's feature extractor or image processor inside
        # processor_config.json, not as a preprocessor_config.json of its own.
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(directory.path, local_files_only=True)
        for name in ("tokenizer", "image_processor", "feature_extractor"):
            if getattr(processor, name, None) is not None:
                found.setdefault(name, getattr(processor, name))
    logger.debug("Preprocessors of %s: %s", directory.path, ", ".join(found) or "none")
    return found

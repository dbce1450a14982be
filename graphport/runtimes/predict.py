"""Run an export on user inputs (texts or image files) and read the outputs as predictions.

Texts are tokenized with the tokenizer copied into the export directory (its defaults,
with padding), images go through the copied image processor. The raw outputs come back
with a task-aware reading: labels for classifiers, filled masks, answer spans, and for
feature extraction mean-pooled, normalized embeddings with their cosine similarities.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory


@dataclasses.dataclass
class Prediction:
    task: str
    runtime: str
    inputs: list[str]
    outputs: dict[str, np.ndarray]
    readings: list[Any]
    similarity: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task": self.task,
            "runtime": self.runtime,
            "inputs": self.inputs,
            "outputs": {
                k: {"shape": list(v.shape), "data": v.tolist()} for k, v in self.outputs.items()
            },
            "predictions": self.readings,
        }
        if self.similarity is not None:
            data["similarity"] = self.similarity.round(6).tolist()
        return data

    def render(self) -> str:
        lines = []
        for text, reading in zip(self.inputs, self.readings, strict=True):
            lines.append(f"{text!r}: {reading}")
        if self.similarity is not None and len(self.inputs) > 1:
            lines.append("cosine similarity:")
            for i, row in enumerate(self.similarity):
                lines.append(f"  [{i}] " + "  ".join(f"{v:6.3f}" for v in row))
        return "\n".join(lines)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _label(config: Any, index: int) -> str:
    labels = getattr(config, "id2label", None) or {}
    return str(labels.get(index, labels.get(str(index), index)))


def mean_pool(hidden: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Masked mean over tokens, L2-normalized: the sentence-transformers embedding."""
    if mask is None:
        pooled = hidden.mean(axis=1)
    else:
        weights = mask[..., None].astype(hidden.dtype)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def prepare_inputs(
    directory: ExportDirectory, inputs: list[str]
) -> tuple[dict[str, np.ndarray], Any]:
    """Feeds for texts (tokenized) or image files (processed); returns (feeds, tokenizer)."""
    spec = directory.manifest.graph()
    names = [t.name for t in spec.inputs]
    modality = directory.manifest.modality
    if modality == "text":
        if not directory.has_tokenizer():
            raise UsageError(
                f"{directory.path} has no tokenizer files, so texts cannot be tokenized; "
                "re-export from a checkpoint that includes its tokenizer."
            )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory.path, local_files_only=True)
        if "choice" in str(spec.inputs[0].shape):
            raise UsageError("`graphport run` does not take multiple-choice inputs yet.")
        if directory.manifest.task == "question-answering":
            if len(inputs) != 2:
                raise UsageError("question-answering takes two inputs: QUESTION CONTEXT.")
            encoded = tokenizer(inputs[0], inputs[1], truncation=True, return_tensors="np")
        else:
            encoded = tokenizer(inputs, padding=True, truncation=True, return_tensors="np")
        feeds = {k: np.asarray(v) for k, v in encoded.items() if k in names}
        if "token_type_ids" in names and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return feeds, tokenizer
    if modality == "vision":
        if not (directory.path / "preprocessor_config.json").is_file():
            raise UsageError(
                f"{directory.path} has no preprocessor_config.json, so images cannot be "
                "prepared; re-export from a checkpoint that includes its image processor."
            )
        from PIL import Image
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(directory.path, local_files_only=True)
        missing = [p for p in inputs if not Path(p).is_file()]
        if missing:
            raise UsageError(f"Image file(s) not found: {', '.join(missing)}.")
        images = [Image.open(p).convert("RGB") for p in inputs]
        return {"pixel_values": processor(images, return_tensors="np")["pixel_values"]}, None
    raise UsageError(f"`graphport run` does not take {modality} inputs yet.")


def predict(
    export_dir: str | Path, inputs: list[str], runtime: str = "onnxruntime", **options: Any
) -> Prediction:
    """Prepare ``inputs`` with the export's preprocessor, run them, read the outputs."""
    from transformers import AutoConfig

    from graphport.runtimes import get_runtime_class

    directory = ExportDirectory(export_dir)
    feeds, tokenizer = prepare_inputs(directory, inputs)
    engine = get_runtime_class(runtime)(directory, **options)
    outputs = engine.run(feeds)
    config = AutoConfig.from_pretrained(directory.path, local_files_only=True)
    task = directory.manifest.task
    readings: list[Any] = []
    similarity = None
    if task == "feature-extraction" and "input_ids" in feeds:
        embeddings = mean_pool(outputs["last_hidden_state"], feeds.get("attention_mask"))
        similarity = embeddings @ embeddings.T
        readings = [
            f"embedding[{e.shape[0]}] {[round(float(x), 4) for x in e[:4]]}..." for e in embeddings
        ]
    elif task in ("text-classification", "image-classification", "audio-classification"):
        probs = _softmax(outputs["logits"].astype(np.float64))
        readings = [
            {"label": _label(config, int(p.argmax())), "score": round(float(p.max()), 4)}
            for p in probs
        ]
    elif task == "fill-mask" and tokenizer is not None and tokenizer.mask_token_id is not None:
        for ids, logits in zip(feeds["input_ids"], outputs["logits"], strict=True):
            positions = np.flatnonzero(ids == tokenizer.mask_token_id)
            readings.append(
                [
                    tokenizer.convert_ids_to_tokens(np.argsort(-logits[p])[:5].tolist())
                    for p in positions
                ]
            )
    elif task == "token-classification":
        for ids, logits in zip(feeds["input_ids"], outputs["logits"], strict=True):
            tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
            readings.append(
                [
                    (t, _label(config, int(i)))
                    for t, i in zip(tokens, logits.argmax(-1), strict=True)
                    if t not in tokenizer.all_special_tokens
                ]
            )
    elif task == "question-answering":
        start = int(outputs["start_logits"][0].argmax())
        end = max(start, int(outputs["end_logits"][0].argmax()))
        answer = tokenizer.decode(feeds["input_ids"][0][start : end + 1])
        inputs = [f"{inputs[0]} | {inputs[1]}"]
        readings = [{"answer": answer, "start": start, "end": end}]
    else:
        shapes = {k: list(v.shape) for k, v in outputs.items()}
        readings = [shapes for _ in inputs]
    if len(readings) != len(inputs):
        readings = readings[: len(inputs)] + [None] * (len(inputs) - len(readings))
    return Prediction(task, engine.describe(), list(inputs), outputs, readings, similarity)

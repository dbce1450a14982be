"""Raw inputs -> graph feeds, and the one reading no pipeline makes: embeddings.

Texts are tokenized with the tokenizer copied into the export directory (its defaults,
with padding), image files go through the copied image processor, audio files are decoded
(libsndfile) and resampled to the feature extractor's rate. ``embed`` reads a
feature-extraction export as sentence-transformers does: masked mean-pooled, normalized
token states, with their cosine similarities; every other task's reading comes from the
transformers pipelines (graphport/api/run.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory, GraphSpec
from graphport.runtimes import default_runtimes, get_runtime_class


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


def mean_pool(hidden: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Masked mean over tokens, L2-normalized: the sentence-transformers embedding."""
    if mask is None:
        pooled = hidden.mean(axis=1)
    else:
        weights = mask[..., None].astype(hidden.dtype)
        pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"})


def input_kind(item: str) -> str:
    """``image`` or ``audio`` for a file of such a type (by suffix), else ``text``."""
    path = Path(item)
    if path.suffix.lower() in IMAGE_SUFFIXES | AUDIO_SUFFIXES:
        if not path.is_file():
            raise UsageError(f"Input file {item} not found.")
        return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "audio"
    return "text"


def read_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """A mono float32 waveform at ``sampling_rate`` (wav, flac, ogg, mp3: what libsndfile
    reads), resampled with a polyphase filter when the file's rate differs."""
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as e:
        raise UsageError(
            f"Audio file {path} cannot be decoded ({e}); pass wav, flac, ogg or mp3."
        ) from e
    samples = samples.mean(axis=1)
    if rate != sampling_rate:
        from math import gcd

        from scipy.signal import resample_poly

        divisor = gcd(int(rate), int(sampling_rate))
        samples = resample_poly(samples, sampling_rate // divisor, int(rate) // divisor)
    return samples.astype(np.float32)


def _graph_kind(spec: GraphSpec) -> str:
    names = {t.name for t in spec.inputs}
    if "pixel_values" in names:
        return "image"
    if names & {"input_values", "input_features"}:
        return "audio"
    return "text"


def _require_file(directory: ExportDirectory, names: tuple[str, ...], what: str) -> None:
    if not any((directory.path / name).is_file() for name in names):
        raise UsageError(
            f"{directory.path} has no {names[0]}, so {what} cannot be prepared; re-export "
            "from a checkpoint that includes its processor files."
        )


def prepare_inputs(
    directory: ExportDirectory, inputs: list[str], graph: str | None = None
) -> tuple[dict[str, np.ndarray], Any]:
    """Feeds of one graph (default: the export's only or first graph) for texts
    (tokenized), image files (processed) or audio files (decoded, resampled, featurized);
    returns (feeds, tokenizer or None)."""
    spec = directory.manifest.graph(graph) if graph else directory.manifest.graphs[0]
    names = [t.name for t in spec.inputs]
    kind = _graph_kind(spec)
    given = {input_kind(item) for item in inputs}
    if given != {kind}:
        raise UsageError(
            f"The {spec.name} graph of {directory.path} takes {kind} inputs, not "
            f"{' and '.join(sorted(given))}; pass "
            + {"text": "texts", "image": "image files", "audio": "audio files"}[kind]
            + "."
        )
    if kind == "text":
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
        if "decoder_input_ids" in names:  # a bare encoder-decoder: the decoder's start token
            feeds.update(_decoder_start(directory, len(feeds["input_ids"]), names))
        return feeds, tokenizer
    if kind == "image":
        _require_file(directory, ("preprocessor_config.json",), "images")
        from PIL import Image
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(directory.path, local_files_only=True)
        images = [Image.open(p).convert("RGB") for p in inputs]
        return {"pixel_values": processor(images, return_tensors="np")["pixel_values"]}, None
    _require_file(directory, ("preprocessor_config.json",), "audio")
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(directory.path, local_files_only=True)
    rate = int(extractor.sampling_rate)
    waves = [read_audio(p, rate) for p in inputs]
    encoded = extractor(waves, sampling_rate=rate, padding=True, return_tensors="np")
    feeds = {k: np.asarray(v) for k, v in encoded.items() if k in names}
    if "attention_mask" in names and "attention_mask" not in feeds:
        width = next(iter(feeds.values())).shape[1]
        feeds["attention_mask"] = np.ones((len(waves), width), dtype=np.int64)
    return feeds, _tokenizer_if_any(directory)  # CTC exports decode with it


def _decoder_start(directory: ExportDirectory, batch: int, names: list[str]) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory.path, local_files_only=True)
    start = getattr(config, "decoder_start_token_id", None)
    start = start if start is not None else (config.pad_token_id or 0)
    feeds = {"decoder_input_ids": np.full((batch, 1), start, dtype=np.int64)}
    if "decoder_attention_mask" in names:
        feeds["decoder_attention_mask"] = np.ones((batch, 1), dtype=np.int64)
    return feeds


def _tokenizer_if_any(directory: ExportDirectory) -> Any:
    if not directory.has_tokenizer():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory.path, local_files_only=True)


def default_runtime(directory: ExportDirectory) -> str:
    """The runtime `run` and `generate` use unless told: the export's target, else
    onnxruntime for ONNX graphs, else the first installed runtime of the format."""
    names = default_runtimes(directory.manifest)
    if not names:
        raise UsageError(
            f"No installed runtime runs {directory.manifest.format} exports; install one."
        )
    return "onnxruntime" if "onnxruntime" in names else names[0]


def embed(
    export_dir: str | Path | ExportDirectory,
    inputs: list[str],
    runtime: str | None = None,
    **options: Any,
) -> Prediction:
    """Embeddings of a feature-extraction export: masked mean-pooled, L2-normalized
    token states (the sentence-transformers reading) of a single graph, or each input
    through the tower of its kind for a two-tower export; with their cosine similarities
    (text against image is the zero-shot score of a dual encoder)."""
    directory = (
        export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
    )
    runtime = runtime or default_runtime(directory)
    if len(directory.manifest.graphs) > 1:
        return _embed_towers(directory, inputs, runtime, options)
    return _embed_single(directory, inputs, runtime, options)


def _embed_towers(
    directory: ExportDirectory, inputs: list[str], runtime: str, options: dict[str, Any]
) -> Prediction:
    """Each input through the tower of its kind; embeddings L2-normalized, and their
    cosine similarities (text against image is the zero-shot score of a dual encoder)."""
    towers = {_graph_kind(g): g for g in directory.manifest.graphs}
    kinds = [input_kind(item) for item in inputs]
    unknown = sorted(set(kinds) - set(towers))
    if unknown:
        raise UsageError(
            f"{directory.path} has {', '.join(towers)} towers, none for "
            f"{' and '.join(unknown)} inputs; pass "
            + " or ".join(
                {"text": "texts", "image": "image files", "audio": "audio files"}[k] for k in towers
            )
            + "."
        )
    embeddings: list[np.ndarray | None] = [None] * len(inputs)
    outputs: dict[str, np.ndarray] = {}
    for kind, spec in towers.items():
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if not rows:
            continue
        feeds, _ = prepare_inputs(directory, [inputs[i] for i in rows], spec.name)
        engine = get_runtime_class(runtime)(directory, graph=spec.name, **options)
        result = engine.run(feeds)
        name = spec.outputs[0].name
        outputs[name] = result[name]
        vectors = result[name].reshape(len(rows), -1).astype(np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        for i, vector in zip(rows, vectors, strict=True):
            embeddings[i] = vector
    stacked = np.stack([e for e in embeddings if e is not None])
    readings = [
        f"{kind} embedding[{e.shape[0]}] {[round(float(x), 4) for x in e[:4]]}..."
        for kind, e in zip(kinds, stacked, strict=True)
    ]
    return Prediction(
        directory.manifest.task, runtime, list(inputs), outputs, readings, stacked @ stacked.T
    )


def _embed_single(
    directory: ExportDirectory, inputs: list[str], runtime: str, options: dict[str, Any]
) -> Prediction:
    feeds, _ = prepare_inputs(directory, inputs)
    engine = get_runtime_class(runtime)(directory, **options)
    outputs = engine.run(feeds)
    if "last_hidden_state" not in outputs:
        raise UsageError(
            f"{directory.path} returns {', '.join(outputs)}, no last_hidden_state to embed "
            "from; use graphport.load() and read its outputs in Python."
        )
    mask = feeds.get("attention_mask") if "input_ids" in feeds else None
    # An encoder-decoder's sentence embedding is its encoder's (as sentence-T5's).
    hidden = outputs.get("encoder_last_hidden_state", outputs["last_hidden_state"])
    embeddings = mean_pool(hidden, mask)
    readings = [
        f"embedding[{e.shape[0]}] {[round(float(x), 4) for x in e[:4]]}..." for e in embeddings
    ]
    return Prediction(
        directory.manifest.task,
        engine.describe(),
        list(inputs),
        outputs,
        readings,
        embeddings @ embeddings.T,
    )

"""Checkpoint directory -> transformers config and eager model, with clear errors.

Everything a user can get wrong about a checkpoint is checked here, before torch is asked
to load it, so each problem gets one sentence that says what, why and how to fix it.
Nothing is downloaded: a hub id is looked up in the local Hugging Face cache only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from graphport.errors import ModelLoadError, Reason, UnsupportedModelError
from graphport.export.tasks import Task
from graphport.models.registry import REMOVED_MODEL_TYPES

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
# Files that make an export directory runnable on its own (tokenizers, processors, configs).
PREPROCESSOR_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "preprocessor_config.json",
    "processor_config.json",
    "feature_extractor_config.json",
    "image_processor_config.json",
    "chat_template.jinja",
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass
class Checkpoint:
    """A checked checkpoint directory and its config."""

    path: Path
    config: PretrainedConfig
    weight_files: list[Path]
    source: str  # what the user passed (a path or a hub id)

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def architectures(self) -> list[str]:
        return list(self.config.architectures or [])

    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        for file in sorted(self.weight_files):
            digest.update(file.name.encode())
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()

    def preprocessor_files(self) -> list[Path]:
        return [self.path / n for n in PREPROCESSOR_FILES if (self.path / n).is_file()]

    @property
    def safetensors(self) -> bool:
        return bool(self.weight_files) and all(
            f.suffix == ".safetensors" for f in self.weight_files
        )

    @property
    def weight_bytes(self) -> int:
        """Bytes of the stored weights (their files' sizes)."""
        return sum(f.stat().st_size for f in self.weight_files)

    def stored_dtype(self) -> str:
        """The float type most of the stored weight bytes have (fp32, fp16 or bf16)."""
        sizes: dict[str, int] = {}
        for dtype, count in _float_tensors(self.weight_files if self.safetensors else []):
            key = _STORED_DTYPES[dtype]
            sizes[key] = sizes.get(key, 0) + count * _DTYPE_BYTES[dtype]
        return max(sizes, key=sizes.__getitem__) if sizes else "fp32"

    def parameter_count(self) -> int:
        """Stored float elements (the weights a float graph holds)."""
        files = self.weight_files if self.safetensors else []
        return sum(count for _, count in _float_tensors(files))


_STORED_DTYPES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}


def _float_tensors(files: Iterable[Path]) -> Iterator[tuple[str, int]]:
    """(safetensors dtype, element count) of each float tensor in ``files``, from their
    headers: ``safe_open`` maps a file and reads its header, and a slice's shape and dtype
    come from that header, so no tensor is read."""
    for file in files:
        with safe_open(str(file), framework="np") as handle:
            for name in handle.keys():  # noqa: SIM118 (the handle is not a dict)
                tensor = handle.get_slice(name)
                dtype = tensor.get_dtype()
                if dtype in _STORED_DTYPES:
                    yield dtype, math.prod(tensor.get_shape())


def resolve_model_path(model: str | Path) -> Path:
    """A local directory, or a hub id found in the local Hugging Face cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(
            f"{model} is a file, not a checkpoint directory; pass the directory that holds "
            "config.json and the weights."
        )
    if str(model).count("/") == 1 and not str(model).startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(str(model), local_files_only=True))
        except Exception as e:  # not in the cache, or the hub client is unusable
            logger.debug("hub cache lookup for %s failed: %s", model, e)
    raise ModelLoadError(
        f"Model {str(model)!r} was not found: it is neither a local directory nor a model in "
        "the local Hugging Face cache, and graphport never downloads at run time; pass a "
        "checkpoint directory, or download the model first (`hf download ID`)."
    )


def _check_safetensors(file: Path) -> None:
    """Check that safetensors opens a weights file: ``safe_open`` parses its header and
    checks that the tensors' offsets cover the file exactly, without reading a tensor."""
    try:
        with safe_open(str(file), framework="np"):
            pass
    except SafetensorError as e:
        raise ModelLoadError(_safetensors_damage(file, e)) from e


def _safetensors_damage(file: Path, error: SafetensorError) -> str:
    """One sentence on a weights file ``safe_open`` refused.

    safetensors names the check that failed ("header too small", "file not fully
    covered") but not by how much, and a file cut short reads as the same error as one
    with bytes to spare; so, on this error path only, the header's length (the file's
    first 8 bytes) and its tensors' data offsets are read here to say which, in bytes."""
    size = file.stat().st_size
    fix = "re-download or re-save the checkpoint"
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"Weights file {file} is truncated ({size} bytes); {fix}."
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            return (
                f"Weights file {file} is truncated: its header says {header_len} bytes but the "
                f"file has {size}; {fix}."
            )
        try:
            header = json.loads(f.read(header_len))
            end = max(
                (t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
                default=0,
            )
        # Not JSON (ValueError), or JSON of another shape than a safetensors header.
        except (ValueError, AttributeError, LookupError, TypeError) as e:
            return f"Weights file {file} has a corrupt header ({e}); {fix}."
    need = 8 + header_len + end
    if need > size:
        return (
            f"Weights file {file} is truncated: its tensors need {need} bytes but the file "
            f"has {size}; {fix}."
        )
    if need < size:
        return (
            f"Weights file {file} has {size - need} bytes after its last tensor, which "
            f"safetensors refuses; {fix}."
        )
    return f"Weights file {file} cannot be read by safetensors ({error}); {fix}."


def load_checkpoint(model: str | Path) -> Checkpoint:
    """Check a checkpoint directory and read its config."""
    path = resolve_model_path(model)
    config_file = path / "config.json"
    if not config_file.is_file():
        what = "is empty" if not any(path.iterdir()) else "has no config.json"
        raise ModelLoadError(
            f"{path} {what}, so it is not a transformers checkpoint; pass a directory written "
            "by save_pretrained() (config.json plus weights)."
        )
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(
            f"{config_file} is not valid JSON ({e}); restore it from the original checkpoint."
        ) from e
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{config_file} does not hold a JSON object; restore it.")
    model_type = raw.get("model_type")
    if not model_type:
        raise ModelLoadError(
            f"{config_file} has no model_type, so the architecture is unknown; add the "
            'model_type of the architecture (e.g. "bert").'
        )
    if model_type in REMOVED_MODEL_TYPES:
        raise UnsupportedModelError(REMOVED_MODEL_TYPES[model_type] + ".")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise UnsupportedModelError(
            f"Model type {model_type!r} in {config_file} is unknown to the installed "
            "transformers, so it cannot be loaded; check the spelling, or upgrade transformers "
            "if it is a newer architecture."
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise ModelLoadError(
            f"{config_file} could not be read as a {model_type} config: {e}"
        ) from e

    weight_files = sorted(f for pattern in WEIGHT_PATTERNS for f in path.glob(pattern))
    if not weight_files:
        raise ModelLoadError(
            f"{path} has a config but no weights (*.safetensors or pytorch_model*.bin); copy "
            "the weight files next to config.json."
        )
    for file in weight_files:
        if file.suffix == ".safetensors":
            _check_safetensors(file)
    return Checkpoint(path, config, weight_files, str(model))


def _task_config(
    checkpoint: Checkpoint, task: Task, config_overrides: dict[str, Any] | None
) -> Any:
    """A copy of the checkpoint's config with the export's overrides and ``task``'s head
    first among its architectures (the auto classes pick among heads by that list)."""
    config = checkpoint.config.__class__.from_dict(checkpoint.config.to_dict())
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    head = task.model_class_name(checkpoint.model_type)
    if head and head not in (config.architectures or []):
        config.architectures = [head, *(config.architectures or [])]
    return config


def load_model(
    checkpoint: Checkpoint,
    task: Task,
    dtype: str = "fp32",
    config_overrides: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """Load the eager model with the head of ``task``, in eval mode."""
    config = _task_config(checkpoint, task, config_overrides)
    auto_class = task.auto_class(checkpoint.model_type)
    try:
        model = auto_class.from_pretrained(
            checkpoint.path, config=config, dtype=DTYPES[dtype], local_files_only=True
        )
    except Exception as e:
        raise ModelLoadError(
            f"Loading {checkpoint.path} as {auto_class.__name__} failed: {e}",
            reason=Reason.CHECKPOINT_RELOAD,
        ) from e
    return model.eval()


def load_meta_model(
    checkpoint: Checkpoint,
    task: Task,
    dtype: str = "fp32",
    config_overrides: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """The eager model of ``task`` with its parameters on the meta device (shapes, no
    storage), for a streamed export (export/streaming.py).

    Buffers that are not saved in checkpoints (rotary frequencies and the like) are
    computed on the CPU the way transformers' own loading computes them: moved off meta
    and initialized as missing keys, which leaves the meta parameters untouched.
    """
    import torch

    config = _task_config(checkpoint, task, config_overrides)
    # A quantized checkpoint (GPTQ) is built as its float model: the streamed export
    # puts the stored blocks where the float weights would be.
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    auto_class = task.auto_class(checkpoint.model_type)
    try:
        with torch.device("meta"):
            model = auto_class.from_config(config, dtype=DTYPES[dtype])
        model._move_missing_keys_from_meta_to_device([], None, None, None)
        model._initialize_missing_keys(False)
    except Exception as e:
        raise ModelLoadError(
            f"Building {auto_class.__name__} for {checkpoint.path} without its weights failed: {e}"
        ) from e
    return model.eval()

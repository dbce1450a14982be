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
import struct
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from graphport.checkpoint import safetensors_header
from graphport.errors import ModelLoadError, Reason, UnsupportedModelError
from graphport.exporters.tasks import Task
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
        for file in self.weight_files if self.safetensors else []:
            for name, entry in safetensors_header(file).items():
                if name != "__metadata__" and entry["dtype"] in _STORED_DTYPES:
                    start, end = entry["data_offsets"]
                    key = _STORED_DTYPES[entry["dtype"]]
                    sizes[key] = sizes.get(key, 0) + end - start
        return max(sizes, key=sizes.__getitem__) if sizes else "fp32"

    def parameter_count(self) -> int:
        """Stored float elements (the weights a float graph holds)."""
        count = 0
        for file in self.weight_files if self.safetensors else []:
            for name, entry in safetensors_header(file).items():
                if name != "__metadata__" and entry["dtype"] in _STORED_DTYPES:
                    start, end = entry["data_offsets"]
                    count += (end - start) // (4 if entry["dtype"] == "F32" else 2)
        return count


_STORED_DTYPES = {"F32": "fp32", "F16": "fp16", "BF16": "bf16"}


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
    """Check a safetensors file's header and that its size covers every tensor."""
    size = file.stat().st_size
    fix = "re-download or re-save the checkpoint"
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"Weights file {file} is truncated ({size} bytes); {fix}.")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > size - 8:
            raise ModelLoadError(
                f"Weights file {file} is truncated: its header says {header_len} bytes but the "
                f"file has {size}; {fix}."
            )
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"Weights file {file} has a corrupt header ({e}); {fix}.") from e
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        raise ModelLoadError(
            f"Weights file {file} is truncated: its tensors need {8 + header_len + end} bytes "
            f"but the file has {size}; {fix}."
        )


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
    storage), for a streamed export (exporters/streaming.py).

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

"""TensorRT engines built from the exported ONNX graph.

What is computed here, and unit-tested without TensorRT:

1. Optimization profiles: for every input, min/opt/max shapes derived from the export
   config's dynamic axes (``OnnxConfig.profile_ranges``, sequence capped at the model's
   position embeddings), overridden per axis by the user (``batch=1:4:16,sequence=1:128:256``).
2. Precision: TensorRT 11 builds strongly typed networks only, so precision is the
   graph's own dtype; an fp16 engine comes from ``--dtype fp16``, never from a builder flag.
3. The engine cache key: the ONNX bytes, the profiles, the TensorRT version and the GPU
   (name and compute capability), so an engine is reused only where it is valid.

Building needs TensorRT and an NVIDIA GPU; where either is missing the error says so in
one sentence. TensorRT's libraries ship from a vendor index these machines cannot reach,
so the build path itself runs only where TensorRT is installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from graphport.errors import RuntimeUnavailableError, UsageError
from graphport.export.config import OnnxConfig

logger = logging.getLogger(__name__)

Range = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class InputProfile:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def parse_profile_overrides(text: str | None) -> dict[str, Range]:
    """``"batch=1:4:16,sequence=1:128:256"`` -> ``{"batch": (1, 4, 16), ...}``."""
    overrides: dict[str, Range] = {}
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, spec = item.partition("=")
        parts = spec.split(":")
        try:
            low, opt, high = (int(p) for p in parts)
        except ValueError:
            raise UsageError(
                f"Profile entry {item!r} is not AXIS=MIN:OPT:MAX with integers, e.g. batch=1:4:16."
            ) from None
        if not 1 <= low <= opt <= high:
            raise UsageError(f"Profile entry {item!r} needs 1 <= MIN <= OPT <= MAX.")
        overrides[name.strip()] = (low, opt, high)
    return overrides


def axis_ranges(config: OnnxConfig, overrides: Mapping[str, Range] | None = None) -> dict:
    """min/opt/max for every dynamic axis name the config uses."""
    names = {n for axes in config.inputs.values() for n in axes.values()}
    ranges = {}
    for name in sorted(names):
        low, opt, high = config.profile_ranges.get(name, (1, 1, 1))
        if name == "sequence":
            limit = getattr(config.config, "max_position_embeddings", None)
            if limit and config.modality == "text":
                high = min(high, int(limit))
                opt = min(opt, high)
        ranges[name] = (low, opt, high)
    unknown = set(overrides or {}) - names
    if unknown:
        raise UsageError(
            f"The graph has no dynamic axis {', '.join(sorted(unknown))}; its axes are "
            f"{', '.join(sorted(names))}."
        )
    ranges.update(overrides or {})
    return ranges


def optimization_profile(
    config: OnnxConfig, overrides: Mapping[str, Range] | None = None
) -> list[InputProfile]:
    ranges = axis_ranges(config, overrides)
    profile = []
    for name in config.inputs:
        shapes = [config.input_shape(name, {k: v[i] for k, v in ranges.items()}) for i in range(3)]
        profile.append(InputProfile(name, *shapes))
    return profile


def engine_cache_key(
    onnx_path: Path, profile: list[InputProfile], trt_version: str, gpu: str, capability: str
) -> str:
    digest = hashlib.sha256()
    with onnx_path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    digest.update(json.dumps([dataclasses.asdict(p) for p in profile]).encode())
    digest.update(f"{trt_version}|{gpu}|{capability}".encode())
    return digest.hexdigest()[:32]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("GRAPHPORT_TRT_CACHE", Path(base) / "graphport" / "tensorrt"))


def require_tensorrt() -> tuple[object, str, str]:
    """(tensorrt module, GPU name, compute capability), or one clear error."""
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeUnavailableError(
            "TensorRT is not installed: install the tensorrt package (its libraries come "
            "from a vendor index) on a machine with an NVIDIA GPU, or pick another --format."
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailableError(
            "TensorRT needs an NVIDIA GPU and none is visible here; build the engine on the "
            "machine that will run it."
        )
    major, minor = torch.cuda.get_device_capability()
    return trt, torch.cuda.get_device_name(), f"{major}.{minor}"


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profile: list[InputProfile],
    cache_dir: Path | None = None,
    workspace_bytes: int = 4 << 30,
) -> dict[str, str]:
    """Build (or reuse from the cache) a serialized engine; returns what the manifest keeps."""
    trt, gpu, capability = require_tensorrt()
    key = engine_cache_key(onnx_path, profile, trt.__version__, gpu, capability)
    cache = (cache_dir or default_cache_dir()) / f"{key}.engine"
    info = {
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "compute_capability": capability,
        "cache_key": key,
    }
    if cache.is_file():
        logger.info("Reusing the cached TensorRT engine %s", cache)
        shutil.copy2(cache, engine_path)
        return info
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeUnavailableError(f"TensorRT could not parse the ONNX graph: {errors}")
    build_config = builder.create_builder_config()
    build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    optimization = builder.create_optimization_profile()
    for entry in profile:
        optimization.set_shape(entry.name, entry.min, entry.opt, entry.max)
    build_config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, build_config)
    if serialized is None:
        raise RuntimeUnavailableError("TensorRT failed to build the engine (see its log).")
    engine_path.write_bytes(bytes(serialized))
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(engine_path, cache)
    return info

"""The TensorRT format: ``model.engine`` built from the traced ONNX graph, which stays
beside it (engines are rebuilt from it); needs TensorRT and an NVIDIA GPU
(exporters/tensorrt.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from graphport.formats.base import Format, FormatOptions, register_format

if TYPE_CHECKING:
    import torch

    from graphport.exporters.artifacts import Artifact
    from graphport.exporters.config import OnnxConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TensorRtOptions(FormatOptions):
    # min/opt/max per dynamic axis, overriding the config's ranges (batch=1:4:16,...)
    trt_profile: Mapping[str, tuple[int, int, int]] | None = None


@register_format("tensorrt")
class TensorRtFormat(Format):
    rank = 60
    summary = "tensorrt (engine, needs TensorRT and a GPU)"
    writes = (".onnx", ".engine")
    runtimes = ("tensorrt",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "tensorrt"}
    requires = "tensorrt"  # check() also needs a GPU
    package = "TensorRT"
    options = TensorRtOptions

    def check(self) -> None:
        from graphport.exporters.tensorrt import require_tensorrt

        require_tensorrt()  # before any work: TensorRT and a GPU must be here

    def make_options(self, options: FormatOptions | None = None, **given: Any) -> FormatOptions:
        if isinstance(given.get("trt_profile"), str):
            from graphport.exporters.tensorrt import parse_profile_overrides

            given["trt_profile"] = parse_profile_overrides(given["trt_profile"])
        return super().make_options(options, **given)

    def write(
        self,
        model: torch.nn.Module,
        config: OnnxConfig,
        directory: Path,
        options: FormatOptions,
        name: str = "model",
    ) -> Artifact:
        from graphport.exporters.artifacts import trace_onnx
        from graphport.exporters.tensorrt import build_engine, optimization_profile

        assert isinstance(options, TensorRtOptions)
        artifact = trace_onnx(model, config, directory, options.opset, name)
        profile = optimization_profile(config, options.trt_profile)
        logger.info("Building the TensorRT engine")
        info = artifact.exporter
        info["tensorrt"] = build_engine(
            directory / f"{name}.onnx", directory / f"{name}.engine", profile
        )
        info["profile"] = [dataclasses.asdict(p) for p in profile]
        info["precision"] = "strongly typed: the graph's dtypes"
        artifact.spec.file = f"{name}.engine"
        artifact.files.append(f"{name}.engine")  # the ONNX stays: engines are rebuilt from it
        return artifact

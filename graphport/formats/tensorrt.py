"""The TensorRT format: ``model.engine`` built from the traced ONNX graph, which stays
beside it (engines are rebuilt from it); needs TensorRT and an NVIDIA GPU
(export/tensorrt.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from graphport.formats.base import FormatOptions, OnnxDerivedFormat, register_format

if TYPE_CHECKING:
    from graphport.export.artifacts import Artifact
    from graphport.export.config import OnnxConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TensorRtOptions(FormatOptions):
    # min/opt/max per dynamic axis, overriding the config's ranges (batch=1:4:16,...)
    trt_profile: Mapping[str, tuple[int, int, int]] | None = None


@register_format("tensorrt")
class TensorRtFormat(OnnxDerivedFormat):
    rank = 60
    summary = "tensorrt (engine, needs TensorRT and a GPU)"
    writes = (".onnx", ".engine")
    runtimes = ("tensorrt",)
    deploy_targets: ClassVar[Mapping[str, str]] = {"triton": "tensorrt"}
    requires = "tensorrt"  # check() also needs a GPU
    package = "TensorRT"
    options = TensorRtOptions
    keeps_onnx = True  # engines are rebuilt from it

    def check(self) -> None:
        from graphport.export.tensorrt import require_tensorrt  # rule 7 of formats/base.py

        require_tensorrt()  # before any work: TensorRT and a GPU must be here

    def make_options(self, options: FormatOptions | None = None, **given: Any) -> FormatOptions:
        if isinstance(given.get("trt_profile"), str):
            # rule 7 of formats/base.py
            from graphport.export.tensorrt import parse_profile_overrides

            given["trt_profile"] = parse_profile_overrides(given["trt_profile"])
        return super().make_options(options, **given)

    def convert(
        self, artifact: Artifact, config: OnnxConfig, onnx: Path, options: FormatOptions
    ) -> None:
        # rule 7 of formats/base.py
        from graphport.export.tensorrt import build_engine, optimization_profile

        assert isinstance(options, TensorRtOptions)
        profile = optimization_profile(config, options.trt_profile)
        logger.info("Building the TensorRT engine")
        info = artifact.exporter
        engine = onnx.with_suffix(".engine")
        info["tensorrt"] = build_engine(onnx, engine, profile)
        info["profile"] = [dataclasses.asdict(p) for p in profile]
        info["precision"] = "strongly typed: the graph's dtypes"
        artifact.spec.file = engine.name
        artifact.files.append(engine.name)  # the ONNX stays (keeps_onnx)

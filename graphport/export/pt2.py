"""AOTInductor packages (.pt2): torch.export, then compiled ahead of time by Inductor.

The package holds compiled kernels and the weights; Python loads it with
``torch._inductor.aoti_load_package`` and C++ with ``torch::inductor::AOTIModelPackageLoader``.
Inputs are positional in the manifest's order, outputs a list in the manifest's order.
Compiling needs a C++ compiler at export time (not at load time).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from graphport.errors import ExportError
from graphport.export.config import OnnxConfig
from graphport.export.signature import dynamic_shapes_for, wrap_for_tracing


def export_pt2(model: torch.nn.Module, config: OnnxConfig, path: Path) -> None:
    wrapper, inputs = wrap_for_tracing(model, config)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                wrapper,
                inputs,
                dynamic_shapes=dynamic_shapes_for(dict(config.inputs)),
                strict=False,
            )
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as e:
        raise ExportError(f"AOTInductor compilation failed: {e}") from e

"""Verbosity control, in the manner of ``transformers.utils.logging``.

The level comes from ``set_verbosity()`` (the CLI's ``-v``/``-q`` flags) or the
``GRAPHPORT_VERBOSITY`` environment variable (debug, info, warning, error, critical). Library
code logs with ``logging.getLogger(__name__)``; only the ``graphport`` root logger gets a
handler, so applications embedding graphport keep control of their own logging.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

ENV_VAR = "GRAPHPORT_VERBOSITY"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Loggers of dependencies that are chatty at INFO/WARNING during an export; they are
# silenced unless graphport itself runs at DEBUG.
_NOISY = (
    "torch.onnx",
    "torch.onnx._internal.exporter._registration",
    "torch.export",
    "torch._export",
    "torch.fx.experimental.symbolic_shapes",
    "torch._dynamo",
    "onnxscript",
    "onnx_ir",
    # torchao (executorch's quantizer, imported by transformers wherever it is installed)
    # names the CUDA kernels it cannot load and registers enums torch warns about.
    "torchao",
    "torch.utils._pytree",
)

_handler: logging.Handler | None = None


def _env_level(default: int) -> int:
    name = os.environ.get(ENV_VAR, "").strip().lower()
    if not name:
        return default
    if name not in _LEVELS:
        warnings.warn(
            f"{ENV_VAR}={name!r} is not a level; use one of {', '.join(_LEVELS)}.",
            stacklevel=2,
        )
        return default
    return _LEVELS[name]


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def set_verbosity(level: int | str | None = None, default: int = logging.WARNING) -> int:
    """Set graphport's level (None: from the environment, else ``default``); returns it."""
    global _handler
    if level is None:
        level = _env_level(default)
    elif isinstance(level, str):
        level = _LEVELS[level.lower()]
    root = logging.getLogger("graphport")
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(_handler)
        root.propagate = False
    root.setLevel(level)
    quiet = logging.DEBUG if level <= logging.DEBUG else logging.ERROR
    for name in _NOISY:
        logging.getLogger(name).setLevel(quiet)
    _set_transformers_verbosity(level <= logging.DEBUG)
    return level


def _set_transformers_verbosity(debug: bool) -> None:
    """transformers' load reports and progress bars are noise in graphport's own progress.

    It configures its root logger on first use, so this goes through its own API rather
    than setting a level that its configuration would later reset.
    """
    from transformers.utils import logging as hf_logging

    if debug:
        hf_logging.set_verbosity_info()
        hf_logging.enable_progress_bar()
    else:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()

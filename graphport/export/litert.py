"""LiteRT (.tflite) through litert-torch: refused, with the measured reason.

litert-torch 0.10.0 (with ai-edge-litert 2.3.0) installs beside torch 2.13 and converts a
tiny BERT at its trace shapes (max abs 9.5e-7 against eager), but:

1. with ``dynamic_shapes`` its converter fails (``'<=' not supported between instances of
   'int' and 'Node'``), and
2. the static program cannot be resized: ai-edge-litert's interpreter fails in the first
   RESHAPE at any other batch or sequence length (``num_input_elements !=
   num_output_elements``).

graphport validates every export at shapes other than the trace shapes (the validation
contract), so a .tflite that runs at one shape only is not written. README.md, Formats,
says the same.
"""

from __future__ import annotations

from graphport.errors import UnsupportedModelError

REASON = (
    "--format litert is not available: litert-torch 0.10.0 converts only at the trace shapes "
    "(its dynamic_shapes conversion fails under torch 2.13 and the .tflite cannot be resized), "
    "so the graph could not be validated at other batch sizes and lengths; use --format "
    "executorch (XNNPACK, on Android and iOS) or --format ort --ort-target-platform arm."
)


def require_litert() -> None:
    """Before any work: refuse with the reason."""
    raise UnsupportedModelError(REASON)

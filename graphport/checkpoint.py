"""Reading checkpoint files without a framework: the header of a safetensors file.

The bottom floor of the layers (docs/DEVELOPING.md): the loader (graphport/models/loader.py)
and the streamed export's reader (graphport/export/streaming.py) both read headers here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def safetensors_header(file: Path) -> dict[str, Any]:
    """A safetensors file's header: 8 bytes of little-endian length, then that much JSON
    (tensor name -> dtype, shape, data_offsets; and ``__metadata__``)."""
    with Path(file).open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length))

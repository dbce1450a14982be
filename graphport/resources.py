"""How much memory and disk this machine has free, for work that must plan around them
(a streamed export of a checkpoint larger than memory, graphport/api/streaming.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

GIB = 1 << 30


def available_memory() -> int:
    """Bytes of memory that can be allocated without swapping (Linux's MemAvailable;
    elsewhere the physical memory, which overstates it)."""
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_disk(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def gigabytes(size: int) -> str:
    return f"{size / 1e9:.1f} GB"

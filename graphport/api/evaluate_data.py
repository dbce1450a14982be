"""The data ``graphport evaluate`` reads: local files through the ``datasets`` library,
or a built-in default.

Rules:

1. ``--data FILE`` is read by its suffix (``.jsonl``/``.json``, ``.csv``, ``.parquet``,
   ``.txt``: one row per line); a directory is a dataset saved with ``save_to_disk`` (a
   ``DatasetDict`` gives its ``test`` split, else ``validation``, else its first).
2. Without ``--data``: English prose that ships with Python itself (the help topics of
   ``pydoc_data``), which needs no ``datasets``: one row per paragraph.
3. A file that does not parse, or a column a task needs that is missing, is one
   sentence (``UsageError``) naming the file and the columns found.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphport.errors import UsageError

logger = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
DEFAULT_NAME = "pydoc_data (Python's help topics)"


@dataclasses.dataclass
class EvalData:
    """Rows as columns of Python lists, and where they came from."""

    name: str
    columns: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def has(self, *names: str) -> bool:
        return all(n in self.columns for n in names)

    def column(self, name: str, task: str) -> list[Any]:
        """The column ``name``; a missing one names the columns found (rule 3)."""
        if name not in self.columns:
            raise UsageError(
                f"The {task} evaluation needs a {name!r} column, and {self.name} has "
                f"{_names(self.columns)}; rename the column or pass other data."
            )
        return self.columns[name]

    def text_column(self, task: str, names: Sequence[str] = ("text", "sentence")) -> list[str]:
        """The first of ``names`` present, else the only string column."""
        for name in names:
            if name in self.columns:
                return [str(v) for v in self.columns[name]]
        strings = [k for k, v in self.columns.items() if v and isinstance(v[0], str)]
        if len(strings) == 1:
            return list(self.columns[strings[0]])
        raise UsageError(
            f"The {task} evaluation needs a text column ({' or '.join(map(repr, names))}), and "
            f"{self.name} has {_names(self.columns)}; rename the text column to 'text'."
        )


def _names(columns: dict[str, Any]) -> str:
    return "the columns " + ", ".join(map(repr, columns)) if columns else "no columns"


def default_data() -> EvalData:
    """Python's help topics, one row per paragraph (rule 2)."""
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for block in topics[key].split("\n\n"):
            text = " ".join(block.split())
            if len(text.split()) >= 8:
                paragraphs.append(text)
    return EvalData(DEFAULT_NAME, {"text": paragraphs})


def load_data(path: str | Path | None) -> EvalData:
    """The rows of ``path`` (rule 1), or the built-in default for None (rule 2)."""
    if path is None:
        return default_data()
    path = Path(path)
    if not path.exists():
        raise UsageError(f"The data {path} does not exist; pass a data file or directory.")
    if path.is_file() and path.suffix.lower() not in BUILDERS:
        raise UsageError(
            f"The data {path} has suffix {path.suffix or '(none)'}, which evaluate does not "
            f"read; pass a {', '.join(BUILDERS)} file or a saved dataset directory."
        )
    try:
        import datasets
    except ImportError as e:
        raise UsageError(
            "Reading --data needs the datasets package; install graphport's eval extra "
            "(pip install 'graphport[eval]'), or leave out --data for the built-in text."
        ) from e
    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                split = next((s for s in ("test", "validation") if s in dataset), None)
                dataset = dataset[split or next(iter(dataset))]
        else:
            builder = BUILDERS[path.suffix.lower()]
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # the datasets library wraps parser errors in many types
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise UsageError(
            f"The data {path} could not be read as "
            f"{'a saved dataset' if path.is_dir() else BUILDERS[path.suffix.lower()]} "
            f"({reason}); fix the file or pass another."
        ) from e
    logger.info("Read %d rows from %s", len(dataset), path)
    return EvalData(str(path), {name: dataset[name] for name in dataset.column_names})

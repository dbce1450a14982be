"""ExecuTorch adapter: runs a .pte on executorch's Python runtime (``executorch.runtime``).

A plain program takes the inputs positionally in the manifest's order. A decoder exported
with a static KV cache (graphport/export/executorch.py) holds its cache inside the
program, for one sequence, and takes ``(input_ids [1, S], cache_position [S])``; this
adapter gives it the contract of a decoder without a cache (``input_ids`` and
``attention_mask`` of a whole batch in, ``logits`` of every position out), so validation,
``graph.load(...).generate()`` and ``graphport generate`` run it unchanged:

1. Each batch row has its own loaded program (its own cache) and remembers the tokens its
   cache holds and their logits; a call feeds only the tokens after the longest common
   prefix, at their cache positions, so a generation step costs one token.
2. A row's tokens are those its attention mask keeps; they must be one contiguous block
   (left or right padding). They get positions 0.., as ``generate()`` gives a left-padded
   row. Padded positions get zero logits (every consumer masks them).
3. A sequence longer than the cache fixed at export is refused in one sentence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from graphport.errors import RuntimeUnavailableError, UsageError
from graphport.runtimes.base import Runtime
from graphport.runtimes.torchscript import _named


@dataclasses.dataclass
class _Row:
    method: Any
    tokens: list[int] = dataclasses.field(default_factory=list)
    logits: list[np.ndarray] = dataclasses.field(default_factory=list)


class ExecuTorchRuntime(Runtime):
    name = "executorch"
    module = "executorch"
    extra = "edge"
    package = "ExecuTorch"

    def _load(self) -> None:
        self.static_cache = self.export_dir.manifest.exporter.get("static_cache")
        self.path = self.export_dir.graph_path(self.spec.name)
        self.rows: list[_Row] = []
        self.method = self._load_method()

    def _load_method(self) -> Any:
        try:
            from executorch.runtime import Runtime as Et

            return Et.get().load_program(self.path).load_method("forward")
        except Exception as e:
            raise RuntimeUnavailableError(f"ExecuTorch could not load {self.path}: {e}") from e

    def _run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        if self.static_cache:
            return {"logits": self._run_static(feeds)}
        outputs = self.method.execute(tuple(torch.from_numpy(feeds[n]) for n in self.input_names))
        return _named(self.output_names, outputs)

    def _run_static(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids = feeds["input_ids"]
        mask = feeds.get("attention_mask", np.ones_like(ids))
        limit = int(self.static_cache["max_cache_len"])
        while len(self.rows) < len(ids):  # rule 1: a cache per row
            self.rows.append(_Row(self.method if not self.rows else self._load_method()))
        result: np.ndarray | None = None
        for b, (row_ids, row_mask) in enumerate(zip(ids, mask, strict=True)):
            kept = np.flatnonzero(row_mask)
            if len(kept) and kept[-1] - kept[0] + 1 != len(kept):
                raise UsageError(
                    "The ExecuTorch decoder takes left- or right-padded rows; row "
                    f"{b}'s attention mask has gaps."
                )
            if len(kept) > limit:
                raise UsageError(
                    f"The ExecuTorch decoder's KV cache holds {limit} positions (fixed at "
                    f"export), and row {b} has {len(kept)}; re-export with a larger "
                    "--max-cache-len."
                )
            logits = self._feed(self.rows[b], row_ids[kept].tolist())
            if result is None:
                result = np.zeros((*ids.shape, logits.shape[-1]), dtype=np.float32)
            result[b, kept] = logits
        assert result is not None
        return result

    def _feed(self, row: _Row, tokens: list[int]) -> np.ndarray:
        import torch

        common = 0
        for seen, token in zip(row.tokens, tokens, strict=False):
            if seen != token:
                break
            common += 1
        common = min(common, len(tokens) - 1)  # always run at least the last token
        new = tokens[common:]
        (logits,) = row.method.execute(
            (torch.tensor([new], dtype=torch.long), torch.arange(common, len(tokens)))
        )
        row.tokens = list(tokens)
        row.logits = [*row.logits[:common], *logits[0].numpy().copy()]
        return np.stack(row.logits)

    def describe(self) -> str:
        return f"executorch {self.version()} (xnnpack)"

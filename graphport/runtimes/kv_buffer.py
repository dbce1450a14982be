"""A preallocated KV cache that a GroupQueryAttention decoder reads and appends to in place.

A decoder exported with ``-O2`` (graphs/gqa.py) sizes its present as
``max(total_sequence_length, past length)``: bound with one buffer of ``length`` positions
as both ``past_key_values.{i}.*`` and ``present.{i}.*`` (onnxruntime IO binding), every
step appends its keys and values where they belong, and nothing is copied or allocated for
the cache. The manifest says when a graph allows this (``kv_cache.shared_buffer``).

Rules:
  1. one buffer per layer and kind, (batch, kv heads, ``length``, head dim), zeroed once
     and reused by the next generation of the same batch and length; positions past the
     ones held are never read (the kernel attends ``attention_mask``'s length only). A
     generation that outgrows it (more positions than planned) moves to one twice as long
     (``copy_from``);
  2. the buffers are numpy arrays wrapped by OrtValues without a copy, so the arrays seen
     by the caller (``held``) are views of what the kernel writes;
  3. a one-token step writes its logits into a preallocated (batch, 1, vocab) array, which
     the caller must copy before the next step (``generate()`` does); a longer step (the
     prompt) lets onnxruntime allocate them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphport.errors import UsageError

logger = logging.getLogger(__name__)

PAST = ("past_key_values.{}.key", "past_key_values.{}.value")
PRESENT = ("present.{}.key", "present.{}.value")


class SharedKVBuffer:
    """The buffers of one batch and length, bound to one onnxruntime session (rules 1-3)."""

    def __init__(
        self, session: Any, contract: Mapping[str, Any], batch: int, length: int, vocab: int
    ) -> None:
        import onnxruntime as ort

        self.batch, self.length = batch, length
        self.num_layers = int(contract["num_layers"])
        dtype = np.dtype(contract.get("dtype", "float32"))
        heads, dim = int(contract["num_kv_heads"]), int(contract["head_dim"])
        self.session = session
        self.binding = session.io_binding()
        self.binding.bind_output("logits", "cpu")  # first: get_outputs()[0] below
        self.arrays: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(self.num_layers):
            pair = tuple(np.zeros((batch, heads, length, dim), dtype=dtype) for _ in range(2))
            self.arrays.append(pair)  # rule 1
            for array, past, present in zip(pair, PAST, PRESENT, strict=True):
                value = ort.OrtValue.ortvalue_from_numpy(array)  # rule 2: no copy
                self.binding.bind_ortvalue_input(past.format(i), value)
                self.binding.bind_ortvalue_output(present.format(i), value)
        self.step_logits = np.zeros((batch, 1, vocab), dtype=dtype)  # rule 3
        self._step_logits = ort.OrtValue.ortvalue_from_numpy(self.step_logits)
        self._inputs = [i.name for i in session.get_inputs() if not i.name.startswith("past_")]

    def fits(self, batch: int, length: int) -> bool:
        return batch == self.batch and length <= self.length

    def copy_from(self, other: SharedKVBuffer, positions: int) -> None:
        """The first ``positions`` of ``other`` (a buffer that ran out of room)."""
        for mine, theirs in zip(self.arrays, other.arrays, strict=True):
            for target, source in zip(mine, theirs, strict=True):
                target[:, :, :positions] = source[:, :, :positions]

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """One step on the bound buffers; returns the logits (rule 3)."""
        total = feeds["attention_mask"].shape[-1]
        if total > self.length:
            raise UsageError(
                f"The step covers {total} positions and the KV buffer holds {self.length}; "
                "ask for fewer new tokens."
            )
        for name in self._inputs:
            self.binding.bind_cpu_input(name, np.ascontiguousarray(feeds[name]))
        one_token = feeds["input_ids"].shape[-1] == 1
        if one_token:
            self.binding.bind_ortvalue_output("logits", self._step_logits)
        else:
            self.binding.bind_output("logits", "cpu")
        self.session.run_with_iobinding(self.binding)
        if one_token:
            return self.step_logits
        return self.binding.get_outputs()[0].numpy()

    def held(self, total: int) -> dict[str, np.ndarray]:
        """The positions held after a step, as views of the buffers (rule 2)."""
        views = {}
        for i, (keys, values) in enumerate(self.arrays):
            views[PRESENT[0].format(i)] = keys[:, :, :total]
            views[PRESENT[1].format(i)] = values[:, :, :total]
        return views

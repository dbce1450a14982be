"""The generic encoder-decoder export: any seq2seq LM whose cache is an ``EncoderDecoderCache``.

A model type no family registers is exported for ``text2text-generation-with-past`` when
its seq2seq-LM class takes a cache (``cache`` or ``past_key_values``). The graphs and the
manifest's contract are every encoder-decoder's (``OnnxSeq2SeqConfigWithPast``): an
``encoder`` graph over ``input_ids`` and ``attention_mask``, and one ``decoder`` graph with
the self-attention past, which the first step feeds empty, and no If node. Nothing about
the cache is read from config names: its layer count, KV heads and head dims come from a
dry run of the eager model (``CacheLayout.read_encoder_decoder``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from graphport.errors import Reason, UnsupportedModelError
from graphport.export.generic_decoder import CACHE_ARGUMENTS, takes_cache
from graphport.export.seq2seq import OnnxSeq2SeqConfigWithPast
from graphport.export.tasks import Task

# Where a config names no ``vocab_size``: FSMT's source and target vocabularies.
_VOCABULARIES = ("src_vocab_size", "tgt_vocab_size")

# Types whose encoder no graph can serve at every length, and why (a dry run would not
# tell: they fail only once traced, on another length than the trace's).
UNTRACEABLE_ENCODERS = {
    "led": "LED's encoder pads its input to a multiple of attention_window and reshapes it "
    "into a data-dependent number of chunks, which torch.export cannot trace and TorchScript "
    "fixes to the traced length",
}


class GenericSeq2SeqOnnxConfig(OnnxSeq2SeqConfigWithPast):
    """A text-to-text model without a family, with the KV cache its eager model returns."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.TEXT2TEXT_GENERATION,)

    def __init__(
        self,
        config: Any,
        task: str | Task = Task.TEXT2TEXT_GENERATION,
        patching_specs: list[Any] | None = None,
        use_past: bool = True,
    ) -> None:
        super().__init__(config, task, patching_specs, use_past)
        if config.model_type in UNTRACEABLE_ENCODERS:
            raise UnsupportedModelError(
                f"{UNTRACEABLE_ENCODERS[config.model_type]}, so graphport cannot export model "
                f"type {config.model_type!r} for {self.task.value}."
            )
        if self.use_past and not takes_cache(config.model_type, Task.TEXT2TEXT_GENERATION):
            raise UnsupportedModelError(
                f"Model type {config.model_type!r} has no family in graphport, and its "
                f"seq2seq-LM class takes no cache ({' or '.join(CACHE_ARGUMENTS)}), so it "
                "cannot be exported with one; export text2text-generation without -with-past.",
                reason=Reason.CACHE_NOT_CARRIED,
            )

    @property
    def vocab_size(self) -> int:
        """The vocabulary dummy token ids are drawn from: the smaller of the encoder's and
        the decoder's where the config names them apart."""
        named = getattr(self._config, "vocab_size", None)
        if named is not None:
            return int(named)
        sizes = [int(getattr(self._config, n)) for n in _VOCABULARIES if hasattr(self._config, n)]
        if not sizes:
            raise UnsupportedModelError(
                f"The config of model type {self._config.model_type!r} names no vocabulary "
                f"size (vocab_size, {', '.join(_VOCABULARIES)}), so graphport cannot make token "
                "inputs for it; it needs an export config of its own.",
                reason=Reason.CONFIG_INCOMPLETE,
            )
        return min(sizes)

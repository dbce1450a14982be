"""``graphport generate``: prompts -> generated text, through transformers' ``generate()``
on the export loaded with ``graphport.load``.

Rules:

1. Decoding is transformers' own ``GenerationMixin.generate()`` (Whisper's for Whisper)
   running on the runtime, as ``graphport.load(OUT).generate()`` runs it: the export's
   generation config supplies every setting not given, as transformers applies it, except
   ``max_new_tokens``, which defaults to the config's, else 20 (new tokens, not a total).
2. Text prompts are tokenized with the export's tokenizer one by one and, for a
   decoder-only model, left-padded with the pad token into one batch; an encoder-decoder's
   are padded as its tokenizer pads. Image-to-text and speech-recognition exports take
   image or audio files (``graphport.runtimes.predict.prepare_inputs``).
3. The result is each row's new tokens (a finished row padded with the pad token, as
   ``generate()`` pads it), their texts, and the steps and seconds generation took.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import LogitsProcessor, LogitsProcessorList

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory
from graphport.runtimes.generate import decoder_max_positions, generation_defaults, left_pad
from graphport.runtimes.model_factory import load_model
from graphport.runtimes.predict import default_runtime, prepare_inputs

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class GeneratedText:
    """New tokens per row (rule 3), their texts, and how long generation took."""

    tokens: list[list[int]]
    texts: list[str]
    steps: int
    seconds: float
    eos_token_id: list[int] = dataclasses.field(default_factory=list)
    runtime: str = ""  # the runtime that generated

    def trimmed(self, row: int) -> list[int]:
        """A row's new tokens up to and including its first end-of-sequence token."""
        tokens = self.tokens[row]
        for i, token in enumerate(tokens):
            if token in self.eos_token_id:
                return tokens[: i + 1]
        return tokens

    @property
    def tokens_per_second(self) -> float:
        return self.steps * len(self.texts) / self.seconds if self.seconds else float("nan")


def check_options(
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    num_beams: int | None = None,
) -> None:
    """One sentence for a setting out of range (transformers' own errors are longer)."""
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise UsageError(f"--max-new-tokens must be positive, not {max_new_tokens}.")
    if temperature is not None and temperature <= 0:
        raise UsageError(f"The temperature must be positive, not {temperature}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"top-p must be in (0, 1], not {top_p}.")
    if top_k is not None and top_k < 0:
        raise UsageError(f"top-k must be 0 (off) or positive, not {top_k}.")
    if repetition_penalty is not None and repetition_penalty <= 0:
        raise UsageError(f"The repetition penalty must be positive, not {repetition_penalty}.")
    if num_beams is not None and num_beams < 1:
        raise UsageError(f"--num-beams must be at least 1, not {num_beams}.")


def require_generative(directory: ExportDirectory) -> None:
    """The error that says an export cannot generate (it has no decoder)."""
    manifest = directory.manifest
    if not manifest.kv_cache and manifest.task != "text-generation":
        raise UsageError(
            f"{directory.path} has no decoder with a KV cache (task {manifest.task}); export "
            "a generative model with its cache (e.g. --task text-generation-with-past or "
            "text2text-generation-with-past) to generate."
        )


def generate_text(
    export_dir: str | Path | ExportDirectory,
    prompts: Sequence[str],
    runtime: str | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    seed: int | None = None,
    **generate_kwargs: Any,
) -> GeneratedText:
    """Generate from ``prompts`` (rules 1-3); ``generate_kwargs`` go to ``generate()``
    (``None`` values are left to the generation config), ``seed`` to ``torch.manual_seed``."""
    import torch

    directory = (
        export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
    )
    if runtime is None:  # onnxruntime for ONNX graphs, else the format's runtime
        runtime = default_runtime(directory)
    kwargs = {k: v for k, v in generate_kwargs.items() if v is not None}
    check_options(**{k: kwargs.get(k) for k in _CHECKED})
    require_generative(directory)
    if kwargs.get("num_beams", 1) > 1 and not directory.manifest.kv_cache:
        raise UsageError(
            f"{directory.path} has no KV cache, so beam search cannot reorder one; re-export "
            "without --task (a generative checkpoint gets its cache) or use --num-beams 1."
        )
    if not directory.has_tokenizer():
        raise UsageError(
            f"{directory.path} has no tokenizer files; export from a checkpoint that has "
            "its tokenizer, or pass token ids."
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory.path, local_files_only=True)
    defaults = generation_defaults(directory)
    pad = tokenizer.pad_token_id  # 0 is a pad id like any other
    kwargs.setdefault("pad_token_id", pad if pad is not None else defaults["pad_token_id"])
    kwargs.setdefault("max_new_tokens", defaults["max_new_tokens"])
    model = load_model(directory, runtime, **dict(runtime_options or {}))
    inputs = _inputs(directory, model, tokenizer, list(prompts), kwargs["pad_token_id"])
    _check_decoder_positions(directory, model, kwargs["max_new_tokens"])
    if seed is not None:
        torch.manual_seed(seed)
    width = _PromptWidth()
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(
            **inputs,
            **kwargs,
            logits_processor=LogitsProcessorList([width]),
            return_dict_in_generate=True,
            output_scores=True,
        )
    seconds = time.perf_counter() - start
    sequences, steps = output.sequences, len(output.scores)
    if steps:
        _warn_out_of_vocabulary(defaults["eos_token_id"], output.scores[0].shape[-1])
    if kwargs.get("num_beams", model.generation_config.num_beams or 1) > 1:
        # Beams that end early leave fewer columns than steps: cut the prompt off instead.
        new = sequences[:, width.width or 0 :]
    else:
        new = sequences[:, sequences.shape[1] - steps :]
    tokens = new.tolist()
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in tokens]
    return GeneratedText(tokens, texts, steps, seconds, list(defaults["eos_token_id"]), runtime)


_warned: set[tuple[int, ...]] = set()


def _warn_out_of_vocabulary(eos: Sequence[int], vocab_size: int) -> None:
    """Say once that end ids the logits cannot hold are ignored (as transformers' logits
    processors ignore them: a small model that kept a big tokenizer's eos id never ends)."""
    outside = tuple(sorted(int(i) for i in eos if not 0 <= int(i) < vocab_size))
    if outside and outside not in _warned:
        _warned.add(outside)
        logger.warning(
            "End-of-sequence id(s) %s are outside the model's vocabulary of %d tokens, so no "
            "row can end on them; they are ignored, as transformers ignores them. Fix "
            "eos_token_id in the generation config if the model should stop early.",
            ", ".join(map(str, outside)),
            vocab_size,
        )


_CHECKED = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "num_beams")


class _PromptWidth(LogitsProcessor):
    """A logits processor that records the width of what precedes the first new token
    (the prompt, or an encoder-decoder's decoder prompt) and changes nothing."""

    def __init__(self) -> None:
        self.width: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.width is None:
            self.width = int(input_ids.shape[-1])
        return scores


def _inputs(
    directory: ExportDirectory, model: Any, tokenizer: Any, prompts: list[str], pad: int
) -> dict[str, Any]:
    """``generate()``'s inputs for the prompts (rule 2), as torch tensors."""
    import torch

    if not prompts:
        raise UsageError("Pass at least one prompt.")
    encoder = getattr(model, "encoder", None)
    if encoder is None:  # decoder-only: left-padded
        ids, mask = left_pad([tokenizer(p)["input_ids"] for p in prompts], pad)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    names = list(encoder.runtime.input_names)
    if "input_ids" not in names:  # image-to-text, speech recognition: files
        feeds, _ = prepare_inputs(directory, prompts, encoder.runtime.spec.name)
    else:
        encoded = tokenizer(prompts, padding=True, return_tensors="np")
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in names}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items() if k in names}


def _check_decoder_positions(directory: ExportDirectory, model: Any, new_tokens: int) -> None:
    """An encoder-decoder's decoder start plus the new tokens must fit its positions (a
    decoder-only model checks its prompt in ``generate()``)."""
    if getattr(model, "encoder", None) is None:
        return
    limit = decoder_max_positions(directory)
    if limit and new_tokens + 1 > limit:
        raise UsageError(
            f"{new_tokens} new tokens after the decoder's start token exceed its {limit} "
            "positions; ask for fewer."
        )

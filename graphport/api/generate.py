"""``graphport generate``: prompts -> generated text, through transformers' ``generate()``
on the export loaded with ``graphport.load``, or a native engine that decodes the same
tokens faster (rule 4).

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
   ``generate()`` pads it), their texts, the steps and seconds generation took, and the
   engine that decoded.
4. The engine (``engine="auto"``): onnxruntime-genai for an ONNX decoder export with its
   genai_config.json, OpenVINO GenAI for a stateful IR decoder, each where it is installed
   and the request is greedy or sampling (batches included) on the export's default
   runtime; transformers' ``generate()`` for everything else (beam search, other settings
   given or in the generation config, custom logits processors or stopping criteria,
   another runtime or providers, and a ``seed``: torch's seeded sampling is what eager
   repeats, an engine's sampler draws other tokens). An engine asked for by name that is
   not installed, cannot load the export or cannot do what is asked is one sentence
   (which engine can), exit 2. Engines take rules 1-3 as they are (engines.py).
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

from graphport.api.image_text import image_text_inputs
from graphport.errors import RuntimeUnavailableError, UsageError
from graphport.export.genai_config import GENAI_CONFIG, genai_unsupported
from graphport.export.openvino import GENAI_MODEL_FILE, GENAI_TOKENIZER_FILES
from graphport.manifest import ExportDirectory
from graphport.runtimes.engines import (
    ENGINE_EXTRAS,
    OnnxruntimeGenaiEngine,
    OpenvinoGenaiEngine,
    Settings,
    engine_installed,
)
from graphport.runtimes.generate import (
    decoder_max_positions,
    generation_defaults,
    left_pad,
    load_generation_config,
    max_positions,
)
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
    engine: str = "transformers"  # the decoding loop that ran (rule 4)

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
    engine: str = "auto",
    images: Sequence[str | Path] = (),
    **generate_kwargs: Any,
) -> GeneratedText:
    """Generate from ``prompts`` (rules 1-4); ``generate_kwargs`` go to ``generate()``
    (``None`` values are left to the generation config), ``seed`` to ``torch.manual_seed``
    (or the engine's sampler). ``images`` (files) go into the one prompt of an
    image-text-to-text export (api/image_text.py), decoded by transformers."""
    directory = (
        export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
    )
    kwargs = {k: v for k, v in generate_kwargs.items() if v is not None}
    check_options(**{k: kwargs.get(k) for k in _CHECKED})
    require_generative(directory)
    chosen = choose_engine(directory, engine, runtime, runtime_options, kwargs, seed)
    if images and chosen != "transformers":
        raise UsageError(f"--engine {chosen} takes no images; use --engine transformers.")
    if runtime is None:  # onnxruntime for ONNX graphs, else the format's runtime
        runtime = default_runtime(directory)
    if chosen != "transformers":
        return _engine_generate(directory, chosen, runtime, list(prompts), seed, kwargs)
    return _transformers_generate(
        directory, prompts, runtime, runtime_options, seed, kwargs, images
    )


def choose_engine(
    directory: ExportDirectory,
    engine: str = "auto",
    runtime: str | None = None,
    runtime_options: Mapping[str, Any] | None = None,
    generate_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> str:
    """The engine that decodes (rule 4): ``engine`` itself when it can, the fastest one
    that can for ``auto``; a named engine that cannot is a ``UsageError`` saying why."""
    if engine not in ENGINE_CHOICES:
        raise UsageError(f"Unknown engine {engine!r}; use one of {', '.join(ENGINE_CHOICES)}.")
    if engine == "transformers":
        return engine
    kwargs = dict(generate_kwargs or {})
    if engine == "auto" and (seed is not None or directory.manifest.dtype != "fp32"):
        # A seed asks for torch's reproducible sampling, which eager repeats; an engine
        # seeds its own sampler (asked for by name, it takes the seed). fp16 and bf16
        # graphs are left to the runtimes graphport validated them on.
        return "transformers"
    candidates = [engine] if engine != "auto" else [_native_engine(directory)]
    for name in candidates:
        if name is None:
            continue
        reason = _cannot(directory, name, runtime, runtime_options, kwargs)
        if reason is None:
            return name
        if engine != "auto":
            raise UsageError(f"{name} cannot {reason}.")
    return "transformers"


def _native_engine(directory: ExportDirectory) -> str | None:
    """The engine that runs the export's format natively, if any."""
    return {"onnx": "onnxruntime-genai", "openvino": "openvino-genai"}.get(
        directory.manifest.format
    )


def _cannot(
    directory: ExportDirectory,
    name: str,
    runtime: str | None,
    runtime_options: Mapping[str, Any] | None,
    kwargs: Mapping[str, Any],
) -> str | None:
    """What ``name`` cannot do here, as the end of "ENGINE cannot ..." (None: it can)."""
    transformers = "; use --engine transformers (transformers' generate() can)"
    manifest = directory.manifest
    if name == "onnxruntime-genai":
        reason = genai_unsupported(manifest)
        if reason is not None:
            return f"run {directory.path}: {reason}{transformers}"
        if not (directory.path / GENAI_CONFIG).is_file():
            return (
                f"run {directory.path}: it has no {GENAI_CONFIG} (exported by an older "
                "graphport); re-export it or run `graphport optimize` on it"
            )
    else:
        if not (directory.path / GENAI_MODEL_FILE).is_file():
            return (
                f"run {directory.path}: it is not a stateful OpenVINO decoder (export with "
                f"--format openvino){transformers}"
            )
        missing = [f for f in GENAI_TOKENIZER_FILES if not (directory.path / f).is_file()]
        if missing:
            return f"run {directory.path}: it has no {missing[0]}{transformers}"
    vocab = next(t.shape[-1] for t in manifest.graph().outputs if t.name == "logits")
    eos = generation_defaults(directory)["eos_token_id"]
    if isinstance(vocab, int) and not any(0 <= int(i) < vocab for i in eos):
        # genai ends on the pad token where no end token is set; generate() never ends
        return f"decode without an end token inside the vocabulary{transformers}"
    native = {"onnx": "onnxruntime", "openvino": "openvino"}[manifest.format]
    if (runtime is not None and runtime != native) or runtime_options:
        return f"run on another runtime or with runtime options{transformers}"
    config = load_generation_config(directory)
    if kwargs.get("num_beams", config.num_beams or 1) > 1:  # asked for, or the config's
        return f"do beam search{transformers}"
    unsupported = sorted(set(kwargs) - _ENGINE_SETTINGS)
    if unsupported:
        return f"take {', '.join(unsupported)}{transformers}"
    # The generation config's own settings that only transformers applies.
    configured = [
        key
        for key, neutral in _CONFIG_ONLY.items()
        if getattr(config, key, None) not in (None, [], {}, *neutral)
    ]
    if configured:
        return f"apply the generation config's {', '.join(configured)}{transformers}"
    if not engine_installed(name):
        extra = ENGINE_EXTRAS[name]
        how = f"pip install graphport[{extra}]" if extra else f"pip install {name}"
        return f"run: it is not installed; {how}"
    return None


def _transformers_generate(
    directory: ExportDirectory,
    prompts: Sequence[str],
    runtime: str,
    runtime_options: Mapping[str, Any] | None,
    seed: int | None,
    kwargs: dict[str, Any],
    images: Sequence[str | Path] = (),
) -> GeneratedText:
    """Rules 1-3 with transformers' ``generate()`` on the runtime."""
    import torch

    if kwargs.get("num_beams", 1) > 1 and not directory.manifest.kv_cache:
        raise UsageError(
            f"{directory.path} has no KV cache, so beam search cannot reorder one; re-export "
            "without --task (a generative checkpoint gets its cache) or use --num-beams 1."
        )
    tokenizer = _tokenizer(directory)
    defaults = generation_defaults(directory)
    pad = tokenizer.pad_token_id  # 0 is a pad id like any other
    kwargs.setdefault("pad_token_id", pad if pad is not None else defaults["pad_token_id"])
    kwargs.setdefault("max_new_tokens", defaults["max_new_tokens"])
    model = load_model(directory, runtime, **dict(runtime_options or {}))
    if images:
        inputs = image_text_inputs(directory, prompts, images)
    else:
        inputs = _inputs(directory, model, tokenizer, list(prompts), kwargs["pad_token_id"])
    _check_decoder_positions(directory, model, kwargs["max_new_tokens"])
    if seed is not None:
        torch.manual_seed(seed)
    width = _PromptWidth()
    processors = LogitsProcessorList([width, *(kwargs.pop("logits_processor", None) or [])])
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(
            **inputs,
            **kwargs,
            logits_processor=processors,
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


def _tokenizer(directory: ExportDirectory) -> Any:
    if not directory.has_tokenizer():
        raise UsageError(
            f"{directory.path} has no tokenizer files; export from a checkpoint that has "
            "its tokenizer, or pass token ids."
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory.path, local_files_only=True)


def _engine_generate(
    directory: ExportDirectory,
    name: str,
    runtime: str,
    prompts: list[str],
    seed: int | None,
    kwargs: dict[str, Any],
) -> GeneratedText:
    """Rules 1-3 with a native engine (graphport/runtimes/engines.py)."""
    if not prompts:
        raise UsageError("Pass at least one prompt.")
    tokenizer = _tokenizer(directory)
    defaults = generation_defaults(directory)
    config = load_generation_config(directory)
    pad = tokenizer.pad_token_id
    pad = int(kwargs.get("pad_token_id", pad if pad is not None else defaults["pad_token_id"]))
    new_tokens = int(kwargs.get("max_new_tokens", defaults["max_new_tokens"]))
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    if any(len(row) == 0 for row in rows):
        raise UsageError("Every prompt must have at least one token.")
    _check_positions(directory, rows, new_tokens)
    settings = Settings(
        max_new_tokens=new_tokens,
        pad_token_id=pad,
        do_sample=bool(kwargs.get("do_sample", config.do_sample)),
        temperature=float(kwargs.get("temperature", config.temperature or 1.0)),
        top_k=int(kwargs.get("top_k", config.top_k if config.top_k is not None else 0)),
        top_p=float(kwargs.get("top_p", config.top_p if config.top_p is not None else 1.0)),
        repetition_penalty=float(kwargs.get("repetition_penalty", defaults["repetition_penalty"])),
        seed=seed,
    )
    try:
        engine = (
            OnnxruntimeGenaiEngine(directory, pad, defaults["eos_token_id"])
            if name == "onnxruntime-genai"
            else OpenvinoGenaiEngine(directory)
        )
        start = time.perf_counter()
        tokens = engine.generate(rows, settings)
        seconds = time.perf_counter() - start
    except RuntimeError as e:  # the engine's own refusal, from C++
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeUnavailableError(
            f"{name} could not run {directory.path} ({first}); use --engine transformers."
        ) from e
    steps = max((len(t) for t in tokens), default=0)
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in tokens]
    eos = list(defaults["eos_token_id"])
    vocab = next(t.shape[-1] for t in directory.manifest.graph().outputs if t.name == "logits")
    if isinstance(vocab, int):
        _warn_out_of_vocabulary(eos, vocab)
    return GeneratedText(tokens, texts, steps, seconds, eos, runtime, engine=name)


def _check_positions(directory: ExportDirectory, rows: list[list[int]], new_tokens: int) -> None:
    """Every prompt and its new tokens must fit the model's positions (and a shared KV
    buffer): one sentence naming the first that does not."""
    limits = [max_positions(directory), (directory.manifest.kv_cache or {}).get("max_length")]
    limits = [int(n) for n in limits if n]
    if not limits:
        return
    limit = min(limits)
    for index, row in enumerate(rows):
        if len(row) + new_tokens > limit:
            raise UsageError(
                f"Prompt {index + 1} has {len(row)} tokens; with {new_tokens} new tokens that "
                f"exceeds the model's {limit} positions; shorten the prompt or ask for fewer "
                "new tokens."
            )


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
ENGINE_CHOICES = ("auto", "transformers", "onnxruntime-genai", "openvino-genai")
# What the native engines take; anything else (a logits processor, stopping criteria,
# min_new_tokens, ...) is transformers' generate() alone.
# Generation-config settings the engines do not apply (a non-default one keeps auto on
# transformers' generate()).
_CONFIG_ONLY = {  # name -> its neutral values besides None and empty
    "min_length": (0, 1),
    "min_new_tokens": (0,),
    "no_repeat_ngram_size": (0,),
    "bad_words_ids": (),
    "suppress_tokens": (),
    "begin_suppress_tokens": (),
    "forced_bos_token_id": (),
    "forced_eos_token_id": (),
    "sequence_bias": (),
    "typical_p": (1.0,),
    "epsilon_cutoff": (0.0,),
    "eta_cutoff": (0.0,),
    "min_p": (0.0,),
    "encoder_repetition_penalty": (1.0,),
    "exponential_decay_length_penalty": (),
    "num_return_sequences": (1,),
    "penalty_alpha": (0.0,),
    "guidance_scale": (1.0,),
}
_ENGINE_SETTINGS = frozenset({*_CHECKED, "do_sample", "pad_token_id"})


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

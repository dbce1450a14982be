"""Text generation over any runtime adapter, from the export's KV-cache contract.

The loop is plain numpy around ``Runtime.run``: prompts are left-padded into one batch,
the first step feeds an empty past, and each step feeds the previous step's ``present``
tensors back as ``past_key_values`` unchanged (the runtime's own output arrays, no copy).
Token choice follows transformers' order: repetition penalty, the token rules of the
export's generation config (``DecodingRules``), then temperature, top-k and top-p when
sampling; greedy is the argmax. Finished rows get the pad token, as ``generate()`` pads
them, and the loop stops when every row has finished.

Encoder-decoders (``Seq2SeqGenerator``) run the encoder graph once and the decoder graph
step by step on the same loop, starting from the decoder prompt ``generate()`` would use:
the decoder start token and, for Whisper, its language, task and no-timestamps tokens
(the language detected per row when the generation config leaves it open).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class GenerationOptions:
    """What to generate; ``None`` fields come from the export's generation config."""

    max_new_tokens: int = 20
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    eos_token_id: Sequence[int] = ()
    pad_token_id: int | None = None
    # At least this many new tokens before an end token may be chosen (on top of the
    # generation config's own minimum); validation sets it to see every step it asks for.
    min_new_tokens: int = 0

    def check(self) -> None:
        if self.max_new_tokens <= 0:
            raise UsageError(f"--max-new-tokens must be positive, not {self.max_new_tokens}.")
        if self.temperature <= 0:
            raise UsageError(f"The temperature must be positive, not {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top-p must be in (0, 1], not {self.top_p}.")
        if self.top_k < 0:
            raise UsageError(f"top-k must be 0 (off) or positive, not {self.top_k}.")
        if self.repetition_penalty <= 0:
            raise UsageError(
                f"The repetition penalty must be positive, not {self.repetition_penalty}."
            )


@dataclasses.dataclass
class GenerationResult:
    tokens: np.ndarray  # (batch, new tokens): generated ids, pad after a row finished
    prompt_tokens: int  # before the first new token: the prompt, or the decoder's start
    first_token_seconds: float
    seconds: float

    @property
    def new_tokens(self) -> int:
        return int(self.tokens.shape[1])


def load_generation_config(export_dir: ExportDirectory) -> Any:
    """The export's ``GenerationConfig``: generation_config.json, else from config.json."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(export_dir.path, local_files_only=True)
    except OSError:
        model_config = AutoConfig.from_pretrained(export_dir.path, local_files_only=True)
        return GenerationConfig.from_model_config(model_config)


def generation_defaults(export_dir: ExportDirectory) -> dict[str, Any]:
    """eos/pad ids and sampling defaults from generation_config.json, else config.json."""
    config = load_generation_config(export_dir)
    eos = config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    return {
        "eos_token_id": eos,
        "pad_token_id": int(pad),
        "max_new_tokens": config.max_new_tokens or 20,
        "repetition_penalty": config.repetition_penalty or 1.0,
    }


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (input_ids, attention_mask), padded on the left as generation pads."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise UsageError("Every prompt must have at least one token.")
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


@dataclasses.dataclass(frozen=True)
class DecodingRules:
    """The token rules of a generation config, as ``generate()``'s logits processors apply
    them (in its order, after the repetition penalty): n-gram and bad-word bans, minimum
    lengths, forced first and last tokens, suppressed tokens.

    ``prompt_length`` (the tokens before the first new one) and ``max_length`` (prompt plus
    new tokens) are set per generation by ``bind``. Not mirrored: beam search, sequence
    biases, constraints, encoder n-gram and repetition penalties, the exponential length
    penalty, and Whisper's timestamps, long-form windows and temperature fallback.
    """

    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    min_length: int = 0
    min_new_tokens: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_id: tuple[int, ...] = ()
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    eos_token_id: tuple[int, ...] = ()
    prompt_length: int = 0
    max_length: int = 0

    @classmethod
    def from_generation_config(cls, config: Any) -> DecodingRules:
        eos = _ids(config.eos_token_id)
        # transformers drops single-token bans of an end token (a row must be able to end).
        bad = tuple(
            tuple(words)
            for words in config.bad_words_ids or ()
            if not (len(words) == 1 and words[0] in eos)
        )
        return cls(
            no_repeat_ngram_size=int(config.no_repeat_ngram_size or 0),
            bad_words_ids=bad,
            min_length=int(config.min_length or 0),
            min_new_tokens=int(config.min_new_tokens or 0),
            forced_bos_token_id=config.forced_bos_token_id,
            forced_eos_token_id=_ids(config.forced_eos_token_id),
            suppress_tokens=_ids(config.suppress_tokens),
            begin_suppress_tokens=_ids(config.begin_suppress_tokens),
            eos_token_id=eos,
        )

    def bind(self, prompt_length: int, max_new_tokens: int) -> DecodingRules:
        return dataclasses.replace(
            self, prompt_length=prompt_length, max_length=prompt_length + max_new_tokens
        )

    def within_vocabulary(self, vocab_size: int) -> DecodingRules:
        """The rules without token ids the vocabulary does not have (transformers' logits
        processors ignore them too: a small model keeps a big tokenizer's eos id)."""

        def keep(ids: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(i for i in ids if 0 <= i < vocab_size)

        bos = self.forced_bos_token_id
        return dataclasses.replace(
            self,
            bad_words_ids=tuple(w for w in self.bad_words_ids if keep(w) == tuple(w)),
            forced_bos_token_id=bos if bos is None or 0 <= bos < vocab_size else None,
            forced_eos_token_id=keep(self.forced_eos_token_id),
            suppress_tokens=keep(self.suppress_tokens),
            begin_suppress_tokens=keep(self.begin_suppress_tokens),
            eos_token_id=keep(self.eos_token_id),
        )

    @property
    def begin_index(self) -> int:
        """Where begin-suppression applies: the first new token, or the one after a forced
        BOS that follows a one-token prompt (transformers' rule)."""
        if self.prompt_length == 1 and self.forced_bos_token_id is not None:
            return 2
        return self.prompt_length

    def apply(self, scores: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """Scores (batch, vocab) for the token after ``sequences`` (batch, length)."""
        length = sequences.shape[1]
        banned = np.zeros(scores.shape, dtype=bool)
        if self.no_repeat_ngram_size:
            for row, tokens in enumerate(
                _repeated_ngram_ends(sequences, self.no_repeat_ngram_size)
            ):
                banned[row, tokens] = True
        for words in self.bad_words_ids:
            prefix = len(words) - 1
            if prefix == 0:
                banned[:, words[0]] = True
            elif prefix < length:
                banned[(sequences[:, length - prefix :] == words[:-1]).all(-1), words[-1]] = True
        eos = list(self.eos_token_id)
        if eos and (length < self.min_length or length - self.prompt_length < self.min_new_tokens):
            banned[:, eos] = True
        scores = np.where(banned, -np.inf, scores)
        if self.forced_bos_token_id is not None and length == 1:
            scores = _forced(scores, [self.forced_bos_token_id])
        if self.forced_eos_token_id and length == self.max_length - 1:
            scores = _forced(scores, list(self.forced_eos_token_id))
        suppressed = list(self.suppress_tokens)
        if length == self.begin_index:
            suppressed += self.begin_suppress_tokens
        if suppressed:
            scores = scores.copy()
            scores[:, suppressed] = -np.inf
        return scores


def _forced(scores: np.ndarray, tokens: list[int]) -> np.ndarray:
    forced = np.full_like(scores, -np.inf)
    forced[:, tokens] = 0.0
    return forced


def _repeated_ngram_ends(sequences: np.ndarray, size: int) -> list[list[int]]:
    """Per row, the tokens that would repeat an n-gram of ``size`` already in the row."""
    length = sequences.shape[1]
    if length + 1 < size:
        return [[] for _ in sequences]
    ends = []
    for row in sequences.tolist():
        prefix = tuple(row[length + 1 - size :])
        ends.append(
            [
                row[i + size - 1]
                for i in range(length - size + 1)
                if tuple(row[i : i + size - 1]) == prefix
            ]
        )
    return ends


NO_RULES = DecodingRules()


def decode(
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    feeds: dict[str, np.ndarray],
    sequences: np.ndarray,
    options: GenerationOptions,
    rules: DecodingRules,
    next_feeds: Callable[[np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]],
) -> tuple[np.ndarray, float]:
    """The token loop both generators share: run the decoder, choose a token per row, pad
    rows that finished, feed the cache back (``next_feeds(tokens, outputs)``).

    ``sequences`` is what precedes the first new token (the prompt, or the decoder start).
    Returns the new tokens (batch, steps) and the seconds to the first one.
    """
    pad = options.pad_token_id if options.pad_token_id is not None else 0
    eos = np.asarray(list(options.eos_token_id), dtype=np.int64)
    rng = np.random.default_rng(options.seed)
    rules = rules.bind(sequences.shape[1], options.max_new_tokens)
    if options.min_new_tokens > rules.min_new_tokens:
        rules = dataclasses.replace(rules, min_new_tokens=options.min_new_tokens)
    unfinished = np.ones(sequences.shape[0], dtype=bool)
    new_tokens: list[np.ndarray] = []
    start = time.perf_counter()
    first_token = 0.0
    for step in range(options.max_new_tokens):
        outputs = run(feeds)
        scores = outputs["logits"][:, -1, :].astype(np.float32)
        if step == 0:
            eos, rules = _within_vocabulary(eos, rules, scores.shape[-1])
        tokens = choose_tokens(scores, sequences, options, rng, rules)
        tokens = np.where(unfinished, tokens, pad)
        if not new_tokens:
            first_token = time.perf_counter() - start
        new_tokens.append(tokens)
        sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
        if eos.size:
            unfinished &= ~np.isin(tokens, eos)
        if not unfinished.any():
            break
        feeds = next_feeds(tokens, outputs)
    return np.stack(new_tokens, axis=1), first_token


_warned_out_of_vocabulary: set[tuple[int, ...]] = set()


def _within_vocabulary(
    eos: np.ndarray, rules: DecodingRules, vocab_size: int
) -> tuple[np.ndarray, DecodingRules]:
    """Drop end and rule token ids the logits cannot hold, warning once per id set."""
    outside = tuple(sorted({int(i) for i in eos if not 0 <= i < vocab_size}))
    bounded = rules.within_vocabulary(vocab_size)
    outside += tuple(sorted(set(rules.eos_token_id) - set(bounded.eos_token_id) - set(outside)))
    if outside and outside not in _warned_out_of_vocabulary:
        _warned_out_of_vocabulary.add(outside)
        logger.warning(
            "End-of-sequence id(s) %s are outside the model's vocabulary of %d tokens, so no "
            "row can end on them; they are ignored, as transformers ignores them. Fix "
            "eos_token_id in the generation config if the model should stop early.",
            ", ".join(map(str, outside)),
            vocab_size,
        )
    return eos[(eos >= 0) & (eos < vocab_size)], bounded


def _carry_cache(outputs: Mapping[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """This step's presents as the next step's past, unchanged."""
    feeds = {}
    for i in range(num_layers):
        feeds[f"past_key_values.{i}.key"] = outputs[f"present.{i}.key"]
        feeds[f"past_key_values.{i}.value"] = outputs[f"present.{i}.value"]
    return feeds


def _empty_past(contract: Mapping[str, Any], batch: int) -> dict[str, np.ndarray]:
    """Zero-position past tensors; per layer where the contract lists ``layers``."""
    dtype = np.dtype(contract.get("dtype", "float32"))
    layers = contract.get("layers") or [contract] * int(contract["num_layers"])
    feeds = {}
    for i, layer in enumerate(layers):
        heads, dim = int(layer["num_kv_heads"]), int(layer["head_dim"])
        value_dim = int(layer.get("value_head_dim") or dim)
        feeds[f"past_key_values.{i}.key"] = np.zeros((batch, heads, 0, dim), dtype=dtype)
        feeds[f"past_key_values.{i}.value"] = np.zeros((batch, heads, 0, value_dim), dtype=dtype)
    return feeds


def require_cache(export_dir: ExportDirectory) -> Mapping[str, Any]:
    """The export's KV-cache contract, or the error that says it cannot generate."""
    manifest = export_dir.manifest
    if not manifest.kv_cache:
        raise UsageError(
            f"{export_dir.path} has no decoder with a KV cache (task "
            f"{manifest.task}); export a generative model with its cache (e.g. --task "
            "text-generation-with-past or text2text-generation-with-past) to generate."
        )
    return manifest.kv_cache


class Generator:
    """Generates with the decoder graph of a KV-cache export on one runtime."""

    def __init__(self, runtime: Any, rules: DecodingRules = NO_RULES) -> None:
        self.contract = require_cache(runtime.export_dir)
        self.runtime = runtime
        self.rules = rules
        self.num_layers = int(self.contract["num_layers"])
        self.uses_position_ids = "position_ids" in runtime.input_names
        self.max_positions = max_positions(runtime.export_dir)

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return _empty_past(self.contract, batch)

    def generate(
        self, inputs: Mapping[str, np.ndarray], options: GenerationOptions
    ) -> GenerationResult:
        """Generate from prompts given as ``input_ids`` + ``attention_mask`` (left-padded)."""
        options.check()
        input_ids = np.asarray(inputs["input_ids"]).astype(np.int64)
        mask = np.asarray(inputs.get("attention_mask", np.ones_like(input_ids))).astype(np.int64)
        batch, prompt_length = input_ids.shape
        if self.max_positions and prompt_length + options.max_new_tokens > self.max_positions:
            raise UsageError(
                f"The prompt has {prompt_length} tokens; with {options.max_new_tokens} new "
                f"tokens that exceeds the model's {self.max_positions} positions."
            )
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        positions[mask == 0] = 1
        feeds: dict[str, np.ndarray] = {
            "input_ids": input_ids,
            "attention_mask": mask,
            **self.empty_past(batch),
        }
        if self.uses_position_ids:
            feeds["position_ids"] = positions

        def next_feeds(tokens: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            nonlocal mask
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            step = {"input_ids": tokens[:, None], "attention_mask": mask}
            if self.uses_position_ids:
                step["position_ids"] = mask.sum(-1, keepdims=True) - 1
            return {**step, **_carry_cache(outputs, self.num_layers)}

        start = time.perf_counter()
        tokens, first_token = decode(
            self.runtime.run, feeds, input_ids, options, self.rules, next_feeds
        )
        return GenerationResult(tokens, prompt_length, first_token, time.perf_counter() - start)


# Sentinel in a Whisper decoder prompt: the language token, detected per row.
DETECT_LANGUAGE = -1


def decoder_prompt(config: Any, model_type: str) -> list[int]:
    """The tokens ``generate()`` starts an encoder-decoder's decoder with (Whisper may hold
    ``DETECT_LANGUAGE``): its start token, else its BOS."""
    start = config.decoder_start_token_id
    start = start if start is not None else config.bos_token_id
    if not isinstance(start, int):
        raise UsageError(
            "The export's generation config has no single decoder_start_token_id (nor a "
            "bos_token_id), so the decoder cannot be started; set decoder_start_token_id in "
            "generation_config.json."
        )
    if model_type == "whisper":
        return whisper_prompt(config, start)
    return [start]


def whisper_prompt(config: Any, start: int) -> list[int]:
    """Whisper's prompt as transformers builds it (``_retrieve_init_tokens``): the start
    token, the language (given, forced, or detected), the task, and ``<|notimestamps|>``."""
    if getattr(config, "return_timestamps", None):
        raise UsageError(
            "The export's generation config asks Whisper for timestamps, which graphport's "
            "generation loop does not produce; set return_timestamps to false."
        )
    task, language = getattr(config, "task", None), getattr(config, "language", None)
    tokens: list[int | None] = [start]
    forced = list(getattr(config, "forced_decoder_ids", None) or [])
    if task is None and language is None and forced and forced[0][0] == 1:
        for index, (position, token) in enumerate(forced, start=1):
            if position != index:
                raise UsageError(
                    f"forced_decoder_ids {forced} do not follow Whisper's prompt pattern (one "
                    "token per position from 1); fix the export's generation config."
                )
            tokens.append(token)
    lang_to_id = getattr(config, "lang_to_id", None)
    language_id: int | None = None
    if language is not None:
        language_id = _whisper_language(language, lang_to_id or {})
    elif lang_to_id is not None and (len(tokens) <= 1 or tokens[1] is None):
        language_id = DETECT_LANGUAGE
    if language_id is not None:
        if len(tokens) > 1:
            tokens[1] = language_id
        else:
            tokens.append(language_id)
    task_to_id = getattr(config, "task_to_id", None) or {}
    if task is not None:
        if task not in task_to_id:
            raise UsageError(
                f"Whisper's task {task!r} has no token in the export's generation config "
                f"(task_to_id lists {', '.join(task_to_id) or 'none'})."
            )
        tokens.append(task_to_id[task])
    elif language is not None and task_to_id and not set(task_to_id.values()) & set(tokens):
        tokens.append(task_to_id["transcribe"])
    no_timestamps = getattr(config, "no_timestamps_token_id", None)
    if no_timestamps is not None and tokens[-1] != no_timestamps:
        tokens.append(no_timestamps)
    return [t for t in tokens if t is not None]


def _whisper_language(language: Any, lang_to_id: Mapping[str, int]) -> int:
    if not isinstance(language, str):
        raise UsageError("Whisper generation takes one language for the batch, not a list.")
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    name = language.lower()
    token = name if name in lang_to_id else None
    if token is None and name in TO_LANGUAGE_CODE:
        token = f"<|{TO_LANGUAGE_CODE[name]}|>"
    elif token is None and name in TO_LANGUAGE_CODE.values():
        token = f"<|{name}|>"
    if token not in lang_to_id:
        raise UsageError(
            f"The language {language!r} has no token in the export's generation config "
            "(lang_to_id); pass one of its languages."
        )
    return int(lang_to_id[token])


class Seq2SeqGenerator:
    """Generates with an encoder-decoder export: the ``encoder`` graph once, then the
    ``decoder`` graph token by token on its self-attention cache."""

    def __init__(
        self,
        encoder: Any,
        decoder: Any,
        prompt: Sequence[int],
        rules: DecodingRules = NO_RULES,
        language_ids: Sequence[int] = (),
    ) -> None:
        self.contract = require_cache(decoder.export_dir)
        self.encoder, self.decoder = encoder, decoder
        self.prompt = list(prompt)
        self.rules = rules
        self.language_ids = sorted(language_ids)
        self.num_layers = int(self.contract["num_layers"])
        self.takes_mask = "encoder_attention_mask" in decoder.input_names
        self.max_positions = decoder_max_positions(decoder.export_dir)

    @classmethod
    def from_export(cls, encoder: Any, decoder: Any) -> Seq2SeqGenerator:
        """Prompt and token rules from the export's generation config."""
        config = load_generation_config(decoder.export_dir)
        model_type = decoder.export_dir.manifest.source.get("model_type", "")
        return cls(
            encoder,
            decoder,
            decoder_prompt(config, model_type),
            DecodingRules.from_generation_config(config),
            [int(i) for i in (getattr(config, "lang_to_id", None) or {}).values()],
        )

    def encode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The decoder's encoder feeds: ``encoder_hidden_states`` and, when the decoder
        masks them, ``encoder_attention_mask`` (the input's ``attention_mask``)."""
        missing = [name for name in self.encoder.input_names if name not in inputs]
        if missing:
            raise UsageError(
                f"The encoder takes {', '.join(self.encoder.input_names)}; missing "
                f"{', '.join(missing)}."
            )
        hidden = self.encoder.run({n: inputs[n] for n in self.encoder.input_names})
        context = {"encoder_hidden_states": hidden["last_hidden_state"]}
        if self.takes_mask:
            batch, length = context["encoder_hidden_states"].shape[:2]
            mask = inputs.get("attention_mask", np.ones((batch, length), dtype=np.int64))
            context["encoder_attention_mask"] = np.asarray(mask).astype(np.int64)
        return context

    def start_tokens(self, context: Mapping[str, np.ndarray]) -> np.ndarray:
        """The decoder prompt per row, with Whisper's language detected where it is open:
        the language token with the highest score after the start token (one decoder step,
        as ``detect_language`` does)."""
        batch = context["encoder_hidden_states"].shape[0]
        prompt = np.tile(np.asarray(self.prompt, dtype=np.int64), (batch, 1))
        detect = prompt[0] == DETECT_LANGUAGE
        if detect.any():
            if not self.language_ids:
                raise UsageError("Whisper's language is open but lang_to_id lists none.")
            feeds = {**context, **_empty_past(self.contract, batch)}
            feeds["decoder_input_ids"] = prompt[:, :1]
            scores = self.decoder.run(feeds)["logits"][:, -1, :]
            ids = np.asarray(self.language_ids)
            prompt[:, detect] = ids[scores[:, ids].argmax(-1)][:, None]
        return prompt

    def generate(
        self, inputs: Mapping[str, np.ndarray], options: GenerationOptions
    ) -> GenerationResult:
        """Generate from encoder inputs (``input_ids`` + ``attention_mask`` right-padded,
        ``input_features``, ``pixel_values``: what the encoder graph takes)."""
        options.check()
        start = time.perf_counter()
        context = self.encode(inputs)
        prompt = self.start_tokens(context)
        batch, prompt_length = prompt.shape
        if self.max_positions and prompt_length + options.max_new_tokens > self.max_positions:
            raise UsageError(
                f"{options.max_new_tokens} new tokens after the decoder's {prompt_length} start "
                f"tokens exceed its {self.max_positions} positions; ask for fewer."
            )
        feeds = {"decoder_input_ids": prompt, **context, **_empty_past(self.contract, batch)}

        def next_feeds(tokens: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            step = {"decoder_input_ids": tokens[:, None], **context}
            return {**step, **_carry_cache(outputs, self.num_layers)}

        encoded = time.perf_counter() - start
        tokens, first_token = decode(
            self.decoder.run, feeds, prompt, options, self.rules, next_feeds
        )
        return GenerationResult(
            tokens, prompt_length, encoded + first_token, time.perf_counter() - start
        )


def choose_tokens(
    scores: np.ndarray,
    sequences: np.ndarray,
    options: GenerationOptions,
    rng: np.random.Generator,
    rules: DecodingRules = NO_RULES,
) -> np.ndarray:
    """The next token per row from last-position logits (batch, vocab)."""
    if options.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, sequences, options.repetition_penalty)
    scores = rules.apply(scores, sequences)
    if not options.do_sample:
        return scores.argmax(-1).astype(np.int64)
    scores = scores / options.temperature
    if options.top_k:
        kth = np.sort(scores, axis=-1)[:, -min(options.top_k, scores.shape[-1])][:, None]
        scores = np.where(scores < kth, -np.inf, scores)
    if options.top_p < 1.0:
        scores = apply_top_p(scores, options.top_p)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(probs.shape[-1], p=row) for row in probs], dtype=np.int64)


def apply_repetition_penalty(
    scores: np.ndarray, sequences: np.ndarray, penalty: float
) -> np.ndarray:
    """transformers' rule: every id already in the row (prompt and padding included) has
    its score divided by ``penalty`` if positive, multiplied if negative."""
    scores = scores.copy()
    rows = np.arange(scores.shape[0])[:, None]
    seen = scores[rows, sequences]
    scores[rows, sequences] = np.where(seen < 0, seen * penalty, seen / penalty)
    return scores


def apply_top_p(scores: np.ndarray, top_p: float) -> np.ndarray:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (at least one)."""
    order = np.argsort(scores, axis=-1)  # ascending, as transformers sorts
    ordered = np.take_along_axis(scores, order, axis=-1)
    probs = np.exp(ordered - ordered.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    remove = probs.cumsum(-1) <= 1 - top_p
    remove[:, -1] = False
    removed = np.zeros_like(remove)
    np.put_along_axis(removed, order, remove, axis=-1)
    return np.where(removed, -np.inf, scores)


def _read_config(export_dir: ExportDirectory) -> dict[str, Any]:
    import json

    config_file = export_dir.path / "config.json"
    if not config_file.is_file():
        return {}
    return json.loads(config_file.read_text(encoding="utf-8"))


def _first_int(config: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def max_positions(export_dir: ExportDirectory) -> int | None:
    """The model's position limit from config.json (None: none recorded)."""
    keys = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")
    return _first_int(_read_config(export_dir), keys)


def decoder_max_positions(export_dir: ExportDirectory) -> int | None:
    """The decoder's position limit (None: none recorded, as with relative positions)."""
    config = _read_config(export_dir)
    decoder = config.get("decoder") if isinstance(config.get("decoder"), dict) else config
    keys = ("max_target_positions", "max_position_embeddings", "n_positions", "n_ctx")
    return _first_int(decoder, keys)


def generate_text(
    export_dir: ExportDirectory,
    prompts: Sequence[str],
    runtime_name: str = "onnxruntime",
    options: GenerationOptions | None = None,
    runtime_options: Mapping[str, Any] | None = None,
) -> tuple[GenerationResult, list[str]]:
    """Tokenize ``prompts`` with the export's tokenizer (its defaults, as a pipeline
    would), generate, and decode the new tokens. A decoder-only model's prompts are
    left-padded; an encoder-decoder's are padded as its tokenizer pads (right, mostly)."""
    require_cache(export_dir)
    if not export_dir.has_tokenizer():
        raise UsageError(
            f"{export_dir.path} has no tokenizer files; export from a checkpoint that has "
            "its tokenizer, or pass token ids."
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_dir.path, local_files_only=True)
    generator = make_generator(export_dir, runtime_name, runtime_options)
    options = options or GenerationOptions()
    if options.pad_token_id is None:
        pad = tokenizer.pad_token_id  # 0 is a pad id like any other
        options.pad_token_id = (
            pad if pad is not None else generation_defaults(export_dir)["pad_token_id"]
        )
    if isinstance(generator, Seq2SeqGenerator) and "input_ids" not in generator.encoder.input_names:
        # Image-to-text and speech recognition: the prompts are image or audio files.
        from graphport.runtimes.predict import prepare_inputs

        feeds, _ = prepare_inputs(export_dir, list(prompts), generator.encoder.spec.name)
    elif isinstance(generator, Seq2SeqGenerator):
        encoded = tokenizer(list(prompts), padding=True, return_tensors="np")
        feeds = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}
    else:
        ids, mask = left_pad([tokenizer(p)["input_ids"] for p in prompts], options.pad_token_id)
        feeds = {"input_ids": ids, "attention_mask": mask}
    result = generator.generate(feeds, options)
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in result.tokens]
    return result, texts


def make_generator(
    export_dir: ExportDirectory,
    runtime_name: str = "onnxruntime",
    runtime_options: Mapping[str, Any] | None = None,
) -> Generator | Seq2SeqGenerator:
    """The generation loop for an export's graphs on one runtime: an encoder-decoder's
    when the export has an ``encoder`` graph, else a decoder-only model's."""
    from graphport.runtimes import get_runtime_class

    runtime_class = get_runtime_class(runtime_name)
    options = dict(runtime_options or {})
    graphs = {graph.name for graph in export_dir.manifest.graphs}
    if "encoder" in graphs:
        contract = export_dir.manifest.kv_cache or {}
        encoder = runtime_class(
            export_dir, graph=contract.get("encoder_graph", "encoder"), **options
        )
        decoder = runtime_class(export_dir, graph=contract.get("graph", "decoder"), **options)
        return Seq2SeqGenerator.from_export(encoder, decoder)
    runtime = runtime_class(export_dir, **options)
    return Generator(
        runtime, DecodingRules.from_generation_config(load_generation_config(export_dir))
    )


# Greedy steps compared with transformers' generate() when an export is validated.
VALIDATION_STEPS = 24


def eager_generate(
    model: Any,
    inputs: Mapping[str, np.ndarray],
    max_new_tokens: int,
    pad_token_id: int,
    min_new_tokens: int = 0,
) -> np.ndarray:
    """transformers' greedy ``generate()`` on ``model`` (the eager model, or an export
    loaded with ``graphport.load``); only the new tokens.

    The new tokens are the last ones, one per step scored: what precedes them differs by
    model (a decoder-only model's prompt, an encoder-decoder's start token, Whisper's
    language and task tokens). Greedy means one beam, whatever the generation config says.
    """
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    dtype = model.dtype  # a loaded export has no parameters; its dtype is the export's
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    with torch.no_grad():
        output = model.generate(
            **tensors,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
    sequences = output.sequences
    return sequences[:, sequences.shape[1] - len(output.scores) :].numpy()

"""Text generation over any runtime adapter, from the export's KV-cache contract.

The loop is plain numpy around ``Runtime.run``: prompts are left-padded into one batch,
the first step feeds an empty past, and each step feeds the previous step's ``present``
tensors back as ``past_key_values`` unchanged (the runtime's own output arrays, no copy).
Token choice follows transformers' order: repetition penalty, then temperature, top-k and
top-p when sampling; greedy is the argmax. Finished rows get the pad token, as
``generate()`` pads them, and the loop stops when every row has finished.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory


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
    prompt_tokens: int
    first_token_seconds: float
    seconds: float

    @property
    def new_tokens(self) -> int:
        return int(self.tokens.shape[1])


def generation_defaults(export_dir: ExportDirectory) -> dict[str, Any]:
    """eos/pad ids and sampling defaults from generation_config.json, else config.json."""
    from transformers import AutoConfig, GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(export_dir.path, local_files_only=True)
    except OSError:
        model_config = AutoConfig.from_pretrained(export_dir.path, local_files_only=True)
        config = GenerationConfig.from_model_config(model_config)
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


class Generator:
    """Generates with the decoder graph of a KV-cache export on one runtime."""

    def __init__(self, runtime: Any) -> None:
        manifest = runtime.export_dir.manifest
        if not manifest.kv_cache:
            raise UsageError(
                f"{runtime.export_dir.path} has no decoder with a KV cache (task "
                f"{manifest.task}); export a text-generation model with its cache "
                "(--task text-generation-with-past) to generate."
            )
        self.runtime = runtime
        self.contract = manifest.kv_cache
        self.num_layers = int(self.contract["num_layers"])
        self.dtype = np.dtype(self.contract.get("dtype", "float32"))
        self.uses_position_ids = "position_ids" in runtime.input_names
        self.max_positions = _max_positions(runtime.export_dir)

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, int(self.contract["num_kv_heads"]), 0, int(self.contract["head_dim"]))
        empty = np.zeros(shape, dtype=self.dtype)
        return {
            name.format(i): empty
            for i in range(self.num_layers)
            for name in ("past_key_values.{}.key", "past_key_values.{}.value")
        }

    def generate(
        self, inputs: Mapping[str, np.ndarray], options: GenerationOptions
    ) -> GenerationResult:
        """Generate from prompts given as ``input_ids`` + ``attention_mask`` (left-padded)."""
        options.check()
        input_ids = np.asarray(inputs["input_ids"])
        attention_mask = np.asarray(inputs.get("attention_mask", np.ones_like(input_ids)))
        batch, prompt_length = input_ids.shape
        if self.max_positions and prompt_length + options.max_new_tokens > self.max_positions:
            raise UsageError(
                f"The prompt has {prompt_length} tokens; with {options.max_new_tokens} new "
                f"tokens that exceeds the model's {self.max_positions} positions."
            )
        pad = options.pad_token_id if options.pad_token_id is not None else 0
        eos = np.asarray(list(options.eos_token_id), dtype=np.int64)
        rng = np.random.default_rng(options.seed)
        sequences = input_ids.astype(np.int64)
        mask = attention_mask.astype(np.int64)
        positions = np.maximum(mask.cumsum(-1) - 1, 0)
        positions[mask == 0] = 1
        feeds: dict[str, np.ndarray] = {
            "input_ids": sequences,
            "attention_mask": mask,
            **self.empty_past(batch),
        }
        if self.uses_position_ids:
            feeds["position_ids"] = positions
        unfinished = np.ones(batch, dtype=bool)
        new_tokens: list[np.ndarray] = []
        start = time.perf_counter()
        first_token = 0.0
        for _ in range(options.max_new_tokens):
            outputs = self.runtime.run(feeds)
            scores = outputs["logits"][:, -1, :].astype(np.float32)
            tokens = choose_tokens(scores, sequences, options, rng)
            tokens = np.where(unfinished, tokens, pad)
            if not new_tokens:
                first_token = time.perf_counter() - start
            new_tokens.append(tokens)
            sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
            if eos.size:
                unfinished &= ~np.isin(tokens, eos)
            if not unfinished.any():
                break
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            feeds = {"input_ids": tokens[:, None], "attention_mask": mask}
            if self.uses_position_ids:
                feeds["position_ids"] = mask.sum(-1, keepdims=True) - 1
            for i in range(self.num_layers):
                feeds[f"past_key_values.{i}.key"] = outputs[f"present.{i}.key"]
                feeds[f"past_key_values.{i}.value"] = outputs[f"present.{i}.value"]
        return GenerationResult(
            np.stack(new_tokens, axis=1),
            prompt_length,
            first_token,
            time.perf_counter() - start,
        )


def choose_tokens(
    scores: np.ndarray, sequences: np.ndarray, options: GenerationOptions, rng: np.random.Generator
) -> np.ndarray:
    """The next token per row from last-position logits (batch, vocab)."""
    if options.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, sequences, options.repetition_penalty)
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


def _max_positions(export_dir: ExportDirectory) -> int | None:
    import json

    config_file = export_dir.path / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text(encoding="utf-8"))
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def generate_text(
    export_dir: ExportDirectory,
    prompts: Sequence[str],
    runtime_name: str = "onnxruntime",
    options: GenerationOptions | None = None,
    runtime_options: Mapping[str, Any] | None = None,
) -> tuple[GenerationResult, list[str]]:
    """Tokenize ``prompts`` with the export's tokenizer (its defaults, as a pipeline
    would), generate, and decode the new tokens."""
    generator = make_generator(export_dir, runtime_name, runtime_options)
    if not export_dir.has_tokenizer():
        raise UsageError(
            f"{export_dir.path} has no tokenizer files; export from a checkpoint directory "
            "that has its tokenizer."
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_dir.path, local_files_only=True)
    options = options or GenerationOptions()
    if options.pad_token_id is None:
        options.pad_token_id = (
            tokenizer.pad_token_id or generation_defaults(export_dir)["pad_token_id"]
        )
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    ids, mask = left_pad(encoded, options.pad_token_id)
    result = generator.generate({"input_ids": ids, "attention_mask": mask}, options)
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in result.tokens]
    return result, texts


def make_generator(
    export_dir: ExportDirectory,
    runtime_name: str = "onnxruntime",
    runtime_options: Mapping[str, Any] | None = None,
) -> Generator:
    """The generation loop for an export's graphs on one runtime."""
    from graphport.runtimes import get_runtime_class

    runtime = get_runtime_class(runtime_name)(export_dir, **dict(runtime_options or {}))
    return Generator(runtime)


# Greedy steps compared with transformers' generate() when an export is validated.
VALIDATION_STEPS = 24


def eager_generate(
    model: Any, inputs: Mapping[str, np.ndarray], max_new_tokens: int, pad_token_id: int
) -> np.ndarray:
    """transformers' greedy ``generate()`` on the eager model; only the new tokens."""
    import torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
    dtype = next(model.parameters()).dtype
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    with torch.no_grad():
        sequences = model.generate(
            **tensors, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_token_id
        )
    # Decoder-only output repeats the prompt; encoder-decoders start with the start token.
    start = 1 if model.config.is_encoder_decoder else tensors["input_ids"].shape[1]
    return sequences[:, start:].numpy()


def check_generation(
    export_dir: ExportDirectory,
    eager: Any,
    config: Any,
    runtimes: Sequence[str],
    runtime_options: Mapping[str, Mapping[str, Any]] | None,
    seed: int = 0,
    steps: int = VALIDATION_STEPS,
) -> list[Any]:
    """Greedy generation on each runtime against eager ``generate()``: the config's
    prompts, one alone and a left-padded batch, ``steps`` new tokens each."""
    from graphport.validators.parity import GenerationCheck

    defaults = generation_defaults(export_dir)
    checks = []
    for label, inputs in config.generation_inputs(seed):
        expected = eager_generate(eager, inputs, steps, defaults["pad_token_id"]).tolist()
        for name in runtimes:
            options = GenerationOptions(
                max_new_tokens=steps,
                eos_token_id=defaults["eos_token_id"],
                pad_token_id=defaults["pad_token_id"],
            )
            try:
                generator = make_generator(
                    export_dir, name, dict((runtime_options or {}).get(name, {}))
                )
                actual = generator.generate(inputs, options).tokens.tolist()
            except Exception as e:
                checks.append(GenerationCheck(name, label, expected, [], str(e)))
                continue
            checks.append(GenerationCheck(name, label, expected, actual))
    return checks

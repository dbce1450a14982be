"""transformers models that run an export's graph on a runtime instead of torch weights.

``RuntimeModel`` is a ``transformers.PreTrainedModel`` without parameters: its config is
the export's own config.json, and ``forward`` feeds the graph on a runtime adapter and
returns the ``ModelOutput`` class the eager head returns for the export's task, with the
graph's output names as fields. So ``transformers.pipeline(task, model=m, tokenizer=tok)``
accepts it as it accepts an eager model.

Rules of ``forward`` (what eager and ``generate()`` do without the weights):

1. Inputs may be torch tensors or numpy arrays (positional ones follow the graph's input
   order); outputs are torch tensors on the CPU (the runtime's arrays, not copied).
2. A graph input the caller left out is filled as eager fills it: ``attention_mask`` ones
   (over past and new positions), ``token_type_ids`` zeros, ``position_ids`` from the
   mask as ``generate()`` builds them (the mask's running count minus one, 0 on padding).
   Any other missing input is an error. ``token_type_ids`` all zero are dropped when the
   graph does not take them (a tokenizer returns them for decoders too), an
   ``attention_mask`` of ones likewise (the CTC pipeline passes one to a wav2vec2 graph
   exported without it, which is what a mask of ones computes), a ``pixel_mask`` of ones
   too (MaskFormer's image processor returns one), and ``position_ids``
   when the graph computes its own (a decoder exported without a cache).
   An input the graph does not take is dropped too when the eager head's ``forward`` does
   not name it: eager takes it through ``**kwargs`` and ignores it (YOLOS and the
   ``pixel_mask`` its image processor returns).
3. Flags with no meaning for a fixed graph (``use_cache``, ``return_dict``, ...) are
   accepted and ignored; ``labels`` are refused (the graph computes no loss).

``RuntimeModelForCausalLM`` adds ``GenerationMixin``, so ``generate()`` is transformers'
own (greedy, sampling, beam search, streamers, stopping criteria). With a KV cache export:

4. The past lives in a ``DynamicCache`` whose tensors are the runtime's ``present`` arrays
   wrapped by ``torch.from_numpy`` (no copy), fed back as ``.numpy()`` views; so beam
   search reorders the runtime's past with transformers' own cache code.
5. The first step (an empty or absent cache) feeds an empty past (per layer, as the
   contract lists its heads and sizes) and starts a fresh cache of plain
   ``DynamicLayer`` s: the graph returns past and new positions together, which is what
   such a layer holds. A sliding-window layer (its present is its last window - 1
   positions) is a ``DynamicSlidingWindowLayer`` that counts every position seen, so the
   cache's length, and the attention mask filled from it, cover the whole sequence.

6. An export whose manifest says ``kv_cache.shared_buffer`` (a GroupQueryAttention graph
   from ``-O2``, graphs/gqa.py) on onnxruntime: greedy search and sampling bind one
   preallocated buffer per layer as past and present (runtimes/kv_buffer.py), sized for
   the prompt and the new tokens asked for, so a step appends in place and allocates
   nothing for the cache; the ``DynamicCache`` holds views of that buffer. Beam search
   reorders its cache, so it feeds the same graph the present arrays as in rule 4.

Without a KV cache the graph is rerun on the whole sequence each step (greedy and sampling
work); beam search is refused there, as ``graphport generate`` refuses it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    DynamicCache,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import modeling_outputs as outputs
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
from transformers.utils import ModelOutput

from graphport.errors import UsageError
from graphport.export.task_outputs import eager_output_classes
from graphport.manifest import ExportDirectory
from graphport.runtimes import get_runtime_class
from graphport.runtimes.base import Runtime
from graphport.runtimes.generate import max_positions
from graphport.runtimes.kv_buffer import SharedKVBuffer

logger = logging.getLogger(__name__)

# task -> the ModelOutput classes eager heads return for it, most common first; the first
# whose fields hold every graph output is used (a plain ModelOutput when none does).
OUTPUT_CLASSES: dict[str, tuple[type[ModelOutput], ...]] = {
    "feature-extraction": (
        outputs.BaseModelOutput,
        outputs.BaseModelOutputWithPooling,
        outputs.Seq2SeqModelOutput,
    ),
    "fill-mask": (outputs.MaskedLMOutput,),
    "text-classification": (outputs.SequenceClassifierOutput,),
    "token-classification": (outputs.TokenClassifierOutput,),
    "question-answering": (outputs.QuestionAnsweringModelOutput,),
    "multiple-choice": (outputs.MultipleChoiceModelOutput,),
    "image-classification": (outputs.ImageClassifierOutput,),
    "semantic-segmentation": (outputs.SemanticSegmenterOutput,),
    "audio-classification": (outputs.SequenceClassifierOutput,),
    "automatic-speech-recognition": (outputs.CausalLMOutput,),
    "depth-estimation": (outputs.DepthEstimatorOutput,),
    "text-generation": (outputs.CausalLMOutputWithPast,),
}
# Graph inputs that name a model's main input, in the order looked for.
MAIN_INPUTS = ("input_ids", "pixel_values", "input_values", "input_features", "inputs_embeds")
MODALITIES = {"text": "text", "vision": "image", "audio": "audio"}
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Keywords eager forwards take that change nothing a fixed graph computes.
IGNORED = frozenset(
    {"use_cache", "return_dict", "output_attentions", "output_hidden_states", "logits_to_keep"}
)
# What image processors and feature extractors return beside the main input.
PREPROCESSOR_EXTRAS = ("pixel_mask",)
PAST = ("past_key_values.{}.key", "past_key_values.{}.value")
PRESENT = ("present.{}.key", "present.{}.value")


class _NotSupportedFilter(logging.Filter):
    """Drops the pipelines' "The model 'RuntimeModel' is not supported" error: they check
    the class name against eager head names, and a runtime model serves any of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(
            ("The model 'RuntimeModel' ", "The model 'RuntimeModelForCausalLM' ")
        )


logging.getLogger("transformers.pipelines.base").addFilter(_NotSupportedFilter())


def output_class(
    task: str, names: Sequence[str], model_type: str | None = None
) -> type[ModelOutput]:
    """The ModelOutput class eager returns for ``task`` that has every name in ``names``:
    the one the eager head of ``model_type`` annotates, else the task's usual ones above
    (a causal LM's always: its generation steps fill their fields)."""
    wanted = {n for n in names if not n.startswith("present.")}
    classes = OUTPUT_CLASSES.get(task, ())
    if model_type and task != "text-generation":
        classes = (*eager_output_classes(model_type, task), *classes)
    for cls in classes:
        if wanted <= set(cls.__dataclass_fields__):
            return cls
    return ModelOutput


def to_array(value: Any) -> np.ndarray:
    """A torch tensor (any device; no copy on the CPU) or array-like as a numpy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return np.asarray(value)


def positions_from_mask(mask: np.ndarray, length: int) -> np.ndarray:
    """The last ``length`` position ids of ``mask`` as ``generate()`` builds them."""
    positions = np.cumsum(mask, axis=-1) - 1
    positions[mask == 0] = 0
    return positions[:, -length:].astype(np.int64)


class RuntimeModel(PreTrainedModel):
    """One graph of an export on one runtime, as a transformers model (rules 1-3)."""

    config_class = PretrainedConfig
    base_model_prefix = "graphport"

    def __init__(self, config: PretrainedConfig, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.export_dir = runtime.export_dir
        manifest = self.export_dir.manifest
        self.task = manifest.task
        self.graph_inputs = list(runtime.input_names)
        self.main_input_name = next(
            (n for n in MAIN_INPUTS if n in self.graph_inputs), self.graph_inputs[0]
        )
        self.input_modalities = MODALITIES.get(manifest.modality, "text")
        self.output_class = output_class(self.task, runtime.output_names, config.model_type)
        self._torch_dtype = TORCH_DTYPES.get(manifest.dtype, torch.float32)
        self.eager_ignores = _eager_ignores(config, self.graph_inputs)
        self.eval()

    @classmethod
    def from_export(
        cls, export_dir: ExportDirectory | str, runtime: str = "onnxruntime", **options: Any
    ) -> RuntimeModel:
        """Load the export's ``model`` graph on ``runtime`` with the export's config."""
        directory = (
            export_dir if isinstance(export_dir, ExportDirectory) else ExportDirectory(export_dir)
        )
        adapter = get_runtime_class(runtime)(directory, graph="model", **options)
        config = AutoConfig.from_pretrained(directory.path, local_files_only=True)
        return cls(config, adapter)

    # A model without parameters: PreTrainedModel's versions look at the parameters.
    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return self._torch_dtype

    def to(self, *args: Any, **kwargs: Any) -> RuntimeModel:
        # The graph runs where its runtime was loaded; inputs on any device are accepted
        # (rule 1), so a pipeline's .to(device) is a no-op rather than an error.
        return self

    def get_input_embeddings(self) -> None:
        return None

    def save_pretrained(
        self, save_directory: str | Path, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """Write the export directory this model runs (its graphs, manifest, config and
        preprocessor files) to ``save_directory``, which ``graphport.load`` and every CLI
        command read; there are no torch weights to write. Other keywords are ignored."""
        if push_to_hub:
            raise UsageError(
                "graphport models do not push to the Hub; save_pretrained to a directory and "
                "upload it with huggingface_hub's upload_folder."
            )
        target = Path(save_directory)
        if target.exists() and target.resolve() == self.export_dir.path.resolve():
            return
        if target.exists() and not target.is_dir():
            raise UsageError(
                f"{target} is an existing file; pass a directory path to save_pretrained."
            )
        shutil.copytree(self.export_dir.path, target, dirs_exist_ok=True)
        logger.info("Saved the export %s to %s", self.export_dir.path, target)

    def forward(self, *args: Any, **inputs: Any) -> ModelOutput:
        feeds = self._feeds(args, inputs)
        return self._wrap(self.runtime.run(feeds))

    # ---- feeds and outputs -------------------------------------------------------------

    def _feeds(
        self, args: Sequence[Any], inputs: Mapping[str, Any], past_length: int = 0
    ) -> dict[str, np.ndarray]:
        """Graph feeds from a forward call (rules 1-3); ``past_length``: cached positions."""
        if len(args) > len(self.graph_inputs):
            raise UsageError(
                f"The graph takes {len(self.graph_inputs)} inputs "
                f"({', '.join(self.graph_inputs)}); {len(args)} were passed by position."
            )
        given = dict(zip(self.graph_inputs, args, strict=False))
        for name, value in inputs.items():
            if value is None or name in IGNORED or name in self.eager_ignores:
                continue
            if name == "labels":
                raise UsageError(
                    "graphport models compute no loss (the graph has no labels input); "
                    "compute it from the returned logits."
                )
            given[name] = value
        feeds = {name: to_array(value) for name, value in given.items()}
        token_types = feeds.get("token_type_ids")
        if "token_type_ids" not in self.graph_inputs and token_types is not None:
            if token_types.any():
                raise UsageError(
                    "The graph takes no token_type_ids, but nonzero ones were passed; pass "
                    "single sequences, or export a model that uses token types."
                )
            del feeds["token_type_ids"]
        mask = feeds.get("attention_mask")
        if "attention_mask" not in self.graph_inputs and mask is not None:
            if not mask.all():
                raise UsageError(
                    "The graph takes no attention_mask, but one with padding was passed; "
                    "pass one input at a time (unpadded), or export a model that takes a mask."
                )
            del feeds["attention_mask"]
        pixel_mask = feeds.get("pixel_mask")
        if "pixel_mask" not in self.graph_inputs and pixel_mask is not None and pixel_mask.all():
            del feeds["pixel_mask"]  # every pixel valid: what the graph computes without one
        if "position_ids" not in self.graph_inputs:
            # generate() passes them to any forward that names them; such a graph derives
            # its positions itself (rule 2).
            feeds.pop("position_ids", None)
        main = feeds.get(self.main_input_name)
        if main is not None:
            # Token ids lead with every batch axis (multiple-choice: batch x choice); other
            # main inputs (pixels, audio) with the batch and then the sequence.
            tokens = main.dtype.kind in "iu" and main.ndim >= 2
            batch = main.shape[:-1] if tokens else main.shape[:1]
            length = main.shape[-1] if tokens else main.shape[1]
            if "attention_mask" in self.graph_inputs and "attention_mask" not in feeds:
                feeds["attention_mask"] = np.ones((*batch, past_length + length), dtype=np.int64)
            if "token_type_ids" in self.graph_inputs and "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros((*batch, length), dtype=np.int64)
            if "position_ids" in self.graph_inputs and "position_ids" not in feeds:
                mask = feeds.get("attention_mask")
                if mask is None:
                    mask = np.ones((*batch, past_length + length), dtype=np.int64)
                feeds["position_ids"] = positions_from_mask(mask, length)
        return feeds

    def _wrap(self, results: Mapping[str, np.ndarray], **extra: Any) -> ModelOutput:
        fields = {
            name: torch.from_numpy(np.asarray(value))
            for name, value in results.items()
            if not name.startswith("present.")
        }
        return self.output_class(**fields, **extra)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise UsageError(
            f"{self.export_dir.path} is a {self.task} export, which does not generate; export "
            "a generative model (text-generation) to call generate()."
        )


class RuntimeModelForCausalLM(RuntimeModel, GenerationMixin):
    """A decoder-only export as a transformers causal LM (rules 4-5)."""

    def __init__(self, config: PretrainedConfig, runtime: Runtime) -> None:
        super().__init__(config, runtime)
        self.max_positions = max_positions(self.export_dir)
        self.kv_cache = self.export_dir.manifest.kv_cache
        self.num_layers = int(self.kv_cache["num_layers"]) if self.kv_cache else 0
        layers = (self.kv_cache or {}).get("layers") or []
        self.windows = [layer.get("sliding_window") for layer in layers]
        self.generation_config = _generation_config(self.export_dir, config)
        # rule 6: one buffer serves as past and present (onnxruntime IO binding)
        self.shares_buffer = bool(
            (self.kv_cache or {}).get("shared_buffer") and hasattr(runtime, "session")
        )
        self.kv_buffer: Any = None  # runtimes/kv_buffer.SharedKVBuffer, while sampling
        self._planned_length = 0  # positions this generate() call needs (0: unknown)
        self._buffer_length = 0  # the same while a buffer is in use; 0: none

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        cache: DynamicCache | None = None,
        token_type_ids: Any = None,  # named, so generate() accepts a tokenizer's (rule 2)
        **inputs: Any,
    ) -> ModelOutput:
        cache = inputs.pop("past_key_values", None) if cache is None else cache
        given = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
        given["token_type_ids"] = token_type_ids
        if not self.kv_cache:
            return self._wrap(
                self.runtime.run(self._feeds((), {**given, "position_ids": position_ids}))
            )
        past_length = cache.get_seq_length() if cache is not None else 0
        feeds = self._feeds((), {**given, "position_ids": position_ids}, past_length)
        main = feeds[self.main_input_name]
        if self._buffer_length and (past_length == 0 or self.kv_buffer is not None):
            return self._buffered_step(feeds, cache, past_length)
        feeds.update(self._past(cache, past_length, len(main)))
        results = self.runtime.run(feeds)
        if past_length == 0:
            cache = DynamicCache()
        _store_present(cache, results, self.num_layers, self.windows, past_length + main.shape[1])
        return self._wrap(results, cache=cache)

    def generate(self, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        """transformers' ``generate()``, after checking that the prompt and the new tokens
        asked for fit the model's positions (as ``graphport generate`` checks)."""
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if prompt is not None and self.max_positions:
            length = int(np.shape(to_array(prompt))[-1])
            config = kwargs.get("generation_config") or self.generation_config
            new = kwargs.get("max_new_tokens", getattr(config, "max_new_tokens", None)) or 0
            if length + new > self.max_positions:
                raise UsageError(
                    f"The prompt has {length} tokens; with {new} new tokens that exceeds the "
                    f"model's {self.max_positions} positions; shorten the prompt or ask for "
                    "fewer new tokens."
                )
            total = length + new if new else int(getattr(config, "max_length", 0) or 0)
            limit = int((self.kv_cache or {}).get("max_length") or self.max_positions)
            self._planned_length = min(total, limit, self.max_positions)
        try:
            return GenerationMixin.generate(self, inputs, *args, **kwargs)
        finally:
            self._planned_length = 0

    def _sample(self, *args: Any, **kwargs: Any) -> Any:
        # Greedy search and sampling keep the buffer (rule 6); beam search reorders its
        # cache, so it takes the graph's own present arrays.
        self._buffer_length = self._planned_length if self.shares_buffer else 0
        try:
            return super()._sample(*args, **kwargs)
        finally:
            self._buffer_length = 0

    def _buffered_step(
        self, feeds: dict[str, np.ndarray], cache: DynamicCache | None, past_length: int
    ) -> ModelOutput:
        """One step on the shared KV buffer (rule 6)."""
        main = feeds[self.main_input_name]
        batch, total = main.shape[0], past_length + main.shape[1]
        held = self.kv_buffer
        if past_length == 0 or not held.fits(batch, total):
            length = max(self._buffer_length, total)
            if past_length:  # more positions than planned (a max_length in a config): grow
                length = min(max(total, 2 * held.length), self.max_positions or total)
            if held is None or not held.fits(batch, length) or past_length:
                self.kv_buffer = SharedKVBuffer(
                    self.runtime.session, self.kv_cache, batch, length, self.config.vocab_size
                )
            if past_length:
                self.kv_buffer.copy_from(held, past_length)
            else:
                cache = DynamicCache()
        logits = self.kv_buffer.run(feeds)
        _store_present(cache, self.kv_buffer.held(total), self.num_layers)
        return self.output_class(logits=torch.from_numpy(logits), cache=cache)

    def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if not self.kv_cache:
            # No cache to continue from: every step reruns the whole sequence.
            kwargs.update(next_sequence_length=None, cache=None)
        return super().prepare_inputs_for_generation(*args, **kwargs)

    def _past(
        self, cache: DynamicCache | None, past_length: int, batch: int
    ) -> dict[str, np.ndarray]:
        if past_length == 0:
            return empty_past(self.kv_cache, batch)
        feeds = {}
        for i, layer in enumerate(cache.layers[: self.num_layers]):
            feeds[PAST[0].format(i)] = to_array(layer.keys)
            feeds[PAST[1].format(i)] = to_array(layer.values)
        return feeds

    def _beam_search(self, *args: Any, **kwargs: Any) -> Any:
        if not self.kv_cache:
            raise UsageError(
                f"{self.export_dir.path} has no KV cache, so beam search cannot reorder one; "
                "re-export without --task (a generative checkpoint gets its cache) or use "
                "num_beams=1."
            )
        return super()._beam_search(*args, **kwargs)


def _eager_ignores(config: PretrainedConfig, graph_inputs: Sequence[str]) -> frozenset[str]:
    """Inputs preprocessors return that the eager head neither names nor the graph takes
    (rule 2): eager's ``forward`` swallows them in ``**kwargs``."""
    import inspect

    import transformers

    names = getattr(config, "architectures", None) or []
    head = getattr(transformers, names[0], None) if names else None
    if head is None:
        return frozenset()
    named = set(inspect.signature(head.forward).parameters)
    return frozenset(n for n in PREPROCESSOR_EXTRAS if n not in named and n not in graph_inputs)


def empty_past(contract: Mapping[str, Any], batch: int) -> dict[str, np.ndarray]:
    """Zero-position past tensors (rule 5); per layer where the contract lists ``layers``."""
    dtype = np.dtype(contract.get("dtype", "float32"))
    layers = contract.get("layers") or [contract] * int(contract["num_layers"])
    feeds = {}
    for i, layer in enumerate(layers):
        heads, dim = int(layer["num_kv_heads"]), int(layer["head_dim"])
        value_dim = int(layer.get("value_head_dim") or dim)
        feeds[PAST[0].format(i)] = np.zeros((batch, heads, 0, dim), dtype=dtype)
        feeds[PAST[1].format(i)] = np.zeros((batch, heads, 0, value_dim), dtype=dtype)
    return feeds


def _store_present(
    cache: DynamicCache,
    results: Mapping[str, np.ndarray],
    layers: int,
    windows: Sequence[int | None] = (),
    seen: int = 0,
) -> None:
    """Make ``cache`` hold the graph's present tensors (rule 4): wrapped, not copied.
    A layer with a window in ``windows`` records ``seen`` positions (rule 5)."""
    for i in range(layers):
        keys = torch.from_numpy(results[PRESENT[0].format(i)])
        values = torch.from_numpy(results[PRESENT[1].format(i)])
        window = windows[i] if i < len(windows) else None
        if len(cache.layers) <= i:
            cache.layers.append(DynamicSlidingWindowLayer(window) if window else DynamicLayer())
        layer = cache.layers[i]
        if window and isinstance(layer, DynamicSlidingWindowLayer):
            layer.cumulative_length = seen
        layer.keys, layer.values = keys, values
        layer.device, layer.dtype = keys.device, keys.dtype
        layer.is_initialized = True


def _generation_config(export_dir: ExportDirectory, config: PretrainedConfig) -> Any:
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(export_dir.path, local_files_only=True)
    except OSError:
        generation = GenerationConfig.from_model_config(config)
    if export_dir.manifest.kv_cache:
        # The graph takes and returns its cache whatever the config says (pix2struct's says
        # use_cache false): without it generate() would feed one token and no past.
        generation.use_cache = True
    return generation

"""The generic shrink: any model type's default config made small, whatever its size
attributes are called.

Every size attribute the config already has is lowered (never raised) to a small value,
level by level (``SHRINK_LEVELS``): the caller (``graphport.models.tiny_generic``) takes
the first level whose model builds and runs. Token ids past the small vocabulary are moved
into it; timm backbones are replaced by transformers' own ResNet.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from transformers import AutoConfig, PretrainedConfig

# Attribute name -> the small value it gets. Values are only ever lowered, and only for
# attributes the config has: configs name the same thing differently (hidden_size, d_model,
# n_embd, dim...), so the table lists the names and the config decides which apply.
_WIDTHS = dict.fromkeys(
    (
        "hidden_size",
        "d_model",
        "n_embd",
        "dim",
        "embed_dim",
        "embedding_size",
        "embedding_dim",
        "word_embed_proj_dim",
        "projection_dim",
        "text_embed_dim",
        "vision_embed_dim",
        "hidden_dim",
        "decoder_hidden_size",
        "d_inner",
        "codebook_dim",
        "emb_dim",
        "out_hidden_size",
        "hidden_size_global",
        "hidden_size_per_layer_input",
    ),
    32,
)
_FEED_FORWARD = {
    **dict.fromkeys(
        (
            "intermediate_size",
            "ffn_dim",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "d_ff",
            "n_inner",
            "ffn_hidden_size",
            "decoder_intermediate_size",
            "projection_intermediate_size",
        ),
        64,
    ),
    **dict.fromkeys(
        (
            "moe_intermediate_size",
            "shared_expert_intermediate_size",
            "expert_intermediate_size",
            "dense_intermediate_size",
        ),
        32,
    ),
}
_PER_HEAD = {
    "head_dim": 8,
    "d_kv": 8,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "rotary_dim": 4,
}
_LAYER_COUNTS = dict.fromkeys(
    (
        "num_hidden_layers",
        "num_layers",
        "n_layer",
        "n_layers",
        "encoder_layers",
        "decoder_layers",
        "num_encoder_layers",
        "num_decoder_layers",
        "depth",
    ),
    2,
)
_EXPERTS = {
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "num_experts_per_token", "moe_k"), 2),
    **dict.fromkeys(("n_group", "topk_group"), 1),
}
_POSITIONS = {
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx"), 512),
    "max_source_positions": 128,
    "max_target_positions": 128,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
_IMAGES = {"image_size": 64, "patch_size": 8}
# Object queries of DETR-like detectors: RT-DETR selects its queries by top-k over the
# anchors of every feature map, fewer than its default 300 at a 64-pixel image.
_QUERIES = {"num_queries": 16}
# Scale factors of compound-scaled networks (EfficientNet, MobileNet): floats, lowered too.
_MULTIPLIERS = dict.fromkeys(
    ("width_coefficient", "depth_coefficient", "width_multiplier", "depth_multiplier"), 0.25
)
_VOCAB = 256
_HEAD_COUNTS = frozenset(
    {
        "mamba_n_heads",
        "num_attention_heads",
        "n_head",
        "n_heads",
        "num_heads",
        "encoder_attention_heads",
        "decoder_attention_heads",
    }
)
_KV_HEAD_COUNTS = frozenset(
    {"num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"}
)
# Per-stage lists of hierarchical (pyramid) models: depths become one block per stage,
# widths double from 32 (multiples of 32 keep 32-group GroupNorms valid), heads become 1.
_STAGE_DEPTHS = frozenset({"depths", "num_layers", "layers", "blocks"})
_STAGE_WIDTHS = frozenset(
    {"hidden_sizes", "embed_dims", "dims", "hidden_dims", "embedding_dims", "neck_hidden_sizes"}
)
# Which layers a backbone returns: indices past the new depth would be invalid.
_LAYER_SELECTIONS = frozenset({"out_indices", "_out_indices", "out_features", "_out_features"})


@dataclasses.dataclass(frozen=True)
class ShrinkLevel:
    """One way of making a config small: which groups of attributes it lowers.

    Levels are tried in order (most aggressive first): a config whose attributes are tied
    together in ways the table cannot know (special-token ranges past a small vocabulary,
    a vision tower sized for a text model) may refuse one group but accept the others,
    and a few configs are already small and accept nothing.
    """

    name: str
    widths: bool
    depth: bool
    vocab: bool


SHRINK_LEVELS = (
    ShrinkLevel("tiny", widths=True, depth=True, vocab=True),
    ShrinkLevel("tiny-full-vocab", widths=True, depth=True, vocab=False),
    ShrinkLevel("shallow", widths=False, depth=True, vocab=True),
    ShrinkLevel("default", widths=False, depth=False, vocab=False),
)

# Levels whose widths are small, so a model of unknown size can be built to find out.
SMALL_LEVELS = frozenset(level.name for level in SHRINK_LEVELS if level.widths)
# A generic tiny model above this many parameters is refused: it would not be tiny.
MAX_TINY_PARAMETERS = 50_000_000


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """A shrink level's config, or why the config class refused it."""

    level: str
    config: PretrainedConfig | None
    error: str | None = None


def _keyword_defaults(cls: type) -> dict[str, Any]:
    """A config class's own keyword parameters and their defaults (the base's excluded)."""
    base = set(inspect.signature(PretrainedConfig.__init__).parameters)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind in kinds and name != "self" and name not in base
    }


def _readable(config: PretrainedConfig, name: str) -> bool:
    """Whether the attribute can be read (per-layer ones raise when read globally)."""
    try:
        getattr(config, name)
    except AttributeError:
        return False
    except Exception:
        return True
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(_is_int(v) for v in value)


def _scalar_table(level: ShrinkLevel) -> dict[str, int]:
    table: dict[str, int] = {}
    if level.depth:
        table |= _LAYER_COUNTS | _EXPERTS | _POSITIONS | _QUERIES
    if level.widths:
        table |= _WIDTHS | _FEED_FORWARD | _PER_HEAD | _IMAGES
    return table


class Shrinker:
    """Lowers the size attributes of a config tree; token ids past the small vocabulary
    are moved into it, the same old id to the same new id everywhere in the tree."""

    def __init__(self, level: ShrinkLevel) -> None:
        self.level = level
        self.scalars = _scalar_table(level)
        self.token_ids: dict[int, int] = {}

    def config(self, config: PretrainedConfig, **overrides: Any) -> PretrainedConfig:
        changes = self.level.depth or self.level.widths or self.level.vocab
        kwargs = self.kwargs(config) if changes else {}
        current = self._current(config)
        small = type(config)(**{**current, **kwargs, **overrides})
        # A backbone's choice of stages (RT-DETR's encoder takes three feature maps) stays
        # where the layer count does (``_layer_lists`` drops it otherwise).
        if not any(kwargs.get(n, current.get(n)) != current.get(n) for n in _LAYER_COUNTS):
            for name in ("_out_features", "_out_indices"):
                if name in vars(config) and name not in overrides:
                    setattr(small, name, vars(config)[name])
        # Attributes a composite config set on a sub-config beyond its parameters (DBRX
        # gives its attention config the rope base) are kept where the new one lacks them.
        for name, value in vars(config).items():
            if not name.startswith("_") and not _readable(small, name):
                setattr(small, name, value)
        return small

    @staticmethod
    def _current(config: PretrainedConfig) -> dict[str, Any]:
        """The config's own values for its keyword parameters (composite configs set
        sub-configs and defaults of their own, which the bare classes do not have)."""
        values = {}
        for name, default in _keyword_defaults(type(config)).items():
            try:
                value = getattr(config, name)
            except Exception:  # absent, or per-layer (Gemma 4) and not readable globally
                continue
            # A parameter that defaults to None and now has a value was derived from the
            # others (head_dim, layer_types, num_key_value_heads): let it be derived again.
            derived = default is None and not isinstance(value, PretrainedConfig | dict)
            if derived and not name.endswith(("token_id", "token_index")):
                continue
            values[name] = value
        return values

    def kwargs(self, config: PretrainedConfig) -> dict[str, Any]:
        current = self._current(config)
        new: dict[str, Any] = {}
        for name, value in current.items():
            if isinstance(value, PretrainedConfig) and value.model_type == "timm_backbone":
                new[name] = self.config(_resnet_backbone(value))
            elif isinstance(value, PretrainedConfig):
                new[name] = self.config(value)
            elif _is_int(value) and name in self.scalars:
                new[name] = min(value, self.scalars[name])
            elif _is_int_list(value) and name in self.scalars:  # one size per layer
                new[name] = [min(v, self.scalars[name]) for v in value]
            elif isinstance(value, float) and name in _MULTIPLIERS and self.level.widths:
                new[name] = min(value, _MULTIPLIERS[name])
        if self.level.depth:
            # A mixture of experts without a per-token count cannot route (DeepSeek-V2's
            # default config leaves it unset).
            for name in ("num_experts_per_tok",):
                if name in _keyword_defaults(type(config)) and current.get(name) is None:
                    new[name] = 2
        if self.level.widths:
            new |= self._heads(current)
            # Head sizes left unset are not always derived (Ministral and Nemotron read them
            # as they are): set them from the small sizes.
            parameters = _keyword_defaults(type(config))
            heads = new.get("num_attention_heads")
            if "head_dim" in parameters and current.get("head_dim") is None:
                new["head_dim"] = new.get("hidden_size", 32) // heads if heads else 8
            if "num_key_value_heads" in parameters and heads:
                new.setdefault("num_key_value_heads", heads)
        new |= self._stage_lists(current)
        new |= self._layer_lists(current, new, self.scalars)
        if self.level.vocab:
            new |= self._vocab_and_tokens(current)
        if "rope_parameters" in current:
            new["rope_parameters"] = self._rope(config, current["rope_parameters"], new)
        # Backbones are built in-process from their config: never from timm or weights.
        for name in ("use_timm_backbone", "use_pretrained_backbone"):
            if current.get(name):
                new[name] = False
        return new

    def _heads(self, current: dict[str, Any]) -> dict[str, Any]:
        new: dict[str, Any] = {}
        old_heads = next((current[n] for n in _HEAD_COUNTS if _is_int(current.get(n))), None)
        for name in _HEAD_COUNTS:
            value = current.get(name)
            if _is_int(value):
                # 4 divides the small widths; 1 and 2 do too and are kept.
                new[name] = value if value in (1, 2) else 4
        for name in _KV_HEAD_COUNTS:
            value = current.get(name)
            if _is_int(value) and old_heads:
                # Multi-head stays multi-head, grouped-query stays grouped (2 of 4 heads).
                new[name] = 4 if value == old_heads else min(value, 2)
        return new

    def _stage_lists(self, current: dict[str, Any]) -> dict[str, Any]:
        new: dict[str, Any] = {}
        for name, value in current.items():
            if not _is_int_list(value):
                continue
            if name in _STAGE_DEPTHS and self.level.depth:
                new[name] = [min(v, 1) for v in value]
            elif name in _STAGE_WIDTHS and self.level.widths:
                new[name] = [min(v, 32 * 2**i) for i, v in enumerate(value)]
            elif name in _HEAD_COUNTS and self.level.widths:
                new[name] = [min(v, 1) for v in value]
            elif name == "conv_dim" and self.level.widths:
                new[name] = [min(v, 32) for v in value]
        return new

    @staticmethod
    def _layer_lists(
        current: dict[str, Any], new: dict[str, Any], sizes: dict[str, int]
    ) -> dict[str, Any]:
        """Per-layer lists follow a lowered layer count; layer selections are dropped."""
        changed = {
            current[n]: new[n]
            for n in _LAYER_COUNTS
            if _is_int(current.get(n)) and n in new and new[n] != current[n]
        }
        if not changed:
            return {}
        out: dict[str, Any] = {}
        for name, value in current.items():
            if name in _LAYER_SELECTIONS:
                out[name] = None
            elif ("layer" in name or name in sizes) and isinstance(value, list):
                value = new.get(name, value)
                if len(value) in changed:
                    out[name] = list(value[: changed[len(value)]])
            elif "layer" in name and _is_int(value) and name.endswith(("_period", "_offset")):
                # Hybrid stacks place layer kinds by period and offset (Jamba: attention
                # every 8th layer from the 4th): keep every kind within two layers.
                out[name] = min(value, 2 if name.endswith("_period") else 1)
        return out

    def _vocab_and_tokens(self, current: dict[str, Any]) -> dict[str, Any]:
        new: dict[str, Any] = {}
        for name, value in current.items():
            vocabulary = "vocab_size" in name or name.endswith("_vocab") or name == "codebook_size"
            if vocabulary and name != "type_vocab_size" and _is_int(value):
                new[name] = min(value, _VOCAB)
        for name, value in current.items():
            if not name.endswith(("token_id", "token_index", "token_ids")):
                continue
            if _is_int(value) and value >= _VOCAB:
                new[name] = self._token(value)
            elif _is_int_list(value) and any(v >= _VOCAB for v in value):
                new[name] = [self._token(v) if v >= _VOCAB else v for v in value]
        return new

    def _token(self, old: int) -> int:
        # From the top of the small vocabulary down, clear of the usual low special ids.
        return self.token_ids.setdefault(old, _VOCAB - 1 - len(self.token_ids))

    def _rope(self, config: PretrainedConfig, rope: Any, new: dict[str, Any]) -> Any:
        """Rotary parameters that follow other sizes: multimodal sections sum to half the
        (new) head size (a model that defaults them in code exempts them from validation),
        and the original context of a scaled rope cannot exceed the new one."""
        if not isinstance(rope, dict) or not rope:
            return rope
        if all(isinstance(v, dict) for v in rope.values()):  # per layer type
            return {kind: self._rope(config, value, new) for kind, value in rope.items()}
        rope = dict(rope)
        positions = new.get("max_position_embeddings")
        if _is_int(rope.get("original_max_position_embeddings")) and _is_int(positions):
            rope["original_max_position_embeddings"] = min(
                rope["original_max_position_embeddings"], positions
            )
        exempt = "mrope_section" in getattr(type(config), "ignore_keys_at_rope_validation", ())
        if self.level.widths and (exempt or "mrope_section" in rope):
            heads = new.get("num_attention_heads")
            head_dim = new.get("head_dim") or (new.get("hidden_size", 32) // heads if heads else 8)
            partial = rope.get("partial_rotary_factor") or getattr(
                config, "partial_rotary_factor", 1.0
            )
            rotary = int(head_dim * float(partial or 1.0))
            sections = len(rope.get("mrope_section") or (16, 24, 24))
            if rotary // 2 < sections and heads and heads > 1 and "hidden_size" in new:
                # Too few rotary dimensions for one per section: fewer, larger heads.
                new["num_attention_heads"] = heads = 1
                for name in _KV_HEAD_COUNTS & set(new):
                    new[name] = 1
                head_dim = new["hidden_size"]
                rotary = int(head_dim * float(partial or 1.0))
            half = max(rotary // 2, sections)
            split = [half // sections] * sections
            split[0] += half - sum(split)
            rope["mrope_section"] = split
        return rope


def _resnet_backbone(timm: PretrainedConfig) -> PretrainedConfig:
    """transformers' own ResNet in place of a timm backbone (timm is not a dependency, and
    a timm backbone would fetch its architecture by name)."""
    indices = list(getattr(timm, "out_indices", None) or (1, 2, 3, 4))
    return AutoConfig.for_model(
        "resnet",
        num_channels=getattr(timm, "num_channels", 3),
        out_features=[f"stage{i}" for i in indices if 1 <= i <= 4] or ["stage4"],
    )

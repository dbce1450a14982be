"""Decoder-only language models: exported with a KV cache for generation.

One config serves every family here: they all take ``input_ids`` and ``attention_mask``,
most take ``position_ids`` (the config asks the model class), and all keep their cache in
transformers' ``DynamicCache`` with the (batch, kv heads, positions, head dim) layout.
The tiny overrides keep token ids inside the tiny vocabulary and shrink what the common
text defaults do not reach (rotary sizes, feed-forward widths under family names).
"""

from __future__ import annotations

from graphport.export.decoder import OnnxConfigWithPast
from graphport.models.registry import register

# Special tokens inside the tiny vocabulary (real checkpoints bring their own).
_TOKENS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


# Grouped-query attention in the tiny llamas (2 KV heads for 4), multi-query in gemma.
@register("llama", "mistral", "qwen2", family="llama", tiny={**_TOKENS, "num_key_value_heads": 2})
@register("phi", tiny={**_TOKENS})
@register("gpt_neox", tiny={**_TOKENS})
@register("gemma", family="gemma", tiny={**_TOKENS, "head_dim": 8, "num_key_value_heads": 1})
@register("gpt2", family="gpt2", tiny={**_TOKENS, "n_positions": 128})
@register("gptj", "codegen", family="gptj", tiny={**_TOKENS, "rotary_dim": 4, "n_positions": 128})
@register("opt", family="opt", tiny={**_TOKENS, "ffn_dim": 64, "word_embed_proj_dim": 32})
@register("ctrl", family="ctrl", tiny={**_TOKENS, "dff": 64, "n_positions": 128})
class DecoderOnnxConfig(OnnxConfigWithPast):
    """Causal language models: feature extraction, and text generation with a KV cache."""

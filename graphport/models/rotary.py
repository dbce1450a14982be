"""A decoder's attention as graphs/gqa.py's kernel sees it, read off its eager rotary module.

The pass itself imports no torch (graph passes never do); its rotary tables come from
here, where the model family's own rotary module is evaluated at every position.
"""

from __future__ import annotations

import sys

import torch
import transformers

from graphport.graphs.gqa import AttentionShape


def attention_shape(config: object) -> AttentionShape | None:
    """The kernel's view of ``config``'s attention (None: no rotary module found, or one
    that rotates part of each head only). The rotary tables are the model's own rotary
    module evaluated at every position, so any static rope scaling is honoured."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    architecture = getattr(transformers, (config.architectures or [""])[0], None)
    module = sys.modules.get(getattr(architecture, "__module__", ""), None)
    rotary_class = next(
        (getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding")), None
    )
    if rotary_class is None:
        return None
    positions = torch.arange(int(config.max_position_embeddings))[None]
    with torch.no_grad():
        cos, sin = rotary_class(config)(torch.zeros(1), positions)
    if cos.shape[-1] != head_dim:  # partial rotary: the kernels would rotate every dim
        return None
    half = head_dim // 2
    # rotate-half rotary repeats each frequency twice: the kernels take one copy
    return AttentionShape(
        heads,
        kv_heads,
        head_dim,
        head_dim**-0.5,
        cos[0, :, :half].numpy(),
        sin[0, :, :half].numpy(),
    )

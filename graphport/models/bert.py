"""BERT-like text encoders: BERT and the models that share its inputs and heads."""

from __future__ import annotations

from graphport.export.modalities import TextOnnxConfig
from graphport.models.registry import register


@register(
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "electra",
    "roberta-prelayernorm",
    "data2vec-text",
    family="bert",
)
class BertOnnxConfig(TextOnnxConfig):
    pass


@register("albert", family="bert", tiny={"embedding_size": 16})
class AlbertOnnxConfig(BertOnnxConfig):
    pass


@register(
    "distilbert",
    family="bert",
    tiny={"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
)
class DistilBertOnnxConfig(BertOnnxConfig):
    pass


@register("mpnet", family="bert")
class MPNetOnnxConfig(BertOnnxConfig):
    pass


@register("deberta-v2", family="bert", tiny={"max_relative_positions": 64})
class DebertaV2OnnxConfig(BertOnnxConfig):
    # Disentangled attention accumulates a little more rounding than plain attention.
    ATOL_FOR_VALIDATION = 2e-4

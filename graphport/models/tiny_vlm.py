"""Tiny random vision-language checkpoints with their processors, built offline.

``save_tiny_llava(path)`` writes a seeded ``LlavaForConditionalGeneration`` (a two-layer
CLIP vision tower on 32 x 32 images, a two-layer Llama decoder over a 128-token
vocabulary) and a ``LlavaProcessor``: a word-level tokenizer (``w5 w9`` -> ids 5 and 9,
``<image>`` -> the image token), a CLIP image processor and a chat template.
``save_tiny_idefics3(path)`` writes an ``Idefics3ForConditionalGeneration`` of the same
sizes and its ``Idefics3Processor`` (image tiles), ``save_tiny_smolvlm(path)`` a SmolVLM
model alone. Nothing is downloaded; the tests export them as any checkpoint.
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


def tiny_word_tokenizer(special: tuple[str, ...] = ("<image>",), **named: str) -> object:
    """A fast word-level tokenizer over the tiny vocabulary: pad, bos, eos, unk, then the
    ``special`` tokens (ids 4, 5, ...; matched inside words, as a processor's expanded
    image placeholders have no spaces), then words ``w{id}`` and the chat roles.
    ``named`` names special tokens to the tokenizer (``image_token="<image>"``)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({token: 4 + i for i, token in enumerate(special)})
    vocab.update({f"w{i}": i for i in range(len(vocab), VOCAB_SIZE - 2)})
    vocab.update({"user:": VOCAB_SIZE - 2, "assistant:": VOCAB_SIZE - 1})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=named,
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
        tokenizer=tiny_word_tokenizer(image_token="<image>"),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    ).save_pretrained(path)
    return path


# Idefics3's placeholders: the image token and the tokens around a tile (ids 4, 5, ...).
IDEFICS3_SPECIAL = (
    "<image>",
    "<fake_token_around_image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)


def _idefics3_config(model_type: str) -> object:
    """The tiny config of Idefics3 or SmolVLM (one architecture): 32 x 32 tiles of 16
    patches, 4 image tokens each after the pixel shuffle, a two-layer Llama decoder."""
    from transformers import AutoConfig

    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
    }
    text = {
        "model_type": "llama",
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "initializer_range": 0.2,
    }
    return AutoConfig.for_model(
        model_type,
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN_ID,
        scale_factor=2,
    )


def _save_model(config: object, path: Path, seed: int) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.config.architectures = [type(model).__name__]
    model.eval().save_pretrained(path)


def save_tiny_idefics3(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Idefics3 checkpoint and its processor into ``path``: an image
    is resized to at most 64 pixels a side and split into 32 x 32 tiles plus the whole
    image downscaled."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    path = Path(path)
    _save_model(_idefics3_config("idefics3"), path, seed)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=True,
        size={"longest_edge": 2 * IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tiny_word_tokenizer(IDEFICS3_SPECIAL),
        image_seq_len=(IMAGE_SIZE // PATCH_SIZE) ** 2 // 4,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(path)
    return path


def save_tiny_smolvlm(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SmolVLM checkpoint (Idefics3's sizes) into ``path``, without a
    processor: SmolVLM's needs num2words, which graphport does not depend on."""
    path = Path(path)
    _save_model(_idefics3_config("smolvlm"), path, seed)
    return path

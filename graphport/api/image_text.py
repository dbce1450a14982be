"""Prompts with images for an image-text-to-text export (``graphport generate --image``).

Rules:

1. Images go into one prompt, in the order given, ahead of its text, through the chat
   template the export's processor carries (``{"type": "image"}`` items, then the text,
   then the generation prompt); without a template, the processor's image token is put
   before the text. The processor then expands each placeholder into its image tokens
   and resizes the images, as eager's preprocessing does.
2. Images are files Pillow can open; a missing or unreadable file, images for an export
   that takes none, or images with several prompts are refused in one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphport.errors import UsageError
from graphport.manifest import ExportDirectory

IMAGE_TEXT_TASK = "image-text-to-text"


def open_image(path: str | Path) -> Any:
    """An RGB PIL image from a file, or the sentence that says why not."""
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"The image {file} does not exist; pass an image file.")
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(
            f"{file} is not an image Pillow can read ({e}); pass a PNG, JPEG or other image file."
        ) from e


def image_text_inputs(
    directory: ExportDirectory, prompts: Sequence[str], images: Sequence[str | Path]
) -> dict[str, Any]:
    """``generate()``'s inputs for one prompt with ``images`` (rules 1-2), as torch tensors."""
    from transformers import AutoProcessor

    task = directory.manifest.task
    if task != IMAGE_TEXT_TASK:
        raise UsageError(
            f"{directory.path} is a {task} export, which takes no images; drop --image, or "
            "export an image-text-to-text model."
        )
    if len(prompts) != 1:
        raise UsageError(
            f"--image goes with one prompt, and {len(prompts)} were given; generate for one "
            "prompt at a time."
        )
    opened = [open_image(path) for path in images]
    processor = AutoProcessor.from_pretrained(directory.path, local_files_only=True)
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"}] * len(opened) + [{"type": "text", "text": prompts[0]}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )
    else:
        token = getattr(processor, "image_token", "<image>")
        text = " ".join([token] * len(opened) + [prompts[0]])
    try:
        return dict(processor(images=opened, text=text, return_tensors="pt"))
    except ValueError as e:  # the processor's own check of images against placeholders
        raise UsageError(f"The processor cannot take these images with the prompt: {e}") from e

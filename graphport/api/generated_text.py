"""Task-level results for generative tasks whose pipelines Transformers 5 removed.

Transformers 5 has no text2text-generation, summarization, translation or image-to-text
pipeline (``_resolve_deprecated_task`` raises for them), so ``graphport.pipeline`` returns
a ``GeneratedTextPipeline`` for such exports: it preprocesses as the removed pipelines did
(the tokenizer with padding, or the image processor), calls the model's ``generate()``
(transformers' own, on the runtime) and decodes without special tokens.

Results keep the removed pipelines' shapes: one input gives ``[{key: text}]``, a list of
inputs a list of those; ``key`` is ``generated_text`` (``summary_text`` for
summarization, ``translation_text`` for translation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from graphport.errors import UsageError

logger = logging.getLogger(__name__)

# The pipeline tasks each exported task answers, and the result key of each.
SERVED = {
    "text2text-generation": ("text2text-generation", "summarization", "translation"),
    "image-to-text": ("image-to-text",),
}
RESULT_KEYS = {"summarization": "summary_text", "translation": "translation_text"}


class GeneratedTextPipeline:
    """``pipeline(inputs, **generate_kwargs)`` -> generated texts, as the removed
    pipelines returned them."""

    def __init__(
        self,
        model: Any,
        task: str,
        tokenizer: Any = None,
        image_processor: Any = None,
        **generate_kwargs: Any,
    ) -> None:
        if tokenizer is None:
            raise UsageError(
                f"A {task} pipeline decodes with a tokenizer, and the export has none; export "
                "from a checkpoint with its tokenizer files, or pass tokenizer=."
            )
        if task == "image-to-text" and image_processor is None:
            raise UsageError(
                "An image-to-text pipeline needs an image processor, and the export has none; "
                "export from a checkpoint with preprocessor_config.json, or pass "
                "image_processor=."
            )
        self.model, self.task = model, task
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.key = RESULT_KEYS.get(task.split("_")[0], "generated_text")
        self.generate_kwargs = generate_kwargs

    def __call__(self, inputs: Any, **generate_kwargs: Any) -> list[Any]:
        single = not isinstance(inputs, (list, tuple))
        batch = [inputs] if single else list(inputs)
        if not batch:
            return []
        with torch.no_grad():
            tokens = self.model.generate(
                **self._encode(batch), **{**self.generate_kwargs, **generate_kwargs}
            )
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        per_input = len(texts) // len(batch)  # num_return_sequences per input
        results = [
            [{self.key: text} for text in texts[i * per_input : (i + 1) * per_input]]
            for i in range(len(batch))
        ]
        return results[0] if single else results

    def _encode(self, batch: Sequence[Any]) -> dict[str, torch.Tensor]:
        if self.task == "image-to-text":
            from transformers.image_utils import load_image

            try:
                images = [load_image(image) for image in batch]
            except (ValueError, OSError, TypeError) as e:
                raise UsageError(
                    f"An image-to-text pipeline takes images (PIL images or image files); "
                    f"{type(batch[0]).__name__} inputs could not be read as one: {e}"
                ) from e
            return dict(self.image_processor(images=images, return_tensors="pt"))
        if not all(isinstance(text, str) for text in batch):
            raise UsageError(f"A {self.task} pipeline takes texts, not {type(batch[0]).__name__}.")
        encoded = dict(self.tokenizer(list(batch), padding=True, return_tensors="pt"))
        encoded.pop("token_type_ids", None)  # encoder-decoders take none (eager refuses them)
        return encoded

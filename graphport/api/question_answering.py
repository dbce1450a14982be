"""graphport's question-answering pipeline, which Transformers 5 removed.

``graphport.pipeline`` on a question-answering export returns ``QuestionAnsweringPipeline``
over the model from ``graphport.load``; it keeps the rules of the removed transformers
pipeline:

1. The question and context are tokenized as a pair (``truncation="only_second"``), a
   context longer than ``max_seq_len`` tokens split into overlapping features
   (``doc_stride`` tokens shared), all features run in one batch.
2. Only context tokens can start or end an answer: the logits of the others (question,
   special and padding tokens) are set to -10000 before a softmax over each feature's
   start and end logits; the CLS token stays in the softmax (it scores "no answer" when
   ``handle_impossible_answer``) but is then zeroed.
3. A span scores ``p_start * p_end``; it must have ``start <= end`` and at most
   ``max_answer_len`` tokens. The best ``top_k`` spans of every feature are pooled and
   the best ``top_k`` overall returned (a dict for ``top_k=1``, else a list).
4. ``start`` / ``end`` are character offsets in the context: the span's first and last
   words' characters (``align_to_words``), or its tokens' offset mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphport.errors import UsageError

logger = logging.getLogger(__name__)


class QuestionAnsweringPipeline:
    """Extractive question answering over a question-answering export (rules 1-4)."""

    task = "question-answering"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_answer_len: int = 15,
        max_seq_len: int = 384,
        doc_stride: int = 128,
        max_question_len: int = 64,
        top_k: int = 1,
        handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ) -> None:
        if tokenizer is None or not getattr(tokenizer, "is_fast", False):
            raise UsageError(
                "question-answering needs the export's fast tokenizer (its offset mapping "
                "places the answer in the context); re-export from a checkpoint with a "
                "tokenizer.json."
            )
        self.model, self.tokenizer = model, tokenizer
        positions = getattr(model.config, "max_position_embeddings", None) or max_seq_len
        self.defaults = {
            "max_answer_len": max_answer_len,
            "max_seq_len": min(max_seq_len, positions),
            "doc_stride": doc_stride,
            "max_question_len": max_question_len,
            "top_k": top_k,
            "handle_impossible_answer": handle_impossible_answer,
            "align_to_words": align_to_words,
        }

    def __call__(
        self, question: Any = None, context: str | Sequence[str] | None = None, **options: Any
    ) -> dict[str, Any] | list[Any]:
        unknown = set(options) - set(self.defaults)
        if unknown:
            raise UsageError(
                f"question-answering takes no option {', '.join(sorted(unknown))}; it takes "
                f"{', '.join(self.defaults)}."
            )
        settings = {**self.defaults, **options}
        examples = _examples(question, context)
        answers = [self._answer(q, c, settings) for q, c in examples]
        return answers[0] if len(answers) == 1 and not isinstance(question, list) else answers

    def _answer(self, question: str, context: str, settings: dict[str, Any]) -> Any:
        if not isinstance(question, str) or not isinstance(context, str):
            raise UsageError(
                "question-answering takes text: question and context must be strings, got "
                f"{type(question).__name__} and {type(context).__name__}."
            )
        max_seq_len = settings["max_seq_len"]
        encoding = self.tokenizer(
            question,
            context,
            padding="longest",
            truncation="only_second",
            max_length=max_seq_len,
            stride=min(settings["doc_stride"], max_seq_len // 2),
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_tensors="np",
        )
        feeds = {
            name: encoding[name]
            for name in ("input_ids", "attention_mask", "token_type_ids")
            if name in encoding
        }
        outputs = self.model(**feeds)
        starts = outputs.start_logits.numpy()
        ends = outputs.end_logits.numpy()
        answers: list[dict[str, Any]] = []
        null_score = 1_000_000.0
        for feature in range(len(starts)):
            context_mask = np.array(
                [s == 1 for s in encoding.sequence_ids(feature)], dtype=bool
            ) & encoding["attention_mask"][feature].astype(bool)
            cls = np.flatnonzero(encoding["input_ids"][feature] == self.tokenizer.cls_token_id)
            spans, null = best_spans(
                starts[feature],
                ends[feature],
                context_mask,
                int(cls[0]) if len(cls) else 0,
                settings["top_k"],
                settings["max_answer_len"],
            )
            null_score = min(null_score, null)
            for start, end, score in spans:
                first, last = self._characters(encoding, feature, start, end, settings)
                answers.append(
                    {"score": score, "start": first, "end": last, "answer": context[first:last]}
                )
        if settings["handle_impossible_answer"]:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[: settings["top_k"]]
        return answers[0] if settings["top_k"] == 1 and answers else answers

    @staticmethod
    def _characters(
        encoding: Any, feature: int, start: int, end: int, settings: dict[str, Any]
    ) -> tuple[int, int]:
        """Character offsets of tokens ``start``..``end`` in the context (rule 4)."""
        if settings["align_to_words"]:
            first_word = encoding.token_to_word(feature, start)
            last_word = encoding.token_to_word(feature, end)
            if first_word is not None and last_word is not None:
                return (
                    encoding.word_to_chars(feature, first_word, sequence_index=1)[0],
                    encoding.word_to_chars(feature, last_word, sequence_index=1)[1],
                )
        offsets = encoding["offset_mapping"][feature]
        return int(offsets[start][0]), int(offsets[end][1])


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    context_mask: np.ndarray,
    cls_index: int = 0,
    top_k: int = 1,
    max_answer_len: int = 15,
) -> tuple[list[tuple[int, int, float]], float]:
    """The ``top_k`` best (start token, end token, score) spans of one feature, and its
    no-answer score (the CLS token's ``p_start * p_end``), by rules 2-3."""
    start = _masked_softmax(start_logits, context_mask, cls_index)
    end = _masked_softmax(end_logits, context_mask, cls_index)
    null_score = float(start[cls_index] * end[cls_index])
    start[cls_index] = end[cls_index] = 0.0  # CLS is no span
    scores = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")[: max(top_k, 1)]
    spans = []
    for index in order:
        first, last = np.unravel_index(index, scores.shape)
        if context_mask[first] and context_mask[last]:
            spans.append((int(first), int(last), float(scores[first, last])))
    return spans, null_score


def _masked_softmax(logits: np.ndarray, context_mask: np.ndarray, cls_index: int) -> np.ndarray:
    # CLS stays in the softmax (rule 2), as the removed pipeline kept it unmasked.
    keep = context_mask.copy()
    keep[cls_index] = True
    x = np.where(keep, logits.astype(np.float64), -10000.0)
    e = np.exp(x - x.max())
    return e / e.sum()


def _examples(question: Any, context: Any) -> list[tuple[Any, Any]]:
    """(question, context) pairs from the removed pipeline's call forms."""
    if isinstance(question, dict):
        return [(question.get("question"), question.get("context"))]
    if isinstance(question, list) and all(isinstance(q, dict) for q in question):
        return [(q.get("question"), q.get("context")) for q in question]
    if isinstance(question, list):
        contexts = context if isinstance(context, list) else [context] * len(question)
        if len(contexts) != len(question):
            raise UsageError(
                f"question-answering got {len(question)} questions and {len(contexts)} "
                "contexts; pass one context, or one per question."
            )
        return list(zip(question, contexts, strict=True))
    if question is None or context is None:
        raise UsageError(
            "question-answering takes a question and a context: "
            "pipe(question='...', context='...')."
        )
    return [(question, context)]

"""Task metrics for ``graphport evaluate``: plain numpy (scipy for ranks), no torch.

Each function takes arrays already gathered from a model (logits, embeddings, predicted
labels) and returns numbers; the evaluators in graphport/api/evaluate_tasks.py decide
what to gather. Logit functions work row by row on ``(positions, vocab)`` arrays and
return per-row values, so a caller can sum them over batches and divide once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphport.metrics import row_cosines


def log_sum_exp(logits: np.ndarray, probabilities: bool = True) -> tuple[np.ndarray, Any]:
    """Per row: ``logsumexp`` and (when asked) the softmax probabilities, float32, from one
    ``exp`` of the shifted logits (the costly part over a 50k vocabulary), done in place."""
    logits = np.asarray(logits, dtype=np.float32)
    peak = logits.max(axis=-1, keepdims=True)
    shifted = np.subtract(logits, peak)
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=-1, keepdims=True)
    lse = (peak + np.log(total))[..., 0]
    if not probabilities:
        return lse, None
    shifted /= total
    return lse, shifted


def token_nll(logits: np.ndarray, lse: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of ``targets`` per row, given the rows' ``logsumexp``."""
    picked = np.take_along_axis(logits, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return (lse - picked).astype(np.float64)


def kl_divergence(
    reference: np.ndarray,
    reference_lse: np.ndarray,
    reference_probs: np.ndarray,
    actual: np.ndarray,
    actual_lse: np.ndarray,
) -> np.ndarray:
    """KL(reference || actual) per row from logits: ``sum p (x_ref - x_act) - (lse_ref -
    lse_act)`` (the probabilities sum to one), so equal logits give exactly 0. The logit
    difference is taken first: small KLs do not drown in the rounding of large sums."""
    difference = np.subtract(reference, actual)
    cross = np.einsum("ij,ij->i", reference_probs, difference).astype(np.float64)
    gap = reference_lse.astype(np.float64) - actual_lse.astype(np.float64)
    return np.maximum(cross - gap, 0.0)


def perplexity(nll_sum: float, count: int) -> float:
    """``exp`` of the mean negative log-likelihood (nan for no tokens)."""
    return float(np.exp(nll_sum / count)) if count else float("nan")


def agreement(actual: np.ndarray, expected: np.ndarray) -> float:
    """The fraction of positions where two label (or argmax) arrays agree."""
    actual, expected = np.asarray(actual).ravel(), np.asarray(expected).ravel()
    return float((actual == expected).mean()) if actual.size else float("nan")


def top_k_agreement(actual: np.ndarray, expected: np.ndarray, k: int) -> float:
    """Mean overlap of the ``k`` highest-scoring classes per row: |top_k(a) & top_k(e)| / k."""
    k = min(k, actual.shape[-1])
    top_a = np.argpartition(-actual, k - 1, axis=-1)[..., :k].reshape(-1, k)
    top_e = np.argpartition(-expected, k - 1, axis=-1)[..., :k].reshape(-1, k)
    if not len(top_a):
        return float("nan")
    shared = [len(np.intersect1d(a, e)) for a, e in zip(top_a, top_e, strict=True)]
    return float(np.mean(shared) / k)


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of predictions equal to their label."""
    return agreement(predicted, labels)


def macro_f1(predicted: np.ndarray, labels: np.ndarray, classes: Sequence[int]) -> float:
    """F1 averaged over ``classes`` that occur in the labels or the predictions (a class
    neither predicted nor present has no F1 to average)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    scores = []
    for c in classes:
        tp = int(((predicted == c) & (labels == c)).sum())
        fp = int(((predicted == c) & (labels != c)).sum())
        fn = int(((predicted != c) & (labels == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def mean_cosine(actual: np.ndarray, expected: np.ndarray) -> float:
    """Mean cosine similarity of matching rows (embeddings)."""
    return float(row_cosines(actual.astype(np.float64), expected.astype(np.float64)).mean())


def spearman(scores: np.ndarray, gold: np.ndarray) -> float:
    """Spearman rank correlation of predicted similarities against gold scores."""
    from scipy.stats import spearmanr

    if len(scores) < 2:
        return float("nan")
    return float(spearmanr(scores, gold).statistic)


def mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean of token states ``(batch, seq, dim)`` -> ``(batch, dim)``."""
    weights = mask[..., None].astype(states.dtype)
    return (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Word-level edit distance summed over pairs, divided by the reference words."""
    errors = words = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        h, r = hypothesis.split(), reference.split()
        errors += _edit_distance(h, r)
        words += len(r)
    return errors / words if words else float("nan")


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def chrf(hypotheses: Sequence[str], references: Sequence[str], order: int = 6) -> float:
    """Corpus chrF (character n-grams up to ``order``, beta 2, spaces removed), 0-100."""
    from collections import Counter

    matched = [0] * order
    hyp_total = [0] * order
    ref_total = [0] * order
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        h, r = hypothesis.replace(" ", ""), reference.replace(" ", "")
        for n in range(1, order + 1):
            hc = Counter(h[i : i + n] for i in range(len(h) - n + 1))
            rc = Counter(r[i : i + n] for i in range(len(r) - n + 1))
            matched[n - 1] += sum((hc & rc).values())
            hyp_total[n - 1] += sum(hc.values())
            ref_total[n - 1] += sum(rc.values())
    precision = np.mean([m / t if t else 0.0 for m, t in zip(matched, hyp_total, strict=True)])
    recall = np.mean([m / t if t else 0.0 for m, t in zip(matched, ref_total, strict=True)])
    if precision + recall == 0:
        return 0.0
    beta2 = 4.0
    return float(100 * (1 + beta2) * precision * recall / (beta2 * precision + recall))

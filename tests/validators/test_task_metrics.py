"""The task metrics of ``graphport evaluate`` against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from graphport.validators import task_metrics as tm


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_log_sum_exp_nll_and_kl_match_direct_computations():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((6, 50), dtype=np.float32) * 4
    actual = reference + rng.standard_normal(reference.shape, dtype=np.float32)
    targets = rng.integers(0, 50, 6)
    lse, probs = tm.log_sum_exp(reference)
    actual_lse, none = tm.log_sum_exp(actual, probabilities=False)
    assert none is None
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    log_p, log_q = _log_softmax(reference), _log_softmax(actual)
    np.testing.assert_allclose(
        tm.token_nll(reference, lse, targets), -log_p[np.arange(6), targets], rtol=1e-5
    )
    expected_kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    kl = tm.kl_divergence(reference, lse, probs, actual, actual_lse)
    np.testing.assert_allclose(kl, expected_kl, rtol=1e-4)
    assert (kl > 0.01).all()
    # The same logits: exactly zero, not rounding noise.
    assert (tm.kl_divergence(reference, lse, probs, reference, lse) == 0).all()


def test_perplexity_agreement_and_top_k():
    assert tm.perplexity(2 * np.log(3.0), 2) == pytest.approx(3.0)
    assert np.isnan(tm.perplexity(0.0, 0))
    assert tm.agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.0, 0.1, 0.8, 0.9]])
    other = np.array([[0.9, 0.0, 0.8, 0.1], [0.0, 0.1, 0.8, 0.9]])
    assert tm.top_k_agreement(scores, other, 2) == pytest.approx(0.75)
    assert tm.top_k_agreement(scores, scores, 9) == 1.0  # k above the classes: all of them


def test_classification_metrics():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    assert tm.accuracy(predicted, labels) == pytest.approx(0.6)
    # F1 per class: 0 -> 0.5, 1 -> 0.8, 2 -> 0.0; class 3 neither predicted nor present.
    assert tm.macro_f1(predicted, labels, [0, 1, 2, 3]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_embedding_metrics():
    states = np.array([[[1.0, 0.0], [3.0, 2.0], [9.0, 9.0]]])
    np.testing.assert_allclose(tm.mean_pool(states, np.array([[1, 1, 0]])), [[2.0, 1.0]])
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert tm.mean_cosine(a, a * 3) == pytest.approx(1.0)
    assert tm.mean_cosine(a, a[::-1]) == pytest.approx(0.0)
    assert tm.spearman(np.array([0.1, 0.5, 0.3]), np.array([1.0, 5.0, 2.0])) == pytest.approx(1.0)


def test_text_metrics():
    assert tm.word_error_rate(["the cat sat"], ["the cat sat"]) == 0.0
    # one substitution and one deletion over four reference words
    assert tm.word_error_rate(["a x c"], ["a b c d"]) == pytest.approx(0.5)
    assert tm.chrf(["hello world"], ["hello world"]) == pytest.approx(100.0)
    assert 0 < tm.chrf(["hello word"], ["hello world"]) < 100
    assert tm.chrf(["xyz"], ["abc"]) == 0.0

"""compare_output: the differences as data, and the verdict they imply."""

from __future__ import annotations

import numpy as np
import pytest

from graphport.validators.compare import compare_output


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_identical_arrays_pass_with_zero_differences(rng: np.random.Generator):
    expected = rng.standard_normal((2, 5, 4)).astype(np.float32)
    diff = compare_output("last_hidden_state", expected, expected.copy(), atol=1e-4, rtol=1e-3)
    assert diff.passed
    assert bool(diff) is True
    assert diff.problem is None
    assert (diff.max_abs, diff.mean_abs, diff.max_rel, diff.mean_rel) == (0.0, 0.0, 0.0, 0.0)
    assert diff.mismatched == 0
    assert diff.total == 40
    assert diff.expected_shape == diff.actual_shape == [2, 5, 4]
    assert diff.padding_max_abs is None


def test_shape_mismatch(rng: np.random.Generator):
    expected = rng.standard_normal((2, 3)).astype(np.float32)
    diff = compare_output("logits", expected, expected.T.copy(), atol=1e-4, rtol=0.0)
    assert not diff
    assert diff.problem == "shape [3, 2] != reference [2, 3]"
    assert diff.actual_shape == [3, 2]
    assert np.isnan(diff.max_abs)


def test_missing_output(rng: np.random.Generator):
    diff = compare_output("logits", rng.standard_normal(3), None, atol=1e-4, rtol=0.0)
    assert not diff.passed
    assert diff.problem == "missing from the runtime's outputs"
    assert diff.actual_shape is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_where_the_reference_is_finite(rng: np.random.Generator, bad: float):
    expected = rng.standard_normal((2, 3)).astype(np.float32)
    actual = expected.copy()
    actual[1, 2] = bad
    diff = compare_output("logits", expected, actual, atol=1.0, rtol=1.0)
    assert not diff.passed
    assert diff.problem == "non-finite values where the reference is finite"
    assert diff.mismatched == 1


def test_tolerance_boundary():
    # Powers of two keep every bound exact: the bound is atol + rtol * |expected|.
    atol, rtol = 0.25, 0.5
    expected = np.array([2.0, -2.0, 0.0, 4.0], dtype=np.float32)
    at_bound = expected + np.array([1.25, -1.25, 0.25, -2.25], dtype=np.float32)
    diff = compare_output("x", expected, at_bound, atol, rtol)
    assert diff.passed, diff
    assert diff.max_abs == 2.25
    # |expected| is floored at atol, so the zero reference gives 0.25 / 0.25, not infinity.
    assert diff.max_rel == 1.0

    past_bound = at_bound + np.array([0.0, -0.125, 0.125, 0.0], dtype=np.float32)
    diff = compare_output("x", expected, past_bound, atol, rtol)
    assert not diff.passed
    assert diff.problem is None
    assert diff.mismatched == 2
    assert diff.total == 4


def test_rtol_scales_with_the_reference():
    expected = np.array([1000.0, 0.001])
    actual = expected * (1 + 1e-3)
    assert compare_output("x", expected, actual, atol=1e-9, rtol=2e-3).passed
    diff = compare_output("x", expected, actual, atol=1e-9, rtol=0.0)
    assert diff.mismatched == 2
    assert diff.max_abs == pytest.approx(1.0)


@pytest.fixture
def padded() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected, actual, valid): batch 2 x sequence 4 x hidden 3, row 1 padded after 2."""
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((2, 4, 3)).astype(np.float32)
    valid = np.ones((2, 4), dtype=bool)
    valid[1, 2:] = False
    actual = expected.copy()
    actual[1, 3, 0] += 7.5  # padding: carries no meaning, so it is not judged
    return expected, actual, valid


def test_padding_is_recorded_but_not_judged(padded):
    expected, actual, valid = padded
    diff = compare_output("last_hidden_state", expected, actual, atol=1e-4, rtol=0.0, valid=valid)
    assert diff.passed
    assert diff.padding_max_abs == pytest.approx(7.5)
    assert diff.max_abs == 0.0
    assert diff.total == 6 * 3
    unmasked = compare_output("last_hidden_state", expected, actual, atol=1e-4, rtol=0.0)
    assert not unmasked.passed
    assert unmasked.mismatched == 1
    assert unmasked.max_abs == pytest.approx(7.5)


def test_valid_positions_are_still_judged(padded):
    expected, actual, valid = padded
    actual[1, 1, 2] += 1e-2
    diff = compare_output("last_hidden_state", expected, actual, atol=1e-4, rtol=0.0, valid=valid)
    assert not diff.passed
    assert diff.mismatched == 1
    assert diff.max_abs == pytest.approx(1e-2)
    assert diff.padding_max_abs == pytest.approx(7.5)


def test_a_full_mask_records_no_padding(padded):
    expected, actual, _ = padded
    actual = expected.copy()
    diff = compare_output(
        "x", expected, actual, atol=1e-4, rtol=0.0, valid=np.ones((2, 4), dtype=bool)
    )
    assert diff.passed
    assert diff.padding_max_abs is None
    assert diff.total == 24


def test_nan_at_padding_positions_is_not_judged(padded):
    expected, actual, valid = padded
    actual[1, 3, :] = np.nan
    diff = compare_output("last_hidden_state", expected, actual, atol=1e-4, rtol=0.0, valid=valid)
    assert diff.problem is None
    assert diff.passed


def test_all_padding_mask_gives_a_report(padded):
    expected, actual, _ = padded
    valid = np.zeros((2, 4), dtype=bool)
    diff = compare_output("last_hidden_state", expected, actual, atol=1e-4, rtol=0.0, valid=valid)
    assert diff.passed
    assert diff.total == 0
    assert diff.padding_max_abs == pytest.approx(7.5)


def test_norm_tol_follows_the_output_magnitude():
    # Logits of a real LM are tens in magnitude: fp32 rounding reaches a few 1e-4 there.
    rng = np.random.default_rng(1)
    expected = rng.normal(0.0, 10.0, (4, 64))
    noisy = expected + rng.uniform(-5e-4, 5e-4, expected.shape)
    assert not compare_output("logits", expected, noisy, atol=1e-4, rtol=0.0).passed
    diff = compare_output("logits", expected, noisy, atol=1e-4, rtol=0.0, norm_tol=1e-4)
    assert diff.passed, diff.failure()
    assert diff.scale == pytest.approx(np.sqrt(np.mean(expected**2)))
    assert diff.norm_max == pytest.approx(diff.max_abs / diff.scale)
    # A real error (one row's logits scaled by 1 %) still fails at that magnitude.
    scaled = noisy.copy()
    scaled[2] *= 1.01
    diff = compare_output("logits", expected, scaled, atol=1e-4, rtol=0.0, norm_tol=1e-4)
    assert not diff.passed
    assert diff.mismatched > 0
    assert f"+ 0.0001 x rms {diff.scale:.3g}" in diff.failure()


def test_logits_report_next_token_kl_and_agreement():
    rng = np.random.default_rng(2)
    expected = rng.normal(0.0, 3.0, (2, 5, 50))
    same = compare_output("logits", expected, expected.copy(), atol=1e-4, rtol=0.0)
    assert same.kl_max == pytest.approx(0.0, abs=1e-12) and same.top1_agreement == 1.0
    flipped = expected.copy()
    flipped[0, 0] = -flipped[0, 0]  # one position's distribution turned upside down
    diff = compare_output("logits", expected, flipped, atol=1e-4, rtol=0.0)
    assert diff.kl_max > 1.0
    assert diff.kl_mean == pytest.approx(diff.kl_max / 10)
    assert diff.top1_agreement == pytest.approx(0.9)
    assert compare_output("hidden", expected, flipped, atol=1e-4, rtol=0.0).kl_max is None


def test_next_token_kl_matches_its_definition():
    from graphport.validators.compare import next_token_kl

    p_logits, q_logits = np.array([[0.0, 1.0, 2.0]]), np.array([[2.0, 1.0, 0.0]])
    p = np.exp(p_logits) / np.exp(p_logits).sum()
    q = np.exp(q_logits) / np.exp(q_logits).sum()
    assert next_token_kl(p_logits, q_logits)[0] == pytest.approx(float((p * np.log(p / q)).sum()))

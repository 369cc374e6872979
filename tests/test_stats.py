"""Tests of helpers.stats: the paired interval covers the truth, and ignoring the test set does not."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from helpers.stats import PairedDifference, paired_difference


def test_identical_models_differ_by_exactly_zero():
    wrong = np.random.default_rng(0).random((5, 100)) < 0.1
    result = paired_difference(wrong, wrong)
    assert (result.mean, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero()


def test_identical_seeds_still_carry_test_set_error():
    """The flaw of a seed-only spread: seeds that agree exactly leave the test-set error."""
    rng = np.random.default_rng(1)
    a = np.tile(rng.random(200) < 0.05, (5, 1))
    b = np.tile(rng.random(200) < 0.05, (5, 1))
    result = paired_difference(a, b)
    assert result.seed_se == 0.0
    assert result.test_se > 0 and result.high - result.low > 0


def test_the_interval_is_the_t_interval_of_the_combined_error():
    rng = np.random.default_rng(2)
    a, b = rng.random((6, 50)), rng.random((6, 50))
    result = paired_difference(a, b, confidence=0.9)
    d = a - b
    seed_se, test_se = d.mean(1).std(ddof=1) / math.sqrt(6), d.mean(0).std(ddof=1) / math.sqrt(50)
    se = math.hypot(seed_se, test_se)
    dof = se**4 / (seed_se**4 / 5 + test_se**4 / 49)  # Welch–Satterthwaite
    assert 5 <= dof <= 49
    half = scipy_stats.t.ppf(0.95, dof) * se
    assert result.mean == pytest.approx(d.mean())
    assert (result.low, result.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert str(result).startswith(f"{d.mean():+.2f} [")


def simulated_experiments(rng: np.random.Generator, count: int):
    """Pairs of (seeds, items) error indicators whose true mean difference is 0.

    Each experiment draws its own test set from a population of images, some hard for model a,
    some for model b (test-set error dominates), plus a little seed noise.
    """
    for _ in range(count):
        item_effect = rng.choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=300)  # mean zero in the population
        seed_noise = rng.normal(0, 0.01, size=(5, 1))
        yield item_effect[None, :] * 0.5 + seed_noise, np.zeros((5, 300))


def coverage(interval) -> float:
    rng = np.random.default_rng(3)
    results = [interval(a, b) for a, b in simulated_experiments(rng, 300)]
    return float(np.mean([r.low <= 0 <= r.high for r in results]))


def seed_only_interval(a, b) -> PairedDifference:
    """The planted bug: a t-interval over seeds on one fixed test set."""
    per_seed = (np.asarray(a) - np.asarray(b)).mean(axis=1)
    half = scipy_stats.t.ppf(0.975, len(per_seed) - 1) * per_seed.std(ddof=1) / math.sqrt(len(per_seed))
    return PairedDifference(per_seed.mean(), per_seed.mean() - half, per_seed.mean() + half, 0.0, 0.0)


def test_the_interval_covers_the_true_difference():
    assert coverage(paired_difference) >= 0.9


def test_the_coverage_check_catches_an_interval_that_ignores_the_test_set():
    assert coverage(seed_only_interval) < 0.5


@pytest.mark.parametrize(
    "a,b,fragment",
    [
        (np.zeros((5, 10)), np.zeros((5, 11)), "same shape"),
        (np.zeros(10), np.zeros(10), "same shape"),
        (np.zeros((1, 10)), np.zeros((1, 10)), "at least 2 seeds"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(a, b, fragment):
    with pytest.raises(ValueError, match=fragment):
        paired_difference(a, b)


def test_a_confidence_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(np.zeros((3, 4)), np.ones((3, 4)), confidence=95)

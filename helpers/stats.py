"""Paired differences between two models evaluated on the same seeds and the same test items."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """Mean of a − b with a confidence interval; the standard error split into its two sources."""

    mean: float
    low: float
    high: float
    seed_se: float  # from the spread of the per-seed differences
    test_se: float  # from the finite test set: the same images would not be drawn again

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of zero."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(loss_a, loss_b, confidence: float = 0.95) -> PairedDifference:
    """Mean of loss_a − loss_b, arrays of shape (seeds, test items), with a t-interval.

    Seed s of model a and seed s of model b share everything but the compared factor, so the
    differences are paired by seed and by test item. The interval adds two independent sources of
    error: the seeds (variance of the per-seed mean differences over the number of seeds) and the
    test set (variance over items of the seed-averaged difference, over the number of items) — a
    fixed test set is one draw of the images the models could meet. The seed term also holds part
    of the seed × item noise, which makes the interval slightly conservative. Degrees of freedom:
    Welch–Satterthwaite's, between seeds − 1 (seed error dominates) and items − 1 (test set does).
    """
    a, b = np.asarray(loss_a, dtype=np.float64), np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two arrays of the same shape (seeds, items), got {a.shape} and {b.shape}")
    seeds, items = a.shape
    if seeds < 2 or items < 2:
        raise ValueError(f"need at least 2 seeds and 2 test items, got {seeds} and {items}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    difference = a - b
    seed_se = float(difference.mean(axis=1).std(ddof=1) / math.sqrt(seeds))
    test_se = float(difference.mean(axis=0).std(ddof=1) / math.sqrt(items))
    mean = float(difference.mean())
    se = math.hypot(seed_se, test_se)
    if se == 0:
        return PairedDifference(mean, mean, mean, seed_se, test_se)
    dof = se**4 / (seed_se**4 / (seeds - 1) + test_se**4 / (items - 1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, df=dof)) * se
    return PairedDifference(mean, mean - half_width, mean + half_width, seed_se, test_se)

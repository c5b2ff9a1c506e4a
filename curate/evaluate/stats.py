"""Uncertainty for small eval sets: Wilson intervals for rates, percentile bootstrap for means,
and McNemar's exact test for paired pass/fail outcomes of two candidates on the same prompts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_SAMPLES = 2000
ALPHA = 0.05


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound at 0/n and n/n, unlike the normal one)."""
    if trials == 0:
        return (0.0, 1.0)
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean(values: list[float], seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float, float]:
    """(mean, low, high): the 95% percentile bootstrap interval of the mean (seeded: reproducible)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (math.nan, math.nan, math.nan)
    if data.size == 1:
        return (float(data[0]),) * 3
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(data.mean()), float(low), float(high))


@dataclass
class PairedTest:
    """McNemar on the prompts both candidates were judged on: only the discordant pairs count."""

    pairs: int
    #: Prompts where only the first / only the second candidate passed.
    first_only: int
    second_only: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def mcnemar(first: list[bool | None], second: list[bool | None]) -> PairedTest:
    """Exact (binomial) McNemar test, two-sided; prompts where either verdict is None are left out."""
    from scipy.stats import binomtest

    pairs = [(a, b) for a, b in zip(first, second) if a is not None and b is not None]
    first_only = sum(1 for a, b in pairs if a and not b)
    second_only = sum(1 for a, b in pairs if b and not a)
    discordant = first_only + second_only
    p_value = 1.0 if discordant == 0 else float(binomtest(first_only, discordant, 0.5).pvalue)
    return PairedTest(len(pairs), first_only, second_only, p_value)

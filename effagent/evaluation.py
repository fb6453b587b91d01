"""Routing-quality metrics on recorded cheap/strong outcomes (numpy only, no framework, no I/O).

Routing (RouteLLM's measure): sort questions by estimated difficulty, send the hardest fraction f to the strong
model; PGR(f) = (acc(f) - acc_cheap) / (acc_strong - acc_cheap); APGR = mean PGR over f = 0, 0.01, ..., 1.
Ties in the score are resolved by expectation (a constant score gives exactly 0.5); a random order scores 0.5
in expectation. "strong share for quality" = the smallest f on that grid with acc(f) >= target * acc_strong.

Used by the estimators' training code and by ``effagent bench replay``; neither imports the other. Also the
interval and test every tool reports with: :func:`wilson` (a proportion's interval) and :func:`mcnemar_p`
(paired right/wrong answers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

GRID = np.linspace(0.0, 1.0, 101)
QUALITY_TARGET = 0.95

__all__ = [
    "GRID",
    "QUALITY_TARGET",
    "accuracy_curve",
    "apgr",
    "bootstrap_apgr",
    "random_apgr",
    "strong_share_for_quality",
]


def accuracy_curve(
    scores: Sequence[float] | np.ndarray,
    cheap: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    grid: np.ndarray = GRID,
) -> np.ndarray:
    """acc(f) for each f in ``grid`` when the top-f fraction by score goes to the strong model."""
    s = np.asarray(scores, dtype=float)
    c = np.asarray(cheap, dtype=float)
    g = np.asarray(strong, dtype=float)
    n = len(s)
    if n == 0:
        raise ValueError("empty set")
    if not (len(c) == len(g) == n):
        raise ValueError(f"scores, cheap and strong differ in length ({n}, {len(c)}, {len(g)})")
    order = np.argsort(-s, kind="stable")
    gain = (g - c)[order]
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    s_sorted = s[order]
    # tie groups [start, end): within a group the gain is spread evenly (expectation over tie order)
    starts = np.flatnonzero(np.concatenate([[True], s_sorted[1:] != s_sorted[:-1]]))
    ends = np.concatenate([starts[1:], [n]])
    k = grid * n
    grp = np.clip(np.searchsorted(ends, k, side="right"), 0, len(starts) - 1)
    a, b = starts[grp], ends[grp]
    frac = np.where(b > a, np.clip((k - a) / np.maximum(b - a, 1), 0.0, 1.0), 0.0)
    total = cum[a] + frac * (cum[b] - cum[a])
    return c.mean() + total / n


def apgr(
    scores: Sequence[float] | np.ndarray, cheap: Sequence[float] | np.ndarray, strong: Sequence[float] | np.ndarray
) -> float:
    """Average performance-gap recovered (0.5 = random order, 1.0 = about the oracle on most sets)."""
    c, g = float(np.mean(cheap)), float(np.mean(strong))
    if math.isclose(c, g):
        raise ValueError("cheap and strong accuracy are equal: PGR undefined")
    acc = accuracy_curve(scores, cheap, strong)
    return float(np.mean((acc - c) / (g - c)))


def strong_share_for_quality(
    scores: Sequence[float] | np.ndarray,
    cheap: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    target: float = QUALITY_TARGET,
) -> float:
    """Smallest grid fraction f with acc(f) >= target * acc_strong (1.0 if never reached)."""
    acc = accuracy_curve(scores, cheap, strong)
    ok = np.flatnonzero(acc >= target * float(np.mean(strong)) - 1e-12)
    return float(GRID[ok[0]]) if len(ok) else 1.0


def bootstrap_apgr(
    scores: Sequence[float] | np.ndarray,
    cheap: Sequence[float] | np.ndarray,
    strong: Sequence[float] | np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of APGR over questions (resampled with replacement; resamples where cheap and
    strong tie in accuracy are skipped)."""
    s = np.asarray(scores, dtype=float)
    c = np.asarray(cheap, dtype=float)
    g = np.asarray(strong, dtype=float)
    rng = np.random.default_rng(seed)
    n = len(s)
    vals: list[float] = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        cc, gg = c[idx], g[idx]
        if math.isclose(float(cc.mean()), float(gg.mean())):
            continue
        vals.append(apgr(s[idx], cc, gg))
    if not vals:
        raise ValueError("no bootstrap resample has a cheap/strong accuracy gap")
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def random_apgr(
    cheap: Sequence[float] | np.ndarray, strong: Sequence[float] | np.ndarray, *, orders: int = 200, seed: int = 0
) -> tuple[float, float]:
    """Mean and standard deviation of APGR over ``orders`` random routing orders."""
    rng = np.random.default_rng(seed)
    n = len(cheap)
    vals = [apgr(rng.random(n), cheap, strong) for _ in range(orders)]
    return float(np.mean(vals)), float(np.std(vals))


Z95 = 1.959963984540054  # two-sided 95 %: each end of the interval is a one-sided 97.5 % bound


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (``k`` may be fractional); (0, 1) without data."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar (sign) test on the discordant pairs: ``only_a`` right in run A only, ``only_b`` in B."""
    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0

"""Intervals for findings: the mean over seeds and its 95 % percentile-bootstrap interval, and
paired per-seed differences between variants (:func:`paired_difference`).

A finding that one variant is faster, leaner or better than another holds only when the
intervals of the two separate, or when the interval of their paired per-seed differences
excludes zero (:func:`order`); otherwise the report says "tie within noise" and gives the
figures.  With one run there is no interval at all (``n = 1``): nothing can be ordered.

The bootstrap resamples the runs with replacement (``resamples`` times, a fixed generator, so
a report renders the same every time) and takes the 2.5th and 97.5th percentiles of the
resampled means.  With three seeds it is a rough interval (at most 10 distinct resampled
means); it is what three runs can say, and the report states n beside every interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    low: float | None      # 95 % interval; None when n < 2
    high: float | None
    n: int

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def separated_from(self, other: "Estimate") -> bool:
        """True when both have intervals and they do not overlap."""
        if not (self.has_interval and other.has_interval):
            return False
        return self.high < other.low or other.high < self.low


def finite(values: Iterable) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or v is None:
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def bootstrap_mean(values: Iterable, *, level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = 0) -> Estimate:
    """Mean of the finite ``values`` and its percentile-bootstrap interval."""
    x = np.asarray(finite(values), dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, None, None, 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Estimate(mean, float(lo), float(hi), n)


def bootstrap_ratio(a: Iterable, b: Iterable, *, level: float = LEVEL, resamples: int = RESAMPLES,
                    seed: int = 0) -> Estimate:
    """mean(a) / mean(b) with an interval from resampling both groups independently (two
    runs compared: e.g. the same variant on two GPUs or at two commits)."""
    xa, xb = (np.asarray(finite(v), dtype=np.float64) for v in (a, b))
    if xa.size == 0 or xb.size == 0 or xb.mean() == 0:
        return Estimate(None, None, None, int(min(xa.size, xb.size)))
    ratio = float(xa.mean() / xb.mean())
    if xa.size < 2 or xb.size < 2:
        return Estimate(ratio, None, None, int(min(xa.size, xb.size)))
    rng = np.random.default_rng(seed)
    ra = xa[rng.integers(0, xa.size, size=(resamples, xa.size))].mean(axis=1)
    rb = xb[rng.integers(0, xb.size, size=(resamples, xb.size))].mean(axis=1)
    lo, hi = np.quantile(ra / rb, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Estimate(ratio, float(lo), float(hi), int(min(xa.size, xb.size)))


# Two-sided 97.5 % quantiles of Student's t by degrees of freedom (1-30); the normal beyond.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def paired_difference(a: dict, b: dict) -> Estimate:
    """Mean over the seeds both have of ``a[seed] - b[seed]``, with a 95 % Student-t interval
    (n - 1 degrees of freedom; the bootstrap of three differences would be far too narrow).

    Seeds pair the runs of two variants: a seed fixes the data order and the non-attention
    initialisation for every variant, and a campaign runs one seed's variants back to back, so
    the difference per seed removes what the seed and the machine's state at that time add to
    both -- a spread over seeds much larger than the difference between variants."""
    shared = sorted(k for k in a.keys() & b.keys() if len(finite([a[k], b[k]])) == 2)
    d = np.asarray([float(a[k]) - float(b[k]) for k in shared], dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = float(d.mean())
    if n == 1:
        return Estimate(mean, None, None, 1)
    half = (_T975[n - 2] if n - 1 <= len(_T975) else 1.960) * float(d.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def order(estimates: dict[str, Estimate], better: str,
          per_seed: dict[str, dict] | None = None) -> tuple[list[str], list[str]]:
    """(leaders, others): the variants whose estimate is best or not separated from the best
    (a tie within noise when there are several), in order of their means.

    A variant is separated from the best when their intervals do not overlap or, with
    ``per_seed`` (each variant's value by seed) and at least two seeds in common, when the 95 %
    interval of their paired per-seed differences excludes zero (:func:`paired_difference`):
    pairing removes the seed's share of the spread, the intervals catch a difference so large
    that one noisy seed widens the paired interval past zero (LSH's eager decode: 15-38 ms
    against 0.75 ms)."""
    known = {k: e for k, e in estimates.items() if e.mean is not None}
    if not known:
        return [], []
    ranked = sorted(known, key=lambda k: known[k].mean, reverse=(better == "max"))
    best = ranked[0]

    def tied(k: str) -> bool:
        if known[k].separated_from(known[best]):
            return False
        if per_seed and k in per_seed and best in per_seed:
            d = paired_difference(per_seed[k], per_seed[best])
            return not (d.has_interval and (d.high < 0 or d.low > 0))
        return True
    leaders = [k for k in ranked if k == best or tied(k)]
    return leaders, [k for k in ranked if k not in leaders]

"""Intervals for findings: the mean over seeds and its 95 % percentile-bootstrap interval, and
paired per-seed comparisons between variants (:func:`paired_ratio`, :func:`paired_difference`).

A finding that one variant is faster, leaner or better than another holds only when, paired
per seed, the interval of their ratios (losses: differences) lies wholly on one side of equal,
or, where they share no seeds, their intervals separate (:func:`order`); otherwise the report says "tie within noise" and gives the
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


def _no_interval(x: np.ndarray) -> Estimate:
    """Fewer than two values: the mean where there is one, never an interval."""
    return Estimate(float(x.mean()) if x.size else None, None, None, int(x.size))


def bootstrap_mean(values: Iterable, *, level: float = LEVEL, resamples: int = RESAMPLES,
                   seed: int = 0) -> Estimate:
    """Mean of the finite ``values`` and its percentile-bootstrap interval."""
    x = np.asarray(finite(values), dtype=np.float64)
    n = int(x.size)
    if n < 2:
        return _no_interval(x)
    mean = float(x.mean())
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


# The 0.975 quantile of Student's t (two-sided 95 %) by degrees of freedom, 1-30; beyond, the
# normal quantile with its first-order correction (z + (z^3 + z) / 4 df: 2.037 at 31, true 2.040).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    z = 1.959964
    return _T975[df - 1] if df <= len(_T975) else z + (z ** 3 + z) / (4 * df)


def _t_interval(d: np.ndarray) -> Estimate:
    n = int(d.size)
    if n < 2:
        return _no_interval(d)
    mean = float(d.mean())
    half = t975(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def _shared(a: dict, b: dict) -> list:
    return sorted(k for k in a.keys() & b.keys() if len(finite([a[k], b[k]])) == 2)


def paired_difference(a: dict, b: dict) -> Estimate:
    """Mean over the seeds both have of ``a[seed] - b[seed]``, with a 95 % Student-t interval
    (n - 1 degrees of freedom; the bootstrap of three differences would be far too narrow).

    Seeds pair the runs of two variants: a seed fixes the data order and the non-attention
    initialisation for every variant, and the pipeline runs one seed's variants back to back
    (seed-major), so where a seed's jobs ran in one session the difference per seed removes what
    the seed and the machine's state at that time add to both.  (A run resumed over several
    sessions can split a seed between them; then only the seed's own share is removed.)"""
    shared = _shared(a, b)
    return _t_interval(np.asarray([float(a[k]) - float(b[k]) for k in shared], dtype=np.float64))


def paired_ratio(a: dict, b: dict) -> Estimate:
    """Geometric mean over the seeds both have of ``a[seed] / b[seed]`` with a 95 % t-interval
    on the log scale (:func:`paired_difference` of the logarithms): for throughput, time,
    energy and memory, whose noise (a slower host, a hotter GPU) scales the figure.  None where
    a value is not positive."""
    shared = _shared(a, b)
    if any(float(a[k]) <= 0 or float(b[k]) <= 0 for k in shared):
        return Estimate(None, None, None, len(shared))
    e = _t_interval(np.asarray([math.log(float(a[k]) / float(b[k])) for k in shared], dtype=np.float64))
    if e.mean is None:
        return e
    return Estimate(math.exp(e.mean), math.exp(e.low) if e.has_interval else None,
                    math.exp(e.high) if e.has_interval else None, e.n)


def paired(a: dict, b: dict, scale: str) -> Estimate:
    """``a`` against ``b`` per shared seed: ``scale`` "ratio" (:func:`paired_ratio`, 1 = equal)
    or "difference" (:func:`paired_difference`, 0 = equal)."""
    return paired_ratio(a, b) if scale == "ratio" else paired_difference(a, b)


def order(estimates: dict[str, Estimate], better: str, per_seed: dict[str, dict] | None = None,
          scale: str = "difference") -> tuple[list[str], list[str]]:
    """(leaders, others): the variants whose estimate is best or not separated from the best
    (a tie within noise when there are several), in order of their means.

    With ``per_seed`` (each variant's value by seed), a variant that shares at least two seeds
    with the best is compared with it per seed (:func:`paired`, on ``scale``): it is separated
    when the 95 % interval of the paired ratios (differences) shows it worse, i.e. lies wholly
    on the worse side of 1 (0).  Otherwise -- no shared seeds -- when the two intervals over
    seeds do not overlap.  Pairing removes the seed's share of the spread; the ratio scale keeps
    a large gap that one noisy seed scales (LSH's eager decode: 15-38 ms against 0.75 ms) from
    reading as a tie."""
    known = {k: e for k, e in estimates.items() if e.mean is not None}
    if not known:
        return [], []
    ranked = sorted(known, key=lambda k: known[k].mean, reverse=(better == "max"))
    best = ranked[0]
    equal = 1.0 if scale == "ratio" else 0.0

    def tied(k: str) -> bool:
        if per_seed and k in per_seed and best in per_seed:
            d = paired(per_seed[k], per_seed[best], scale)
            if d.has_interval:
                return not (d.high < equal if better == "max" else d.low > equal)
        return not known[k].separated_from(known[best])
    leaders = [k for k in ranked if k == best or tied(k)]
    return leaders, [k for k in ranked if k not in leaders]


def scale_of(kind: str | None) -> str:
    """How two figures of a column's ``kind`` compare: losses by difference, the rest (rates,
    times, energy, bytes, shares) by ratio."""
    return "difference" if kind == "loss" else "ratio"

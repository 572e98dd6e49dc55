"""Timing helpers: device synchronisation and percentile summaries."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Iterable


def synchronize(device) -> None:
    """``torch.cuda.synchronize(device)`` on CUDA (kernels run asynchronously: a host
    timestamp without it measures launch time, not work); nothing elsewhere."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _quantile(sorted_vals: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default 'linear' method)."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def percentiles(values: Iterable[float]) -> dict:
    """``{p50, p90, min, max, n}`` of ``values`` (NaN/None dropped); all ``None`` with
    ``n = 0`` for an empty input."""
    vals = sorted(float(v) for v in values if v is not None and not math.isnan(float(v)))
    if not vals:
        return {"p50": None, "p90": None, "min": None, "max": None, "n": 0}
    return {"p50": _quantile(vals, 0.5), "p90": _quantile(vals, 0.9), "min": vals[0], "max": vals[-1],
            "n": len(vals)}


def timed_calls(fn, device, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, each call
    bracketed by :func:`synchronize` (wall clock of the work, launch overhead included)."""
    import time

    for _ in range(warmup):
        fn()
    synchronize(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(1000 * (time.perf_counter() - t0))
    return out


class PhaseClock:
    """Wall-clock seconds per named phase of a job, into ``record["phases_s"]`` (in order).

    ``with clock("setup"): ...`` -- a phase that raises is still recorded.  Host wall clock,
    not synchronised: GPU work queued at the end of one phase can finish in the next (the
    phases that end at a synchronisation -- timed windows, evaluations -- are exact)."""

    def __init__(self, record: dict):
        self.phases = record.setdefault("phases_s", {})

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = round(self.phases.get(name, 0.0) + time.perf_counter() - t0, 3)

"""Timing helpers: device synchronisation and percentile summaries."""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
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


def call_timer(device, clock=time.perf_counter):
    """``time_call(fn) -> ms`` for one call of ``fn``.  On CUDA: CUDA events recorded around the
    call on the current stream, after a synchronisation (the GPU starts idle: the figure is the
    call's GPU-side span, launch gaps included) and read after the end event completes;
    ``"cuda-events"``.  Elsewhere: ``clock`` around the call; ``"perf_counter"``.  Returns
    (time_call, method)."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        def time_cuda(fn) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return time_cuda, "cuda-events"

    def time_host(fn) -> float:
        t0 = clock()
        fn()
        return 1000 * (clock() - t0)

    return time_host, "perf_counter"


def _median(vals: list[float]) -> float:
    return _quantile(sorted(vals), 0.5)


def timed_until_stable(fn, device, *, warmup_min: int = 3, repeats_min: int = 10, max_seconds: float = 5.0,
                       target_p90_over_p50: float = 1.2, warmup_batch: int = 5, warmup_tolerance: float = 0.05,
                       max_warmup_batches: int = 20, max_repeats: int = 100_000, clock=time.perf_counter,
                       time_call=None) -> tuple[list[float], dict]:
    """Milliseconds of calls of ``fn``, warmed up until stable and repeated until the spread
    is small, within a time budget.  Returns (samples, record).

    Warm-up: ``warmup_min`` untimed calls, then batches of ``warmup_batch`` timed calls until
    two consecutive batches' medians agree within ``warmup_tolerance`` (relative), at most
    ``max_warmup_batches`` batches or half of ``max_seconds`` (then ``warmup_converged``
    is False).  Timing: calls until there are at least ``repeats_min`` samples and
    p90/p50 < ``target_p90_over_p50``, or ``max_seconds`` (from the first warm-up call, by
    ``clock``) has passed, or ``max_repeats`` samples; at least one sample always.

    ``record``: ``{p50, p90, min, max, n, p90_over_p50, stable, target_p90_over_p50,
    warmup_calls, warmup_converged, method, seconds, stop}`` -- ``stable`` is whether the
    target ratio was reached (``stop``: "stable", "budget" or "max_repeats"); an unstable
    series keeps its ratio, never hidden.  ``time_call(fn) -> ms`` replaces the timer
    (:func:`call_timer`: CUDA events on CUDA, ``clock`` elsewhere), e.g. in tests.
    (The one-series case of :func:`timed_interleaved`.)"""
    return timed_interleaved({None: fn}, device, warmup_min=warmup_min, repeats_min=repeats_min,
                             max_seconds=max_seconds, target_p90_over_p50=target_p90_over_p50,
                             warmup_batch=warmup_batch, warmup_tolerance=warmup_tolerance,
                             max_warmup_batches=max_warmup_batches, max_repeats=max_repeats, clock=clock,
                             time_call=time_call)[None]


def timed_interleaved(fns: dict, device, *, warmup_min: int = 3, repeats_min: int = 10, max_seconds: float = 5.0,
                      target_p90_over_p50: float = 1.2, warmup_batch: int = 5, warmup_tolerance: float = 0.05,
                      max_warmup_batches: int = 20, max_repeats: int = 100_000, clock=time.perf_counter,
                      time_call=None) -> dict:
    """:func:`timed_until_stable` for several functions at once, their calls taken in turn
    (one of each per round), so every series is timed under the same conditions: a drift of
    the host or the GPU clocks between series (which made a longer prompt's eager prefill time
    faster than a shorter one's on the H200) falls on all of them alike.  Returns
    ``{key: (samples, record)}``.

    The rules are :func:`timed_until_stable`'s, over rounds: warm-up ends when every series'
    batch medians agree; timing ends when every series is stable, or the budget
    ``max_seconds`` (for all series together) or ``max_repeats`` rounds are spent.  A record's
    ``interleaved_with`` is the number of series timed together (1: alone); its ``stop``,
    ``seconds``, ``warmup_calls`` and ``warmup_converged`` are the group's (a series can be
    ``stable`` where ``stop`` is "budget": another series was not)."""
    if not fns:
        return {}
    method = "custom"
    if time_call is None:
        time_call, method = call_timer(device, clock)
    keys = list(fns)
    start = clock()

    def elapsed() -> float:
        return clock() - start

    warmup_calls = 0
    for _ in range(warmup_min):
        for k in keys:
            fns[k]()
        warmup_calls += 1
    synchronize(device)
    converged, prev = False, {}
    for _ in range(max_warmup_batches):
        if elapsed() >= max_seconds / 2:
            break
        batches: dict = {k: [] for k in keys}
        for _ in range(max(1, warmup_batch)):
            for k in keys:
                batches[k].append(time_call(fns[k]))
        warmup_calls += max(1, warmup_batch)
        med = {k: _median(b) for k, b in batches.items()}
        if prev and all(abs(med[k] - prev[k]) <= warmup_tolerance * max(abs(prev[k]), 1e-12) for k in keys):
            converged = True
            break
        prev = med

    samples: dict = {k: [] for k in keys}
    stop, next_check = "budget", max(1, repeats_min)
    while True:
        for k in keys:
            samples[k].append(time_call(fns[k]))
        n = len(samples[keys[0]])
        if n >= next_check:
            # sorting every sample would be quadratic for fast calls: check at growing steps
            next_check = n + max(1, n // 20)
            pcts = [percentiles(samples[k]) for k in keys]
            if all(p["p50"] and p["p90"] / p["p50"] < target_p90_over_p50 for p in pcts):
                stop = "stable"
                break
        if n >= max_repeats:
            stop = "max_repeats"
            break
        if elapsed() >= max_seconds:
            stop = "budget"
            break
    out = {}
    for k in keys:
        pct = percentiles(samples[k])
        ratio = pct["p90"] / pct["p50"] if pct["p50"] else None
        stable = ratio is not None and ratio < target_p90_over_p50 and pct["n"] >= min(repeats_min, max_repeats)
        out[k] = (samples[k], {**pct, "p90_over_p50": ratio, "stable": bool(stable),
                               "target_p90_over_p50": target_p90_over_p50, "warmup_calls": warmup_calls,
                               "warmup_converged": converged, "method": method, "seconds": elapsed(), "stop": stop,
                               "interleaved_with": len(keys)})
    return out


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere).  Called where a
    job's record begins, it is the job's start-up: interpreter, imports (torch, CUDA libraries),
    GPU slot claim and settings validation, before any phase of :class:`PhaseClock`."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])          # field 22 of stat: start time after boot, in ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - started_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


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

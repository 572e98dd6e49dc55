"""Measurement: GPU energy windows, power timeline, CodeCarbon, memory peaks, FLOPs, MFU.

Public API (what ``attnbench.train`` and the probes call)::

    ms = MeasurementSession(device, out_dir, nvml=True, sample_interval_s=0.1, codecarbon=True,
                            country_iso_code="USA", idle_seconds=3.0, peak_tflops=None, label="train")
    ms = session_from(settings["measure"], device, out_dir, "train")   # the same, from settings
    ms.start(); w = ms.begin_window(); ...; ws = ms.end_window(w, steps=N, tokens=N*B*T)
    energy_totals(windows, idle_w)   # sums over windows (the session's, or a resumed run's)
    summary = ms.finish()   # {"energy", "emissions", "unavailable", "power_csv", "emissions_csv"}
    percentiles(values)     # {p50, p90, min, max, n}
    samples, rec = timed_until_stable(fn, device, warmup_min=3, repeats_min=10, max_seconds=5)
                            # rec: {p50, p90, min, n, p90_over_p50, stable, warmup_calls, method, ...}
    phase = PhaseClock(record); with phase("setup"): ...   # record["phases_s"]
    reset_peak_memory(device); peak_allocated(device); peak_memory(device, session=None)
    model_flops(model, B, T); count_flops(model, B, T, device, dtype=None)
    flops_section(analytic, counted, seconds_per_step, device, peak_tflops=None, dtype=bf16)
    peak_flops(device, peak_tflops=None, dtype=bf16)

Every function follows the result convention of :mod:`attnbench.results`: a metric that
cannot be measured is ``None`` and its dotted key (``energy.*``, ``emissions.*``,
``memory.*``, ``flops.*``) maps to the reason in an ``unavailable`` dict — never 0.
"""

from .carbon import CarbonTracker, describe_cpu_method
from .control import matmul_control
from .energy import MeasurementSession, Window, WindowStats, energy_totals, session_from
from .flops import CONVENTION, count_flops, flops_section, model_flops, peak_flops
from .memory import MIN_WARMUP_STEPS_FOR_PEAK, peak_allocated, peak_memory, peak_rss_bytes, reset_peak_memory
from .readers import EnergyReader, NvmlReader, Sample, open_nvml_reader
from .sampler import PowerSampler, integrate
from .timing import (PhaseClock, call_timer, percentiles, process_age_s, synchronize,
                     timed_interleaved, timed_until_stable)

__all__ = [
    "MeasurementSession", "Window", "WindowStats", "energy_totals", "session_from", "percentiles", "synchronize", "timed_interleaved", "timed_until_stable",
    "call_timer", "PhaseClock", "process_age_s",
    "model_flops", "count_flops", "flops_section", "peak_flops", "CONVENTION",
    "MIN_WARMUP_STEPS_FOR_PEAK", "peak_allocated", "peak_memory", "reset_peak_memory", "peak_rss_bytes",
    "EnergyReader", "NvmlReader", "Sample", "open_nvml_reader", "PowerSampler", "integrate",
    "CarbonTracker", "describe_cpu_method", "matmul_control",
]

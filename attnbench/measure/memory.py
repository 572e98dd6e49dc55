"""Peak memory: CUDA caching-allocator peaks, NVML device memory, host RSS.

* ``peak_allocated_bytes`` — ``torch.cuda.max_memory_allocated``: peak bytes of live tensors
  since the last :func:`reset_peak_memory`.
* ``peak_reserved_bytes`` — ``torch.cuda.max_memory_reserved``: peak held by the caching
  allocator (allocated + cached; what decides an OOM).
* ``nvml_used_bytes`` — device-wide used memory as NVML sees it (reserved + CUDA context +
  anything else on the GPU, other processes included).  The maximum the power sampler saw
  when a :class:`MeasurementSession` is passed, else the value now.
* ``allocated_at_timed_start_bytes`` (train jobs) — allocated when the timed steps began: the
  persistent part of the peak (weights, optimizer state, data on the device); the peak minus it
  is what a step adds.
* ``peak_allocated_warmup_bytes`` (train jobs) — ``peak_allocated_bytes`` over the warm-up steps.
  Under CUDA graphs (``compile_mode: reduce-overhead``) replays allocate from the graphs' private
  pool, which the allocator does not count, so the timed peak is unavailable; the warm-up steps
  record the graphs and their allocations are counted.  It is not the same figure as the timed
  peak without graphs: on an H200 it read 0.80x of it for the same step
  (reports/h200/head-1529080; why is not yet measured), so runs are compared in one phase only.
* ``peak_rss_bytes`` — the process's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``)
  since the process started; it cannot be reset.

Unreadable values are ``None`` with a reason under ``unavailable``, keyed by the bare field
name (``"peak_allocated_bytes"``; prefix ``memory.`` when merging into a result).
"""

from __future__ import annotations

import sys
from typing import Any

MEMORY_KEYS = ("peak_allocated_bytes", "peak_reserved_bytes", "nvml_used_bytes", "peak_rss_bytes")


def _is_cuda(device) -> bool:
    return getattr(device, "type", str(device)) == "cuda"


def reset_peak_memory(device) -> int | None:
    """Reset the CUDA allocator's peak counters; returns the bytes allocated at that moment (what
    stays allocated across steps: weights, gradients kept, optimizer state, data on the device),
    None on other devices."""
    if _is_cuda(device):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_allocated(device))
    return None


# CUDA-graph trees run a graph's first call unrecorded and record it on a later one: a warm-up
# peak needs at least this many warm-up steps to hold the recording.
MIN_WARMUP_STEPS_FOR_PEAK = 2


def peak_allocated(device) -> int | None:
    """``torch.cuda.max_memory_allocated`` since the last reset; None on other devices."""
    if _is_cuda(device):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    return None


def peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024  # Linux reports KiB


def peak_memory(device, session=None) -> dict[str, Any]:
    """``{peak_allocated_bytes, peak_reserved_bytes, nvml_used_bytes, peak_rss_bytes,
    unavailable: {"<key>": reason}}`` — note: bare keys, prefix them with ``memory.``."""
    out: dict[str, Any] = {k: None for k in MEMORY_KEYS}
    unavailable: dict[str, str] = {}
    dev_type = getattr(device, "type", str(device))
    if _is_cuda(device):
        import torch

        try:
            out["peak_allocated_bytes"] = peak_allocated(device)
            out["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        except Exception as err:
            for k in ("peak_allocated_bytes", "peak_reserved_bytes"):
                unavailable[k] = f"torch.cuda memory stats failed: {type(err).__name__}: {err}"
        nvml_used, reason = None, None
        sampler = getattr(session, "sampler", None)
        if sampler is not None and sampler.max_mem_used_bytes is not None:
            nvml_used = sampler.max_mem_used_bytes
        else:
            reader = getattr(session, "reader", None)
            try:
                if reader is not None and hasattr(reader, "mem_used_bytes"):
                    nvml_used = int(reader.mem_used_bytes())
                else:
                    from .readers import open_nvml_reader

                    r, reason = open_nvml_reader(device)
                    if r is not None:
                        try:
                            nvml_used = r.mem_used_bytes()
                        finally:
                            r.close()
            except Exception as err:
                reason = f"NVML memory read failed: {type(err).__name__}: {err}"
        out["nvml_used_bytes"] = nvml_used
        if nvml_used is None:
            unavailable["nvml_used_bytes"] = reason or "NVML memory info unavailable"
    else:
        reason = f"device is {dev_type}: no CUDA caching allocator"
        unavailable["peak_allocated_bytes"] = reason
        unavailable["peak_reserved_bytes"] = reason
        unavailable["nvml_used_bytes"] = f"device is {dev_type}: no NVML device memory"
    rss = peak_rss_bytes()
    out["peak_rss_bytes"] = rss
    if rss is None:
        unavailable["peak_rss_bytes"] = "resource.getrusage unavailable on this platform"
    out["unavailable"] = unavailable
    return out

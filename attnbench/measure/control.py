"""A fixed control measured in every job's own process.

The same code trains 5-15 % faster or slower from one GPU call (host, clocks, neighbours) to
the next; a job that also times a fixed workload in its own process lets the report see that
drift and normalise it away (``tokens/s x median control / this job's control``).  The
control is a matrix-product loop: square products in the training dtype, repeated for
``seconds`` of wall clock in CUDA-synchronised windows, reported as achieved TFLOP/s.
"""

from __future__ import annotations

import time

import torch

from .timing import synchronize


def matmul_control(device: torch.device, dtype: torch.dtype, seconds: float) -> dict:
    """``{kind, tflops, seconds, calls}``; ``{"unavailable": reason}`` when ``seconds`` is 0."""
    if not seconds or seconds <= 0:
        return {"unavailable": "control disabled (measure.control_seconds = 0)"}
    n = 8192 if device.type == "cuda" else 256
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)   # random data: zeros run faster
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    for _ in range(3):  # warm-up: handles, clocks
        a @ b
    synchronize(device)
    calls, t0 = 0, time.perf_counter()
    while True:
        for _ in range(10):
            a @ b
        calls += 10
        synchronize(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    return {"kind": f"matmul {n}x{n}x{n} {str(dtype).replace('torch.', '')}", "calls": calls,
            "seconds": elapsed, "tflops": 2 * n ** 3 * calls / elapsed / 1e12}

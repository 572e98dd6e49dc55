#!/usr/bin/env python
"""Where a training step's time goes: the project's own step (``attnbench.train.Job.train_step``,
the job's model, data, optimizer and compile mode) under ``torch.profiler``.

At batch 16 x 512 the H200 default run kept the GPU busy 47-99 % of its timed windows: the host
set the pace.  This profile says what the host spends a step on (self CPU time per operator,
per step) against the GPU's kernel time per step, so the gap has names.

    python benchmarks/loop_profile.py --config config/config.yaml --tokens-dir results/tokens \\
        --variant sdpa --steps 30 --out results/loop/profile_sdpa.json

Prints and writes: wall ms per step (synchronised), GPU device ms per step (sum of kernel, memcpy
and memset durations; on CPU: none), the GPU idle share of the profiled steps, and the top operators by
self CPU time per step.  No measurement session runs (no NVML, CodeCarbon): only the step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def profile_steps(job, first: int, steps: int, top: int = 15) -> dict:
    """Profile ``steps`` training steps of ``job`` from step ``first`` (after its warm-up)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from attnbench import measure

    cuda = job.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    measure.synchronize(job.device)
    measure.reset_peak_memory(job.device)
    t0 = time.perf_counter()
    for i in range(first, first + steps):  # the same steps unprofiled: the wall time without profiler overhead
        job.train_step(i)
    measure.synchronize(job.device)
    wall = (time.perf_counter() - t0) / steps
    peak = measure.peak_memory(job.device).get("peak_allocated_bytes")
    with profile(activities=activities) as prof:
        for i in range(first + steps, first + 2 * steps):
            job.train_step(i)
        measure.synchronize(job.device)
    events = prof.key_averages()
    # device-side events: kernels, memcpy and memset (on one stream they do not overlap; with several
    # they could, hence the clamp below).  Kernels replayed from a CUDA graph appear where CUPTI traces
    # graph nodes -- check the listed operators when profiling reduce-overhead.
    device_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) \
        if cuda else None
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    gpu_ms = device_us / 1000 / steps if device_us is not None else None
    return {
        "steps": steps, "device": str(job.device), "compiled": job.compiled,
        "compile_mode": job.t.get("compile_mode") if job.compiled else None,
        "wall_ms_per_step": 1000 * wall,
        "peak_allocated_bytes": peak,  # of the unprofiled steps (None on CPU)
        "gpu_device_ms_per_step": gpu_ms,  # profiled steps; the wall time is of the unprofiled ones
        "gpu_idle_share": max(0.0, 1 - gpu_ms / (1000 * wall)) if gpu_ms is not None else None,
        "top_cpu_ops": [{"name": e.key, "self_cpu_ms_per_step": e.self_cpu_time_total / 1000 / steps,
                         "calls_per_step": e.count / steps} for e in rows],
        "cpu_ms_per_step_all_ops": sum(e.self_cpu_time_total for e in events) / 1000 / steps,
    }


def main(argv=None) -> int:
    import torch
    import yaml

    from attnbench import settings as S
    from attnbench import train
    from attnbench.optim import resolve_dtype

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--tokens-dir", required=True)
    ap.add_argument("--variant", default="sdpa")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--compile-mode", default=None)
    ap.add_argument("--steps", type=int, default=30, help="profiled steps (and as many unprofiled before)")
    ap.add_argument("--top", type=int, default=15, help="operators listed, by self CPU time")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(open(args.config))
    t = cfg.setdefault("train", {})
    if args.batch_size:
        t["batch_size"] = args.batch_size
    if args.compile_mode:
        t["compile_mode"] = args.compile_mode
    cfg = S.validate(cfg)
    t = cfg["train"]
    t["steps"] = t["warmup_steps"] + 2 * args.steps
    settings = S.stage_settings(cfg, "train", args.variant)
    device = S.resolve_device(settings["device"])
    dtype = resolve_dtype(settings["train"]["dtype"], device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory() as tmp:
        result: dict = {}
        job = train.setup(settings, args.tokens_dir, Path(tmp), device, dtype, None, result)
        first = train.warm_up(job)
        out = {"variant": args.variant, "kernel": job.model.kernel(), "batch_size": t["batch_size"],
               "seq_len": t["seq_len"], **profile_steps(job, first, args.steps, args.top)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{args.variant} ({out['kernel']}, batch {out['batch_size']}, {out['compile_mode'] or 'eager'}): "
          f"wall {out['wall_ms_per_step']:.2f} ms/step; GPU device time "
          + (f"{out['gpu_device_ms_per_step']:.2f} ms/step (idle {100 * out['gpu_idle_share']:.0f} %)"
             if out["gpu_device_ms_per_step"] is not None else "n/a (no CUDA)")
          + f"; host ops {out['cpu_ms_per_step_all_ops']:.2f} ms/step"
          + (f"; peak {out['peak_allocated_bytes'] / 2**30:.2f} GiB" if out["peak_allocated_bytes"] else ""))
    for r in out["top_cpu_ops"]:
        print(f"  {r['self_cpu_ms_per_step']:8.3f} ms/step  {r['calls_per_step']:6.1f} calls  {r['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

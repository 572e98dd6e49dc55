"""The train job's result document: the sections assembled from a finished job, the
description of a failure, and ``steps.csv``."""

from __future__ import annotations

import contextlib
import csv
import os
import io
import math
import traceback
from pathlib import Path
from typing import Any

import torch

from attention.selection import attention_modules, preserved_state

from . import measure
from .optim import cudagraph_skips, replays_graphs
from .results import atomic_write_text
from .settings import ConfigError


FAULT_ENV = "ATTNBENCH_INJECT_FAULT"  # testing only: "<variant>:nan:<step>" or "<variant>:oom:<step>"


class TrainingFault(RuntimeError):
    def __init__(self, kind: str, message: str, step: int | None, **extra):
        super().__init__(message)
        self.kind, self.step, self.extra = kind, step, extra


def assemble(job, result: dict, unavailable: dict, summary: dict, mem: dict) -> None:
    """The result's training, timing, memory, energy, emissions and FLOPs sections."""
    t, windows = job.t, job.progress["windows"]
    B, T = t["batch_size"], t["seq_len"]
    losses = job.losses.cpu().tolist()
    timed_steps = t["steps"] - t["warmup_steps"]
    timed_s = sum(w["seconds"] for w in windows)
    result["training"] = {
        "steps": t["steps"], "warmup_steps": t["warmup_steps"], "timed_steps": timed_steps,
        "batch_size": B, "seq_len": T, "tokens_per_step": B * T, "tokens_trained": t["steps"] * B * T,
        "final_train_loss": _mean_tail(losses, 10), "val_loss": job.progress["val_history"][-1]["val_loss"],
        "val_history": job.progress["val_history"], "lr": t["lr"], "dtype": str(job.dtype).replace("torch.", ""),
        "compiled": job.compiled, "compile_mode": t["compile_mode"] if job.compiled else None,
        "fused_adamw": job.fused, "device": str(job.device),
        "checkpoints": {"every": job.checkpoint_every, "saved": job.progress["checkpoints"],
                        "seconds": job.progress["checkpoint_s"]},
        "resumed_from_step": job.resumed_from, "resumes": job.progress.get("resumes", []),
    }
    if job.compile_error:
        result["training"]["compile_error"] = job.compile_error
    if job.compiled and job.cudagraph_skips_before is not None:  # did the graphs replay, or run eagerly?
        result["training"]["cudagraph_skips"] = cudagraph_skips() - job.cudagraph_skips_before
    pct = measure.percentiles([1000 * w["seconds"] / w["steps"] for w in windows])
    result["timing"] = {
        "step_ms_p50": pct["p50"], "step_ms_p90": pct["p90"], "step_ms_min": pct["min"],
        "step_ms_max": pct["max"], "n_windows": pct["n"],
        "tokens_per_s": timed_steps * B * T / timed_s if timed_s > 0 else None,
        "warmup_s": job.warmup_s, "timed_s": timed_s, "windows": windows,
        "method": (f"synchronised wall clock over windows (the first {t['timing_window']} steps, later ones "
                   f"at least {t['window_seconds']} s of steps; eval points cut windows); per-step figures "
                   "are window means"),
    }
    result["memory"] = {k: v for k, v in mem.items() if k != "unavailable"}
    unavailable.update({f"memory.{k}": v for k, v in mem.get("unavailable", {}).items()})
    result["memory"]["allocated_at_timed_start_bytes"] = job.allocated_at_start
    result["memory"]["peak_allocated_warmup_bytes"] = job.warmup_peak_allocated
    if job.warmup_peak_allocated is None:
        if "memory.peak_allocated_bytes" in unavailable:  # no CUDA allocator: neither phase
            why = unavailable["memory.peak_allocated_bytes"]
        elif t["warmup_steps"] < measure.MIN_WARMUP_STEPS_FOR_PEAK:  # resumed or not: never recorded
            why = (f"warmup_steps={t['warmup_steps']}: fewer than two warm-up steps "  # MIN_WARMUP_STEPS_FOR_PEAK
                   "(CUDA-graph trees record on a later step than the first)")
        else:
            why = "resumed from a checkpoint written before the warm-up peak was recorded"
        unavailable["memory.peak_allocated_warmup_bytes"] = why
    if job.allocated_at_start is None:
        unavailable["memory.allocated_at_timed_start_bytes"] = unavailable.get(
            "memory.peak_allocated_bytes", "no CUDA caching allocator")
    if job.compiled and replays_graphs(job.step_model):
        # Replayed CUDA graphs write activations and gradients into their private pool without
        # the allocator counting them as allocated (an H200, session 8: 1.4-2.6 GB "peak" for a
        # 124M model whose weights, gradients and AdamW state alone take 2.0 GB).
        for key in ("peak_allocated_bytes", "allocated_at_timed_start_bytes"):
            if result["memory"].get(key) is not None:
                result["memory"][key] = None
                unavailable[f"memory.{key}"] = (
                    f"compile_mode {t['compile_mode']} replays CUDA graphs, whose memory pool the allocator does "
                    "not count as allocated: the figure would leave out activations and gradients; "
                    "memory.peak_allocated_warmup_bytes counts the warm-up steps, which record the graphs, and "
                    "memory.peak_reserved_bytes holds the pool")
    energy, emissions = dict(summary.get("energy", {})), dict(summary.get("emissions", {}))
    unavailable.update(summary.get("unavailable", {}))
    if job.resumed_from is not None:  # the session saw only this process's windows: sum all of them
        totals, why = measure.energy_totals(windows, energy.get("idle_w"))
        energy.update(totals)
        unavailable.update(why)
        _emissions_of_resumed_run(emissions, unavailable, job.resumed_from, t["steps"])
    result["energy"], result["emissions"] = energy, emissions
    result["efficiency"] = loss_drop_per_energy(losses, windows)
    analytic = measure.model_flops(job.model, B, T)
    counted = None
    if job.settings["measure"]["count_flops"]:
        # state kept: the count's forward would otherwise advance LSH's rotation stream (as it did,
        # before training, until this module counted after training)
        with preserved_state(attention_modules(job.model), job.device):
            counted = measure.count_flops(job.model, B, T, job.device, analytic=analytic,
                                          dtype=job.dtype if job.dtype == torch.bfloat16 else None)
    flops, flops_unavailable = measure.flops_section(
        analytic, counted, timed_s / timed_steps if timed_steps else None, job.device,
        peak_tflops=job.settings["measure"]["peak_tflops"], dtype=job.dtype)
    result["flops"] = flops
    unavailable.update(flops_unavailable)


def loss_drop_per_energy(losses: list[float], windows: list[dict]) -> dict:
    """Training loss drop per kJ over the timed steps: loss and energy over the same steps
    (mean loss of the first timed window minus that of the last, over the GPU energy of all
    timed windows)."""
    out = {"method": "mean train loss of the first timed window minus that of the last, per kJ of GPU "
                     "energy over all timed windows (the same steps)"}
    if not windows or any(w.get("energy_j") is None for w in windows):
        return {**out, "loss_drop_per_kj": None,
                "unavailable": "energy not measured for every timed window" if windows else "no timed windows"}

    def window_mean(w):
        vals = [v for v in losses[w["first_step"]:w["first_step"] + w["steps"]] if math.isfinite(v)]
        return sum(vals) / len(vals) if vals else None

    start, end = window_mean(windows[0]), window_mean(windows[-1])
    energy = sum(w["energy_j"] for w in windows)
    if start is None or end is None or energy <= 0:
        return {**out, "loss_drop_per_kj": None, "unavailable": "no finite losses or no energy"}
    return {**out, "loss_start": start, "loss_end": end, "energy_j": energy,
            "first_step": windows[0]["first_step"], "last_step": windows[-1]["first_step"] + windows[-1]["steps"],
            "loss_drop_per_kj": (start - end) / (energy / 1000)}


def _emissions_of_resumed_run(emissions: dict, unavailable: dict, resumed_from: int, steps: int) -> None:
    """CodeCarbon ran only in the resuming process: its totals miss the interrupted part, so
    they are unavailable (the partial values are kept under ``emissions.resumed_part``)."""
    part = {}
    for k in ("co2eq_kg", "cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh"):
        if emissions.get(k) is not None:
            part[k] = emissions[k]
            emissions[k] = None
        unavailable.setdefault(f"emissions.{k}", f"run resumed from a checkpoint at step {resumed_from}: "
                               f"CodeCarbon measured only steps {resumed_from}..{steps} (see emissions.resumed_part)")
    if part:
        emissions["resumed_part"] = {"from_step": resumed_from, **part}


def record_failure(result: dict, err: BaseException, step, device, out_dir: Path) -> None:
    """Make ``result`` a failed row naming ``err``; append it to ``failures.log`` (the workflow
    reruns a variant whose log changed) and remove outputs that belong to an ok run only."""
    import time

    result["status"] = "failed"
    result["failure"] = describe_failure(err, step, device)
    with open(out_dir / "failures.log", "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {result['failure']['kind']}: "
                 f"{result['failure']['message']}\n")
    for stale in ("steps.csv", "model.safetensors"):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / stale).unlink()


def describe_failure(err: BaseException, step, device) -> dict:
    from .selfcheck import KernelCheckFailed

    if isinstance(err, KernelCheckFailed):
        return {"kind": "kernel-check", "message": str(err), "step": step}
    if isinstance(err, TrainingFault):
        return {"kind": err.kind, "message": str(err), "step": err.step if err.step is not None else step,
                **err.extra}
    info: dict[str, Any] = {"kind": "error", "message": f"{type(err).__name__}: {err}", "step": step,
                            "traceback": traceback.format_exc(limit=8)}
    if isinstance(err, torch.OutOfMemoryError):
        info["kind"] = "oom"
        if device.type == "cuda":
            with contextlib.suppress(Exception):
                info["allocator"] = {"allocated_bytes": torch.cuda.memory_allocated(),
                                     "reserved_bytes": torch.cuda.memory_reserved(),
                                     "max_allocated_bytes": torch.cuda.max_memory_allocated(),
                                     "device_total_bytes": torch.cuda.get_device_properties(device).total_memory}
        else:
            info["allocator"] = {"device": device.type, "peak_rss_bytes": measure.peak_rss_bytes()}
    return info


def _mean_tail(values: list[float], n: int) -> float | None:
    tail = [v for v in values[-n:] if math.isfinite(v)]
    return sum(tail) / len(tail) if tail else None


def write_steps_csv(path: Path, losses, ms, warmup: int, tokens_per_step: int) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "loss", "window_ms_per_step", "tokens", "phase"])
    for i, loss in enumerate(losses):
        timed = i >= warmup
        w.writerow([i, f"{loss:.6f}", f"{ms[i - warmup]:.4f}" if timed else "", tokens_per_step,
                    "timed" if timed else "warmup"])
    atomic_write_text(path, buf.getvalue())


def injected_fault(name: str) -> tuple[str, int] | None:
    """The fault ``ATTNBENCH_INJECT_FAULT`` asks for in variant ``name`` (testing only).

    Comma-separated ``<variant>:<nan|oom>:<step>`` items; a malformed item is an error (a
    typo must not silently run the unfaulted variant).  Read by the training process: force
    the variant (``--forcerun train``) to inject into it.
    """
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, (i.strip() for i in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or parts[1] not in ("nan", "oom") or not parts[2].isdigit():
            raise ConfigError(f"{FAULT_ENV}={spec!r}: item {item!r} is not <variant>:<nan|oom>:<step>")
        if parts[0] == name:
            return parts[1], int(parts[2])
    return None

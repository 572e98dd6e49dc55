"""Sequence-length scaling sweep: one attention module (and one full block) alone.

For each T in ``sweep.seq_lens`` at fixed ``B*T = sweep.tokens``: forward and
forward+backward time (``measure.timed_until_stable``: CUDA events on a GPU; after
``sweep.warmup`` calls, repeats until p90/p50 < 1.2 or the point's budget is spent, at least
``sweep.repeats``; an unstable point is recorded as such, with its ratio),
TFLOP/s from the module's analytic ``flops_forward`` (causal pairs only; fwd+bwd counted as
3x forward; unavailable, with the reason, for a class without one), peak memory, and GPU
energy per call from the NVML counter over its own window of ``sweep.energy_seconds`` of
back-to-back calls after the timing (seconds, not the timing's milliseconds: the counter advances
every 20-100 ms).  A length that runs out of memory or
cannot run is recorded with its status and the sweep goes on.  At each length
``impl="auto"`` is resolved first by measuring the candidates here, at that shape
(``attention.selection.autotune``: the fastest kernel that passes the check against the
float32 reference path; recorded per point), so the sweep times the kernel ``auto`` would run
at that length.  This is where the sub-quadratic variants should overtake exact attention.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from attention.base import flops_forward_of
from attention.selection import KernelCheckError, autotune

from . import gpuslots, measure
from .measure.energy import FLAG_SHORT
from .model import Block, GPTConfig
from .optim import begin_step
from .results import atomic_write_json, jsonable, provenance, utc_now
from .settings import resolve_device

SWEEP_SCHEMA = "attnbench.sweep/1"
# Timing of a point (one scope, length and mode): repeats until p90/p50 < SWEEP_TARGET or the budget
# is spent.  Fixed repeats gave points whose p90 sat 1.7-2.2x their p50 (sliding_window on the H200)
# with nothing to say so.
SWEEP_TARGET = 1.2
SWEEP_BUDGET_S = {"cuda": 1.0}   # seconds per point and mode; other devices: SWEEP_BUDGET_CPU_S
SWEEP_BUDGET_CPU_S = 0.3
WARMUP_CALLS = 10  # the timing's own warm-up: at most two batches of five calls (max_warmup_batches=2)
SWEEP_BUDGET_MAX_S = 30.0  # however slow the call
# A point's calls last milliseconds, under an energy counter that advances every 20-100 ms: the
# H200 sweeps of e1a7e10 recorded up to 8 J for a 0.4 ms call (20 kW), and at 3877728 the timing's
# own window (20 calls, 0.03-0.08 s) left most points without a figure.  So energy has a window of
# its own, sweep.energy_seconds of back-to-back calls (synchronised only every ENERGY_CHUNK_S, to
# check the time); one the session still flags as short gives no energy per call, and says why.
ENERGY_CHUNK_S = 0.25
ENERGY_CHUNK_MAX_CALLS = 10_000


def energy_per_call(fn, device, session, seconds: float, tokens_per_call: int) -> dict:
    """GPU joules per call over a window of at least ``seconds`` of back-to-back calls of the warm
    ``fn``: ``calls_in_energy_window``, ``energy_window_s``, ``gpu_j_per_call`` and ``gpu_w`` (the
    window's mean power), or ``gpu_j_per_call`` None with ``energy_unavailable`` saying why.  The
    calls between two checks of the time start at one and grow at most fourfold per check,
    following the rate measured in the window, so no estimate can stretch the window."""
    if not session.counts_energy:
        return {"gpu_j_per_call": None, "energy_unavailable": f"no energy counter: {session.reader_reason}"}
    if seconds <= 0:
        return {"gpu_j_per_call": None, "energy_unavailable": "sweep.energy_seconds is 0: no energy window"}
    chunk, calls = 1, 0
    w = session.begin_window()
    t0 = w.t0  # the window's own start (perf_counter, after its synchronisation)
    while True:
        for _ in range(chunk):
            fn()
        calls += chunk
        measure.synchronize(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
        fit = int(calls / elapsed * min(ENERGY_CHUNK_S, seconds - elapsed)) + 1 if elapsed > 0 else 4 * chunk
        chunk = max(1, min(fit, 4 * chunk, ENERGY_CHUNK_MAX_CALLS))
    ws = session.end_window(w, steps=calls, tokens=calls * tokens_per_call)
    out = {"calls_in_energy_window": calls, "energy_window_s": ws["seconds"], "gpu_j_per_call": None,
           "gpu_w": None}
    e = ws.get("energy_j")
    if e is None or FLAG_SHORT in ws.flags:
        out["energy_unavailable"] = (f"energy window {ws['seconds']:.3f} s, {FLAG_SHORT}" if e is not None
                                     else ws.get("error") or "no energy reading")
    else:
        out.update(gpu_j_per_call=e / calls, gpu_w=ws.get("mean_w"))
    return out


def sweep_point(module: torch.nn.Module, attn: torch.nn.Module, kind: str, B: int, T: int, n_embd: int,
                device, dtype, repeats: int, warmup: int, session, fwd_flops: int | None,
                energy_seconds: float = 2.0) -> dict:
    """One scope at one length; ``fwd_flops``: the attention module's analytic forward FLOPs
    (None: TFLOP/s not computed, the caller records why); ``energy_seconds``: the energy window."""
    point: dict[str, Any] = {"scope": kind, "seq_len": T, "batch_size": B}
    x = torch.randn(B, T, n_embd, device=device, dtype=dtype, requires_grad=True)
    if kind == "attention":
        try:
            point["kernel_selection"] = autotune(attn, x.detach(), dtype)
        except KernelCheckError as err:  # no kernel passes here: recorded, the sweep goes on
            point["kernel_selection"] = err.record
            point["status"] = "kernel-check"
            point["error"] = str(err)
            return point
        except torch.OutOfMemoryError as err:
            point["kernel_selection"] = {"error": f"out of memory while tuning: {str(err).splitlines()[0][:200]}"}
    grad = torch.randn_like(x)
    # per-step state drawn before each call, as a training step pays it (LSH's rotations)
    def fwd():
        begin_step(module)
        with torch.no_grad():
            module(x)

    def fwd_bwd():
        begin_step(module)
        module(x).backward(grad)

    bwd_flops = None if fwd_flops is None else 3 * fwd_flops
    for mode, fn, flops in (("forward", fwd, fwd_flops), ("forward_backward", fwd_bwd, bwd_flops)):
        try:
            measure.reset_peak_memory(device)
            per_call = float("inf")
            for _ in range(max(2, warmup)):  # compilation, tuning, the allocator: before the energy window
                t0 = time.perf_counter()
                fn()
                measure.synchronize(device)
                per_call = min(per_call, time.perf_counter() - t0)  # the fastest: not the call that compiled
            # the budget holds sweep.repeats samples and the warm-up batches even for slow calls (capped)
            budget = min(max(SWEEP_BUDGET_S.get(device.type, SWEEP_BUDGET_CPU_S),
                             3 * (repeats + WARMUP_CALLS) * per_call), SWEEP_BUDGET_MAX_S)
            # warm already: the timing's own warm-up is short (at most two batches), so the budget buys repeats
            _, rec = measure.timed_until_stable(fn, device, warmup_min=0, repeats_min=max(1, repeats),
                                                max_seconds=budget, target_p90_over_p50=SWEEP_TARGET,
                                                max_warmup_batches=2)
            mem = measure.peak_memory(device)
            energy = energy_per_call(fn, device, session, energy_seconds, B * T)
            point[mode] = {
                "status": "ok", "ms_p50": rec["p50"], "ms_p90": rec["p90"], "ms_min": rec["min"], "n": rec["n"],
                "p90_over_p50": rec["p90_over_p50"], "timing_stable": rec["stable"], "timing_target": SWEEP_TARGET,
                "timing_method": rec["method"],
                "tflops": flops / (rec["p50"] / 1000) / 1e12 if kind == "attention" and flops is not None else None,
                "peak_allocated_bytes": mem.get("peak_allocated_bytes"),
                "peak_rss_bytes": mem.get("peak_rss_bytes"),
                **energy,
                "kernel": getattr(attn, "kernel", "?"),
            }
        except torch.OutOfMemoryError as err:
            point[mode] = {"status": "oom", "error": str(err).splitlines()[0][:300]}
        except Exception as err:  # a kernel that cannot run at this length: recorded, sweep goes on
            point[mode] = {"status": "error", "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        finally:
            x.grad = None
            module.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return point


def run(settings: dict, out_path) -> dict[str, Any]:
    name, s, m = settings["name"], settings["sweep"], settings["model"]
    started, startup_s = utc_now(), measure.process_age_s()
    device = resolve_device(settings["device"])
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = GPTConfig.from_settings(m, settings["entry"], n_layer=1, block_size=max(s["seq_lens"]), dropout=0.0)
    torch.manual_seed(settings["seed"])
    block = Block(cfg).to(device=device, dtype=dtype)
    attn = block.attn
    session = measure.session_from(settings["measure"], device, Path(out_path).parent, "sweep", idle=False,
                                   codecarbon=False)
    session.start()
    points, flops_unavailable = [], None
    try:
        for T in s["seq_lens"]:
            B = max(1, s["tokens"] // T)
            # optional in the attention contract: without it TFLOP/s is unavailable, the sweep goes on
            fwd_flops, why = flops_forward_of(attn, B, T, causal_halved=True)
            flops_unavailable = flops_unavailable or why
            for kind, module in (("attention", attn), ("block", block)):
                if kind not in s["scopes"]:
                    continue
                points.append(sweep_point(module, attn, kind, B, T, m["n_embd"], device, dtype,
                                          s["repeats"], s["warmup"], session, fwd_flops,
                                          energy_seconds=s["energy_seconds"]))
    finally:
        summary = session.finish()
    unavailable = dict(summary.get("unavailable", {}))
    if flops_unavailable:
        unavailable["points.tflops"] = flops_unavailable
    if device.type != "cuda":
        unavailable["points.gpu_j_per_call"] = "no GPU: CPU run"
    else:
        why = [p[m].get("energy_unavailable") for p in points for m in ("forward", "forward_backward")
               if isinstance(p.get(m), dict) and p[m].get("status") == "ok"]
        if why and all(why) and len(set(why)) == 1:  # one reason for every point (no counter, energy_seconds 0)
            unavailable["points.gpu_j_per_call"] = why[0]
        elif any(why):
            unavailable["points.gpu_j_per_call"] = ("null where a point has no energy figure; "
                                                    "points[].<mode>.energy_unavailable says why")
    result = {"schema": SWEEP_SCHEMA, "variant": name, "status": "ok", "dtype": str(dtype).replace("torch.", ""),
              "tokens_per_call": s["tokens"], "flop_convention": "causal pairs only; forward+backward = 3x forward",
              "points": points, "unavailable": unavailable,
              "provenance": provenance(settings["seed"], settings, device),
              "job": {"started_utc": started, "startup_s": startup_s,
                      "startup_parts_s": {"gpu_slot_claim": gpuslots.CLAIM_SECONDS}, "finished_utc": utc_now()}}
    atomic_write_json(out_path, jsonable(result))
    return result

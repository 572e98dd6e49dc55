"""Sequence-length scaling sweep: one attention module (and one full block) alone.

For each T in ``sweep.seq_lens`` at fixed ``B*T = sweep.tokens``: forward and
forward+backward time (synchronised wall clock, p50/p90 over repeats after warm-up),
TFLOP/s from the module's analytic ``flops_forward`` (causal pairs only; fwd+bwd counted as
3x forward), peak memory, and GPU energy per call from the NVML counter over the repeats.
A length that runs out of memory or cannot run is recorded with its status and the sweep
goes on.  This is where the sub-quadratic variants should overtake exact attention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import measure
from .model import Block, GPTConfig
from .results import atomic_write_json, provenance
from .settings import register_user_class, resolve_device
from .train import _jsonable

SWEEP_SCHEMA = "attnbench.sweep/1"


def sweep_point(module: torch.nn.Module, attn: torch.nn.Module, kind: str, B: int, T: int, n_embd: int,
                device, dtype, repeats: int, warmup: int, session) -> dict:
    point: dict[str, Any] = {"scope": kind, "seq_len": T, "batch_size": B}
    x = torch.randn(B, T, n_embd, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)

    def fwd():
        with torch.no_grad():
            module(x)

    def fwd_bwd():
        module(x).backward(grad)

    fwd_flops = attn.flops_forward(B, T, causal_halved=True)
    for mode, fn, flops in (("forward", fwd, fwd_flops), ("forward_backward", fwd_bwd, 3 * fwd_flops)):
        try:
            measure.reset_peak_memory(device)
            w = session.begin_window()
            ms = measure.timed_calls(fn, device, repeats, warmup)
            ws = session.end_window(w, steps=repeats + warmup, tokens=(repeats + warmup) * B * T)
            mem = measure.peak_memory(device)
            pct = measure.percentiles(ms)
            e = ws.get("energy_j")
            point[mode] = {
                "status": "ok", "ms_p50": pct["p50"], "ms_p90": pct["p90"], "ms_min": pct["min"],
                "tflops": flops / (pct["p50"] / 1000) / 1e12 if kind == "attention" else None,
                "peak_allocated_bytes": mem.get("peak_allocated_bytes"),
                "peak_rss_bytes": mem.get("peak_rss_bytes"),
                "gpu_j_per_call": e / (repeats + warmup) if e is not None else None,
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
    device = resolve_device(settings["device"])
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    entry = settings["entry"]
    cfg = GPTConfig(n_layer=1, n_head=m["n_head"], n_embd=m["n_embd"], block_size=max(s["seq_lens"]),
                    vocab_size=m["vocab_size"], dropout=0.0, bias=m["bias"],
                    attention=register_user_class(entry), attention_params=dict(entry["params"]))
    torch.manual_seed(settings["seed"])
    block = Block(cfg).to(device=device, dtype=dtype)
    attn = block.attn
    meas = settings["measure"]
    session = measure.MeasurementSession(
        device, Path(out_path).parent, nvml=meas["nvml"], sample_interval_s=meas["sample_interval_s"],
        codecarbon=False, country_iso_code=meas["country_iso_code"], idle_seconds=0.0,
        peak_tflops=meas["peak_tflops"], label="sweep")
    session.start()
    points = []
    try:
        for T in s["seq_lens"]:
            B = max(1, s["tokens"] // T)
            for kind, module in (("attention", attn), ("block", block)):
                if kind not in s["scopes"]:
                    continue
                points.append(sweep_point(module, attn, kind, B, T, m["n_embd"], device, dtype,
                                          s["repeats"], s["warmup"], session))
    finally:
        summary = session.finish()
    unavailable = dict(summary.get("unavailable", {}))
    if device.type != "cuda":
        unavailable["points.gpu_j_per_call"] = "no GPU: CPU run"
    result = {"schema": SWEEP_SCHEMA, "variant": name, "status": "ok", "dtype": str(dtype).replace("torch.", ""),
              "tokens_per_call": s["tokens"], "flop_convention": "causal pairs only; forward+backward = 3x forward",
              "points": points, "unavailable": unavailable,
              "provenance": provenance(settings["seed"], settings, device)}
    atomic_write_json(out_path, _jsonable(result))
    return result

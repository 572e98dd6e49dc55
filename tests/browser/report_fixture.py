"""Small result documents in the documented schemas, for the report tests.

``write_fixture(root, gpu=True)`` writes train/probe/sweep documents (plus the steps.csv and
power_train.csv sidecars) for four variants and returns the keyword arguments of
:func:`attnbench.report.build_report` (minus ``out_dir``):

* ``baseline`` -- finished, every metric measured (GPU-like numbers when ``gpu``);
* ``gqa`` -- finished; one parameter is an HTML string that must come out escaped;
* ``linear`` -- finished, but GPU energy and MFU are null with reasons in ``unavailable``;
  a fixed-size inference state (0 cache bytes per token); its sweep document has a null commit;
* ``lsh`` -- training failed (out of memory at step 12); probe skipped; sweep ran.

``gqa``'s FLOP count is unavailable with a raw Python object repr in its reason (as torch's
exceptions write them), which the page must not show.  GPU documents carry job start and end
times and a device UUID, one job after the other (no two on one GPU at once).

With ``gpu=False`` the documents look like a CPU smoke run: no GPU memory, no GPU energy,
no power samples, each with its reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

XSS = "<script>alert(1)</script>"
VARIANTS = ["baseline", "gqa", "linear", "lsh"]
NO_NVML = "no NVML: fixture machine has no GPU counters"
NO_CUDA = "device is cpu: no CUDA caching allocator"
OBJECT_REPR = ("FlopCounterMode counting failed: TypeError: no implementation found for 'flex_attention' nor in mode "
               "<torch._dynamo._trace_wrapped_higher_order_op.TransformGetItemToIndex object at 0x7fb98a120c80>")
UUID = "GPU-5f1e0c2a-0000-4000-8000-000000000001"
CACHE = {  # (bytes per token, bytes at the training length of 128 tokens), batch 1
    "baseline": (2048, 2048 * 128), "gqa": (1024, 1024 * 128), "linear": (0, 65_536), "lsh": (0, 98_304)}


def job_times(i: int, stage: str) -> dict:
    """Start and end of a job: the fixture's jobs ran one after the other on one GPU."""
    slot = i * 3 + ("train", "probe", "sweep").index(stage)
    return {"started_utc": f"2026-11-28T10:{slot:02d}:00.000+00:00",
            "finished_utc": f"2026-11-28T10:{slot:02d}:50.000+00:00"}


def _prov(gpu: bool) -> dict:
    return {"git_commit": "0123456789abcdef0123456789abcdef01234567", "python": "3.11.7",
            "torch": "2.5.1+cu124" if gpu else "2.5.1+cpu", "cuda": "12.4" if gpu else None,
            "cudnn": 90100 if gpu else None, "host": "fixture-host", "platform": "Linux", "seed": 1337,
            "config_hash": "abcdef0123456789",
            "device": "NVIDIA H100 80GB HBM3" if gpu else "cpu (x86_64, 2 cores)",
            "driver": "550.54.15" if gpu else None,
            **({"device_uuid": UUID, "gpu_slot": "0"} if gpu else {})}


def train_doc(name: str, i: int, gpu: bool, *, params: dict | None = None, failed: bool = False,
              no_energy: bool = False) -> dict:
    speed = [1.0, 1.25, 1.6, 0.9][i]
    steps, warm, B, T = 40, 4, 8, 128
    unavailable: dict[str, str] = {}
    doc = {
        "schema": "attnbench.train/1", "variant": name, "status": "ok", "failure": None,
        "attention": {"name": name, "params": params or {}},
        "provenance": _prov(gpu),
        "model": {"n_layer": 2, "n_head": 4, "n_embd": 128, "vocab_size": 50304, "block_size": 256,
                  "params_total": 6_900_000 + 1000 * i, "params_attention": 130_000 - 20_000 * i,
                  "params_non_embedding": 400_000, "cache_bytes_per_token": CACHE[name][0],
                  "cache_bytes_at_seq_len": CACHE[name][1]},
    }
    if gpu:
        doc["job"] = job_times(i, "train")
    if failed:
        doc["status"] = "failed"
        doc["failure"] = {"kind": "oom", "message": "CUDA out of memory. Tried to allocate 2.00 GiB", "step": 12,
                          "traceback": "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError"}
        doc["unavailable"] = {}
        return doc
    doc["kernel"] = ["sdpa_flash", "sdpa_flash", "linear_chunked", "lsh"][i]
    step_ms = 50.0 / speed
    final_val = [4.95, 4.97, 5.30, None][i]
    doc["training"] = {"steps": steps, "warmup_steps": warm, "timed_steps": steps - warm, "batch_size": B,
                       "seq_len": T, "tokens_per_step": B * T, "tokens_trained": steps * B * T,
                       "final_train_loss": final_val - 0.05, "val_loss": final_val,
                       "val_history": [{"step": 20, "val_loss": final_val + 1.0}, {"step": 40, "val_loss": final_val}],
                       "lr": 6e-4, "dtype": "bfloat16" if gpu else "float32"}
    kj = [0.30, 0.28, 0.25, None][i] if gpu and not no_energy else None
    doc["efficiency"] = {"loss_drop_per_kj": kj, **({} if kj is not None else {"unavailable": "no energy"})}
    windows = []
    for first in range(warm, steps, 9):
        n = min(9, steps - first)
        windows.append({"first_step": first, "steps": n, "seconds": n * step_ms / 1000,
                        "energy_j": (n * step_ms / 1000 * 300.0) if gpu and not no_energy else None})
    timed_s = sum(w["seconds"] for w in windows)
    if gpu and not no_energy:  # the session's clock: windows after 0.5 s of idle and compilation
        t = 0.5
        for w in windows:
            w["t_start_s"], w["t_end_s"] = t, t + w["seconds"]
            t += w["seconds"] + 0.01
    doc["timing"] = {"step_ms_p50": step_ms, "step_ms_p90": step_ms * 1.1, "step_ms_min": step_ms * 0.95,
                     "step_ms_max": step_ms * 1.2, "tokens_per_s": (steps - warm) * B * T / timed_s,
                     "warmup_s": 3.2, "timed_s": timed_s, "windows": windows, "method": "synchronised wall clock"}
    doc["memory"] = {"peak_allocated_bytes": [900, 700, 500, 0][i] * 2**20 if gpu else None,
                     "peak_reserved_bytes": 1200 * 2**20 if gpu else None, "nvml_used_bytes": None,
                     "peak_rss_bytes": 1_500_000_000 + i * 10_000_000}
    unavailable["memory.nvml_used_bytes"] = "NVML memory info unavailable"
    if not gpu:
        unavailable["memory.peak_allocated_bytes"] = NO_CUDA
        unavailable["memory.peak_reserved_bytes"] = NO_CUDA
    energy_keys = ["gpu_j_total", "gpu_j_per_step", "gpu_j_per_token", "gpu_mean_w", "idle_w", "gpu_j_above_idle",
                   "sampled_vs_counter_ratio"]
    if gpu and not no_energy:
        total = sum(w["energy_j"] for w in windows)
        doc["energy"] = {"gpu_j_total": total, "gpu_j_per_step": total / (steps - warm),
                         "gpu_j_per_token": total / ((steps - warm) * B * T), "gpu_mean_w": 300.0, "idle_w": 70.0,
                         "gpu_j_above_idle": total * 0.75, "sampled_vs_counter_ratio": 1.01,
                         "window_seconds_min": 0.2, "flags": [],
                         "windows": [{"index": k, "t_start_s": w["t_start_s"], "t_end_s": w["t_end_s"],
                                      "energy_j": w["energy_j"], "seconds": w["seconds"]}
                                     for k, w in enumerate(windows)]}
    else:
        doc["energy"] = {k: None for k in energy_keys}
        for k in energy_keys:
            unavailable[f"energy.{k}"] = NO_NVML
    doc["flops"] = {"forward_per_step": 1e12, "train_per_step": 3e12, "convention": "6N",
                    "achieved_tflops": 3e12 / step_ms * 1e3 / 1e12, "peak_tflops": 989.0 if gpu else None,
                    "mfu": (3e12 / step_ms * 1e3 / 1e12) / 989.0 if gpu and not no_energy else None}
    if doc["flops"]["mfu"] is None:
        unavailable["flops.mfu"] = "no peak TFLOP/s known for this device"
    if name == "gqa":
        doc["flops"]["counted_train_per_step"] = None
        unavailable["flops.counted_train_per_step"] = OBJECT_REPR
    doc["emissions"] = {"co2eq_kg": 0.0004 * (i + 1), "cpu_energy_kwh": 0.0002, "ram_energy_kwh": 0.0001,
                        "gpu_energy_kwh": 0.001 if gpu else None, "cpu_power_method": "cpu_load",
                        "country_iso_code": "USA"}
    if not gpu:
        unavailable["emissions.gpu_energy_kwh"] = "CodeCarbon tracked no GPU (gpu_count 0)"
    doc["unavailable"] = unavailable
    return doc


def steps_csv(doc: dict) -> str:
    t = doc["training"]
    lines = ["step,loss,window_ms_per_step,tokens,phase"]
    for s in range(t["steps"]):
        loss = 10.8 - (10.8 - t["final_train_loss"]) * (1 - math.exp(-s / 8))
        timed = s >= t["warmup_steps"]
        lines.append(f"{s},{loss:.6f},{doc['timing']['step_ms_p50']:.4f}" if timed else f"{s},{loss:.6f},")
        lines[-1] += f",{t['tokens_per_step']},{'timed' if timed else 'warmup'}"
    return "\n".join(lines) + "\n"


def power_csv(i: int) -> str:
    lines = ["t_s,power_w,energy_mj,sm_clock_mhz,util_pct,mem_used_bytes,temp_c"]
    for k in range(60):
        t = k * 0.1
        p = 80.0 if t < 0.5 else 280.0 + 20 * math.sin(k / 3) + 5 * i
        lines.append(f"{t:.3f},{p:.1f},{int(k * 30000)},1980,{98 if t >= 0.5 else 0},{12 * 2**30},{55 + k // 10}")
    return "\n".join(lines) + "\n"


def probe_doc(name: str, i: int, gpu: bool, train: dict) -> dict:
    prov = _prov(gpu)
    job = {"job": job_times(i, "probe")} if gpu else {}
    if train["status"] != "ok":
        reason = f"training failed: {train['failure']['message']}"
        return {"schema": "attnbench.probe/1", "variant": name, "status": "skipped", "reason": reason,
                "provenance": prov, "unavailable": {"probe": reason}, **job}
    f = [1.0, 0.9, 0.7, 1.0][i]
    prefill, decode = [], []
    for B in (1, 4):
        for L in (32, 64):
            prefill.append({"batch_size": B, "prompt_len": L, "ms_p50": f * 0.05 * B * L, "ms_p90": f * 0.06 * B * L,
                            "ms_min": f * 0.04 * B * L, "repeats": 3, "tokens_per_s": 1000.0,
                            "peak_allocated_bytes": None, "kernel": train["kernel"]})
        decode.append({"batch_size": B, "prompt_len": 64, "new_tokens": 8, "ms_per_token_p50": f * (2.0 + B),
                       "ms_per_token_p90": f * (2.5 + B), "tokens_per_s": B / (f * (2.0 + B) / 1000),
                       "window_seconds": 0.1, "gpu_j_per_token": 0.5 if gpu else None,
                       "peak_allocated_bytes": None,
                       "cache_bytes": B * (CACHE[name][0] * (64 + 8) or CACHE[name][1]),
                       "cache_vs_full_forward_max_abs_diff": 1e-5, "logit_scale": 10.0,
                       "cache_matches_full_forward": True, "kernel": train["kernel"]})
    unav = {} if gpu else {"decode.gpu_j_per_token": "no GPU: CPU run"}
    return {"schema": "attnbench.probe/1", "variant": name, "status": "ok", "provenance": prov,
            "kernel": train["kernel"], "dtype": "bfloat16" if gpu else "float32", "prefill": prefill,
            "decode": decode, "cache_bytes_per_token": train["model"]["cache_bytes_per_token"],
            "energy": {}, "emissions": {}, "unavailable": unav, "decode_matches_full_forward": True, **job}


def sweep_doc(name: str, i: int, gpu: bool) -> dict:
    points = []
    quad = name not in ("linear", "lsh")
    for T in (64, 128, 256, 512):
        B = max(1, 1024 // T)
        for scope in ("attention", "block"):
            pt = {"scope": scope, "seq_len": T, "batch_size": B}
            for mode, mult in (("forward", 1.0), ("forward_backward", 3.0)):
                if name == "baseline" and T == 512 and mode == "forward_backward":
                    pt[mode] = {"status": "oom", "error": "CUDA out of memory"}
                    continue
                ms = mult * (0.002 * T if quad else 0.4 + 0.0003 * T) * (1 + (scope == "block"))
                pt[mode] = {"status": "ok", "ms_p50": ms, "ms_p90": ms * 1.1, "ms_min": ms * 0.9,
                            "tflops": 1.5 if scope == "attention" else None,
                            "peak_allocated_bytes": (T * T * 64 if quad else T * 4096) if gpu else None,
                            "peak_rss_bytes": 10**9, "gpu_j_per_call": 0.3 if gpu else None,
                            **({"energy_window_s": 2.0, "calls_in_energy_window": 400, "gpu_w": 60.0} if gpu else {}),
                            "kernel": "k"}
            points.append(pt)
    unav = {} if gpu else {"points.gpu_j_per_call": "no GPU: CPU run"}
    prov = _prov(gpu)
    if name == "linear":
        prov["git_commit"] = None  # a run from a checkout without .git
    return {"schema": "attnbench.sweep/1", "variant": name, "status": "ok",
            "dtype": "bfloat16" if gpu else "float32", "tokens_per_call": 1024,
            "flop_convention": "causal pairs only", "points": points, "unavailable": unav,
            "provenance": prov, **({"job": job_times(i, "sweep")} if gpu else {})}


def write_fixture(root: Path, gpu: bool = True) -> dict:
    root = Path(root)
    train, probe, sweep = [], [], []
    for i, name in enumerate(VARIANTS):
        params = {"n_kv_head": 2, "note": XSS} if name == "gqa" else ({"chunk_size": 32} if name in ("linear", "lsh") else {})
        doc = train_doc(name, i, gpu, params=params, failed=(name == "lsh"), no_energy=(name == "linear"))
        tdir = root / "train" / name
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / "metrics.json").write_text(json.dumps(doc, indent=1))
        if doc["status"] == "ok":
            (tdir / "steps.csv").write_text(steps_csv(doc))
        if gpu and name not in ("linear",):
            (tdir / "power_train.csv").write_text(power_csv(i))
        elif not gpu:
            (tdir / "power_train.csv").write_text("t_s,power_w,energy_mj,sm_clock_mhz,util_pct,mem_used_bytes,temp_c\n")
        train.append(tdir / "metrics.json")
        for kind, d in (("probe", probe_doc(name, i, gpu, doc)), ("sweep", sweep_doc(name, i, gpu))):
            p = root / kind / name / f"{kind}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(d, indent=1))
            (probe if kind == "probe" else sweep).append(p)
    stats = {"source_file": "data/raw/chitchat.jsonl", "mode": "pack", "max_len": 128, "val_fraction": 0.05,
             "seed": 1337, "tokenizer": "offline", "vocab_size": 50257, "eos_id": 50256, "conversations": 400,
             "skipped_rows": 0, "bad_rows": [], "truncated_conversations": 17, "train_conversations": 380,
             "train_tokens": 41234, "val_conversations": 20, "val_tokens": 2101}
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    (root / "tokens" / "stats.json").write_text(json.dumps(stats))
    config = {"run_name": "fixture", "seed": 1337, "device": "auto" if gpu else "cpu",
              "data": {"dataset": "chitchat", "max_len": 128, "mode": "pack"},
              "model": {"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 256, "vocab_size": 50304},
              "train": {"batch_size": 8, "seq_len": 128, "steps": 40, "warmup_steps": 4},
              "variants": {"baseline": {}, "gqa": {"n_kv_head": 2, "note": XSS}, "linear": {"chunk_size": 32},
                           "lsh": {"chunk_size": 32}}}
    return {"train": train, "probe": probe, "sweep": sweep, "stats": root / "tokens" / "stats.json",
            "config": config}

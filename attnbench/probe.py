"""Inference probes of a trained variant: prefill latency and cached greedy decoding.

Eval mode under ``torch.inference_mode``; on CUDA the model is cast to bf16.  Prefill: one
forward over a prompt, timed over repeats after warm-up (synchronised wall clock).  Decode:
prefill the prompt into the variant's own cache (full KV, GQA's KV, a rolling window, the
linear-attention state, MLA's latent...), then generate ``decode_tokens`` greedily, one
synchronised timing per token; GPU energy from the NVML counter over the whole decode
window.  Correctness, in this process and at these shapes: before timing, ``impl="auto"`` is
resolved for each prefill shape by measuring the candidates here (forward only) and the
prefill logits are checked against a float32 copy of the model on the plain attention path
(``attnbench.selfcheck.logits_check``; a failure makes the probe a failed row with the
figures); after decoding, the cached decode's logits are compared with one full forward
over the same tokens.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attention.selection import prepare

from . import measure, selfcheck
from .model import build_model, load_weights
from .results import PROBE_SCHEMA, atomic_write_json, jsonable, provenance, tokens_identity, utc_now
from .settings import resolve_device


def prompt_tokens(tokens_dir, batch_size: int, length: int, device) -> torch.Tensor:
    """Real validation tokens as prompts (deterministic), shape (batch_size, length)."""
    arr = np.load(Path(tokens_dir) / "val.npy")
    flat = arr.reshape(-1).astype(np.int64)
    need = batch_size * length
    reps = -(-need // len(flat))
    flat = np.tile(flat, reps)[:need]
    return torch.from_numpy(flat).view(batch_size, length).to(device)


@torch.inference_mode()
def prefill_probe(model, tokens, device, repeats, warmup, kernel_check: bool = True) -> dict:
    """Resolve ``auto`` for this shape, check the logits, then time the forward."""
    dtype = next(model.parameters()).dtype
    x = torch.randn(*tokens.shape, model.config.n_embd, device=device, dtype=dtype)
    selection = prepare(model, tokens, x, dtype, backward=False)
    check = selfcheck.logits_check(model, tokens) if kernel_check else {"pass": None,
                                                                        "unavailable": "measure.kernel_check is off"}
    if check.get("pass") is False:
        raise selfcheck.KernelCheckFailed(
            f"kernel check of the prefill at batch {tokens.shape[0]} x {tokens.shape[1]} failed: logits rel. "
            f"error {check['out_rel_err']:.3g} (tolerance {check['tolerance']['out']:.2g}, kernel "
            f"{check['kernel']})", check)
    measure.reset_peak_memory(device)
    ms = measure.timed_calls(lambda: model(tokens), device, repeats, warmup)
    pct = measure.percentiles(ms)
    mem = measure.peak_memory(device)
    B, L = tokens.shape
    return {"batch_size": B, "prompt_len": L, "ms_p50": pct["p50"], "ms_p90": pct["p90"],
            "ms_min": pct["min"], "repeats": repeats, "tokens_per_s": B * L / (pct["p50"] / 1000),
            "peak_allocated_bytes": mem.get("peak_allocated_bytes"), "kernel": model.kernel(),
            "kernel_selection": selection, "kernel_check": check}


@torch.inference_mode()
def decode_probe(model, prompt, n_new: int, device, dtype, session, warmup: int) -> dict:
    """Greedy decoding with the cache; returns latency stats and the correctness check."""
    B, P = prompt.shape

    def generate(record: list | None):
        caches = model.init_caches(B, P + n_new, device, dtype)
        logits, _ = model(prompt, caches=caches)
        steps_logits = [logits[:, -1]]
        tok = logits[:, -1].argmax(-1, keepdim=True)
        out = [tok]
        for _ in range(n_new - 1):
            t0 = time.perf_counter() if record is not None else None
            logits, _ = model(tok, caches=caches)
            if record is not None:
                measure.synchronize(device)
                record.append(1000 * (time.perf_counter() - t0))
            steps_logits.append(logits[:, -1])
            tok = logits[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
        return torch.cat(out, dim=1), torch.stack(steps_logits, dim=1)

    for _ in range(warmup):
        generate(None)
    measure.reset_peak_memory(device)
    per_token: list[float] = []
    w = session.begin_window()
    generated, dec_logits = generate(per_token)
    ws = session.end_window(w, steps=n_new, tokens=B * n_new)
    step_kernel = model.kernel()     # the one-token steps' kernel, before the check's full forward
    mem = measure.peak_memory(device)
    # Correctness: one full forward over prompt + generated tokens must give the same logits.
    full = torch.cat([prompt, generated[:, :-1]], dim=1)
    ref_logits, _ = model(full)
    ref = ref_logits[:, P - 1:].float()
    diff = (dec_logits.float() - ref).abs().max().item()
    scale = ref.abs().max().item()
    pct = measure.percentiles(per_token)
    energy = ws.get("energy_j")
    return {
        "batch_size": B, "prompt_len": P, "new_tokens": n_new,
        "ms_per_token_p50": pct["p50"], "ms_per_token_p90": pct["p90"], "ms_per_token_min": pct["min"],
        "tokens_per_s": B / (pct["p50"] / 1000) if pct["p50"] else None,
        "window_seconds": ws["seconds"],
        "gpu_j_per_token": energy / (B * n_new) if energy is not None else None,
        "peak_allocated_bytes": mem.get("peak_allocated_bytes"),
        "cache_bytes": model.cache_bytes(B, P + n_new, dtype),
        "cache_vs_full_forward_max_abs_diff": diff, "logit_scale": scale,
        "cache_matches_full_forward": bool(diff <= 1e-3 * max(1.0, scale) if dtype == torch.float32
                                           else diff <= 5e-2 * max(1.0, scale)),
        "kernel": step_kernel,
    }


def run(settings: dict, train_dir, tokens_dir, out_path) -> dict[str, Any]:
    name, p = settings["name"], settings["probe"]
    device = resolve_device(settings["device"])
    result: dict[str, Any] = {"schema": PROBE_SCHEMA, "variant": name, "status": "ok",
                              "provenance": provenance(settings["seed"], settings, device),
                              "job": {"started_utc": utc_now()},
                              "data": {"tokens_sha256": tokens_identity(tokens_dir)}, "settings": settings}
    unavailable: dict[str, str] = {}
    metrics = json.loads((Path(train_dir) / "metrics.json").read_text())
    if metrics["status"] != "ok":
        result.update(status="skipped", reason=f"training failed: {metrics['failure']['message']}")
        result["unavailable"] = {"probe": result["reason"]}
        atomic_write_json(out_path, jsonable(result))
        return result
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    session = None
    try:
        model = build_model(settings, device)
        load_weights(model, Path(train_dir) / "model.safetensors")
        model = model.to(dtype).eval()
        block = model.config.block_size
        session = measure.session_from(settings["measure"], device, Path(out_path).parent, "probe", idle=False)
        session.start()
        prefill, decode = [], []
        for B in p["batch_sizes"]:
            for L in p["prompt_lens"]:
                tokens = prompt_tokens(tokens_dir, B, min(L, block), device)
                try:
                    prefill.append(prefill_probe(model, tokens, device, p["repeats"], p["warmup"],
                                                 settings["measure"]["kernel_check"]))
                except torch.OutOfMemoryError as err:
                    prefill.append({"batch_size": B, "prompt_len": L, "status": "oom", "error": str(err)[:300]})
                    torch.cuda.empty_cache()
            P = min(max(p["prompt_lens"]), block - p["decode_tokens"])
            try:
                decode.append(decode_probe(model, prompt_tokens(tokens_dir, B, P, device),
                                           p["decode_tokens"], device, dtype, session, p["warmup"]))
            except torch.OutOfMemoryError as err:
                decode.append({"batch_size": B, "prompt_len": P, "status": "oom", "error": str(err)[:300]})
                torch.cuda.empty_cache()
        summary = session.finish()
        session = None
        result["kernel"] = model.kernel()
        result["dtype"] = str(dtype).replace("torch.", "")
        result["prefill"], result["decode"] = prefill, decode
        result["cache_bytes_per_token"] = model.cache_bytes_per_token(torch.bfloat16)
        result["energy"] = summary.get("energy", {})
        result["emissions"] = summary.get("emissions", {})
        unavailable.update(summary.get("unavailable", {}))
        if device.type != "cuda":
            unavailable["decode.gpu_j_per_token"] = "no GPU: CPU run"
        result["decode_matches_full_forward"] = all(d.get("cache_matches_full_forward", False)
                                                    for d in decode if "status" not in d)
    except Exception as err:  # a probe that cannot run is a failed row, not a lost one
        if session is not None:
            session.finish()
        if isinstance(err, selfcheck.KernelCheckFailed):
            result.update(status="failed", failure={"kind": "kernel-check", "message": str(err)},
                          kernel_check=err.record)
        else:
            result.update(status="failed", failure={"kind": "error", "message": f"{type(err).__name__}: {err}"})
    result["unavailable"] = unavailable
    result["job"]["finished_utc"] = utc_now()
    atomic_write_json(out_path, jsonable(result))
    return result

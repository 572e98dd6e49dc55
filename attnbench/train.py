"""Train one GPT-2 with one attention variant and measure what it costs.

The step is kept free of host synchronisation: batches are indexed on the device, losses
land in a preallocated device tensor, and the host waits only at the edges of the timing
windows (where the energy counter is read and non-finite losses are detected).  Warm-up
steps (compilation, autotuning, allocator growth) run before the first window and are
reported separately.  Evaluation runs between windows, never inside one.

Failures (out of memory, a non-finite loss, any other error) end the run with a
``status: failed`` result naming the step and reason; the job still succeeds so the other
variants and the report go on, and ``failures.log`` (read by the workflow) makes the next
invocation retry the variant.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from . import measure
from .batches import TokenBatches
from .model import GPT, GPTConfig
from .results import TRAIN_SCHEMA, atomic_write_bytes, atomic_write_json, atomic_write_text, provenance
from .settings import register_user_class, resolve_device

FAULT_ENV = "ATTNBENCH_INJECT_FAULT"  # testing only: "<variant>:nan:<step>" or "<variant>:oom:<step>"


class TrainingFault(RuntimeError):
    def __init__(self, kind: str, message: str, step: int | None, **extra):
        super().__init__(message)
        self.kind, self.step, self.extra = kind, step, extra


def injected_fault(name: str) -> tuple[str, int] | None:
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, spec.split(",")):
        parts = item.split(":")
        if len(parts) == 3 and parts[0] == name and parts[1] in ("nan", "oom"):
            return parts[1], int(parts[2])
    return None


def build_model(settings: dict, device: torch.device) -> GPT:
    entry = settings["entry"]
    m = settings["model"]
    cfg = GPTConfig(n_layer=m["n_layer"], n_head=m["n_head"], n_embd=m["n_embd"],
                    block_size=m["block_size"], vocab_size=m["vocab_size"], dropout=m["dropout"],
                    bias=m["bias"], attention=register_user_class(entry),
                    attention_params=dict(entry["params"]))
    torch.manual_seed(settings["seed"])  # for any attention init outside init_weights
    return GPT(cfg, seed=settings["seed"]).to(device)


def lr_at(step: int, t: dict) -> float:
    """Linear warm-up then cosine decay to ``min_lr`` (nanoGPT schedule)."""
    if step < t["lr_warmup_steps"]:
        return t["lr"] * (step + 1) / t["lr_warmup_steps"]
    progress = (step - t["lr_warmup_steps"]) / max(1, t["steps"] - t["lr_warmup_steps"])
    return t["min_lr"] + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (t["lr"] - t["min_lr"])


def make_optimizer(model: GPT, t: dict, device: torch.device):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=t["lr"], betas=(t["beta1"], t["beta2"]), fused=fused), fused


def autocast_ctx(device: torch.device, dtype: str):
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_dtype(requested: str, device: torch.device) -> str:
    if requested == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    return requested


def evaluate(model, val: TokenBatches, n_batches: int, device, dtype: str) -> float:
    """Mean validation loss over ``n_batches`` fixed batches.

    With dropout 0, train and eval mode compute the same function, so a compiled model is
    evaluated through its training graph (forward only, no backward): eval mode or no_grad
    would make torch.compile build a second graph (tens of seconds per variant).
    """
    reuse_graph = hasattr(model, "_orig_mod") and model._orig_mod.config.dropout == 0.0
    order = val.order(min(n_batches, max(1, val.n_items // val.batch_size)))
    total = torch.zeros((), device=device)
    if not reuse_graph:
        model.eval()
    with torch.enable_grad() if reuse_graph else torch.no_grad():
        for i in range(order.shape[0]):
            x, y = val.batch(order[i])
            with autocast_ctx(device, dtype):
                _, loss = model(x, y)
            total += loss.detach().float()
    model.train()
    return (total / order.shape[0]).item()


def should_compile(t: dict, device: torch.device) -> bool:
    return t["compile"] == "on" or (t["compile"] == "auto" and device.type == "cuda")


def run(settings: dict, tokens_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Train and write ``metrics.json``, ``steps.csv``, ``model.safetensors`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name, t = settings["name"], settings["train"]
    device = resolve_device(settings["device"])
    dtype = resolve_dtype(t["dtype"], device)
    unavailable: dict[str, str] = {}
    result: dict[str, Any] = {
        "schema": TRAIN_SCHEMA, "variant": name, "status": "ok", "failure": None,
        "attention": {"name": settings["entry"]["class"] or settings["entry"]["variant"],
                      "params": settings["entry"]["params"]},
        "provenance": provenance(settings["seed"], settings, device),
    }
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    session = None
    step = None
    try:
        model = build_model(settings, device)
        cfg = model.config
        B, T = t["batch_size"], t["seq_len"]
        train_data = TokenBatches(tokens_dir, "train", settings["data"]["mode"], B, T, settings["seed"], device)
        val_data = TokenBatches(tokens_dir, "val", settings["data"]["mode"], B, T, settings["seed"] + 1, device)
        result["model"] = {
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
            "vocab_size": cfg.vocab_size, "block_size": cfg.block_size,
            "params_total": model.num_params(), "params_attention": model.attention_params(),
            "params_non_embedding": model.num_params(non_embedding=True),
            "cache_bytes_per_token": model.cache_bytes_per_token(torch.bfloat16),
            "cache_bytes_at_seq_len": model.cache_bytes(1, T, torch.bfloat16),
        }
        # FLOPs: analytic, plus one counted forward+backward outside any timed window.
        torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        analytic = measure.model_flops(model, B, T)
        counted = (measure.count_flops(model, B, T, device, dtype=torch_dtype if dtype == "bfloat16" else None,
                                       analytic=analytic)
                   if settings["measure"]["count_flops"] else None)
        model.zero_grad(set_to_none=True)
        optimizer, fused = make_optimizer(model, t, device)
        step_model, compiled, compile_error = model, False, None
        if should_compile(t, device):
            step_model, compiled = torch.compile(model), True
        order = train_data.order(t["steps"])
        losses = torch.full((t["steps"],), float("nan"), device=device)
        fault = injected_fault(name)

        def train_step(i: int) -> None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(i, t)
            x, y = train_data.batch(order[i])
            with autocast_ctx(device, dtype):
                _, loss = step_model(x, y)
            if fault and fault[0] == "nan" and i >= fault[1]:
                loss = loss * float("nan")
            if fault and fault[0] == "oom" and i >= fault[1]:
                raise torch.OutOfMemoryError(f"injected out-of-memory fault ({FAULT_ENV}) at step {i}")
            loss.backward()
            if t["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[i] = loss.detach()

        def check_finite(lo: int, hi: int) -> None:
            window = losses[lo:hi]
            if not bool(torch.isfinite(window).all()):
                bad = lo + int((~torch.isfinite(window)).nonzero()[0].item())
                raise TrainingFault("nan", f"non-finite loss {losses[bad].item()} at step {bad}", bad,
                                    loss=str(losses[bad].item()))

        m = settings["measure"]
        session = measure.MeasurementSession(
            device, out_dir, nvml=m["nvml"], sample_interval_s=m["sample_interval_s"],
            codecarbon=m["codecarbon"], country_iso_code=m["country_iso_code"],
            idle_seconds=m["idle_seconds"], peak_tflops=m["peak_tflops"], label="train")
        session.start()
        model.train()
        measure.reset_peak_memory(device)
        # Warm-up: compilation and autotuning happen here; timed separately.  A variant that
        # torch.compile cannot handle falls back to eager from fresh weights (recorded).
        t0 = time.perf_counter()
        try:
            for step in range(t["warmup_steps"]):
                train_step(step)
        except Exception as err:
            if not compiled or isinstance(err, torch.OutOfMemoryError):
                raise
            compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            model = build_model(settings, device)
            optimizer, fused = make_optimizer(model, t, device)
            step_model, compiled = model, False
            losses.fill_(float("nan"))
            for step in range(t["warmup_steps"]):
                train_step(step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        warmup_s = time.perf_counter() - t0
        check_finite(0, t["warmup_steps"])
        step = t["warmup_steps"]
        measure.reset_peak_memory(device)
        eval_points = set(range(t["eval_every"], t["steps"], t["eval_every"])) if t["eval_every"] else set()
        val_history = []
        windows = []
        step_ms_per_step: list[float] = []
        progress = _progress(t["steps"], name)
        progress.update(t["warmup_steps"])
        while step < t["steps"]:
            hi = min(step + t["timing_window"], t["steps"])
            nxt = [p for p in eval_points if step < p < hi]
            if nxt:
                hi = min(nxt)
            w = session.begin_window()
            for i in range(step, hi):
                train_step(i)
            ws = session.end_window(w, steps=hi - step, tokens=(hi - step) * B * T)
            windows.append({"first_step": step, "steps": hi - step, "seconds": ws["seconds"],
                            "energy_j": ws.get("energy_j")})
            step_ms_per_step.extend([1000 * ws["seconds"] / (hi - step)] * (hi - step))
            check_finite(step, hi)
            progress.update(hi - step)
            step = hi
            if step in eval_points:
                val_history.append({"step": step, "val_loss": evaluate(step_model, val_data, t["eval_batches"], device, dtype)})
        progress.close()
        mem = measure.peak_memory(device)
        energy_summary = session.finish()
        session = None
        final_val = evaluate(step_model, val_data, t["eval_batches"], device, dtype)
        val_history.append({"step": t["steps"], "val_loss": final_val})

        loss_values = losses.cpu().tolist()
        timed_steps = t["steps"] - t["warmup_steps"]
        timed_s = sum(w_["seconds"] for w_ in windows)
        per_step_ms = [1000 * w_["seconds"] / w_["steps"] for w_ in windows]
        result["kernel"] = model.kernel()
        result["training"] = {
            "steps": t["steps"], "warmup_steps": t["warmup_steps"], "timed_steps": timed_steps,
            "batch_size": B, "seq_len": T, "tokens_per_step": B * T, "tokens_trained": t["steps"] * B * T,
            "final_train_loss": _mean_tail(loss_values, 10), "val_loss": final_val,
            "val_history": val_history, "lr": t["lr"], "dtype": dtype, "compiled": compiled,
            "fused_adamw": fused, "device": str(device),
        }
        pct = measure.percentiles(per_step_ms)
        result["timing"] = {
            "step_ms_p50": pct["p50"], "step_ms_p90": pct["p90"], "step_ms_min": pct["min"],
            "step_ms_max": pct["max"], "n_windows": pct["n"],
            "tokens_per_s": timed_steps * B * T / timed_s if timed_s > 0 else None,
            "warmup_s": warmup_s, "timed_s": timed_s, "windows": windows,
            "method": ("synchronised wall clock over windows of up to "
                       f"{t['timing_window']} steps; per-step figures are window means"),
        }
        result["memory"] = {k: v for k, v in mem.items() if k != "unavailable"}
        unavailable.update({f"memory.{k}": v for k, v in mem.get("unavailable", {}).items()})
        energy, emissions, e_unavail = _split_summary(energy_summary)
        result["energy"], result["emissions"] = energy, emissions
        unavailable.update(e_unavail)
        flops, flops_unavailable = measure.flops_section(
            analytic, counted, timed_s / timed_steps if timed_steps else None, device,
            peak_tflops=settings["measure"]["peak_tflops"], dtype=torch_dtype)
        result["flops"] = flops
        unavailable.update(flops_unavailable)
        _write_steps_csv(out_dir / "steps.csv", loss_values, step_ms_per_step, t["warmup_steps"], B * T)
        _save_weights(model, out_dir / "model.safetensors")
        result["model"]["bytes_on_disk"] = (out_dir / "model.safetensors").stat().st_size
    except Exception as err:  # recorded, not raised: see module docstring
        if session is not None:
            with contextlib.suppress(Exception):
                session.finish()
        result["status"] = "failed"
        result["failure"] = _describe_failure(err, step, device)
        with open(out_dir / "failures.log", "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {result['failure']['kind']}: "
                     f"{result['failure']['message']}\n")
        for stale in ("steps.csv", "model.safetensors"):
            with contextlib.suppress(FileNotFoundError):
                (out_dir / stale).unlink()
    result["unavailable"] = unavailable
    atomic_write_json(out_dir / "metrics.json", _jsonable(result))
    return result


def _describe_failure(err: BaseException, step, device) -> dict:
    if isinstance(err, TrainingFault):
        return {"kind": err.kind, "message": str(err), "step": err.step, **err.extra}
    info: dict[str, Any] = {"kind": "error", "message": f"{type(err).__name__}: {err}", "step": step,
                            "traceback": traceback.format_exc(limit=8)}
    if isinstance(err, torch.OutOfMemoryError):
        info["kind"] = "oom"
        if device.type == "cuda":
            info["allocator"] = {"allocated_bytes": torch.cuda.memory_allocated(),
                                 "reserved_bytes": torch.cuda.memory_reserved(),
                                 "max_allocated_bytes": torch.cuda.max_memory_allocated()}
    return info


def _split_summary(summary: dict) -> tuple[dict, dict, dict]:
    energy = dict(summary.get("energy", {}))
    emissions = dict(summary.get("emissions", {}))
    return energy, emissions, dict(summary.get("unavailable", {}))


def _mean_tail(values: list[float], n: int) -> float | None:
    tail = [v for v in values[-n:] if math.isfinite(v)]
    return sum(tail) / len(tail) if tail else None


def _write_steps_csv(path: Path, losses, ms, warmup: int, tokens_per_step: int) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "loss", "window_ms_per_step", "tokens", "phase"])
    for i, loss in enumerate(losses):
        timed = i >= warmup
        w.writerow([i, f"{loss:.6f}", f"{ms[i - warmup]:.4f}" if timed else "", tokens_per_step,
                    "timed" if timed else "warmup"])
    atomic_write_text(path, buf.getvalue())


def _save_weights(model: GPT, path: Path) -> None:
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    atomic_write_bytes(path, save(state, metadata={"config": repr(model.config.to_dict())}))


def load_weights(model: GPT, path: str | Path) -> None:
    """Load ``model.safetensors`` (safetensors only: no pickle)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)


def _progress(total: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"train {name}", unit="step", mininterval=5.0)


def _jsonable(obj):
    """Replace non-finite floats by None (JSON has no NaN) — non-finite values are failures."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj

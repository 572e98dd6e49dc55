"""Train one GPT-2 with one attention variant and measure what it costs.

The run, in order (``run``): build the model; resolve ``impl="auto"`` kernels by measuring
them on this device at the job's shape (``attention.selection.prepare``); compile; **check the
kernels** in this process at this shape against the float32 reference path
(``attnbench.selfcheck``: a failure is a failed row with the figures, and nothing trains);
warm-up steps (compilation and autotuning finish here; timed separately); timed windows;
final evaluation; the kernel check again with the trained weights; the FlopCounterMode
cross-check last, so that its eager backward never runs before a training step.

The step is kept free of host synchronisation: batches are indexed on the device, losses
land in a preallocated device tensor, and the host waits only at the edges of the timing
windows (where the energy counter is read and non-finite losses are detected).  Evaluation
and checkpoints run between windows, never inside one.

Failures (out of memory, a non-finite loss, a kernel check, any other error) end the run
with a ``status: failed`` result naming the step and reason; the job still succeeds so the
other variants and the report go on, and ``failures.log`` (read by the workflow) makes the
next invocation retry the variant.  Interruptions are not failures: SIGTERM/SIGHUP stop the
run at the next step boundary (writing a checkpoint there when checkpoints are on, see
``attnbench.checkpoint``) and raise :class:`attnbench.interrupt.Interrupted`; no
``metrics.json`` is written, so Snakemake runs the job again.  Every file is written under a
temporary name and renamed.

Result fields added beyond ``attnbench.results``' schema: ``kernel_selection`` (what
``auto`` measured and chose), ``kernel_check`` ({method, start, end}), ``training.checkpoints``,
``training.resumed_from_step``, ``training.resumes``, ``training.compile_error``,
``timing.windows[].energy_error``, ``failure.allocator`` (out of memory), ``emissions.resumed_part``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attention.selection import KernelCheckError, attention_modules, preserved_state, prepare

from . import checkpoint, measure, selfcheck
from .batches import TokenBatches
from .interrupt import Interrupted, interruptible
from .model import GPT, build_model, weights_bytes
from .results import TRAIN_SCHEMA, atomic_write_bytes, atomic_write_json, atomic_write_text, jsonable, provenance
from .settings import RUNTIME_TRAIN_KEYS, STAGE_KEYS, ConfigError, resolve_device

FAULT_ENV = "ATTNBENCH_INJECT_FAULT"  # testing only: "<variant>:nan:<step>" or "<variant>:oom:<step>"
CHECKPOINT = checkpoint.FILENAME
OUTPUTS = ("metrics.json", "steps.csv", "model.safetensors")


class TrainingFault(RuntimeError):
    def __init__(self, kind: str, message: str, step: int | None, **extra):
        super().__init__(message)
        self.kind, self.step, self.extra = kind, step, extra


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


def computes_baseline(entry: dict, seq_len: int) -> bool:
    """Whether the variant computes baseline's function at this length (``is_exact`` of its
    class, or a class attribute ``exact``): the report then checks its loss curve against
    baseline's (``attnbench.report.agreement``)."""
    import attention

    cls = attention.VARIANTS[attention.registry_name(entry)]
    if hasattr(cls, "is_exact") and hasattr(cls, "resolve_params"):
        return bool(cls.is_exact(cls.resolve_params(dict(entry["params"])), seq_len))
    return bool(getattr(cls, "exact", False))


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


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[requested]


def autocast_ctx(device: torch.device, dtype: torch.dtype):
    if dtype == torch.bfloat16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate(model, val: TokenBatches, n_batches: int, device, dtype: torch.dtype) -> float:
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


@dataclass
class Job:
    """What :func:`setup` builds and the phases of :func:`run` share."""

    settings: dict
    out_dir: Path
    device: torch.device
    dtype: torch.dtype
    model: GPT
    train_data: TokenBatches
    val_data: TokenBatches
    fault: tuple[str, int] | None
    checkpoint_every: int = 0
    step_model: Any = None
    compiled: bool = False
    compile_error: str | None = None
    optimizer: Any = None
    fused: bool = False
    order: Any = None
    losses: Any = None
    warmup_s: float = 0.0
    resumed_from: int | None = None
    step: int | None = None   # the step running now (a failure names it)
    progress: dict = field(default_factory=lambda: {"windows": [], "step_ms_per_step": [], "val_history": [],
                                                    "checkpoints": 0, "checkpoint_s": 0.0})

    @property
    def t(self) -> dict:
        return self.settings["train"]

    @property
    def tokens_per_step(self) -> int:
        return self.t["batch_size"] * self.t["seq_len"]

    def train_step(self, i: int) -> None:
        self.step = i
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(i, self.t)
        x, y = self.train_data.batch(self.order[i])
        with autocast_ctx(self.device, self.dtype):
            _, loss = self.step_model(x, y)
        if self.fault and self.fault[0] == "nan" and i >= self.fault[1]:
            loss = loss * float("nan")
        if self.fault and self.fault[0] == "oom" and i >= self.fault[1]:
            raise torch.OutOfMemoryError(f"injected out-of-memory fault ({FAULT_ENV}) at step {i}")
        loss.backward()
        if self.t["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t["grad_clip"])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses[i] = loss.detach()

    def check_finite(self, lo: int, hi: int) -> None:
        window = self.losses[lo:hi]
        if not bool(torch.isfinite(window).all()):
            bad = lo + int((~torch.isfinite(window)).nonzero()[0].item())
            raise TrainingFault("nan", f"non-finite loss {self.losses[bad].item()} at step {bad}", bad,
                                loss=str(self.losses[bad].item()))

    def check_batch(self):
        """The kernel check's batch: the first validation batch (fixed; never trained on)."""
        return self.val_data.batch(self.val_data.order(1)[0])


def run(settings: dict, tokens_dir: str | Path, out_dir: str | Path, *, checkpoint_every: int | None = None,
        resume: bool = True) -> dict[str, Any]:
    """Train and write ``metrics.json``, ``steps.csv``, ``model.safetensors`` into ``out_dir``.

    ``checkpoint_every`` / ``resume`` are runtime-only (``attnbench.settings.RUNTIME_TRAIN_KEYS``):
    they reach the job on its command line, never in its settings.  Raises
    :class:`Interrupted` on SIGTERM/SIGHUP, writing nothing but (optionally) a checkpoint.
    """
    _check_settings(settings)
    for split in ("train", "val"):  # bad input, not a variant failure: raise before any result
        if not (Path(tokens_dir) / f"{split}.npy").is_file():
            raise FileNotFoundError(errno.ENOENT, "tokenized split not found", str(Path(tokens_dir) / f"{split}.npy"))
    ckpt_every = int(checkpoint_every or 0)
    if ckpt_every < 0:
        raise ConfigError(f"train.checkpoint_every={ckpt_every} must be >= 0")
    out_dir = Path(out_dir)
    name = settings["name"]
    fault = injected_fault(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale(out_dir)
    device = resolve_device(settings["device"])
    dtype = resolve_dtype(settings["train"]["dtype"], device)
    ckpt_path = out_dir / CHECKPOINT
    identity = checkpoint.identity(settings, device, str(dtype).replace("torch.", ""))
    if not resume:
        with contextlib.suppress(FileNotFoundError):
            ckpt_path.unlink()
    result: dict[str, Any] = {
        "schema": TRAIN_SCHEMA, "variant": name, "status": "ok", "failure": None,
        "attention": {"name": settings["entry"]["class"] or settings["entry"]["variant"],
                      "params": settings["entry"]["params"],
                      "exact": computes_baseline(settings["entry"], settings["train"]["seq_len"])},
        "provenance": provenance(settings["seed"], settings, device),
        "kernel_check": {"method": selfcheck.METHOD},
    }
    unavailable: dict[str, str] = {}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    session = bar = job = None
    with interruptible() as guard:
        try:
            job = setup(settings, tokens_dir, out_dir, device, dtype, fault, result)
            job.checkpoint_every = ckpt_every
            ckpt = checkpoint.read(ckpt_path, identity, job.t["steps"]) if resume else None
            if ckpt is not None:
                checkpoint.restore(ckpt, job.model, job.optimizer, job.losses, device)
                job.resumed_from = ckpt["state"]["step"]
                job.warmup_s = ckpt["state"]["warmup_s"]
                job.progress = {k: ckpt["state"][k] for k in job.progress}
                job.progress["resumes"] = ckpt["state"].get("resumes", []) + [{"step": job.resumed_from}]
            check_kernels(job, result, "start")
            session = measure.session_from(settings["measure"], device, out_dir, "train")
            session.start()
            measure.reset_peak_memory(device)
            step = warm_up(job) if ckpt is None else job.resumed_from
            job.step = step
            measure.reset_peak_memory(device)
            bar = _progress(job.t["steps"], name)
            bar.update(step)

            def save_checkpoint(at: int) -> None:
                c0 = time.perf_counter()
                job.progress["checkpoints"] += 1
                state = {**job.progress, "step": at, "identity": identity, "warmup_s": job.warmup_s,
                         "compiled": job.compiled, "compile_error": job.compile_error, "saved_at": time.time()}
                checkpoint.write(ckpt_path, job.model, job.optimizer, job.losses, state, device)
                job.progress["checkpoint_s"] += time.perf_counter() - c0

            step = timed_loop(job, session, guard, bar, step, ckpt_every, save_checkpoint)
            bar.close()
            bar = None
            mem = measure.peak_memory(device)
            summary = session.finish()
            session = None
            final_val = evaluate(job.step_model, job.val_data, job.t["eval_batches"], device, dtype)
            job.progress["val_history"].append({"step": job.t["steps"], "val_loss": final_val})
            result["kernel"] = job.model.kernel()
            check_kernels(job, result, "end")
            assemble(job, result, unavailable, summary, mem)
            _write_steps_csv(out_dir / "steps.csv", job.losses.cpu().tolist(), job.progress["step_ms_per_step"],
                             job.t["warmup_steps"], job.tokens_per_step)
            atomic_write_bytes(out_dir / "model.safetensors", weights_bytes(job.model))
            result["model"]["bytes_on_disk"] = (out_dir / "model.safetensors").stat().st_size
        except Exception as err:  # recorded, not raised: see module docstring
            _stop(bar, session)
            session = bar = None
            result["status"] = "failed"
            result["failure"] = _describe_failure(err, None if job is None else job.step, device)
            with open(out_dir / "failures.log", "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {result['failure']['kind']}: "
                         f"{result['failure']['message']}\n")
            for stale in ("steps.csv", "model.safetensors"):
                with contextlib.suppress(FileNotFoundError):
                    (out_dir / stale).unlink()
        except BaseException:  # interrupted: no result, nothing under a final name
            _stop(bar, session)
            raise
        result["unavailable"] = unavailable
        atomic_write_json(out_dir / "metrics.json", jsonable(result))
    if result["status"] == "ok":
        with contextlib.suppress(FileNotFoundError):
            ckpt_path.unlink()
    return result


def setup(settings, tokens_dir, out_dir, device, dtype, fault, result) -> Job:
    """Model, data, kernel choice (``auto`` measured here), optimizer, compilation."""
    t = settings["train"]
    B, T = t["batch_size"], t["seq_len"]
    model = build_model(settings, device)
    job = Job(settings=settings, out_dir=out_dir, device=device, dtype=dtype, model=model, fault=fault,
              train_data=TokenBatches(tokens_dir, "train", settings["data"]["mode"], B, T, settings["seed"], device),
              val_data=TokenBatches(tokens_dir, "val", settings["data"]["mode"], B, T, settings["seed"] + 1, device))
    cfg = model.config
    result["model"] = {
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
        "vocab_size": cfg.vocab_size, "block_size": cfg.block_size,
        "params_total": model.num_params(), "params_attention": model.attention_params(),
        "params_non_embedding": model.num_params(non_embedding=True),
        "cache_bytes_per_token": model.cache_bytes_per_token(torch.bfloat16),
        "cache_bytes_at_seq_len": model.cache_bytes(1, T, torch.bfloat16),
    }
    model.train()
    x, _ = job.check_batch()
    try:
        result["kernel_selection"] = prepare(model, x, torch.randn(B, T, cfg.n_embd, device=device), dtype)
    except KernelCheckError as err:
        result["kernel_selection"] = [err.record]
        raise TrainingFault("kernel-check", f"kernel check before training failed: {err}", None) from None
    job.optimizer, job.fused = make_optimizer(model, t, device)
    job.step_model = model
    if should_compile(t, device):
        job.step_model, job.compiled = torch.compile(model), True
    job.order = job.train_data.order(t["steps"])
    job.losses = torch.full((t["steps"],), float("nan"), device=device)
    return job


def check_kernels(job: Job, result: dict, phase: str) -> None:
    """The kernel check (``attnbench.selfcheck``); the start check also compiles the model and
    falls back to eager (recorded) if torch.compile cannot handle the variant."""
    x, y = job.check_batch()
    if not job.settings["measure"]["kernel_check"]:
        result["kernel_check"][phase] = {"pass": None, "unavailable": "measure.kernel_check is off"}
        if phase == "start" and job.resumed_from is not None:  # compile outside the timed windows
            selfcheck.forward_backward(job.model, job.step_model, x, y, job.dtype)
        return
    try:
        record = selfcheck.check(job.model, job.step_model, x, y, job.dtype, phase=phase)
    except (torch.OutOfMemoryError, TrainingFault):
        raise
    except Exception as err:
        if not job.compiled or phase != "start":
            raise
        job.compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        job.step_model, job.compiled = job.model, False
        record = selfcheck.check(job.model, job.step_model, x, y, job.dtype, phase=phase)
    result["kernel_check"][phase] = record
    if record["pass"] is False:
        raise TrainingFault("kernel-check", selfcheck.failure_message(record), None if phase == "start"
                            else job.t["steps"])


def warm_up(job: Job) -> int:
    """Untimed steps: compilation and autotuning finish here.  A compiled model that fails here
    falls back to eager from fresh weights (recorded in ``training.compile_error``)."""
    t0 = time.perf_counter()
    try:
        for step in range(job.t["warmup_steps"]):
            job.train_step(step)
    except Exception as err:
        if not job.compiled or isinstance(err, torch.OutOfMemoryError):
            raise
        job.compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        fresh = build_model(job.settings, job.device)
        job.model.load_state_dict(fresh.state_dict())
        job.optimizer, job.fused = make_optimizer(job.model, job.t, job.device)
        job.step_model, job.compiled = job.model, False
        job.losses.fill_(float("nan"))
        for step in range(job.t["warmup_steps"]):
            job.train_step(step)
    measure.synchronize(job.device)
    job.warmup_s = time.perf_counter() - t0
    job.check_finite(0, job.t["warmup_steps"])
    return job.t["warmup_steps"]


def timed_loop(job: Job, session, guard, bar, step: int, ckpt_every: int, save_checkpoint) -> int:
    """Timed windows of up to ``timing_window`` steps, cut at eval points; evaluation and
    checkpoints between windows.  Returns the last step."""
    t = job.t
    eval_points = set(range(t["eval_every"], t["steps"], t["eval_every"])) if t["eval_every"] else set()
    last_ckpt = step
    with guard.defer():
        while step < t["steps"]:
            hi = min(step + t["timing_window"], t["steps"], *[p for p in eval_points if p > step])
            w = session.begin_window()
            for i in range(step, hi):
                job.train_step(i)
                if guard.pending is not None:  # stop at this step boundary
                    hi = i + 1
                    break
            ws = session.end_window(w, steps=hi - step, tokens=(hi - step) * job.tokens_per_step)
            job.progress["windows"].append({
                "first_step": step, "steps": hi - step, "tokens": (hi - step) * job.tokens_per_step,
                "seconds": ws.seconds, "energy_j": ws.energy_j,
                **({"energy_error": ws.error} if ws.energy_j is None and ws.error else {})})
            job.progress["step_ms_per_step"].extend([1000 * ws.seconds / (hi - step)] * (hi - step))
            job.check_finite(step, hi)
            bar.update(hi - step)
            step = hi
            if step in eval_points:
                job.progress["val_history"].append({"step": step, "val_loss": evaluate(
                    job.step_model, job.val_data, t["eval_batches"], job.device, job.dtype)})
            if guard.pending is not None:
                saved = ckpt_every > 0 and step < t["steps"]
                if saved:
                    save_checkpoint(step)
                raise Interrupted(guard.pending, f"stopped at step {step} of {t['steps']}; "
                                  + (f"checkpoint saved, the next run resumes from step {step}" if saved
                                     else "no checkpoint (train.checkpoint_every = 0)"))
            if ckpt_every > 0 and step - last_ckpt >= ckpt_every and step < t["steps"]:
                save_checkpoint(step)
                last_ckpt = step
    return step


def assemble(job: Job, result: dict, unavailable: dict, summary: dict, mem: dict) -> None:
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
        "compiled": job.compiled, "fused_adamw": job.fused, "device": str(job.device),
        "checkpoints": {"every": job.checkpoint_every, "saved": job.progress["checkpoints"],
                        "seconds": job.progress["checkpoint_s"]},
        "resumed_from_step": job.resumed_from, "resumes": job.progress.get("resumes", []),
    }
    if job.compile_error:
        result["training"]["compile_error"] = job.compile_error
    pct = measure.percentiles([1000 * w["seconds"] / w["steps"] for w in windows])
    result["timing"] = {
        "step_ms_p50": pct["p50"], "step_ms_p90": pct["p90"], "step_ms_min": pct["min"],
        "step_ms_max": pct["max"], "n_windows": pct["n"],
        "tokens_per_s": timed_steps * B * T / timed_s if timed_s > 0 else None,
        "warmup_s": job.warmup_s, "timed_s": timed_s, "windows": windows,
        "method": f"synchronised wall clock over windows of up to {t['timing_window']} steps; per-step "
                  "figures are window means",
    }
    result["memory"] = {k: v for k, v in mem.items() if k != "unavailable"}
    unavailable.update({f"memory.{k}": v for k, v in mem.get("unavailable", {}).items()})
    energy, emissions = dict(summary.get("energy", {})), dict(summary.get("emissions", {}))
    unavailable.update(summary.get("unavailable", {}))
    if job.resumed_from is not None:  # the session saw only this process's windows: sum all of them
        totals, why = measure.energy_totals(windows, energy.get("idle_w"))
        energy.update(totals)
        unavailable.update(why)
        _emissions_of_resumed_run(emissions, unavailable, job.resumed_from, t["steps"])
    result["energy"], result["emissions"] = energy, emissions
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


def _check_settings(settings: Any) -> None:
    if not isinstance(settings, dict):
        raise ConfigError("settings must be a JSON object (the train settings of one variant)")
    missing = [k for k in STAGE_KEYS["train"] if k not in settings]
    if missing:
        raise ConfigError(f"settings lack key(s) {', '.join(missing)} (expected attnbench.settings.stage_settings)")
    extra = [k for k in RUNTIME_TRAIN_KEYS if k in settings["train"]]
    if extra:
        raise ConfigError(f"train settings hold runtime-only key(s) {', '.join(extra)}: pass them as arguments")


def _clear_stale(out_dir: Path) -> None:
    """Remove a previous run's outputs and temporary files left by a killed write: a run that
    is interrupted must not leave an older ``metrics.json`` looking like its result."""
    for name in OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
    for tmp in out_dir.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _stop(bar, session) -> None:
    if bar is not None:
        bar.close()  # ends the bar's line: the CLI's one-line message stands alone
    if session is not None:
        with contextlib.suppress(Exception):
            session.finish()


def _describe_failure(err: BaseException, step, device) -> dict:
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


def _write_steps_csv(path: Path, losses, ms, warmup: int, tokens_per_step: int) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["step", "loss", "window_ms_per_step", "tokens", "phase"])
    for i, loss in enumerate(losses):
        timed = i >= warmup
        w.writerow([i, f"{loss:.6f}", f"{ms[i - warmup]:.4f}" if timed else "", tokens_per_step,
                    "timed" if timed else "warmup"])
    atomic_write_text(path, buf.getvalue())


def _progress(total: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"train {name}", unit="step", mininterval=5.0)

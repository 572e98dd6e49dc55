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
temporary name and renamed.  The result document is described in ``attnbench.results``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attention import computes_baseline
from attention.selection import KernelCheckError, prepare

from . import checkpoint, measure, selfcheck
from .batches import TokenBatches
from .interrupt import Interrupted, interruptible
from .model import GPT, build_model, weights_bytes
from .optim import (autocast_ctx, begin_step, compile_model, cudagraph_skips, lr_at, make_optimizer,
                    replays_graphs, resolve_dtype, should_compile)
from .results import (TRAIN_SCHEMA, atomic_write_bytes, atomic_write_json, jsonable, provenance_and_job,
                      tokens_identity, utc_now)
from .settings import ConfigError, check_stage_settings, resolve_device
from .train_result import FAULT_ENV, TrainingFault, assemble, injected_fault, record_failure, write_steps_csv

CHECKPOINT = checkpoint.FILENAME
OUTPUTS = ("metrics.json", "steps.csv", "model.safetensors")


def evaluate(model, val: TokenBatches, n_batches: int, device, dtype: torch.dtype) -> float:
    """Mean validation loss over ``n_batches`` fixed batches.

    With dropout 0, train and eval mode compute the same function, so a compiled model is
    evaluated through its training graph (forward only, no backward): eval mode or no_grad
    would make torch.compile build a second graph (tens of seconds per variant).  Not a training
    step: per-step state is not advanced (LSH hashes every evaluation batch with the last
    training step's rotations there, with its fixed eval rotations when evaluated eagerly; either
    way the training stream goes on as if no evaluation had run).
    """
    reuse_graph = hasattr(model, "_orig_mod") and model._orig_mod.config.dropout == 0.0
    order = val.order(min(n_batches, max(1, val.n_items // val.batch_size)))
    total = torch.zeros((), device=device)
    if not reuse_graph:
        model.eval()
    with torch.enable_grad() if reuse_graph else torch.no_grad():
        for i in range(order.shape[0]):
            x, y = val.batch(order[i])
            begin_step(model, training_step=False)
            with autocast_ctx(device, dtype):
                # the training step's own call (one graph); no name bound to the loss: through the
                # training graph it carries the batch's saved activations, and held into the next
                # batch's forward they doubled eval's memory
                total += model(x, y, return_logits=False)[1].detach().float()
    model.train()
    return (total / order.shape[0]).item()


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
    cudagraph_skips_before: int | None = None  # inductor's counter when a CUDA-graph model was compiled
    allocated_at_start: int | None = None  # allocated bytes when the timed steps began (None off CUDA)
    warmup_peak_allocated: int | None = None  # peak allocated over the warm-up steps (None off CUDA, or resumed)
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
        begin_step(self.step_model)
        with autocast_ctx(self.device, self.dtype):
            loss = self.step_model(x, y, return_logits=False)[1]   # no logits output (GPT.forward)
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
    check_stage_settings(settings, "train")
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
    prov, job_start = provenance_and_job(settings["seed"], settings, device)
    result: dict[str, Any] = {
        "schema": TRAIN_SCHEMA, "variant": name, "status": "ok", "failure": None,
        "attention": {"name": settings["entry"]["class"] or settings["entry"]["variant"],
                      "params": settings["entry"]["params"],
                      "exact": computes_baseline(settings["entry"], settings["train"]["seq_len"])},
        "provenance": prov, "job": job_start,
        # what the job ran on and with: a report checks both against its own data and config
        "data": {"tokens_sha256": tokens_identity(tokens_dir)}, "settings": settings,
        "kernel_check": {"method": selfcheck.METHOD}}
    unavailable: dict[str, str] = {}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    session = bar = job = None
    phase = measure.PhaseClock(result["job"])  # where a job's wall time goes, phase by phase
    with interruptible() as guard:
        try:
            with phase("setup"):  # model, data, kernel choice, optimizer, torch.compile wrapper
                job = setup(settings, tokens_dir, out_dir, device, dtype, fault, result)
                job.checkpoint_every = ckpt_every
                ckpt = checkpoint.read(ckpt_path, identity, job.t["steps"]) if resume else None
                if ckpt is not None:
                    checkpoint.resume(job, ckpt)
            with phase("kernel_check_start"):  # includes the compilation of the model's graphs
                selfcheck.check_job(job, result, "start")
            with phase("measure_start"):  # idle-power baseline, CodeCarbon, the control
                session = measure.session_from(settings["measure"], device, out_dir, "train")
                session.start()
                result["control"] = measure.matmul_control(device, dtype, settings["measure"]["control_seconds"])
            with phase("warm_up"):
                measure.reset_peak_memory(device)
                step = warm_up(job) if ckpt is None else job.resumed_from
                job.step = step
                if ckpt is None and job.t["warmup_steps"] >= measure.MIN_WARMUP_STEPS_FOR_PEAK:
                    # under CUDA graphs the only phase whose allocations the allocator counts
                    job.warmup_peak_allocated = measure.peak_allocated(device)
                job.allocated_at_start = measure.reset_peak_memory(device)
            with phase("timed_loop"):  # the timed windows and the evaluations between them
                bar = _progress(job.t["steps"], name)
                bar.update(step)
                step = timed_loop(job, session, guard, bar, step, ckpt_every,
                                  lambda at: checkpoint.save(job, ckpt_path, identity, at))
                bar.close()
                bar = None
                mem = measure.peak_memory(device)
                summary = session.finish()
                session = None
            with phase("final_eval"):
                final_val = evaluate(job.step_model, job.val_data, job.t["eval_batches"], device, dtype)
                job.progress["val_history"].append({"step": job.t["steps"], "val_loss": final_val})
                result["kernel"] = job.model.kernel()
            with phase("kernel_check_end"):
                selfcheck.check_job(job, result, "end")
            with phase("assemble"):  # FLOP count cross-check and the result document
                assemble(job, result, unavailable, summary, mem)
            with phase("save"):
                write_steps_csv(out_dir / "steps.csv", job.losses.cpu().tolist(), job.progress["step_ms_per_step"],
                                job.t["warmup_steps"], job.tokens_per_step)
                atomic_write_bytes(out_dir / "model.safetensors", weights_bytes(job.model))
                result["model"]["bytes_on_disk"] = (out_dir / "model.safetensors").stat().st_size
        except Exception as err:  # recorded, not raised: see module docstring
            _stop(bar, session)
            session = bar = None
            record_failure(result, err, None if job is None else job.step, device, out_dir)
        except BaseException:  # interrupted: no result, nothing under a final name
            _stop(bar, session)
            raise
        result["unavailable"] = unavailable
        result["job"]["finished_utc"] = utc_now()
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
        # at stated lengths (fixed-size states stay fixed, windows cap): what the report's cache column shows
        "cache_bytes_at_lengths": {str(L): model.cache_bytes(1, L, torch.bfloat16) for L in (512, 4096, 32768)},
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
        job.step_model, job.compiled = compile_model(model, t, device), True
        if replays_graphs(job.step_model):
            job.cudagraph_skips_before = cudagraph_skips()
    job.order = job.train_data.order(t["steps"])
    job.losses = torch.full((t["steps"],), float("nan"), device=device)
    return job


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
        measure.reset_peak_memory(job.device)  # the warm-up peak is the eager steps', not the failed compile's
        for step in range(job.t["warmup_steps"]):
            job.train_step(step)
    measure.synchronize(job.device)
    job.warmup_s = time.perf_counter() - t0
    job.check_finite(0, job.t["warmup_steps"])
    return job.t["warmup_steps"]


def timed_loop(job: Job, session, guard, bar, step: int, ckpt_every: int, save_checkpoint) -> int:
    """Timed windows, cut at eval points; evaluation and checkpoints between windows.
    Returns the last step.  The first window has ``timing_window`` steps; later ones at least
    that many and at least ``window_seconds`` at the first full window's step time
    (:func:`window_steps`)."""
    t = job.t
    eval_points = set(range(t["eval_every"], t["steps"], t["eval_every"])) if t["eval_every"] else set()
    last_ckpt = step
    per_window, calibrated = t["timing_window"], False
    with guard.defer():
        while step < t["steps"]:
            hi = min(step + per_window, t["steps"], *[p for p in eval_points if p > step])
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
            if not calibrated and hi - step == t["timing_window"]:  # the first full window of this process
                per_window = window_steps(t["timing_window"], t["window_seconds"], ws.seconds / (hi - step))
                calibrated = True
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


def window_steps(min_steps: int, seconds: float, step_s: float) -> int:
    """Steps per timing window: at least ``min_steps`` and at least ``seconds`` of steps of
    ``step_s`` each (NVML's energy counter advances every 20-100 ms: short windows quantise)."""
    if seconds <= 0 or step_s <= 0:
        return min_steps
    return max(min_steps, math.ceil(seconds / step_s))


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


def _progress(total: int, name: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"train {name}", unit="step", mininterval=5.0)

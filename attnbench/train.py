"""Train one GPT-2 with one attention variant and measure what it costs.

The step is kept free of host synchronisation: batches are indexed on the device, losses
land in a preallocated device tensor, and the host waits only at the edges of the timing
windows (where the energy counter is read and non-finite losses are detected).  Warm-up
steps (compilation, autotuning, allocator growth) run before the first window and are
reported separately.  Evaluation and checkpoints run between windows, never inside one.

Failures (out of memory, a non-finite loss, any other error) end the run with a
``status: failed`` result naming the step and reason; the job still succeeds so the other
variants and the report go on, and ``failures.log`` (read by the workflow) makes the next
invocation retry the variant.

Interruptions are not failures.  SIGTERM/SIGHUP stop the run at the next step boundary
(writing a checkpoint there when checkpoints are on) and raise
:class:`attnbench.interrupt.Interrupted`: no ``metrics.json`` is written, so Snakemake sees
the job as incomplete and runs it again.  Every file is written under a temporary name and
renamed, so SIGKILL cannot leave a truncated file under a final name either.

Checkpoints (``train.checkpoint_every`` > 0) are one safetensors file,
``checkpoint.safetensors`` in the job's folder: model weights, AdamW state, RNG states and
the losses so far as tensors, everything else as JSON in the file's metadata (no pickle).
A run started with ``train.resume`` on continues from it when the checkpoint was written
by the same settings and the same code (a hash of both is stored in it); on CPU the resumed
run ends with the same losses, bit for bit, as an uninterrupted one.  The checkpoint is
deleted once the run has finished ok; a failed run keeps it, so the retry resumes when
nothing changed (a transient out-of-memory error) and starts afresh when the settings or
the code did.  ``checkpoint_every`` and ``resume`` do not change results, so the workflow
keeps them out of the rule params.  A resumed run's timing windows include those of the
interrupted part; CodeCarbon totals, which cover only the resumed part, are unavailable.

Result fields added by this module beyond ``attnbench.results``' schema:
``training.checkpoints`` ({every, saved, seconds}), ``training.resumed_from_step``,
``training.resumes``, ``training.compile_error`` (when torch.compile fell back to eager),
``timing.windows[].energy_error``, ``failure.allocator`` (out of memory: CUDA allocator
state, or peak RSS on CPU), ``emissions.resumed_part``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import errno
import hashlib
import importlib.util
import io
import json
import math
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from . import measure
from .batches import TokenBatches
from .interrupt import Interrupted, interruptible
from .model import GPT, GPTConfig
from .results import (
    TRAIN_SCHEMA,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    provenance,
)
from .settings import ROOT, ConfigError, register_user_class, resolve_device

FAULT_ENV = "ATTNBENCH_INJECT_FAULT"  # testing only: "<variant>:nan:<step>" or "<variant>:oom:<step>"
CHECKPOINT = "checkpoint.safetensors"
RUNTIME_KEYS = ("checkpoint_every", "resume")  # train keys that do not change results
OUTPUTS = ("metrics.json", "steps.csv", "model.safetensors")


class TrainingFault(RuntimeError):
    def __init__(self, kind: str, message: str, step: int | None, **extra):
        super().__init__(message)
        self.kind, self.step, self.extra = kind, step, extra


def injected_fault(name: str) -> tuple[str, int] | None:
    """The fault ``ATTNBENCH_INJECT_FAULT`` asks for in variant ``name`` (testing only).

    Comma-separated ``<variant>:<nan|oom>:<step>`` items; a malformed item is an error (a
    typo must not silently run the unfaulted variant).  The variable is read by the
    training process: Snakemake passes its environment on to local and cluster jobs, but
    an up-to-date ``metrics.json`` means no training process runs at all -- force the
    variant (``--forcerun train``, or delete its results) to inject into it.
    """
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, (i.strip() for i in spec.split(","))):
        parts = item.split(":")
        if len(parts) != 3 or parts[1] not in ("nan", "oom") or not parts[2].isdigit():
            raise ConfigError(f"{FAULT_ENV}={spec!r}: item {item!r} is not <variant>:<nan|oom>:<step>")
        if parts[0] == name:
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


def run(settings: dict, tokens_dir: str | Path, out_dir: str | Path, *, checkpoint_every: int | None = None,
        resume: bool | None = None) -> dict[str, Any]:
    """Train and write ``metrics.json``, ``steps.csv``, ``model.safetensors`` into ``out_dir``.

    ``checkpoint_every`` / ``resume`` override ``settings["train"]`` (the workflow passes them
    on the command line so that they stay out of the job's params).  Raises
    :class:`Interrupted` on SIGTERM/SIGHUP, writing nothing but (optionally) a checkpoint.
    """
    _check_settings(settings)
    for split in ("train", "val"):  # bad input, not a variant failure: raise before any result
        if not (Path(tokens_dir) / f"{split}.npy").is_file():
            raise FileNotFoundError(errno.ENOENT, "tokenized split not found", str(Path(tokens_dir) / f"{split}.npy"))
    out_dir = Path(out_dir)
    name, t = settings["name"], settings["train"]
    ckpt_every = int(t.get("checkpoint_every", 0) if checkpoint_every is None else checkpoint_every)
    resume = bool(t.get("resume", True) if resume is None else resume)
    if ckpt_every < 0:
        raise ConfigError(f"train.checkpoint_every={ckpt_every} must be >= 0")
    fault = injected_fault(name)
    settings = _without_runtime_keys(settings)
    t = settings["train"]
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale(out_dir)
    device = resolve_device(settings["device"])
    dtype = resolve_dtype(t["dtype"], device)
    ckpt_path = out_dir / CHECKPOINT
    identity = checkpoint_identity(settings, device, dtype)
    if not resume:
        with contextlib.suppress(FileNotFoundError):
            ckpt_path.unlink()
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
    session = progress = None
    step = None
    with interruptible() as guard:
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
            ckpt = _read_checkpoint(ckpt_path, identity, t["steps"]) if resume else None
            if ckpt is not None and not ckpt["state"]["compiled"]:
                compile_error = ckpt["state"]["compile_error"]
            elif should_compile(t, device):
                step_model, compiled = torch.compile(model), True
            order = train_data.order(t["steps"])
            losses = torch.full((t["steps"],), float("nan"), device=device)

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
            t0 = time.perf_counter()
            if ckpt is None:
                # Warm-up: compilation and autotuning happen here; timed separately.  A variant
                # that torch.compile cannot handle falls back to eager from fresh weights (recorded).
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
                progress_state = {"windows": [], "step_ms_per_step": [], "val_history": [], "checkpoints": 0,
                                  "checkpoint_s": 0.0}
                resumed_from = None
            else:
                if compiled:  # compile outside the timed windows, then restore the exact state
                    try:
                        _rewarm(step_model, train_data, order, device, dtype)
                    except Exception as err:
                        if isinstance(err, torch.OutOfMemoryError):
                            raise
                        compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                        step_model, compiled = model, False
                _restore_checkpoint(ckpt, model, optimizer, losses, device)
                st = ckpt["state"]
                step = resumed_from = st["step"]
                warmup_s = st["warmup_s"]
                progress_state = {k: st[k] for k in ("windows", "step_ms_per_step", "val_history", "checkpoints",
                                                     "checkpoint_s")}
                progress_state["resumes"] = st.get("resumes", []) + [{"step": step, "rewarm_s": time.perf_counter() - t0}]
            measure.reset_peak_memory(device)
            eval_points = set(range(t["eval_every"], t["steps"], t["eval_every"])) if t["eval_every"] else set()
            windows = progress_state["windows"]
            step_ms_per_step: list[float] = progress_state["step_ms_per_step"]
            val_history = progress_state["val_history"]
            last_ckpt = step
            progress = _progress(t["steps"], name)
            progress.update(step)

            def save_checkpoint(at: int) -> None:
                c0 = time.perf_counter()
                progress_state["checkpoints"] += 1
                state = {**progress_state, "step": at, "identity": identity, "warmup_s": warmup_s,
                         "compiled": compiled, "compile_error": compile_error, "saved_at": time.time()}
                _write_checkpoint(ckpt_path, model, optimizer, losses, state, device)
                progress_state["checkpoint_s"] += time.perf_counter() - c0

            with guard.defer():
                while step < t["steps"]:
                    hi = min(step + t["timing_window"], t["steps"])
                    nxt = [p for p in eval_points if step < p < hi]
                    if nxt:
                        hi = min(nxt)
                    w = session.begin_window()
                    for i in range(step, hi):
                        train_step(i)
                        if guard.pending is not None:  # stop at this step boundary
                            hi = i + 1
                            break
                    ws = session.end_window(w, steps=hi - step, tokens=(hi - step) * B * T)
                    energy_error = (None if ws.get("energy_j") is not None
                                    else next((f for f in ws.get("flags") or [] if "NVML" in f), None))
                    windows.append({"first_step": step, "steps": hi - step, "seconds": ws["seconds"],
                                    "energy_j": ws.get("energy_j"),
                                    **({"energy_error": energy_error} if energy_error else {})})
                    step_ms_per_step.extend([1000 * ws["seconds"] / (hi - step)] * (hi - step))
                    check_finite(step, hi)
                    progress.update(hi - step)
                    step = hi
                    if step in eval_points:
                        val_history.append({"step": step, "val_loss": evaluate(step_model, val_data, t["eval_batches"],
                                                                               device, dtype)})
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
            progress.close()
            progress = None
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
                "checkpoints": {"every": ckpt_every, "saved": progress_state["checkpoints"],
                                "seconds": progress_state["checkpoint_s"]},
                "resumed_from_step": resumed_from,
                "resumes": progress_state.get("resumes", []),
            }
            if compile_error:
                result["training"]["compile_error"] = compile_error
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
            unavailable.update(e_unavail)
            _energy_over_all_windows(energy, unavailable, windows, resumed_from, B * T)
            if resumed_from is not None:
                _emissions_of_resumed_run(emissions, unavailable, resumed_from, t["steps"])
            result["energy"], result["emissions"] = energy, emissions
            flops, flops_unavailable = measure.flops_section(
                analytic, counted, timed_s / timed_steps if timed_steps else None, device,
                peak_tflops=settings["measure"]["peak_tflops"], dtype=torch_dtype)
            result["flops"] = flops
            unavailable.update(flops_unavailable)
            _write_steps_csv(out_dir / "steps.csv", loss_values, step_ms_per_step, t["warmup_steps"], B * T)
            _save_weights(model, out_dir / "model.safetensors")
            result["model"]["bytes_on_disk"] = (out_dir / "model.safetensors").stat().st_size
        except Exception as err:  # recorded, not raised: see module docstring
            if progress is not None:
                progress.close()
            if session is not None:
                with contextlib.suppress(Exception):
                    session.finish()
                session = None
            result["status"] = "failed"
            result["failure"] = _describe_failure(err, step, device)
            with open(out_dir / "failures.log", "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {result['failure']['kind']}: "
                         f"{result['failure']['message']}\n")
            for stale in ("steps.csv", "model.safetensors"):
                with contextlib.suppress(FileNotFoundError):
                    (out_dir / stale).unlink()
        except BaseException:  # interrupted: no result, nothing under a final name
            if progress is not None:
                progress.close()  # ends the bar's line: the CLI's one-line message stands alone
            if session is not None:
                with contextlib.suppress(Exception):
                    session.finish()
            raise
        result["unavailable"] = unavailable
        atomic_write_json(out_dir / "metrics.json", _jsonable(result))
    if result["status"] == "ok":
        with contextlib.suppress(FileNotFoundError):
            ckpt_path.unlink()
    return result


def _check_settings(settings: Any) -> None:
    if not isinstance(settings, dict):
        raise ConfigError("settings must be a JSON object (the job settings of one variant)")
    missing = [k for k in ("name", "entry", "seed", "device", "model", "train", "measure", "data")
               if k not in settings]
    if missing:
        raise ConfigError(f"settings lack key(s) {', '.join(missing)} (expected attnbench.settings.job_settings)")


def _without_runtime_keys(settings: dict) -> dict:
    s = copy.deepcopy(settings)
    s["train"] = {k: v for k, v in s["train"].items() if k not in RUNTIME_KEYS}
    return s


def _clear_stale(out_dir: Path) -> None:
    """Remove a previous run's outputs and temporary files left by a killed write: a run that
    is interrupted must not leave an older ``metrics.json`` looking like its result."""
    for name in OUTPUTS:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
    for tmp in out_dir.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _code_files(settings: dict) -> list[Path]:
    files = sorted(p for pkg in ("attnbench", "attention") for p in (ROOT / pkg).rglob("*.py"))
    cls = settings["entry"].get("class")
    if cls:
        with contextlib.suppress(ImportError, ValueError, AttributeError):
            spec = importlib.util.find_spec(cls.split(":")[0])
            if spec and spec.origin and spec.origin.endswith(".py"):
                files.append(Path(spec.origin))
    return files


def checkpoint_identity(settings: dict, device, dtype: str) -> str:
    """Hash of what a checkpoint's state depends on: settings (less the runtime-only keys),
    device type, dtype, torch version and the source of attnbench/, attention/ and a user class."""
    h = hashlib.sha256()
    h.update(json.dumps(_without_runtime_keys(settings), sort_keys=True, default=str).encode())
    h.update(f"|{torch.device(device).type}|{dtype}|{torch.__version__}|".encode())
    for f in _code_files(settings):
        h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:32]


def _model_state(model: GPT) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to wte


def _write_checkpoint(path: Path, model: GPT, optimizer, losses: torch.Tensor, state: dict, device) -> None:
    """One safetensors file, written under a temporary name and renamed."""
    from safetensors.torch import save_file

    def cpu_copy(v: torch.Tensor) -> torch.Tensor:  # own, contiguous storage (safetensors needs both)
        c = v.detach().cpu()
        return c.clone(memory_format=torch.contiguous_format) if c.data_ptr() == v.data_ptr() else c.contiguous()

    tensors: dict[str, torch.Tensor] = {}
    for k, v in _model_state(model).items():
        tensors[f"model/{k}"] = cpu_copy(v)
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{idx}/{k}"] = cpu_copy(v)
            else:
                scalars.setdefault(str(idx), {})[k] = v
    tensors["rng/torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    tensors["losses"] = cpu_copy(losses)
    meta = {**state, "optimizer_param_groups": opt["param_groups"], "optimizer_scalars": scalars,
            "format": "attnbench.checkpoint/1"}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"attnbench": json.dumps(meta, allow_nan=False)})
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_checkpoint(path: Path, identity: str, steps: int) -> dict | None:
    """The checkpoint's tensors and state when it belongs to this run, else None (and it goes)."""
    if not path.exists():
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            state = json.loads((fh.metadata() or {})["attnbench"])
        if state.get("identity") != identity or not 0 < int(state["step"]) < steps:
            raise ValueError("written by other settings or code")
        tensors = load_file(str(path))
    except Exception as err:  # stale or unreadable: start afresh (never resume from the wrong state)
        print(f"ignoring checkpoint {path}: {type(err).__name__}: {err}", flush=True)
        path.unlink()
        return None
    return {"state": state, "tensors": tensors}


def _restore_checkpoint(ckpt: dict, model: GPT, optimizer, losses: torch.Tensor, device) -> None:
    tensors, state = ckpt["tensors"], ckpt["state"]
    weights = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    weights["lm_head.weight"] = weights["transformer.wte.weight"]
    model.load_state_dict(weights)
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, name = k.split("/", 2)
            opt_state.setdefault(int(idx), {})[name] = v
    for idx, extra in state["optimizer_scalars"].items():
        opt_state.setdefault(int(idx), {}).update(extra)
    groups = copy.deepcopy(state["optimizer_param_groups"])
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    losses.copy_(tensors["losses"].to(losses.device))
    torch.set_rng_state(tensors["rng/torch"])
    if device.type == "cuda" and "rng/cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng/cuda"], device)


def _rewarm(step_model, data: TokenBatches, order, device, dtype: str) -> None:
    """One forward+backward through the compiled model so that compilation happens outside
    the timed windows of a resumed run; gradients are dropped and the checkpoint (weights,
    buffers, RNG) is restored afterwards."""
    x, y = data.batch(order[0])
    with autocast_ctx(device, dtype):
        _, loss = step_model(x, y)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    for p in step_model.parameters():
        p.grad = None


def _energy_over_all_windows(energy: dict, unavailable: dict, windows: list[dict], resumed_from,
                             tokens_per_step: int) -> None:
    """Energy totals over every timed window.  A total that misses some windows (an NVML read
    failed mid-run) is unavailable with the reason -- never a silent undercount; the per-step,
    per-token and mean-power figures are rates over the windows that were measured."""
    valid = [w for w in windows if w.get("energy_j") is not None]
    if not valid:
        return  # the session already says why
    total = sum(w["energy_j"] for w in valid)
    steps = sum(w["steps"] for w in valid)
    secs = sum(w["seconds"] for w in valid)
    if resumed_from is not None:  # the session saw only this process's windows
        energy["gpu_j_per_step"] = total / steps if steps else None
        energy["gpu_j_per_token"] = total / (steps * tokens_per_step) if steps else None
        energy["gpu_mean_w"] = total / secs if secs > 0 else None
    missing = [w for w in windows if w.get("energy_j") is None]
    if missing:
        first = missing[0]
        reason = (f"energy counter unavailable for {len(missing)} of {len(windows)} timed windows (first at step "
                  f"{first['first_step']}: {first.get('energy_error') or 'no counter difference'}); rates use the "
                  f"{len(valid)} measured windows ({steps} steps)")
        for k in ("gpu_j_total", "gpu_j_above_idle"):
            energy[k] = None
            unavailable[f"energy.{k}"] = reason
    else:
        energy["gpu_j_total"] = total
        idle = energy.get("idle_w")
        energy["gpu_j_above_idle"] = total - idle * secs if idle is not None else None


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


def _describe_failure(err: BaseException, step, device) -> dict:
    if isinstance(err, TrainingFault):
        return {"kind": err.kind, "message": str(err), "step": err.step, **err.extra}
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

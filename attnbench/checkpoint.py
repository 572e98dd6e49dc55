"""Training checkpoints: one safetensors file, no pickle, resumable bit for bit on CPU.

``checkpoint.safetensors`` in the job's folder holds the model weights, the AdamW state, the
RNG states and the losses so far as tensors, everything else as JSON in the file's metadata.
A run resumes from it only when it was written by the same settings and the same code (a
hash of both, :func:`identity`, is stored in it); any other checkpoint is removed and the run
starts afresh.  ``train.checkpoint_every`` and ``train.resume`` do not change results, so the
workflow keeps them out of the job's params (``attnbench.settings.RUNTIME_TRAIN_KEYS``).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .settings import ROOT

FILENAME = "checkpoint.safetensors"


def code_files(settings: dict) -> list[Path]:
    files = sorted(p for pkg in ("attnbench", "attention") for p in (ROOT / pkg).rglob("*.py"))
    cls = settings["entry"].get("class")
    if cls:
        with contextlib.suppress(ImportError, ValueError, AttributeError):
            spec = importlib.util.find_spec(cls.split(":")[0])
            if spec and spec.origin and spec.origin.endswith(".py"):
                files.append(Path(spec.origin))
    return files


def identity(settings: dict, device, dtype: str) -> str:
    """Hash of what a checkpoint's state depends on: the job settings (which hold no runtime-only keys),
    device type, dtype, torch version and the source of attnbench/, attention/ and a user class."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(f"|{torch.device(device).type}|{dtype}|{torch.__version__}|".encode())
    for f in code_files(settings):
        h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:32]


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to wte


def write(path: Path, model: torch.nn.Module, optimizer, losses: torch.Tensor, state: dict, device) -> None:
    """One safetensors file, written under a temporary name and renamed."""
    from safetensors.torch import save_file

    def cpu_copy(v: torch.Tensor) -> torch.Tensor:  # own, contiguous storage (safetensors needs both)
        c = v.detach().cpu()
        return c.clone(memory_format=torch.contiguous_format) if c.data_ptr() == v.data_ptr() else c.contiguous()

    tensors: dict[str, torch.Tensor] = {}
    for k, v in model_state(model).items():
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


def read(path: Path, expected_identity: str, steps: int) -> dict | None:
    """The checkpoint's tensors and state when it belongs to this run, else None (and it goes)."""
    if not path.exists():
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            state = json.loads((fh.metadata() or {})["attnbench"])
        if state.get("identity") != expected_identity or not 0 < int(state["step"]) < steps:
            raise ValueError("written by other settings or code")
        tensors = load_file(str(path))
    except Exception as err:  # stale or unreadable: start afresh (never resume from the wrong state)
        print(f"ignoring checkpoint {path}: {type(err).__name__}: {err}", flush=True)
        path.unlink()
        return None
    return {"state": state, "tensors": tensors}


def restore(ckpt: dict, model: torch.nn.Module, optimizer, losses: torch.Tensor, device) -> None:
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




def save(job, path: Path, expected_identity: str, at: int) -> None:
    """Checkpoint a training job (``attnbench.train.Job``) at step ``at``, outside timed windows."""
    import time

    c0 = time.perf_counter()
    job.progress["checkpoints"] += 1
    state = {**job.progress, "step": at, "identity": expected_identity, "warmup_s": job.warmup_s,
             "warmup_peak_allocated": job.warmup_peak_allocated,
             "compiled": job.compiled, "compile_error": job.compile_error, "saved_at": time.time()}
    write(path, job.model, job.optimizer, job.losses, state, job.device)
    job.progress["checkpoint_s"] += time.perf_counter() - c0


def resume(job, ckpt: dict) -> None:
    """Put a training job back where checkpoint ``ckpt`` (from :func:`read`) left it."""
    restore(ckpt, job.model, job.optimizer, job.losses, job.device)
    st = ckpt["state"]
    job.resumed_from = st["step"]
    job.warmup_s = st["warmup_s"]
    job.warmup_peak_allocated = st.get("warmup_peak_allocated")  # the first process's warm-up: the figure stands
    job.progress = {k: st[k] for k in job.progress}
    job.progress["resumes"] = st.get("resumes", []) + [{"step": job.resumed_from}]

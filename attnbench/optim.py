"""A training job's optimizer, learning-rate schedule, precision and compilation choice
(nanoGPT's: AdamW with decay on matrices only, linear warm-up then cosine decay)."""

from __future__ import annotations

import contextlib
import math

import torch


def lr_at(step: int, t: dict) -> float:
    """Linear warm-up then cosine decay to ``min_lr`` (nanoGPT schedule)."""
    if step < t["lr_warmup_steps"]:
        return t["lr"] * (step + 1) / t["lr_warmup_steps"]
    progress = (step - t["lr_warmup_steps"]) / max(1, t["steps"] - t["lr_warmup_steps"])
    return t["min_lr"] + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (t["lr"] - t["min_lr"])


def make_optimizer(model: torch.nn.Module, t: dict, device: torch.device):
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


def should_compile(t: dict, device: torch.device) -> bool:
    return t["compile"] == "on" or (t["compile"] == "auto" and device.type == "cuda")


def compile_kwargs(t: dict) -> dict:
    """``torch.compile`` arguments of the training model (``train.compile_mode``)."""
    return {} if t.get("compile_mode", "default") == "default" else {"mode": t["compile_mode"]}

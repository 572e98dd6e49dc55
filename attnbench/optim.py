"""A training job's optimizer, learning-rate schedule, precision and compilation choice
(nanoGPT's: AdamW with decay on matrices only, linear warm-up then cosine decay)."""

from __future__ import annotations

import contextlib
import math
import weakref

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


CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")  # compile modes that replay CUDA graphs
_GRAPHED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def compile_model(model: torch.nn.Module, t: dict, device: torch.device) -> torch.nn.Module:
    """``torch.compile`` with ``train.compile_mode``; a model whose mode replays CUDA graphs is
    remembered so that :func:`begin_step` marks its iterations."""
    compiled = torch.compile(model, **compile_kwargs(t))
    if device.type == "cuda" and t.get("compile_mode") in CUDAGRAPH_MODES:
        _GRAPHED.add(compiled)
    return compiled


def replays_graphs(step_model) -> bool:
    return step_model in _GRAPHED


_STEP_HOOKS: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()


def step_hooks(model) -> list:
    """The ``begin_training_step`` methods of ``model``'s modules (attention.base), found once per
    model: the training step calls them every step."""
    if not isinstance(model, torch.nn.Module):
        return []
    if model not in _STEP_HOOKS:  # weak methods: a module that is its own hook must not keep itself alive
        _STEP_HOOKS[model] = [weakref.WeakMethod(m.begin_training_step) for m in model.modules()
                              if hasattr(m, "begin_training_step")]
    return [ref() for ref in _STEP_HOOKS[model]]


def begin_step(step_model, training_step: bool = True) -> None:
    """Start an iteration of the step model, before its forward: for a training step, attention
    modules with per-step state prepare it (``begin_training_step``: LSH draws the step's
    rotations, outside the compiled graph); and a CUDA-graph step model marks the iteration --
    without the mark, CUDA-graph trees take a forward-only call (evaluation, the kernel check)
    for part of the previous training step and may hand out an output buffer the next replay
    overwrites."""
    if training_step:
        for hook in step_hooks(getattr(step_model, "_orig_mod", step_model)):
            hook()
    if step_model in _GRAPHED:
        torch.compiler.cudagraph_mark_step_begin()


def cudagraph_skips() -> int:
    """Graphs torch.compile meant to replay as CUDA graphs but ran without (a mutated input, a
    CPU tensor, dynamic shapes...): inductor's own counter, read before and after a job."""
    from torch._dynamo.utils import counters
    return int(counters["inductor"]["cudagraph_skips"])

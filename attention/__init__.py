"""Attention variants behind one string-keyed registry.

``VARIANTS`` maps the config name of each built-in variant to its class; ``build(name,
n_embd, n_head, **params)`` constructs one.  A user's own class joins under a config name
with ``register(name, "mypkg.attn:MyAttention")`` (the pipeline does this for config entries
that carry ``class:``); ``check_api`` verifies it honours the contract in ``attention.base``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .base import COMMON_PARAMS, CausalSelfAttention
from .baseline import BaselineAttention
from .sdpa import SDPAAttention

VARIANTS: dict[str, type[torch.nn.Module]] = {
    "baseline": BaselineAttention,
    "sdpa": SDPAAttention,
}

BUILTIN = frozenset(VARIANTS)


def _optional(module: str, cls: str, name: str) -> None:
    """Register a built-in variant whose file exists (the library grows file by file)."""
    try:
        mod = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{module}":
            return
        raise
    VARIANTS[name] = getattr(mod, cls)


for _module, _cls, _name in [
    ("flash2", "FlashAttention2", "flash2"),
    ("gqa", "GroupedQueryAttention", "gqa"),
    ("flex", "FlexAttention", "flex"),
    ("sliding_window", "SlidingWindowAttention", "sliding_window"),
    ("linear", "LinearAttention", "linear"),
    ("lsh", "LSHAttention", "lsh"),
    ("mla", "MultiHeadLatentAttention", "mla"),
]:
    _optional(_module, _cls, _name)
BUILTIN = frozenset(VARIANTS)


def build(name: str, n_embd: int, n_head: int, **params: Any) -> torch.nn.Module:
    """Construct variant ``name``; ``ValueError`` naming the allowed names/params otherwise."""
    if name not in VARIANTS:
        raise ValueError(f"unknown attention variant {name!r}; known: {sorted(VARIANTS)}")
    return VARIANTS[name](n_embd, n_head, **params)


def load_class(spec: str) -> type:
    """Import ``"package.module:ClassName"``."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"class spec {spec!r} must look like 'package.module:ClassName'")
    module_name, cls_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"class spec {spec!r}: cannot import module {module_name!r}: {err}") from err
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise ValueError(f"class spec {spec!r}: module {module_name!r} has no attribute {cls_name!r}") from None


def check_api(name: str, cls: type, n_embd: int = 32, n_head: int = 4, **params: Any) -> None:
    """Verify that ``cls`` fits the registry contract on a tiny CPU input.

    Checks: constructible as ``cls(n_embd, n_head, **params)``; an ``nn.Module``; maps
    (B, T, n_embd) to the same shape; sets ``kernel``; has ``init_cache`` and decoding with a
    cache reproduces the full forward; reports ``cache_bytes_per_token``.  Raises
    ``ValueError`` saying what does not fit.
    """
    where = f"attention variant {name!r} ({getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)})"
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"{where}: is not a torch.nn.Module subclass")
    try:
        module = cls(n_embd, n_head, **params)
    except TypeError as err:
        raise ValueError(f"{where}: cannot be built as cls(n_embd, n_head, **params): {err}") from err
    module.eval()
    for attr in ("init_cache", "cache_bytes_per_token"):
        if not callable(getattr(module, attr, None)):
            raise ValueError(f"{where}: missing method {attr}()")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, n_embd, generator=gen)
    with torch.no_grad():
        y = module(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            raise ValueError(f"{where}: forward(x) must return a tensor of shape {tuple(x.shape)}, "
                             f"got {getattr(y, 'shape', type(y))}")
        if not isinstance(getattr(module, "kernel", None), str):
            raise ValueError(f"{where}: must set the string attribute 'kernel' in forward")
        cache = module.init_cache(2, 6, x.device, x.dtype)
        steps = [module(x[:, t:t + 1], cache=cache) for t in range(6)]
        y_dec = torch.cat(steps, dim=1)
        if not torch.allclose(y_dec, y, atol=1e-4, rtol=1e-4):
            raise ValueError(f"{where}: token-by-token decoding with init_cache() does not match the full forward")
    size = module.cache_bytes_per_token(torch.float32)
    if not isinstance(size, (int, float)) or size < 0:
        raise ValueError(f"{where}: cache_bytes_per_token() must return a non-negative number, got {size!r}")


def register(name: str, cls_or_spec: type | str, check: bool = True, **params: Any) -> type:
    """Add a user class under ``name`` (after ``check_api``); built-in names are not replaced."""
    if name in BUILTIN:
        raise ValueError(f"variant name {name!r} is a built-in variant; choose another name")
    cls = load_class(cls_or_spec) if isinstance(cls_or_spec, str) else cls_or_spec
    if check:
        check_api(name, cls, **params)
    VARIANTS[name] = cls
    return cls


__all__ = ["VARIANTS", "BUILTIN", "COMMON_PARAMS", "CausalSelfAttention", "build", "register",
           "load_class", "check_api"]

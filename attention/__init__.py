"""Attention variants behind one string-keyed registry.

``VARIANTS`` maps the config name of each built-in variant to its class (one file per variant,
one line in ``_BUILTIN``); ``build(name, n_embd, n_head, **params)`` constructs one.  A user's
own class joins under a config name through the same registry: ``register(name,
"mypkg.attn:MyAttention")``, or ``registry_name(entry)`` for a config entry that carries
``class:``; ``check_api`` verifies that it honours the contract in ``attention.base``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .base import COMMON_PARAMS, CausalSelfAttention

# config name -> "module:Class" inside this package
_BUILTIN = {
    "baseline": "baseline:BaselineAttention",
    "sdpa": "sdpa:SDPAAttention",
    "flash2": "flash2:FlashAttention2",
    "gqa": "gqa:GroupedQueryAttention",
    "flex": "flex:FlexAttention",
    "sliding_window": "sliding_window:SlidingWindowAttention",
    "linear": "linear:LinearAttention",
    "lsh": "lsh:LSHAttention",
    "mla": "mla:MultiHeadLatentAttention",
}

VARIANTS: dict[str, type[torch.nn.Module]] = {}
for _name, _spec in _BUILTIN.items():
    _module, _cls = _spec.split(":")
    VARIANTS[_name] = getattr(importlib.import_module(f".{_module}", __name__), _cls)
BUILTIN = frozenset(VARIANTS)

from .contract import check_api  # noqa: E402


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


def register(name: str, cls_or_spec: type | str, check: bool = True, **params: Any) -> type:
    """Add a user class under ``name`` (after ``check_api``); built-in names are not replaced."""
    if name in BUILTIN:
        raise ValueError(f"variant name {name!r} is a built-in variant; choose another name")
    cls = load_class(cls_or_spec) if isinstance(cls_or_spec, str) else cls_or_spec
    if check:
        check_api(name, cls, **params)
    VARIANTS[name] = cls
    return cls


def registry_name(entry: dict) -> str:
    """The registry name of a resolved config entry (``{"variant", "class", "params"}``),
    registering its user class (unchecked: the config validation checked it) on first use."""
    if entry.get("class") is None:
        return entry["variant"]
    name = f"user:{entry['class']}"
    if name not in VARIANTS:
        VARIANTS[name] = load_class(entry["class"])
    return name


def computes_baseline(entry: dict, seq_len: int) -> bool:
    """Whether a resolved config entry computes baseline's function at this length
    (``is_exact`` of its class, or a class attribute ``exact``): the report then checks its
    loss curve against baseline's (``attnbench.report.agreement``)."""
    cls = VARIANTS[registry_name(entry)]
    if hasattr(cls, "is_exact") and hasattr(cls, "resolve_params"):
        return bool(cls.is_exact(cls.resolve_params(dict(entry["params"])), seq_len))
    return bool(getattr(cls, "exact", False))


__all__ = ["VARIANTS", "BUILTIN", "COMMON_PARAMS", "CausalSelfAttention", "build", "register",
           "registry_name", "computes_baseline", "load_class", "check_api"]

"""Dao-AILab ``flash_attn`` (FlashAttention-2, Dao 2023, arXiv 2307.08691), when it imports.

Used by ``flash2`` (causal) and ``sliding_window`` (causal with a window).  The package is a
source build and absent on the benchmark machines so far; every caller falls back to another
kernel and records which one ran.
"""

from __future__ import annotations

import torch

try:
    from flash_attn import flash_attn_func as _flash_attn_func
except Exception:  # ImportError, or a broken CUDA extension (OSError / RuntimeError)
    _flash_attn_func = None

def flash_attn_available() -> bool:
    return _flash_attn_func is not None


def flash_attn_causal(q, k, v, *, dropout_p: float = 0.0, window: int | None = None) -> torch.Tensor:
    """``flash_attn_func`` on SDPA-layout tensors: q (B, H, Tq, D), k/v (B, H_kv, Tk, D).

    Transposes to flash-attn's (B, T, H, D) layout (a view; flash-attn needs only the last
    dim contiguous), runs causal attention (bottom-right aligned, flash-attn >= 2.1, so cached
    decoding needs no extra mask), returns (B, H, Tq, D).  ``window`` = keys visible per query
    including itself (``window_size=(window-1, 0)``, flash-attn >= 2.3).  GQA/MQA: flash-attn
    takes K/V with fewer heads directly.
    """
    if _flash_attn_func is None:
        raise RuntimeError("flash_attn is not importable")
    kwargs = {} if window is None else {"window_size": (window - 1, 0)}
    out = _flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                           dropout_p=dropout_p, causal=True, **kwargs)  # (B, Tq, H, D)
    return out.transpose(1, 2)

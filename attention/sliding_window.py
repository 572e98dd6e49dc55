"""Causal sliding-window attention (Beltagy et al. 2020, arXiv 2004.05150; Mistral: Jiang et al. 2023, arXiv 2310.06825).

Window convention: with ``window = W`` the query at position t attends to the keys at
positions t-W+1 .. t — exactly W keys including itself (fewer for t < W-1).  This is
HF's ``sliding_window_overlay(W)`` and flash-attn's ``causal=True, window_size=(W-1, 0)``;
attention-gym's ``q - kv <= W`` would admit W+1 keys.  With W >= T it equals causal attention.

GPT-2 projections (fused ``c_attn``, ``c_proj``; same names as ``sdpa``).  Kernels
(``module.kernel``):

* ``"flash_attn:fa2-window"`` (``impl="flash_attn"``; ``auto``'s first choice on CUDA when the
  ``flash_attn`` package imports) — ``flash_attn_func(..., causal=True, window_size=(W-1, 0))``.
* ``"flex:compiled"`` (``impl="flex"``; ``auto`` on CUDA otherwise) — compiled FlexAttention
  with a sliding-window ``BlockMask`` (built once per shape and window, shared), so tiles
  outside the band are skipped: O(T*W) work.
* ``"flex:eager"`` (``impl="flex_eager"``) — uncompiled flex (forward only on CPU).
* ``"sdpa:<backend>+band-mask"`` (``impl="sdpa_mask"``; ``auto`` on CPU) — SDPA with the band
  as a boolean mask: correct, but O(T^2) work and memory.
* ``"reference:dense-mask"`` — explicit banded masked softmax.

Decoding keeps only the last W keys/values (:class:`RollingKVCache`); the cache grows by
2*n_embd values per token until it holds W tokens, then stays at W tokens.  As in ``flex``,
attention-weight dropout is not applied; ``dropout`` acts on the output projection only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .base import HALF, StaticKVCache, causal_pairs, dtype_bytes
from .ops.flash_attn import flash_attn_available, flash_attn_causal
from .ops.flex import MaskModAttention


@functools.lru_cache(maxsize=None)
def sliding_window_mask_mod(window: int):
    """``mask_mod`` for window W (one function object per W, shared by all layers)."""

    def sliding_window_causal(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    sliding_window_causal.__name__ = f"sliding_window_causal_{window}"
    return sliding_window_causal


def band_mask(q_len: int, k_len: int, window: int, device, offset: int | None = None) -> torch.Tensor:
    """(q_len, k_len) bool, True where key j is among the last ``window`` positions up to query i
    (queries bottom-right aligned: query i sits at key position ``offset + i``)."""
    offset = k_len - q_len if offset is None else offset
    q_pos = torch.arange(q_len, device=device)[:, None] + offset
    k_pos = torch.arange(k_len, device=device)[None, :]
    return (k_pos <= q_pos) & (q_pos - k_pos < window)


@dataclass
class RollingKVCache:
    """Keys/values of the last ``window`` positions: k, v of shape (B, H, min(window, max_len), D).

    ``pos`` counts all tokens seen (at most ``max_len``, as for ``KVCache``); ``filled`` how
    many of them (the most recent, in order) are stored.  :meth:`append` returns the
    keys/values the new queries need: the last ``window - 1`` stored positions before them
    plus the new ones, ending at the last query.
    """

    k: torch.Tensor
    v: torch.Tensor
    window: int
    max_len: int
    pos: int = 0
    filled: int = 0

    @classmethod
    def empty(cls, batch_size, n_head, window, head_dim, device, dtype, max_len):
        size = min(window, max_len)
        return cls(k=torch.zeros(batch_size, n_head, size, head_dim, device=device, dtype=dtype),
                   v=torch.zeros(batch_size, n_head, size, head_dim, device=device, dtype=dtype),
                   window=window, max_len=max_len)

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor):
        """k_new/v_new (B, H, t, D) -> keys/values (B, H, min(filled, window-1) + t, D)."""
        if self.pos + k_new.shape[2] > self.max_len:
            raise ValueError(f"rolling KV cache: {self.pos + k_new.shape[2]} tokens > max_len={self.max_len}")
        keep = min(self.filled, self.window - 1)
        start = self.filled - keep
        k = torch.cat([self.k[:, :, start:self.filled], k_new], dim=2)
        v = torch.cat([self.v[:, :, start:self.filled], v_new], dim=2)
        n = min(self.k.shape[2], k.shape[2])
        self.k[:, :, :n] = k[:, :, -n:]
        self.v[:, :, :n] = v[:, :, -n:]
        self.filled = n
        self.pos += k_new.shape[2]
        return k, v


class SlidingWindowAttention(MaskModAttention):
    name = "sliding_window"
    param_defaults = {"window": 128}
    kernels = ("flash_attn", "flex", "flex_eager", "sdpa_mask")
    mask_label = "band-mask"

    @classmethod
    def check_params(cls, params):
        w = params["window"]
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"attention variant 'sliding_window': window={w!r} must be an integer >= 1 "
                             "(keys visible per query, itself included)")
        if params["impl"] == "flash_attn" and not flash_attn_available():
            raise ValueError("attention variant 'sliding_window': impl='flash_attn' needs the flash_attn "
                             "package, which is not importable here; use impl='flex' or 'auto'")

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        self.window = self.params["window"]
        # Looked up here, not in forward: under torch.compile dynamo skips lru_cache and would
        # make a new closure per trace, miss the shared block-mask cache (keyed by mask_mod),
        # store a new mask and recompile the whole model every step (seen on the H100: 2x slower).
        self._mask_mod = sliding_window_mask_mod(self.window)

    @classmethod
    def is_exact(cls, params, seq_len):
        return params["window"] >= seq_len  # every causal key is inside the window

    def mask_mod(self):
        return self._mask_mod

    def dense_mask(self, q_len, k_len, device):
        return band_mask(q_len, k_len, self.window, device)

    def all_visible(self, q_len, k_len):
        return q_len == 1 and k_len <= self.window

    def auto_path(self, q):
        if q.device.type != "cuda":
            return "sdpa_mask"
        return "flash_attn" if flash_attn_available() and q.dtype in HALF else "flex"

    def _run_kernel(self, path, q, k, v):
        if path != "flash_attn":
            return None
        return flash_attn_causal(q, k, v, window=self.window), "flash_attn:fa2-window"

    def init_cache(self, batch_size, max_len, device, dtype):
        return RollingKVCache.empty(batch_size, self.n_head, self.window, self.head_dim, device, dtype,
                                    max_len=max_len)

    def init_static_cache(self, batch_size, max_len, device, dtype):
        # a ring of min(window, max_len) slots: the same memory as the rolling cache
        return StaticKVCache.empty(batch_size, self.n_head, min(self.window, max_len), self.head_dim,
                                   device, dtype, ring=True)

    def static_window(self):
        return self.window

    def cache_bytes_per_token(self, dtype=torch.bfloat16):
        """Growth per cached token while fewer than ``window`` tokens are held (0 after)."""
        return 2 * self.n_embd * dtype_bytes(dtype)

    def cache_bytes(self, batch_size, seq_len, dtype=torch.bfloat16):
        return batch_size * min(seq_len, self.window) * self.cache_bytes_per_token(dtype)

    def attention_pairs(self, seq_len):
        return causal_pairs(seq_len, self.window)

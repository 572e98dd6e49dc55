"""Scaled dot-product attention through ``torch.nn.functional.scaled_dot_product_attention``.

Same projections and math as ``baseline``; the score/softmax/value product runs in one
fused kernel chosen by SDPA.  ``impl`` pins the backend with ``sdpa_kernel`` so that the
kernel that ran is known (on H100 with torch >= 2.10 the default is cuDNN, not FA2):
``"cudnn"``, ``"flash"``, ``"efficient"``, ``"math"``; ``"auto"`` lets SDPA choose and
records the backend it would pick first; ``"reference"`` runs the explicit masked softmax.
Cache: full K/V, 2*n_embd values per token.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import CausalSelfAttention, causal_pairs, core_attention_flops, KVCache, causal_mask, dense_attention, dtype_bytes, merge_heads, split_heads

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def auto_backend_name(q: torch.Tensor) -> str:
    """Best guess of the backend SDPA picks by default (recorded as ``sdpa:auto->...``)."""
    if q.device.type != "cuda":
        return "cpu-flash" if q.dtype in (torch.float32, torch.bfloat16, torch.float16) else "math"
    major, _ = torch.cuda.get_device_capability(q.device)
    if major >= 9 and torch.backends.cudnn.is_available():
        return "cudnn?"
    return "flash?"


def sdpa(q, k, v, *, causal: bool, backend: str | None, dropout_p: float = 0.0,
         enable_gqa: bool = False, attn_mask=None) -> torch.Tensor:
    """Call SDPA, pinned to ``backend`` when one is named."""
    kwargs = dict(attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal)
    if enable_gqa:
        kwargs["enable_gqa"] = True
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    with sdpa_kernel(BACKENDS[backend]):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def causal_sdpa(q, k, v, *, backend: str | None, dropout_p: float = 0.0, enable_gqa: bool = False):
    """Causal SDPA that also handles decoding (queries = last Tq of Tk keys).

    ``is_causal=True`` is top-left aligned in SDPA, which is wrong when Tq < Tk; one-token
    decode needs no mask at all, chunked decode gets an explicit bottom-right mask.
    """
    tq, tk = q.shape[2], k.shape[2]
    if tq == tk:
        return sdpa(q, k, v, causal=True, backend=backend, dropout_p=dropout_p, enable_gqa=enable_gqa)
    if tq == 1:
        return sdpa(q, k, v, causal=False, backend=backend, dropout_p=dropout_p, enable_gqa=enable_gqa)
    mask = causal_mask(tq, tk, q.device)
    return sdpa(q, k, v, causal=False, backend=backend, dropout_p=dropout_p,
                enable_gqa=enable_gqa, attn_mask=mask)


class SDPAAttention(CausalSelfAttention):
    name = "sdpa"
    param_defaults = {}
    kernels = tuple(BACKENDS)

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        bias = self.params["bias"]
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(k, v)
        p = self.dropout if self.training else 0.0
        if self.impl == "reference":
            y = dense_attention(q, k, v, causal_mask(q.shape[2], k.shape[2], x.device),
                                dropout_p=p, training=self.training)
            self.kernel = "reference:dense-mask"
        else:
            backend = None if self.impl == "auto" else self.impl
            y = causal_sdpa(q, k, v, backend=backend, dropout_p=p)
            self.kernel = f"sdpa:{backend}" if backend else f"sdpa:auto->{auto_backend_name(q)}"
        return self.resid_dropout(self.c_proj(merge_heads(y)))

    def init_cache(self, batch_size, max_len, device, dtype):
        return KVCache.empty(batch_size, self.n_head, max_len, self.head_dim, device, dtype)

    def cache_bytes_per_token(self, dtype=torch.bfloat16):
        return 2 * self.n_embd * dtype_bytes(dtype)

    def flops_forward(self, batch_size, seq_len, causal_halved=True):
        tokens = batch_size * seq_len
        proj = 2 * tokens * self.n_embd * (3 * self.n_embd) + 2 * tokens * self.n_embd * self.n_embd
        pairs = causal_pairs(seq_len) if causal_halved else seq_len * seq_len
        return proj + core_attention_flops(batch_size, self.n_head, seq_len, self.head_dim, self.head_dim, pairs)

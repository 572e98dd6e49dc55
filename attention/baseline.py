"""GPT-2 eager attention (Radford et al. 2019; Vaswani et al. 2017, arXiv 1706.03762).

Fused ``c_attn`` (n_embd -> 3*n_embd), explicit scores ``q k^T / sqrt(d)``, boolean causal
mask, softmax, attention dropout, ``c_proj`` and residual dropout — the computation of
HF ``GPT2Attention`` with ``attn_implementation="eager"``.  O(T^2) memory by design: it is
the reference the fused kernels are compared with.  Cache: full K/V, 2*n_embd values/token.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import CausalSelfAttention, causal_pairs, core_attention_flops, KVCache, causal_mask, dense_attention, dtype_bytes, merge_heads, split_heads


class BaselineAttention(CausalSelfAttention):
    name = "baseline"
    param_defaults = {}

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        bias = self.params["bias"]
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.append(k, v)
        mask = causal_mask(q.shape[2], k.shape[2], x.device)
        y = dense_attention(q, k, v, mask, dropout_p=self.dropout, training=self.training)
        self.kernel = "eager:dense-mask"
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

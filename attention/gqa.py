"""Grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245; MQA: Shazeer 2019, arXiv 1911.02150).

``n_kv_head`` key/value heads (a divisor of ``n_head``; 1 = multi-query attention,
``n_head`` = plain multi-head attention) are shared by groups of ``n_head // n_kv_head``
query heads: query head h reads KV head ``h // (n_head // n_kv_head)``.  Projections:
``q_proj`` (n_embd -> n_embd), ``kv_proj`` (n_embd -> 2 * n_kv_head * head_dim, keys first),
``c_proj``.  Parameters and the cache shrink with ``n_kv_head``; the attention core does the
same work as MHA.

Kernels: SDPA with ``enable_gqa=True``: ``"cudnn"``, ``"flash"``, ``"math"`` pin a backend
(EFFICIENT has no GQA kernel); ``impl="auto"`` runs the fastest of cuDNN and FLASH that
passes the correctness check on this device (``attention.selection.autotune``, then pinned;
SDPA's own choice in eager calls nobody tuned), recording the choice; ``"reference"``
repeats the KV heads (``repeat_kv``) and runs the explicit masked softmax.
Cache: K/V of the ``n_kv_head`` heads only, 2 * n_kv_head * head_dim values per token.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .base import (HALF, CausalSelfAttention, KVCache, StaticKVCache, causal_mask, causal_pairs,
                   core_attention_flops, dense_attention, dtype_bytes, merge_heads, split_heads,
                   static_decode_attention)
from .ops.sdpa import auto_backend, causal_sdpa

GQA_BACKENDS = ("cudnn", "flash", "math")


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, T, D) -> (B, H_kv * n_rep, T, D), each KV head repeated for its query group
    (same order as ``repeat_interleave(n_rep, dim=1)``, as in HF's ``repeat_kv``)."""
    if n_rep == 1:
        return x
    B, H, T, D = x.shape
    return x[:, :, None].expand(B, H, n_rep, T, D).reshape(B, H * n_rep, T, D)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class GroupedQueryAttention(CausalSelfAttention):
    name = "gqa"
    param_defaults = {"n_kv_head": 4}
    kernels = GQA_BACKENDS

    @classmethod
    def check_params(cls, params):
        n_kv = params["n_kv_head"]
        if isinstance(n_kv, bool) or not isinstance(n_kv, int) or n_kv < 1:
            raise ValueError(f"attention variant 'gqa': n_kv_head={n_kv!r} must be a positive integer "
                             "(a divisor of n_head; 1 = multi-query attention)")

    def auto_candidates(self, device, dtype):
        return ("cudnn", "flash") if device.type == "cuda" and dtype in HALF else ()

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        n_kv = self.params["n_kv_head"]
        if n_head % n_kv:
            raise ValueError(f"attention variant 'gqa': n_kv_head={n_kv} must divide n_head={n_head}; "
                             f"allowed n_kv_head values: {divisors(n_head)}")
        self.n_kv_head = n_kv
        self.n_rep = n_head // n_kv
        bias = self.params["bias"]
        kv_dim = n_kv * self.head_dim
        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv_proj = nn.Linear(n_embd, 2 * kv_dim, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        q = split_heads(self.q_proj(x), self.n_head)  # (B, H, T, D)
        k, v = self.kv_proj(x).split(self.n_kv_head * self.head_dim, dim=2)
        k, v = split_heads(k, self.n_kv_head), split_heads(v, self.n_kv_head)  # (B, H_kv, T, D)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H_kv, pos+T, D)
        p = self.dropout if self.training else 0.0
        if self.impl == "reference":
            y = dense_attention(q, repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep),
                                causal_mask(q.shape[2], k.shape[2], x.device),
                                dropout_p=p, training=self.training)
            self.kernel = "reference:repeat-kv+dense-mask"
        else:
            gqa = self.n_rep > 1
            backend, name = auto_backend(self, q, k, v, dropout_p=p, enable_gqa=gqa)
            y = causal_sdpa(q, k, v, backend=backend, dropout_p=p, enable_gqa=gqa)
            self.kernel = f"sdpa:{name}" + ("+gqa" if gqa else "")
        return self.resid_dropout(self.c_proj(merge_heads(y)))  # (B, T, C)

    def init_cache(self, batch_size, max_len, device, dtype):
        return KVCache.empty(batch_size, self.n_kv_head, max_len, self.head_dim, device, dtype)

    # --- fixed-shape decode (attnbench.decode) --------------------------------------------
    def init_static_cache(self, batch_size, max_len, device, dtype):
        return StaticKVCache.empty(batch_size, self.n_kv_head, max_len, self.head_dim, device, dtype)

    def load_static_cache(self, static, eager):
        static.load(eager)

    def decode_step_static(self, x: torch.Tensor, cache: StaticKVCache, pos: torch.Tensor) -> torch.Tensor:
        """One token at ``pos`` over the whole KV buffer.  The n_rep query heads of a group
        are folded into the query axis, (B, H, 1, D) -> (B, H_kv, n_rep, D) (head h reads KV
        head h // n_rep, as ``repeat_kv``), so any SDPA backend runs it without enable_gqa
        and without repeating the cache."""
        B = x.shape[0]
        q = split_heads(self.q_proj(x), self.n_head)                            # (B, H, 1, D)
        k, v = self.kv_proj(x).split(self.n_kv_head * self.head_dim, dim=2)
        cache.write(split_heads(k, self.n_kv_head), split_heads(v, self.n_kv_head), pos)
        q = q.reshape(B, self.n_kv_head, self.n_rep, self.head_dim)
        visible = cache.visible(pos)
        y, self.kernel = static_decode_attention(self, q, cache.k, cache.v, visible)
        y = y.reshape(B, self.n_head, 1, self.head_dim)
        return self.resid_dropout(self.c_proj(merge_heads(y)))

    def cache_bytes_per_token(self, dtype=torch.bfloat16):
        return 2 * self.n_kv_head * self.head_dim * dtype_bytes(dtype)

    def flops_forward(self, batch_size, seq_len, causal_halved=True):
        tokens = batch_size * seq_len
        kv_dim = self.n_kv_head * self.head_dim
        proj = 2 * tokens * self.n_embd * (self.n_embd + 2 * kv_dim) + 2 * tokens * self.n_embd * self.n_embd
        pairs = causal_pairs(seq_len) if causal_halved else seq_len * seq_len
        return proj + core_attention_flops(batch_size, self.n_head, seq_len, self.head_dim, self.head_dim, pairs)

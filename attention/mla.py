"""Multi-head latent attention (DeepSeek-AI 2024, DeepSeek-V2, arXiv 2405.04434, section 2.1).

Follows ``deepseek-ai/DeepSeek-V3`` ``inference/model.py::MLA``.  Names: H heads, d_c =
``kv_lora_rank``, d_q = ``q_lora_rank`` (0 = plain ``wq``), d_n = ``qk_nope_head_dim``, d_r =
``qk_rope_head_dim``, d_v = ``v_head_dim``, C = n_embd, b = 1 if ``bias`` else 0.

    q            = wq(x)                      or  wq_b(q_norm(wq_a(x)))   (B, T, H, d_n + d_r)
    [c_kv | k_pe] = wkv_a(x)                                               (B, T, d_c + d_r)
    c_kv         = kv_norm(c_kv)              RMSNorm(d_c, eps=1e-6), as DeepSeek
    [k_nope | v] = wkv_b(c_kv)                per head                     (B, T, H, d_n + d_v)
    k            = [k_nope ; RoPE(k_pe) broadcast to all heads]            (one shared rope key)
    y            = c_proj(causal_softmax(q k^T * (d_n + d_r)^-0.5) v)   (DeepSeek's wo)

Defaults for GPT-2 (head_dim D = C / H): d_c = min(4 D, C) (256 for D = 64), d_q = 0,
d_n = D, d_r = 0, d_v = D.  ``kv_lora_rank`` must be <= n_embd (a latent wider than the model
compresses nothing).  **No decoupled RoPE by default**: GPT-2 has learned absolute position
embeddings, so d_r = 0 keeps the model's position scheme unchanged (and absorption is exact
without a rope part).  d_r > 0 (even) adds DeepSeek's decoupled RoPE (interleaved pairs,
``rope_theta``) on q_pe and the single shared k_pe head.  ``wkv_b`` has no bias (DeepSeek);
the other projections follow ``bias`` like GPT-2's.

Parameter count (``MultiHeadLatentAttention.param_count_formula``):

    q part   = C*H*(d_n+d_r) + b*H*(d_n+d_r)                                      if d_q == 0
             = C*d_q + b*d_q + d_q + d_q*H*(d_n+d_r) + b*H*(d_n+d_r)              if d_q > 0
    kv part  = C*(d_c+d_r) + b*(d_c+d_r) + d_c + d_c*H*(d_n+d_v)
    out part = H*d_v*C + b*C

Cache (decode): only ``c_kv`` after kv_norm and the roped ``k_pe`` per token:
``cache_bytes_per_token = (d_c + d_r) * dtype_bytes`` (MHA: 2*C*dtype_bytes).

Training / full forward (``kernel = "naive:sdpa:<backend>"``): the naive form above through
SDPA.  If the qk head dim (d_n + d_r) and d_v differ, the narrower of v or (q, k) is zero-padded
to the wider one (``+pad``) and the output sliced, so every SDPA backend (FLASH and cuDNN
need equal dims) can run; the softmax scale is passed explicitly.  ``impl`` pins the SDPA
backend (``cudnn``/``flash``/``efficient``/``math``); ``auto`` runs the fastest backend that
passes the correctness check on this device (``attention.selection.autotune``, then pinned);
``reference`` uses explicit masked softmax (``reference:dense-mask``).

Decode (a cache is given; ``kernel = "absorbed:matmul"``): the ABSORBED form.  With W_UK,
W_UV the per-head blocks of ``wkv_b``: ``q_lat = q_nope W_UK`` (B, H, n, d_c),
``scores = (q_lat c_kv^T + q_pe k_pe^T) * (d_n + d_r)^-0.5``, ``out = (P c_kv) W_UV^T`` -- MQA
with one key of width d_c + d_r and one value of width d_c shared by all heads.  Naive and
absorbed forms are the same function (tested in float64).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import (HALF, CausalSelfAttention, causal_mask, causal_pairs, dense_attention, dtype_bytes,
                   slot_positions, static_visible)
from .ops.sdpa import BACKENDS, auto_backend, sdpa

KV_NORM_EPS = 1e-6


def rope_interleaved(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE on consecutive pairs (DeepSeek's complex form).  x: (..., T, d) with d even."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float64) / d)
    ang = positions.to(torch.float64)[:, None] * inv[None, :]              # (T, d/2)
    cos, sin = ang.cos().to(torch.float32), ang.sin().to(torch.float32)
    xf = x.float().reshape(*x.shape[:-1], d // 2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.reshape(x.shape).to(x.dtype)


@functools.cache
def scalar(value: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A 0-dim tensor kept per value, device and dtype: an operand that must be a tensor on the
    device (``baddbmm``'s ignored input) without a fill kernel per call, alive as long as any
    CUDA graph that reads it."""
    return torch.full((), value, device=device, dtype=dtype)


def rms_norm_fp32(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` computed in float32 (float64 stays float64), returned in x's dtype.

    Half-precision ``x`` and weight with autocast off (the probe's bf16 model): ``F.rms_norm``
    computes in float32 itself (the CPU composite upcasts; CUDA's fused kernel accumulates in
    float32), the same result in one kernel instead of four casts around one -- four per norm,
    layer and decoded token.  tests/test_attention_exact.py (CPU) and tests/gpu check equality."""
    if (x.dtype in HALF and norm.weight.dtype == x.dtype
            and not torch.is_autocast_enabled(x.device.type)):
        return F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)
    acc = torch.promote_types(x.dtype, torch.float32)
    return F.rms_norm(x.to(acc), norm.normalized_shape, norm.weight.to(acc), norm.eps).to(x.dtype)


@dataclass
class LatentCache:
    """c_kv (B, max_len, d_c) after kv_norm and roped k_pe (B, max_len, d_r); ``pos`` filled."""

    c_kv: torch.Tensor
    k_pe: torch.Tensor
    pos: int = 0

    def append(self, c_new: torch.Tensor, pe_new: torch.Tensor):
        t = c_new.shape[1]
        end = self.pos + t
        if end > self.c_kv.shape[1]:
            raise ValueError(f"MLA latent cache overflow: {end} tokens > max_len={self.c_kv.shape[1]}")
        self.c_kv[:, self.pos:end] = c_new
        self.k_pe[:, self.pos:end] = pe_new
        self.pos = end
        return self.c_kv[:, :end], self.k_pe[:, :end]


class MultiHeadLatentAttention(CausalSelfAttention):
    name = "mla"
    param_defaults = {"kv_lora_rank": None, "q_lora_rank": 0, "qk_nope_head_dim": None,
                      "qk_rope_head_dim": 0, "v_head_dim": None, "rope_theta": 10000.0}
    kernels = tuple(BACKENDS)

    @classmethod
    def check_params(cls, params):
        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        for key, low in (("kv_lora_rank", 1), ("qk_nope_head_dim", 1), ("v_head_dim", 1)):
            val = params[key]
            if val is not None and (not is_int(val) or val < low):
                raise ValueError(f"mla: {key}={val!r} must be None (default) or an integer >= {low}")
        for key in ("q_lora_rank", "qk_rope_head_dim"):
            val = params[key]
            if not is_int(val) or val < 0:
                raise ValueError(f"mla: {key}={val!r} must be an integer >= 0")
        if params["qk_rope_head_dim"] % 2:
            raise ValueError(f"mla: qk_rope_head_dim={params['qk_rope_head_dim']!r} must be even (RoPE pairs)")
        theta = params["rope_theta"]
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"mla: rope_theta={theta!r} must be a number > 0")

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        p, D, C, H = self.params, self.head_dim, n_embd, n_head
        self.kv_lora_rank = min(4 * D, C) if p["kv_lora_rank"] is None else p["kv_lora_rank"]
        if self.kv_lora_rank > C:
            raise ValueError(f"mla: kv_lora_rank={self.kv_lora_rank} must be <= n_embd={C}")
        self.q_lora_rank = p["q_lora_rank"]
        self.qk_nope_head_dim = D if p["qk_nope_head_dim"] is None else p["qk_nope_head_dim"]
        self.qk_rope_head_dim = p["qk_rope_head_dim"]
        self.v_head_dim = D if p["v_head_dim"] is None else p["v_head_dim"]
        self.rope_theta = float(p["rope_theta"])
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.softmax_scale = self.qk_head_dim ** -0.5
        bias = p["bias"]
        dc, dr, dn, dv = self.kv_lora_rank, self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim
        if self.q_lora_rank == 0:
            self.wq = nn.Linear(C, H * self.qk_head_dim, bias=bias)
        else:
            self.wq_a = nn.Linear(C, self.q_lora_rank, bias=bias)
            self.q_norm = nn.RMSNorm(self.q_lora_rank, eps=KV_NORM_EPS)
            self.wq_b = nn.Linear(self.q_lora_rank, H * self.qk_head_dim, bias=bias)
        self.wkv_a = nn.Linear(C, dc + dr, bias=bias)
        self.kv_norm = nn.RMSNorm(dc, eps=KV_NORM_EPS)
        self.wkv_b = nn.Linear(dc, H * (dn + dv), bias=False)
        self.c_proj = nn.Linear(H * dv, C, bias=bias)     # DeepSeek's wo, GPT-2's name (residual init)
        self.resid_dropout = nn.Dropout(self.dropout)

    def auto_candidates(self, device, dtype):
        return ("cudnn", "flash", "efficient") if device.type == "cuda" and dtype in HALF else ()

    # --- formulas -----------------------------------------------------------------------
    def param_count_formula(self) -> int:
        """The docstring's parameter count (tested against ``sum(p.numel())``)."""
        C, H, b = self.n_embd, self.n_head, int(bool(self.params["bias"]))
        dc, dq, dr = self.kv_lora_rank, self.q_lora_rank, self.qk_rope_head_dim
        dn, dv = self.qk_nope_head_dim, self.v_head_dim
        if dq == 0:
            q = C * H * (dn + dr) + b * H * (dn + dr)
        else:
            q = C * dq + b * dq + dq + dq * H * (dn + dr) + b * H * (dn + dr)
        kv = C * (dc + dr) + b * (dc + dr) + dc + dc * H * (dn + dv)
        out = H * dv * C + b * C
        return q + kv + out

    # --- pieces -------------------------------------------------------------------------
    def _queries(self, x):
        if self.q_lora_rank == 0:
            q = self.wq(x)
        else:
            qa = self.wq_a(x)
            q = self.wq_b(rms_norm_fp32(self.q_norm, qa))
        B, T, _ = x.shape
        q = q.view(B, T, self.n_head, self.qk_head_dim).transpose(1, 2)   # (B, H, T, d_n + d_r)
        return q[..., :self.qk_nope_head_dim], q[..., self.qk_nope_head_dim:]

    def _latent(self, x, start: int, positions: torch.Tensor | None = None):
        """``positions`` (T,) on the device replaces ``arange(start, start + T)`` (static decode)."""
        kv = self.wkv_a(x)                                                 # (B, T, d_c + d_r)
        c_kv, k_pe = kv[..., :self.kv_lora_rank], kv[..., self.kv_lora_rank:]
        c_kv = rms_norm_fp32(self.kv_norm, c_kv)                            # in fp32, as DeepSeek
        if self.qk_rope_head_dim:
            pos = torch.arange(start, start + x.shape[1], device=x.device) if positions is None else positions
            k_pe = rope_interleaved(k_pe, pos, self.rope_theta)
        return c_kv, k_pe                                                  # (B, T, d_c), (B, T, d_r)

    def _rope_q(self, q_pe, start: int, positions: torch.Tensor | None = None):
        if not self.qk_rope_head_dim:
            return q_pe
        pos = torch.arange(start, start + q_pe.shape[2], device=q_pe.device) if positions is None else positions
        return rope_interleaved(q_pe, pos, self.rope_theta)

    def forward(self, x: torch.Tensor, cache: LatentCache | None = None) -> torch.Tensor:
        start = 0 if cache is None else cache.pos
        q_nope, q_pe = self._queries(x)
        q_pe = self._rope_q(q_pe, start)
        c_kv, k_pe = self._latent(x, start)
        p = self.dropout if self.training else 0.0
        if cache is None:
            y = self._naive(q_nope, q_pe, c_kv, k_pe, p)
        else:
            c_all, pe_all = cache.append(c_kv, k_pe)
            y = self._absorbed(q_nope, q_pe, c_all, pe_all, p)
        B, H, T, dv = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, H * dv)))

    def _naive(self, q_nope, q_pe, c_kv, k_pe, p):
        """Up-project the latent to per-head k, v; causal attention over (B, H, T, *)."""
        B, H, T, dn = q_nope.shape
        dv = self.v_head_dim
        kv = self.wkv_b(c_kv).view(B, T, H, dn + dv).transpose(1, 2)       # (B, H, T, d_n + d_v)
        k_nope, v = kv[..., :dn], kv[..., dn:]
        q = torch.cat([q_nope, q_pe], dim=-1)
        k = torch.cat([k_nope, k_pe[:, None].expand(B, H, T, self.qk_rope_head_dim)], dim=-1)
        if self.impl == "reference":
            self.kernel = "reference:dense-mask"
            return dense_attention(q, k, v, causal_mask(T, T, q.device), scale=self.softmax_scale,
                                   dropout_p=p, training=self.training)
        dqk, pad = q.shape[-1], ""
        if dv < dqk:
            v, pad = F.pad(v, (0, dqk - dv)), "+pad-v"
        elif dqk < dv:
            q, k, pad = F.pad(q, (0, dv - dqk)), F.pad(k, (0, dv - dqk)), "+pad-qk"
        backend, name = auto_backend(self, q, k, v, dropout_p=p)
        y = sdpa(q, k, v, causal=True, backend=backend, dropout_p=p, scale=self.softmax_scale)
        self.kernel = f"naive:sdpa:{name}{pad}"
        return y[..., :dv]

    def _absorbed(self, q_nope, q_pe, c_kv, k_pe, p, visible: torch.Tensor | None = None):
        """Weight-absorbed attention over the latent cache.  c_kv: (B, Tk, d_c), k_pe: (B, Tk, d_r).
        ``visible`` (Tk,) bool replaces the causal mask (static decode over the whole buffer)."""
        B, H, Tq, dn = q_nope.shape
        Tk, dv, dc = c_kv.shape[1], self.v_head_dim, self.kv_lora_rank
        w = self.wkv_b.weight.view(H, dn + dv, dc)
        w_uk, w_uv = w[:, :dn], w[:, dn:]                                  # (H, d_n, d_c), (H, d_v, d_c)
        q_lat = torch.einsum("bhtn,hnc->bhtc", q_nope, w_uk.to(q_nope.dtype))  # (B, H, Tq, d_c)
        c = c_kv.to(q_lat.dtype)                                           # (B, Tk, d_c)
        # Heads folded into the query rows: one (H*Tq x d_c) @ (d_c x Tk) product per sequence,
        # the latent cache read once for all heads (FlashMLA's layout).  Broadcasting a
        # (B, 1, Tk, d_c) cache against (B, H, Tq, d_c) made matmul copy the cache once per
        # head and run B*H tiny products: 4.4 ms per decoded token at batch 16 on an H200.
        # The products apply the softmax scale themselves (baddbmm's alpha), the mask is one
        # select and softmax upcasts in its own kernel: in a one-token decode step every kernel
        # costs a launch's worth of GPU time whatever its size (12 layers x these ops).
        scores = torch.baddbmm(scalar(0.0, q_lat.device, q_lat.dtype), q_lat.reshape(B, H * Tq, dc),
                               c.transpose(1, 2), beta=0, alpha=self.softmax_scale)
        if self.qk_rope_head_dim:  # in place: no copy of the scores into a new output
            dr = q_pe.shape[-1]
            scores.baddbmm_(q_pe.reshape(B, H * Tq, dr), k_pe.to(q_pe.dtype).transpose(1, 2), alpha=self.softmax_scale)
        scores = scores.view(B, H, Tq, Tk)
        mask = causal_mask(Tq, Tk, scores.device) if visible is None else visible
        att = torch.softmax(torch.where(mask, scores, float("-inf")), dim=-1,
                            dtype=torch.promote_types(scores.dtype, torch.float32)).to(c.dtype)
        if p > 0.0:
            att = F.dropout(att, p=p)
        o_lat = (att.reshape(B, H * Tq, Tk) @ c).view(B, H, Tq, dc)       # (B, H, Tq, d_c)
        self.kernel = "absorbed:matmul"
        return torch.einsum("bhtc,hvc->bhtv", o_lat, w_uv.to(o_lat.dtype))  # (B, H, Tq, d_v)

    # --- fixed-shape decode (attnbench.decode) --------------------------------------------
    def init_static_cache(self, batch_size, max_len, device, dtype):
        return self.init_cache(batch_size, max_len, device, dtype)   # its ``pos`` stays unused

    def load_static_cache(self, static, eager):
        static.c_kv.copy_(eager.c_kv)
        static.k_pe.copy_(eager.k_pe)

    def decode_step_static(self, x: torch.Tensor, cache: LatentCache, pos: torch.Tensor) -> torch.Tensor:
        """One token at ``pos`` (device scalar): the absorbed form over the whole latent buffer,
        the slots after ``pos`` masked out (the eager decode slices them off instead)."""
        positions = pos.view(1)
        q_nope, q_pe = self._queries(x)
        q_pe = self._rope_q(q_pe, 0, positions)
        c_kv, k_pe = self._latent(x, 0, positions)
        cache.c_kv.index_copy_(1, positions, c_kv)
        cache.k_pe.index_copy_(1, positions, k_pe)
        visible = static_visible(slot_positions(cache.c_kv.shape[1], x.device), pos)
        y = self._absorbed(q_nope, q_pe, cache.c_kv, cache.k_pe, 0.0, visible)
        self.kernel = "static:absorbed:matmul"
        B, H, T, dv = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, H * dv)))

    # --- cache / cost -------------------------------------------------------------------
    def init_cache(self, batch_size, max_len, device, dtype):
        return LatentCache(
            c_kv=torch.zeros(batch_size, max_len, self.kv_lora_rank, device=device, dtype=dtype),
            k_pe=torch.zeros(batch_size, max_len, self.qk_rope_head_dim, device=device, dtype=dtype),
        )

    def cache_bytes_per_token(self, dtype=torch.bfloat16):
        return (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes(dtype)

    def flops_forward(self, batch_size, seq_len, causal_halved=True):
        """Naive (training) form: projections + causal core with qk dim d_n+d_r, value dim d_v.

        Projections per token: 2*[C*H*(d_n+d_r) (or C*d_q + d_q*H*(d_n+d_r))
        + C*(d_c+d_r) + d_c*H*(d_n+d_v) + H*d_v*C].  Core: 2*pairs*H*((d_n+d_r) + d_v).
        Zero padding for SDPA is not counted.  (Absorbed decode of one token over L cached
        ones costs 2*H*(d_n*d_c + L*(2*d_c + d_r) + d_c*d_v) in the core instead.)
        """
        C, H = self.n_embd, self.n_head
        dc, dq, dr = self.kv_lora_rank, self.q_lora_rank, self.qk_rope_head_dim
        dn, dv = self.qk_nope_head_dim, self.v_head_dim
        q = C * H * (dn + dr) if dq == 0 else C * dq + dq * H * (dn + dr)
        per_token = q + C * (dc + dr) + dc * H * (dn + dv) + H * dv * C
        tokens = batch_size * seq_len
        pairs = causal_pairs(seq_len) if causal_halved else seq_len * seq_len
        core = 2 * batch_size * H * pairs * (dn + dr + dv)
        return 2 * tokens * per_token + core

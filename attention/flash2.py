"""FlashAttention-2 (Dao 2023, arXiv 2307.08691): exact causal attention in one tiled kernel.

Same projections and math as ``baseline``/``sdpa`` (fused ``c_attn``, ``c_proj``, same
parameter names, so weights copy across).  Kernels, in the order ``impl="auto"`` tries them:

* ``"flash_attn"`` — Dao-AILab ``flash_attn.flash_attn_func`` when the package imports.  Its
  layout is **(B, T, H, D)** (the seed benchmark passed (B, H, T, D) and attended over heads);
  ``causal=True`` is bottom-right aligned (flash-attn >= 2.1), so cached decoding needs no
  extra mask.  fp16/bf16 on CUDA only.  Kernel name ``"flash_attn:fa2"``.
* ``"sdpa_flash"`` — PyTorch SDPA pinned to ``SDPBackend.FLASH_ATTENTION``, the FA2 code
  vendored in PyTorch (the route on the H100 machine, which has no flash-attn wheel).  Kernel
  name ``"sdpa:flash"``; on CPU the same pin selects PyTorch's CPU flash kernel, recorded as
  ``"sdpa:cpu-flash"`` (a FlashAttention-style CPU loop, not FA2).
* otherwise (CPU, or fp32 tensors on CUDA, which FA2 rejects) the explicit masked softmax,
  recorded as ``"reference:dense-mask"`` — FlashAttention-2 is not available there and the
  kernel name says so.

Cache: full K/V, 2*n_embd values per token.
"""

from __future__ import annotations

import torch

from .base import HALF, FusedQKVAttention, KVCache, causal_mask, dense_attention
from .ops.flash_attn import flash_attn_available, flash_attn_causal
from .ops.sdpa import causal_sdpa


class FlashAttention2(FusedQKVAttention):
    name = "flash2"
    param_defaults = {}
    kernels = ("flash_attn", "sdpa_flash")
    exact = True

    @classmethod
    def check_params(cls, params):
        if params["impl"] == "flash_attn" and not flash_attn_available():
            raise ValueError("attention variant 'flash2': impl='flash_attn' needs the flash_attn package, "
                             "which is not importable here; use impl='sdpa_flash' (PyTorch's vendored FA2) "
                             "or impl='auto'")

    def _path(self, q: torch.Tensor) -> str:
        if self.impl != "auto":
            return self.impl
        if q.device.type == "cuda" and q.dtype in HALF:
            return "flash_attn" if flash_attn_available() else "sdpa_flash"
        return "reference"

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x, cache)  # (B, H, T, D); k, v (B, H, pos+T, D)
        p = self.dropout if self.training else 0.0
        path = self._path(q)
        if path == "flash_attn":
            y = flash_attn_causal(q, k, v, dropout_p=p)
            self.kernel = "flash_attn:fa2"
        elif path == "sdpa_flash":
            y = causal_sdpa(q, k, v, backend="flash", dropout_p=p)
            self.kernel = "sdpa:flash" if q.device.type == "cuda" else "sdpa:cpu-flash"
        else:
            y = dense_attention(q, k, v, causal_mask(q.shape[2], k.shape[2], x.device),
                                dropout_p=p, training=self.training)
            self.kernel = "reference:dense-mask"
        return self.project_out(y)  # (B, T, C)

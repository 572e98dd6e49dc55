"""Scaled dot-product attention through ``torch.nn.functional.scaled_dot_product_attention``.

Same projections and math as ``baseline``; the score/softmax/value product runs in one
fused kernel.  ``impl`` pins the SDPA backend (``"cudnn"``, ``"flash"``, ``"efficient"``,
``"math"``) so that the kernel that ran is known; ``"auto"`` runs the fastest backend that
passes the correctness check on this device (measured by :func:`attention.selection.autotune`
at the job's shape, then pinned; recorded as ``sdpa:auto-><backend>``), and SDPA's own
choice in eager calls nobody tuned; ``"reference"`` runs the explicit masked softmax.
Cache: full K/V, 2*n_embd values per token.

q, k, v go to SDPA as the strided views of the packed ``c_attn`` output, with no copy.
cuDNN caches its backward plan per shape and q/k/v/o strides and reuses it for an output
gradient of another layout (wrong input gradients, relative error 1.39 on the H100 when a
process mixed two layouts at one shape: ``benchmarks/cudnn_packed_layout.py``); the jobs
check every kernel in their own process at their own shape (``attnbench.selfcheck``).
"""

from __future__ import annotations

import torch

from .base import HALF, FusedQKVAttention, KVCache, causal_mask, dense_attention
from .ops.sdpa import BACKENDS, auto_backend, causal_sdpa


class SDPAAttention(FusedQKVAttention):
    name = "sdpa"
    param_defaults = {}
    kernels = tuple(BACKENDS)
    exact = True

    def auto_candidates(self, device, dtype):
        return ("cudnn", "flash", "efficient") if device.type == "cuda" and dtype in HALF else ()

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x, cache)  # (B, H, T, D), keys/values incl. the cache
        p = self.dropout if self.training else 0.0
        if self.impl == "reference":
            y = dense_attention(q, k, v, causal_mask(q.shape[2], k.shape[2], x.device),
                                dropout_p=p, training=self.training)
            self.kernel = "reference:dense-mask"
        else:
            backend, name = auto_backend(self, q, k, v, dropout_p=p)
            y = causal_sdpa(q, k, v, backend=backend, dropout_p=p)
            self.kernel = f"sdpa:{name}"
        return self.project_out(y)


"""GPT-2 eager attention (Radford et al. 2019; Vaswani et al. 2017, arXiv 1706.03762).

Fused ``c_attn`` (n_embd -> 3*n_embd), explicit scores ``q k^T / sqrt(d)``, boolean causal
mask, softmax, attention dropout, ``c_proj`` and residual dropout — the computation of
HF ``GPT2Attention`` with ``attn_implementation="eager"``.  O(T^2) memory by design: it is
the reference the fused kernels are compared with.  Cache: full K/V, 2*n_embd values/token.
"""

from __future__ import annotations

import torch

from .base import FusedQKVAttention, KVCache, causal_mask, dense_attention


class BaselineAttention(FusedQKVAttention):
    name = "baseline"
    param_defaults = {}
    exact = True
    static_reference = True    # the static decode step stays the explicit masked softmax too

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x, cache)  # (B, H, T, D), keys/values incl. the cache
        mask = causal_mask(q.shape[2], k.shape[2], x.device)
        y = dense_attention(q, k, v, mask, dropout_p=self.dropout, training=self.training)
        self.kernel = "eager:dense-mask"
        return self.project_out(y)




"""FlexAttention (Dong et al. 2024, arXiv 2412.05496) machinery shared by the mask-mod variants.

``block_mask`` builds a ``BlockMask`` once per (mask_mod, lengths, device) and shares it;
``compiled_flex_attention`` is the one process-wide ``torch.compile(flex_attention)``;
``scored_dense_attention`` is the dense reference (scores, bias and softmax in >= fp32);
:class:`MaskModAttention` is the body of ``flex`` and ``sliding_window``: GPT-2 projections,
a ``mask_mod`` (attention-gym style: a small named function), and the kernels that can run it
(compiled flex, eager flex, SDPA with the mask materialised, the dense reference).
"""

from __future__ import annotations

import math

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from ..base import FusedQKVAttention, causal_mask
from .sdpa import call_case, memoised_choice, sdpa, sdpa_choice


def causal_mask_mod(b, h, q_idx, kv_idx):
    """Query q sees key kv iff kv <= q."""
    return q_idx >= kv_idx


# --- shared machinery ------------------------------------------------------------------------

_BLOCK_MASKS: dict = {}
_COMPILED_FLEX = None


def block_mask(mask_mod, q_len: int, kv_len: int, device):
    """The ``BlockMask`` of ``mask_mod`` for (q_len, kv_len) on ``device``, built once and
    shared by all modules (same for every batch element and head)."""
    key = (mask_mod, q_len, kv_len, str(device))
    bm = _BLOCK_MASKS.get(key)
    if bm is None:
        bm = create_block_mask(mask_mod, None, None, q_len, kv_len, device=device)
        _BLOCK_MASKS[key] = bm
    return bm


def compiled_flex_attention():
    """The process-wide ``torch.compile(flex_attention)``, created on first use.

    Each new shape recompiles (``dynamic=False`` keeps kernels static); a model with several
    shapes (train, eval, prefill lengths) easily passes dynamo's default recompile limit of 8,
    after which flex silently runs unfused with O(T^2) memory, so the limit is raised here.
    """
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        cfg = torch._dynamo.config
        for attr in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, attr):
                setattr(cfg, attr, max(getattr(cfg, attr), 64))
                break
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


def scored_dense_attention(q, k, v, mask: torch.Tensor, bias: torch.Tensor | None = None,
                           scale: float | None = None) -> torch.Tensor:
    """Reference: softmax(q k^T * scale + bias, masked) v; scores, bias, softmax in >= fp32.

    q: (B, H, Tq, D), k/v: (B, H, Tk, D), mask: (Tq, Tk) bool (True = visible),
    bias: broadcastable to (B, H, Tq, Tk) or None.  Same order of operations as flex: the
    score_mod sees the already scaled score.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = q @ k.transpose(-2, -1)
    att = att.to(torch.promote_types(att.dtype, torch.float32)) * scale  # fp32 (fp64 stays fp64)
    if bias is not None:
        att = att + bias
    att = att.masked_fill(~mask, float("-inf"))
    att = torch.softmax(att, dim=-1).to(v.dtype)
    return att @ v


class MaskModAttention(FusedQKVAttention):
    """Shared body of the FlexAttention-based variants (``flex``, ``sliding_window``).

    Subclasses define the mask: :meth:`mask_mod` (for flex), :meth:`dense_mask` (the same
    predicate as a (Tq, Tk) boolean tensor, queries bottom-right aligned), optionally
    :meth:`score_bias` / :meth:`flex_score_mod`, :meth:`all_visible`, and extra kernels in
    :meth:`_run_kernel`.
    """

    kernels = ("flex", "flex_eager", "sdpa_mask")
    mask_label = "mask"

    # --- hooks --------------------------------------------------------------------------
    def mask_mod(self):
        return causal_mask_mod

    def dense_mask(self, q_len: int, k_len: int, device) -> torch.Tensor:
        return causal_mask(q_len, k_len, device)

    def all_visible(self, q_len: int, k_len: int) -> bool:
        """True when every query sees every key (then SDPA runs without a mask)."""
        return q_len == 1

    def flex_score_mod(self, device):
        return None

    def score_bias(self, q_len: int, k_len: int, device) -> torch.Tensor | None:
        return None

    def kernel_suffix(self) -> str:
        return ""

    def auto_path(self, q: torch.Tensor) -> str:
        return "flex" if q.device.type == "cuda" else "sdpa_mask"

    # --- paths --------------------------------------------------------------------------
    def _flex(self, q, k, v, compiled: bool):
        bm = block_mask(self.mask_mod(), q.shape[2], k.shape[2], q.device)
        fn = compiled_flex_attention() if compiled else flex_attention
        if compiled and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            # Seen on torch 2.11 (H100): compiled flex called under no_grad/inference_mode traces
            # the HOP's dense fallback and fails in dynamo (_safe_softmax).  In grad mode it
            # takes the fused kernel; the inputs do not require grad, so nothing is recorded.
            with torch.enable_grad():
                return fn(q, k, v, score_mod=self.flex_score_mod(q.device), block_mask=bm)
        return fn(q, k, v, score_mod=self.flex_score_mod(q.device), block_mask=bm)

    def _choice(self, q, k, v, mask, case: str) -> str:
        """SDPA's backend choice, asked once per call case (see ``ops.sdpa.call_case``)."""
        return memoised_choice(self, call_case(q, k, extra=(case,)),
                               lambda: sdpa_choice(q, k, v, causal=False, attn_mask=mask))

    def _sdpa_mask(self, q, k, v):
        tq, tk = q.shape[2], k.shape[2]
        bias = self.score_bias(tq, tk, q.device)
        if bias is None and self.all_visible(tq, tk):
            return sdpa(q, k, v, causal=False, backend=None), self._choice(q, k, v, None, "no-mask")
        mask = self.dense_mask(tq, tk, q.device)
        if bias is not None:  # additive float mask in the query dtype
            mask = bias.masked_fill(~mask, float("-inf")).to(q.dtype)
        return (sdpa(q, k, v, causal=False, backend=None, attn_mask=mask),
                self._choice(q, k, v, mask, "bias" if bias is not None else "bool") + "+" + self.mask_label)

    def _run_kernel(self, path, q, k, v):
        """Run ``path`` if it applies; return (y, kernel name) or None."""
        return None

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        q, k, v = self.project_qkv(x, cache)  # (B, H, T, D); k, v (B, H, Tk, D), last T new
        tq, tk = q.shape[2], k.shape[2]
        path = self.auto_path(q) if self.impl == "auto" else self.impl
        out = self._run_kernel(path, q, k, v)
        if out is not None:
            y, kernel = out
        elif path in ("flex", "flex_eager") and tq == tk and not self.__dict__.get("_flex_no_grad_failed"):
            try:
                y = self._flex(q, k, v, compiled=path == "flex")
                kernel = "flex:compiled" if path == "flex" else "flex:eager"
            except Exception as err:  # inference only: fall back, say so in the kernel name
                if torch.is_grad_enabled() or torch.compiler.is_compiling():
                    raise
                self._flex_no_grad_failed = f"{type(err).__name__}"
                y, choice = self._sdpa_mask(q, k, v)
                kernel = f"sdpa:{choice}(flex failed without grad)"
        elif path in ("flex", "flex_eager") and tq == tk:
            y, choice = self._sdpa_mask(q, k, v)
            kernel = f"sdpa:{choice}(flex failed without grad)"
        elif path == "reference":
            y = scored_dense_attention(q, k, v, self.dense_mask(tq, tk, q.device),
                                       self.score_bias(tq, tk, q.device))
            kernel = "reference:dense-mask"
        else:  # sdpa_mask, and flex paths while decoding
            y, choice = self._sdpa_mask(q, k, v)
            kernel = f"sdpa:{choice}" + ("(decode)" if path != "sdpa_mask" else "")
        self.kernel = kernel + self.kernel_suffix()
        return self.project_out(y)  # (B, T, C)

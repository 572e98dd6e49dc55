"""FlexAttention (Dong et al. 2024, arXiv 2412.05496): causal attention via ``torch.nn.attention.flex_attention``.

GPT-2 projections (fused ``c_attn``, ``c_proj``; same names as ``baseline``/``sdpa``) and
exact causal softmax attention, expressed as a FlexAttention ``mask_mod``
(:func:`causal_mask_mod`) plus an optional ``score_mod``:

* ``score_mod="none"`` (default) — plain causal attention;
* ``score_mod="alibi"`` — ALiBi (Press et al. 2022, arXiv 2108.12409): score + m_h * (j - i)
  with the standard geometric head slopes m_h (:func:`alibi_slopes`), on top of GPT-2's
  learned positions.

Kernels (``module.kernel``):

* ``"flex:compiled"`` (``impl="flex"``; the ``auto`` choice on CUDA) — one module-level
  ``torch.compile(flex_attention)`` shared by all instances, a causal ``BlockMask`` built once
  per (q_len, kv_len, device) and shared, one ``score_mod`` object per (n_head, device): new
  closures per call would recompile and, past dynamo's recompile limit, silently fall back
  to the unfused O(T^2) path.
* ``"flex:eager"`` (``impl="flex_eager"``) — uncompiled flex (materialises scores; forward
  only on CPU, where FlexAttention has no backward).  For tests.
* ``"sdpa:<backend>+mask"`` (``impl="sdpa_mask"``; the ``auto`` choice on CPU) — SDPA with the
  same mask (and ALiBi bias) materialised.
* ``"reference:dense-mask"`` (``impl="reference"``) — explicit masked softmax with the bias
  added to fp32 scores.

Cached decoding (queries fewer than keys) runs the ``sdpa_mask`` path with the bottom-right
aligned mask, recorded as ``"...(decode)"``: a flex block mask per decode offset would
recompile every step.  Attention-weight dropout is not applied (FlexAttention has none);
``dropout`` acts on the output projection only, in every path alike.
Cache: full K/V, 2*n_embd values per token.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from .base import FusedQKVAttention, causal_mask
from .sdpa import memoised_choice, sdpa, sdpa_choice

SCORE_MODS = ("none", "alibi")


# --- mask and score mods (attention-gym style: small named functions, built once) -----------

def causal_mask_mod(b, h, q_idx, kv_idx):
    """Query q sees key kv iff kv <= q."""
    return q_idx >= kv_idx


def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi head slopes (Press et al., reference code): 2^(-8/n * i) for i = 1..n when n is a
    power of two; otherwise those of the nearest lower power of two followed by every other
    slope of the next power of two."""
    def power_of_2(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]
    if math.log2(n_head).is_integer():
        return power_of_2(n_head)
    closest = 2 ** math.floor(math.log2(n_head))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n_head - closest]


@functools.lru_cache(maxsize=None)
def alibi_score_mod(n_head: int, device: str):
    """The ALiBi ``score_mod`` for ``n_head`` heads on ``device``: one function object per
    (n_head, device), shared by every layer, so compiled flex compiles it once per shape."""
    slopes = torch.tensor(alibi_slopes(n_head), dtype=torch.float32, device=device)

    def alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)

    return alibi


def alibi_bias(n_head: int, q_len: int, k_len: int, device, offset: int | None = None) -> torch.Tensor:
    """(H, q_len, k_len) fp32 ALiBi bias m_h * (j - i), queries bottom-right aligned."""
    offset = k_len - q_len if offset is None else offset
    slopes = torch.tensor(alibi_slopes(n_head), dtype=torch.float32, device=device)
    q_pos = torch.arange(q_len, device=device)[:, None] + offset
    k_pos = torch.arange(k_len, device=device)[None, :]
    return slopes[:, None, None] * (k_pos - q_pos).float()


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
        """SDPA's backend choice, asked once per (case, device, dtype, heads, grad mode)."""
        key = (case, q.device, q.dtype, q.shape[1], q.shape[-1], torch.is_grad_enabled() and q.requires_grad)
        return memoised_choice(self, key, lambda: sdpa_choice(q, k, v, causal=False, attn_mask=mask))

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

    # --- contract -----------------------------------------------------------------------





class FlexAttention(MaskModAttention):
    name = "flex"
    param_defaults = {"score_mod": "none"}
    mask_label = "causal-mask"

    @classmethod
    def check_params(cls, params):
        if params["score_mod"] not in SCORE_MODS:
            raise ValueError(f"attention variant 'flex': score_mod={params['score_mod']!r} is not one of "
                             f"{list(SCORE_MODS)}")

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        self.score_mod = self.params["score_mod"]

    def flex_score_mod(self, device):
        return alibi_score_mod(self.n_head, str(device)) if self.score_mod == "alibi" else None

    def score_bias(self, q_len, k_len, device):
        if self.score_mod == "alibi":
            return alibi_bias(self.n_head, q_len, k_len, device)
        return None

    def kernel_suffix(self):
        return "+alibi" if self.score_mod == "alibi" else ""

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

from .ops.flex import MaskModAttention, causal_mask_mod  # noqa: F401  (causal_mask_mod: the mask this variant runs)

SCORE_MODS = ("none", "alibi")


# --- score mod (attention-gym style: a small named function, built once) ---------------------

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


@functools.lru_cache(maxsize=None)
def alibi_slopes_tensor(n_head: int, device: str) -> torch.Tensor:
    """(H,) fp32 slopes on ``device``, made once: the static decode step reads them inside a
    CUDA graph, where a host-to-device copy per call could not be captured."""
    return torch.tensor(alibi_slopes(n_head), dtype=torch.float32, device=device)


def alibi_bias(n_head: int, q_len: int, k_len: int, device, offset: int | None = None) -> torch.Tensor:
    """(H, q_len, k_len) fp32 ALiBi bias m_h * (j - i), queries bottom-right aligned."""
    offset = k_len - q_len if offset is None else offset
    slopes = torch.tensor(alibi_slopes(n_head), dtype=torch.float32, device=device)
    q_pos = torch.arange(q_len, device=device)[:, None] + offset
    k_pos = torch.arange(k_len, device=device)[None, :]
    return slopes[:, None, None] * (k_pos - q_pos).float()


class FlexAttention(MaskModAttention):
    name = "flex"
    param_defaults = {"score_mod": "none"}
    mask_label = "causal-mask"

    @classmethod
    def is_exact(cls, params, seq_len):
        return params["score_mod"] == "none"

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

    def static_bias(self, cache, pos):
        """m_h * (j - i) over the cache slots, as :func:`alibi_bias` for the query at ``pos``."""
        if self.score_mod != "alibi":
            return None
        key_pos = cache.key_positions(pos)
        slopes = alibi_slopes_tensor(self.n_head, str(key_pos.device))
        return slopes[:, None, None] * (key_pos - pos).float()[None, None, :]   # (H, 1, S)

    def decode_step_static(self, x, cache, pos):
        y = super().decode_step_static(x, cache, pos)
        self.kernel += self.kernel_suffix()
        return y

    def kernel_suffix(self):
        return "+alibi" if self.score_mod == "alibi" else ""

"""The contract every attention variant implements, and the pieces they share.

A variant is one ``nn.Module`` subclass of :class:`CausalSelfAttention` in its own file
(``attention/<name>.py``) plus one entry in ``attention.VARIANTS``; a user's class (config
``class:``) need only be an ``nn.Module``.  ``attention.contract.check_class`` tries every
part below on tiny CPU inputs when the config is validated, before any job runs.

Required:

* ``cls(n_embd, n_head, **params)`` — params are the keys of ``cls.param_defaults`` (merged
  with :data:`COMMON_PARAMS`); anything else is a ``ValueError`` naming the allowed keys.
* ``module(x)`` with ``x`` of shape ``(B, T, n_embd)`` returns ``(B, T, n_embd)``, causally:
  output position t depends only on inputs at positions <= t, at every length and in
  training as in eval mode (checked by changing the inputs after t at T = 7, 64 and 300, or
  up to the longest input the run gives the module).
  The output projection is part of the module; training backpropagates through it.
* ``cache = module.init_cache(batch_size, max_len, device, dtype)``, then
  ``module(x_new, cache=cache)`` returns the outputs for the new positions and advances the
  cache (``cache.pos`` counts the tokens it has seen): a prefill followed by token-by-token
  decoding reproduces the full forward.
* ``module.kernel`` names the implementation that ran last (e.g. ``"sdpa:cudnn"``,
  ``"reference:dense-mask"``): a definite name, never a guess.
* ``module.cache_bytes_per_token(dtype)`` the cache growth per cached token and sequence (0
  for fixed-size states such as linear attention's); where it does not depend on the dtype,
  a number (attribute or property) will do.  Read it with :func:`cache_bytes_per_token_of`.
* ``module.cache_bytes(batch_size, seq_len, dtype)`` the size of the cache after ``seq_len``
  tokens (:class:`CausalSelfAttention` derives it from the growth per token).

Optional (a class without them is accepted):

* ``module.flops_forward(batch_size, seq_len, causal_halved)`` gives its analytic FLOPs.
  Without it (absent, or raising ``NotImplementedError`` as :class:`CausalSelfAttention`'s
  does) the FLOP metrics are recorded as unavailable with the reason
  (:func:`flops_forward_of`); where present it is checked like the required parts.
* ``impl="reference"`` runs the plain PyTorch path that every fast path is checked against
  (``attention.selection``); ``impl="auto"`` the fastest path that passes that check.
* ``auto_candidates(device, dtype)`` names the ``impl`` values ``"auto"`` chooses among by
  measurement (``attention.selection.autotune`` sets ``module.auto_pin``).
* ``exact`` (or ``is_exact(params, seq_len)``) says the variant computes the same function as
  ``baseline``, so that its loss curve must coincide with baseline's (the report checks it).
* ``begin_training_step()`` prepares per-step state outside the forward (LSH's fresh
  rotations); the training loop calls it before every training forward, so the forward only
  reads tensors and compiles into one graph.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops.sdpa import call_case, memoised_choice, sdpa, sdpa_choice

# Params every variant accepts.  ``impl``: "auto" picks the fastest path available on the
# device, "reference" forces the plain PyTorch path, other values name one kernel.
COMMON_PARAMS: dict[str, Any] = {"dropout": 0.0, "impl": "auto", "bias": True}
HALF = (torch.float16, torch.bfloat16)


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class CausalSelfAttention(nn.Module):
    """Base class: parameter checking, head bookkeeping, the cache-size contract."""

    # Subclasses set these.
    name: ClassVar[str] = ""
    param_defaults: ClassVar[dict[str, Any]] = {}
    # Values accepted for ``impl`` besides "auto" and "reference".
    kernels: ClassVar[tuple[str, ...]] = ()
    # Computes the same function as ``baseline`` (same weights -> same outputs up to rounding).
    exact: ClassVar[bool] = False

    def __init__(self, n_embd: int, n_head: int, **params: Any):
        super().__init__()
        self.params = self.resolve_params(params)
        if n_embd <= 0 or n_head <= 0:
            raise ValueError(f"{self.name}: n_embd and n_head must be positive, got {n_embd}, {n_head}")
        if n_embd % n_head:
            raise ValueError(f"{self.name}: n_head={n_head} must divide n_embd={n_embd}")
        self.n_embd = n_embd
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.dropout = float(self.params["dropout"])
        self.impl = self.params["impl"]
        self.auto_pin: str | None = None  # the impl "auto" runs, once measured (attention.selection)
        self.kernel = "not-run"

    @classmethod
    def allowed_params(cls) -> dict[str, Any]:
        return {**COMMON_PARAMS, **cls.param_defaults}

    @classmethod
    def resolve_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Merge ``params`` over the defaults; reject unknown keys and bad values by name."""
        allowed = cls.allowed_params()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(
                f"attention variant {cls.name!r}: unknown parameter(s) {unknown}; "
                f"allowed: {sorted(allowed)}"
            )
        merged = {**allowed, **params}
        impls = ("auto", "reference", *cls.kernels)
        if merged["impl"] not in impls:
            raise ValueError(
                f"attention variant {cls.name!r}: impl={merged['impl']!r} is not one of {list(impls)}"
            )
        if not 0.0 <= float(merged["dropout"]) < 1.0:
            raise ValueError(f"attention variant {cls.name!r}: dropout={merged['dropout']!r} must be in [0, 1)")
        cls.check_params(merged)
        return merged

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Variant-specific validation; raise ValueError naming the key."""

    @classmethod
    def is_exact(cls, params: dict[str, Any], seq_len: int) -> bool:
        """Whether this configuration computes baseline's function at sequence length ``seq_len``."""
        return cls.exact

    def auto_candidates(self, device: torch.device, dtype: torch.dtype) -> tuple[str, ...]:
        """``impl`` values that ``"auto"`` chooses among by measurement on ``device`` for
        inputs of compute dtype ``dtype``; () when ``auto`` follows a fixed rule."""
        return ()

    # --- cache contract -----------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, device, dtype):
        raise NotImplementedError

    def cache_bytes_per_token(self, dtype: torch.dtype = torch.bfloat16) -> int:
        raise NotImplementedError

    def cache_bytes(self, batch_size: int, seq_len: int, dtype: torch.dtype = torch.bfloat16) -> int:
        return batch_size * seq_len * cache_bytes_per_token_of(self, dtype)

    # --- analytic cost ------------------------------------------------------------------
    def flops_forward(self, batch_size: int, seq_len: int, causal_halved: bool = True) -> int:
        """Matmul FLOPs (2 per multiply-add) of one forward over ``seq_len`` tokens.

        Projections plus the attention core.  ``causal_halved=True`` counts only the score
        and value products a causal kernel needs (about T^2/2 pairs, the FlashAttention
        convention); ``False`` counts what a dense T x T implementation executes (what
        ``FlopCounterMode`` reports for SDPA).  Softmax and elementwise work is not counted.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"n_embd={self.n_embd}, n_head={self.n_head}, params={self.params}"


# --- reading the contract's flexible and optional parts ----------------------------------

def cache_bytes_per_token_of(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """``module.cache_bytes_per_token(dtype)``, or the number itself where the class gives it
    as an attribute or property (the same for every dtype)."""
    size = module.cache_bytes_per_token
    return size(dtype) if callable(size) else size


def flops_forward_of(module: nn.Module, batch_size: int, seq_len: int,
                     causal_halved: bool = True) -> tuple[int | None, str | None]:
    """``(module.flops_forward(...), None)``, or ``(None, reason)`` where the class has no
    formula (``flops_forward`` is optional) or its formula fails at this shape."""
    flops = getattr(module, "flops_forward", None)
    name = type(module).__name__
    if not callable(flops):
        return None, f"{name} defines no flops_forward (optional in the attention contract)"
    try:
        return int(flops(batch_size, seq_len, causal_halved=causal_halved)), None
    except NotImplementedError:
        return None, f"{name}.flops_forward is not implemented (optional in the attention contract)"
    except Exception as err:  # a formula that fails at this shape: the metric, not the job, is lost
        return None, f"{name}.flops_forward({batch_size}, {seq_len}) failed: {type(err).__name__}: {err}"


# --- shared helpers --------------------------------------------------------------------

def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, H*D) -> (B, H, T, D)."""
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, H*D)."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def causal_mask(q_len: int, k_len: int, device, offset: int | None = None) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, True where query i may see key j.

    Queries are the *last* ``q_len`` positions of the ``k_len`` keys (bottom-right aligned),
    so query i sits at absolute position ``offset + i`` with ``offset = k_len - q_len``.
    """
    if offset is None:
        offset = k_len - q_len
    q_pos = torch.arange(q_len, device=device)[:, None] + offset
    k_pos = torch.arange(k_len, device=device)[None, :]
    return k_pos <= q_pos


def dense_attention(q, k, v, mask: torch.Tensor | None, scale: float | None = None,
                    dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Plain softmax attention with an explicit boolean mask (True = visible).

    q: (B, H, Tq, D), k/v: (B, H, Tk, D[v]).  The reference every exact variant is tested
    against; rows with no visible key would be NaN, so callers never build such masks.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = (q @ k.transpose(-2, -1)) * scale
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    # softmax in at least fp32 (half inputs upcast; float64 stays float64)
    att = torch.softmax(att.to(torch.promote_types(att.dtype, torch.float32)), dim=-1).to(q.dtype)
    if dropout_p > 0.0 and training:
        att = F.dropout(att, p=dropout_p)
    return att @ v


@dataclass
class KVCache:
    """Full key/value cache: k, v of shape (B, H_kv, max_len, D); ``pos`` tokens filled."""

    k: torch.Tensor
    v: torch.Tensor
    pos: int = 0

    @classmethod
    def empty(cls, batch_size, n_kv_head, max_len, head_dim, device, dtype, v_dim=None):
        v_dim = head_dim if v_dim is None else v_dim
        return cls(
            k=torch.zeros(batch_size, n_kv_head, max_len, head_dim, device=device, dtype=dtype),
            v=torch.zeros(batch_size, n_kv_head, max_len, v_dim, device=device, dtype=dtype),
        )

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor):
        """Write (B, H_kv, t, D) at ``pos``; return views of all keys/values so far."""
        t = k_new.shape[2]
        end = self.pos + t
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache overflow: {end} tokens > max_len={self.k.shape[2]}")
        self.k[:, :, self.pos:end] = k_new
        self.v[:, :, self.pos:end] = v_new
        self.pos = end
        return self.k[:, :, :end], self.v[:, :, :end]


# --- fixed-shape decode (attnbench.decode: one token per step, capturable in a CUDA graph) ---
#
# A CUDA graph replays the same kernels on the same buffers, so a capturable decode step
# cannot slice the cache to the filled length or branch on a Python position: it writes the
# new key/value at a position held in a device tensor and attends over the whole buffer
# with a mask that hides the slots not (or no longer) visible.  The eager ``forward(x,
# cache=...)`` path above stays the reference these steps are tested against.

@dataclass
class StaticKVCache:
    """K/V buffers (B, H_kv, S, D) for the fixed-shape decode step.

    ``ring=False``: slot j holds position j (S = max_len).  ``ring=True`` (sliding window):
    S = min(window, max_len) slots reused modulo S, so position p lives in slot p % S and the
    cache keeps its size of ``window`` tokens, as :class:`RollingKVCache` does eagerly.
    """

    k: torch.Tensor
    v: torch.Tensor
    ring: bool = False

    @classmethod
    def empty(cls, batch_size, n_kv_head, slots, head_dim, device, dtype, ring=False):
        shape = (batch_size, n_kv_head, slots, head_dim)
        return cls(k=torch.zeros(shape, device=device, dtype=dtype),
                   v=torch.zeros(shape, device=device, dtype=dtype), ring=ring)

    @property
    def slots(self) -> int:
        return self.k.shape[2]

    def write(self, k_new: torch.Tensor, v_new: torch.Tensor, pos: torch.Tensor) -> None:
        """Write one token's (B, H_kv, 1, D) key/value at position ``pos`` (int64 device scalar)."""
        slot = (pos % self.slots if self.ring else pos).view(1)
        self.k.index_copy_(2, slot, k_new)
        self.v.index_copy_(2, slot, v_new)

    def key_positions(self, pos: torch.Tensor) -> torch.Tensor:
        """(S,) int64: the absolute position each slot holds once token ``pos`` is written;
        negative for ring slots never written yet (and >= pos+1 for unwritten plain slots)."""
        j = slot_positions(self.slots, self.k.device)
        if not self.ring:
            return j
        return pos - torch.remainder(pos - j, self.slots)   # the latest p <= pos with p = j mod S

    def visible(self, pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """(S,) bool: which slots the query at ``pos`` sees once token ``pos`` is written.  Slot j
        is first written at position j, so ``j <= pos`` is both "not in the future" (plain) and
        "written" (ring).  A window W also needs the held positions (> pos - W), except in a ring
        of at most W slots, which holds only those.  One comparison in the common cases: each
        kernel here runs once per layer and decoded token."""
        visible = slot_positions(self.slots, self.k.device) <= pos
        if window is not None and not (self.ring and window >= self.slots):
            visible = visible & (self.key_positions(pos) > pos - window)
        return visible

    def load(self, eager) -> None:
        """Copy a prefilled eager cache (:class:`KVCache`, or ``RollingKVCache`` for a ring)."""
        if not self.ring:
            self.k.copy_(eager.k)
            self.v.copy_(eager.v)
            return
        # RollingKVCache keeps positions pos-filled .. pos-1 in slots 0 .. filled-1, in order;
        # the ring wants position p in slot p % S: a rotation by (pos - filled) % S.
        shift = (eager.pos - eager.filled) % self.slots
        self.k.copy_(torch.roll(eager.k, shifts=shift, dims=2))
        self.v.copy_(torch.roll(eager.v, shifts=shift, dims=2))


def static_visible(key_pos: torch.Tensor, pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """(S,) bool: which keys at positions ``key_pos`` the query at ``pos`` sees: not in its future
    (<= pos) and, with a window W, among the last W positions (> pos - W).  For a cache whose slot
    j holds position j (MLA's latent cache); :meth:`StaticKVCache.visible` for K/V caches."""
    visible = key_pos <= pos
    if window is not None:
        visible = visible & (key_pos > pos - window)
    return visible


@functools.cache
def slot_positions(slots: int, device: torch.device) -> torch.Tensor:
    """``arange(slots)`` on ``device``, made once: the positions of a plain static cache's slots
    (no kernel per decode step; kept alive for the CUDA graphs that read it)."""
    return torch.arange(slots, device=device)


def static_decode_attention(module, q, k, v, visible: torch.Tensor, bias: torch.Tensor | None = None,
                            scale: float | None = None) -> tuple[torch.Tensor, str]:
    """Softmax attention of the new query over a whole fixed-size cache; (y, kernel name).

    q: (B, H, Tq, D) (Tq > 1 only for grouped heads folded into the query axis), k/v: (B, H,
    S, D), visible: (S,) bool, bias: broadcastable to (B, H, Tq, S) in fp32, or None.
    ``module.impl == "reference"`` or ``module.static_reference`` (baseline): the explicit
    masked softmax in >= fp32; otherwise SDPA with the mask as ``attn_mask`` (boolean, or
    additive in the query dtype when there is a bias), the backend SDPA picks for a masked
    call -- asked once per call case and named, never guessed.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if module.impl == "reference" or getattr(module, "static_reference", False):
        att = (q @ k.transpose(-2, -1)).to(torch.promote_types(q.dtype, torch.float32)) * scale
        if bias is not None:
            att = att + bias
        att = torch.softmax(torch.where(visible, att, float("-inf")), dim=-1).to(v.dtype)  # one kernel, not ~ + fill
        return att @ v, "static:" + ("eager" if module.impl != "reference" else "reference") + ":dense-mask"
    mask = visible.view(1, 1, 1, -1)
    if bias is not None:
        mask = torch.where(mask, bias, float("-inf")).to(q.dtype)
    case = call_case(q, k, extra=("static-decode", bias is not None))
    name = memoised_choice(module, case, lambda: sdpa_choice(q, k, v, causal=False, attn_mask=mask))
    y = sdpa(q, k, v, causal=False, backend=None, attn_mask=mask, scale=scale)
    return y, f"static:sdpa:{name}+mask"


class FusedQKVAttention(CausalSelfAttention):
    """GPT-2's projections (fused ``c_attn`` -> q, k, v; ``c_proj``; residual dropout) and
    a full K/V cache, shared by the variants that differ only in how they compute softmax
    attention (baseline, sdpa, flash2, flex, sliding_window)."""

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        bias = self.params["bias"]
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)

    def project_qkv(self, x: torch.Tensor, cache=None):
        """(B, T, C) -> q (B, H, T, D) and k, v (B, H, Tk, D), appended to ``cache`` if given."""
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))
        if cache is not None:
            k, v = cache.append(k, v)
        return q, k, v

    def project_out(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D) -> (B, T, C)."""
        return self.resid_dropout(self.c_proj(merge_heads(y)))

    def init_cache(self, batch_size, max_len, device, dtype):
        return KVCache.empty(batch_size, self.n_head, max_len, self.head_dim, device, dtype)

    # --- fixed-shape decode (attnbench.decode) --------------------------------------------
    def init_static_cache(self, batch_size, max_len, device, dtype):
        return StaticKVCache.empty(batch_size, self.n_head, max_len, self.head_dim, device, dtype)

    def load_static_cache(self, static, eager) -> None:
        static.load(eager)

    def static_window(self) -> int | None:
        """Keys visible per query in the static step (None: all earlier ones)."""
        return None

    def static_bias(self, cache: StaticKVCache, pos: torch.Tensor) -> torch.Tensor | None:
        """Additive fp32 score bias over the cache slots (H, 1, S), or None."""
        return None

    def decode_step_static(self, x: torch.Tensor, cache: StaticKVCache, pos: torch.Tensor) -> torch.Tensor:
        """One token (B, 1, C) at position ``pos`` (int64 device scalar): write its key/value
        into the fixed-size cache, attend over all slots masked to the visible ones."""
        q, k, v = self.project_qkv(x)                     # (B, H, 1, D) each
        cache.write(k, v, pos)
        y, self.kernel = static_decode_attention(self, q, cache.k, cache.v, cache.visible(pos, self.static_window()),
                                                 self.static_bias(cache, pos))
        return self.project_out(y)

    def cache_bytes_per_token(self, dtype=torch.bfloat16):
        return 2 * self.n_embd * dtype_bytes(dtype)

    def attention_pairs(self, seq_len: int) -> int:
        """Query-key pairs the mask admits (causal; a window narrows it)."""
        return causal_pairs(seq_len)

    def flops_forward(self, batch_size, seq_len, causal_halved=True):
        tokens = batch_size * seq_len
        proj = 2 * tokens * self.n_embd * (3 * self.n_embd) + 2 * tokens * self.n_embd * self.n_embd
        pairs = self.attention_pairs(seq_len) if causal_halved else seq_len * seq_len
        return proj + core_attention_flops(batch_size, self.n_head, seq_len, self.head_dim, self.head_dim, pairs)


def on_cuda(x: torch.Tensor) -> bool:
    return x.device.type == "cuda"


@dataclass
class LayerCaches:
    """Per-layer caches of a whole model plus the shared position counter."""

    layers: list = field(default_factory=list)
    pos: int = 0


def causal_pairs(seq_len: int, window: int | None = None) -> int:
    """Number of (query, key) pairs a causal mask admits, optionally limited to a window."""
    if window is None or window >= seq_len:
        return seq_len * (seq_len + 1) // 2
    # the first `window` queries see 1..window keys, the rest see `window` each
    return window * (window + 1) // 2 + (seq_len - window) * window


def core_attention_flops(batch_size: int, n_head: int, seq_len: int, qk_dim: int, v_dim: int,
                         pairs: int | None = None) -> int:
    """FLOPs of scores (q.k) and weighted values (p.v) over ``pairs`` query-key pairs per head."""
    pairs = seq_len * seq_len if pairs is None else pairs
    return 2 * batch_size * n_head * pairs * (qk_dim + v_dim)

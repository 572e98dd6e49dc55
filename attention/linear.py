"""Causal linear attention (Katharopoulos, Vyas, Pappas, Fleuret 2020, arXiv 2006.16236).

Per head, with a positive feature map phi (default ``elu(x) + 1``):

    S_t = sum_{s<=t} phi(k_s) v_s^T          (D x Dv state)
    z_t = sum_{s<=t} phi(k_s)                 (D normaliser state)
    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

No softmax and no ``1/sqrt(d)`` scale (the ratio is scale-invariant).  ``eps`` (default 1e-6,
as idiap/fast-transformers) is added to the denominator only.  The projections are GPT-2's
(fused ``c_attn`` n_embd -> 3 n_embd, ``c_proj``); attention dropout has no counterpart here
(there is no attention matrix), so ``dropout`` acts on the residual output only.

Implementations (``impl``; ``self.kernel`` records the one that ran):

* ``"chunked"`` -> ``torch:chunked``: the chunkwise parallel form (Yang et al. 2024, arXiv
  2312.06635; fla ``naive_chunk_linear_attn``).  The sequence is cut into chunks of
  ``chunk_size``; inside a chunk a masked ``C x C`` matmul, across chunks the exclusive prefix
  sum of per-chunk states ``phi(K_c)^T V_c``.  Never forms a T x T matrix: memory
  O(T*C + (T/C)*D*Dv) per head.  Computed in float32 (float64 inputs stay float64) with autocast off.
* ``"fla"`` -> ``fla:chunk`` (training/prefill) / ``fla:fused_recurrent`` (cache steps):
  ``fla.ops.linear_attn.chunk_linear_attn(phi(q), phi(k), v, scale=1.0, normalize=False)``
  on [B, T, H, D] tensors gives the numerator ``phi(q_t)^T S_t`` (fp32 state inside the
  kernel); the denominator ``phi(q_t)^T z_t`` is computed here in float32 with a cumsum.  We do
  not use fla's ``normalize=True``: it divides by ``scale * phi(q).cumsum(phi(k)) + 1e-10``
  (eps fixed at 1e-10) and keeps the key cumsum in the input dtype (bf16 under autocast); the
  split used here is exactly the function above.  Needs CUDA and an importable ``fla``
  (fla-core, which needs ``einops`` and Triton); if the import or the call fails the module
  falls back to ``torch:chunked``, records ``kernel = "torch:chunked(fla-fallback)"`` and keeps
  the reason in ``self.fla_error``.
* ``"auto"``: the faster of the two per call, as measured on an H100
  (``benchmarks/linear_crossover.py``, ``reports/h100/kernels/linear_crossover.json``; see
  :func:`auto_uses_fla`): ``chunked`` inside ``torch.compile`` (the pipeline's training) and
  for eager calls of more than ``fla_max_len`` new tokens (default 2048); ``fla`` for shorter
  eager calls and one-token decode steps -- on CUDA, when fla imports, and not in float16.
  Anywhere else ``chunked``.
* ``"reference"`` -> ``reference:quadratic``: ``(A * tril) V / rowsum(A * tril)`` with
  ``A = phi(Q) phi(K)^T`` -- O(T^2), tests only.  With a cache it runs the token-by-token
  recurrence (``reference:recurrent``, :func:`recurrent_linear_attention`).

Decoding: :class:`LinearAttentionState` holds ``S`` (B, H, D, Dv) and ``z`` (B, H, D) in float32
(float64 only for float64 models), plus ``pos``.  Its size does not grow with the sequence:
``cache_bytes_per_token() == 0`` and ``cache_bytes(B, T) = B * H * (D*Dv + D) * 4`` for every T.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import CausalSelfAttention, dtype_bytes, merge_heads, split_heads

FEATURE_MAPS = ("elu", "relu")


def feature_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """phi: ``"elu"`` = elu(x) + 1 (> 0, the paper's choice), ``"relu"`` = max(x, 0) (>= 0)."""
    if name == "elu":
        return F.elu(x) + 1.0
    if name == "relu":
        return F.relu(x)
    raise ValueError(f"unknown feature_map {name!r}; one of {FEATURE_MAPS}")


# --- the three reference forms (fla naive.py style), all on (B, H, T, D) -----------------

def quadratic_linear_attention(q, k, v, eps: float) -> torch.Tensor:
    """Masked quadratic form.  q, k: phi-mapped (B, H, T, D); v: (B, H, T, Dv) -> (B, H, T, Dv)."""
    T = q.shape[2]
    a = q @ k.transpose(-2, -1)                                            # (B, H, T, T)
    a = a * torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


def recurrent_linear_attention(q, k, v, eps: float, state=None):
    """Token-by-token recurrence.  Returns (y (B, H, T, Dv), (S (B, H, D, Dv), z (B, H, D)))."""
    B, H, T, D = q.shape
    S = q.new_zeros(B, H, D, v.shape[-1]) if state is None else state[0].to(q.dtype)
    z = q.new_zeros(B, H, D) if state is None else state[1].to(q.dtype)
    ys = []
    for t in range(T):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]
        z = z + k[:, :, t]
        num = (q[:, :, t, :, None] * S).sum(-2)                            # (B, H, Dv)
        den = (q[:, :, t] * z).sum(-1, keepdim=True)                       # (B, H, 1)
        ys.append(num / (den + eps))
    y = torch.stack(ys, dim=2) if ys else v.new_zeros(B, H, 0, v.shape[-1])
    return y, (S, z)


def chunked_linear_attention(q, k, v, chunk_size: int, eps: float, state=None):
    """Chunkwise parallel form; returns (y, (S_T, z_T)).

    q, k: (B, H, T, D) phi-mapped; v: (B, H, T, Dv); ``state`` = (S0, z0) or None.
    Intra-chunk: ``A = Q_c K_c^T`` masked to s <= t (C x C); inter-chunk: the exclusive prefix
    sum of ``K_c^T V_c`` (and of ``sum K_c`` for the denominator) over earlier chunks.  Runs in
    the dtype it is given (the module passes float32).  T need not divide by ``chunk_size``:
    the tail is zero-padded (phi(0-pad) never reaches real positions: it lies in their future).
    """
    B, H, T, D = q.shape
    Dv = v.shape[-1]
    C = max(1, min(chunk_size, T)) if T > 0 else 1
    N = math.ceil(T / C)
    pad = N * C - T
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    q = q.reshape(B, H, N, C, D)
    k = k.reshape(B, H, N, C, D)
    v = v.reshape(B, H, N, C, Dv)
    kv = k.transpose(-2, -1) @ v                                           # (B, H, N, D, Dv)
    ks = k.sum(-2)                                                         # (B, H, N, D)
    kv_incl = kv.cumsum(2)
    ks_incl = ks.cumsum(2)
    S_prev = torch.cat([kv_incl.new_zeros(B, H, 1, D, Dv), kv_incl[:, :, :-1]], dim=2)
    z_prev = torch.cat([ks_incl.new_zeros(B, H, 1, D), ks_incl[:, :, :-1]], dim=2)
    S_T, z_T = kv_incl[:, :, -1], ks_incl[:, :, -1]
    if state is not None:
        S0, z0 = state[0].to(q.dtype), state[1].to(q.dtype)
        S_prev = S_prev + S0[:, :, None]
        z_prev = z_prev + z0[:, :, None]
        S_T, z_T = S_T + S0, z_T + z0
    a = q @ k.transpose(-2, -1)                                            # (B, H, N, C, C)
    a = a * torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    num = a @ v + q @ S_prev                                               # (B, H, N, C, Dv)
    den = a.sum(-1) + (q * z_prev[:, :, :, None, :]).sum(-1)               # (B, H, N, C)
    y = num / (den[..., None] + eps)
    y = y.reshape(B, H, N * C, Dv)[:, :, :T]
    return y, (S_T, z_T)


# --- fla (Triton, CUDA) --------------------------------------------------------------------

_FLA = None          # cached (chunk_fn, recurrent_fn) or an error string


def load_fla():
    """Import fla's linear-attention ops once; returns (chunk, fused_recurrent) or an error string."""
    global _FLA
    if _FLA is None:
        try:
            from fla.ops.linear_attn import chunk_linear_attn, fused_recurrent_linear_attn
            _FLA = (chunk_linear_attn, fused_recurrent_linear_attn)
        except Exception as err:  # ImportError, missing triton/einops, driver errors ...
            _FLA = f"{type(err).__name__}: {err}"
    return _FLA


@torch.compiler.disable
def fla_linear_attention(q, k, v, eps: float, state=None, recurrent: bool = False):
    """Our function through fla: numerator from fla (scale=1, normalize=False), fp32 denominator.

    q, k: phi-mapped (B, H, T, D); v: (B, H, T, Dv); state (S0 fp32 (B, H, D, Dv), z0 fp32 (B, H, D)).
    Returns (y in v.dtype, (S_T fp32, z_T fp32)).  Raises if fla is missing or fails.

    Opaque to ``torch.compile`` (one graph break per layer): left traceable, dynamo follows fla's
    Python wrappers into its autotuned Triton kernels, and on the H100 the compiled GPT-2 had not
    finished its first step after 150 s.  Called eagerly, fla autotunes once per shape and the
    projections, feature maps and MLP around it are still compiled.
    """
    fns = load_fla()
    if isinstance(fns, str):
        raise RuntimeError(fns)
    chunk_fn, rec_fn = fns
    fn = rec_fn if recurrent else chunk_fn
    qf, kf, vf = (t.transpose(1, 2).contiguous() for t in (q, k, v))      # [B, T, H, D]
    S0 = None if state is None else state[0].float().contiguous()
    num, S_T = fn(qf, kf, vf, scale=1.0, initial_state=S0,
                  output_final_state=state is not None, normalize=False)
    kc = k.float().cumsum(2)                                               # (B, H, T, D) fp32
    if state is not None:
        kc = kc + state[1].float()[:, :, None]
    den = (q.float() * kc).sum(-1)                                         # (B, H, T)
    y = num.transpose(1, 2).float() / (den[..., None] + eps)
    new_state = None if state is None else (S_T.float(), kc[:, :, -1])
    return y.to(v.dtype), new_state


# --- module ------------------------------------------------------------------------------

def auto_uses_fla(*, on_cuda: bool, float16: bool, fla_importable: bool, compiling: bool,
                  n_new: int, fla_max_len: int) -> bool:
    """``impl="auto"``: run fla's kernel for this call?  (False = the torch chunked form.)

    Measured on an H100 (bf16, n_embd 768, 12 heads, B*T = 32768 tokens, forward+backward of
    the module, median ms; ``reports/h100/kernels/linear_crossover.json``, decode also from the
    first run ``linear_crossover_3paths.json``):

    * compiled (``torch.compile`` -- how the pipeline trains): the chunked form, fused by
      Inductor, is faster at every length measured, T = 512..16384: 2.96-3.06 ms flat, against
      fla with compiled projections 4.36 ms at 512 rising to 16.7 ms at 16384 (fla's chunk
      kernel's parallelism shrinks with B as T grows at fixed tokens);
    * eager (probes, sweeps): fla is faster up to T = 2048 (4.84 / 5.27 / 6.03 ms vs the chunked
      form's 7.21 ms), the chunked form from T = 4096 on (7.26 vs 7.54 ms; 7.46 vs 16.8 at 16384)
      -> ``fla_max_len`` = 2048 new tokens per call;
    * one-token cached decode steps of the module (launch-bound, so noisy): fla's
      fused recurrent kernel was faster in three of four comparisons over two runs (batch 1:
      0.53 vs 0.66 ms, then 0.83 vs 0.73; batch 16: 0.55 vs 0.69, 0.99 vs 1.09), so decode
      steps keep fla.

    fla is never used in float16 (its normaliser path is not checked there) or off CUDA.
    """
    if not (on_cuda and fla_importable) or float16 or compiling:
        return False
    return n_new <= fla_max_len


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The recurrent state is float32 for bf16/fp16/fp32 models (float64 for float64)."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class LinearAttentionState:
    """Recurrent decode state: S (B, H, D, Dv) and z (B, H, D) in float32 (float64 for float64
    models); ``pos`` tokens seen."""

    S: torch.Tensor
    z: torch.Tensor
    pos: int = 0


class LinearAttention(CausalSelfAttention):
    name = "linear"
    param_defaults = {"feature_map": "elu", "chunk_size": 64, "eps": 1e-6, "fla_max_len": 2048}
    kernels = ("chunked", "fla")

    @classmethod
    def check_params(cls, params):
        if params["feature_map"] not in FEATURE_MAPS:
            raise ValueError(f"linear: feature_map={params['feature_map']!r} must be one of {list(FEATURE_MAPS)}")
        cs = params["chunk_size"]
        if isinstance(cs, bool) or not isinstance(cs, int) or cs < 1:
            raise ValueError(f"linear: chunk_size={cs!r} must be an integer >= 1")
        eps = params["eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"linear: eps={eps!r} must be a number > 0")
        fml = params["fla_max_len"]
        if isinstance(fml, bool) or not isinstance(fml, int) or fml < 0:
            raise ValueError(f"linear: fla_max_len={fml!r} must be an integer >= 0 (0: impl=auto never uses fla)")

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        bias = self.params["bias"]
        self.feature_map = self.params["feature_map"]
        self.chunk_size = int(self.params["chunk_size"])
        self.eps = float(self.params["eps"])
        self.fla_max_len = int(self.params["fla_max_len"])
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)
        self.fla_error: str | None = None
        self._warned = False
        if self.impl in ("auto", "fla"):
            load_fla()           # import now, not inside a torch.compile trace of forward

    def _want_fla(self, x: torch.Tensor) -> bool:
        if self.impl == "fla":
            return True
        if self.impl != "auto" or x.device.type != "cuda":
            return False
        fns = load_fla()
        if isinstance(fns, str):
            self.fla_error = fns
        float16 = x.dtype == torch.float16 or (
            torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.float16)
        return auto_uses_fla(on_cuda=True, float16=float16, fla_importable=not isinstance(fns, str),
                             compiling=torch.compiler.is_compiling(), n_new=x.shape[1],
                             fla_max_len=self.fla_max_len)

    def _torch_core(self, q, k, v, state):
        """Chunked/recurrent/quadratic in float32 (float64 if given) with autocast off."""
        dev = q.device.type
        acc = torch.promote_types(v.dtype, torch.float32)
        with torch.autocast(device_type=dev, enabled=False):
            qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
            if self.impl == "reference":
                if state is None:
                    self.kernel = "reference:quadratic"
                    return quadratic_linear_attention(qf, kf, vf, self.eps), None
                self.kernel = "reference:recurrent"
                return recurrent_linear_attention(qf, kf, vf, self.eps, state)
            self.kernel = "torch:chunked"
            return chunked_linear_attention(qf, kf, vf, self.chunk_size, self.eps, state)

    def forward(self, x: torch.Tensor, cache: LinearAttentionState | None = None) -> torch.Tensor:
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))          # (B, H, T, D)
        q, k = feature_map(q, self.feature_map), feature_map(k, self.feature_map)
        state = None if cache is None else (cache.S, cache.z)
        y = new_state = None
        if self._want_fla(x):
            recurrent = cache is not None and x.shape[1] == 1
            if torch.compiler.is_compiling():
                # no fallback inside a compiled graph (dynamo cannot trace the except branch around
                # a disabled call); an fla failure then surfaces as the step's error, recorded by train
                y, new_state = fla_linear_attention(q, k, v, self.eps, state, recurrent=recurrent)
            else:
                try:
                    y, new_state = fla_linear_attention(q, k, v, self.eps, state, recurrent=recurrent)
                except Exception as err:
                    self.fla_error = f"{type(err).__name__}: {err}"
                    if not self._warned:
                        warnings.warn(f"linear attention: fla failed ({self.fla_error}); using torch chunked form")
                        self._warned = True
            if y is not None:
                self.kernel = "fla:fused_recurrent" if recurrent else "fla:chunk"
        if y is None:
            y, new_state = self._torch_core(q, k, v, state)
            if self.impl == "fla":
                self.kernel = "torch:chunked(fla-fallback)"
        if cache is not None:
            cache.S, cache.z = new_state[0].to(cache.S.dtype), new_state[1].to(cache.z.dtype)
            cache.pos += x.shape[1]
        y = y.to(v.dtype)                      # x.dtype, or the autocast dtype of c_attn's output
        return self.resid_dropout(self.c_proj(merge_heads(y)))

    # --- fixed-shape decode (attnbench.decode) --------------------------------------------
    def init_static_cache(self, batch_size, max_len, device, dtype):
        return self.init_cache(batch_size, max_len, device, dtype)   # already fixed-size

    def load_static_cache(self, static, eager):
        static.S.copy_(eager.S)
        static.z.copy_(eager.z)

    def decode_step_static(self, x: torch.Tensor, cache: LinearAttentionState, pos: torch.Tensor) -> torch.Tensor:
        """One token: the recurrence of :func:`recurrent_linear_attention`, the state updated in
        place (a captured graph must keep its buffers).  Independent of ``pos``."""
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (split_heads(t, self.n_head)[:, :, 0] for t in (q, k, v))   # (B, H, D)
        q, k = feature_map(q, self.feature_map), feature_map(k, self.feature_map)
        acc = cache.S.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
            cache.S.add_(kf[..., :, None] * vf[..., None, :])
            cache.z.add_(kf)
            num = (qf[..., :, None] * cache.S).sum(-2)                      # (B, H, Dv)
            den = (qf * cache.z).sum(-1, keepdim=True)                       # (B, H, 1)
            y = num / (den + self.eps)
        self.kernel = "static:torch:recurrent"
        return self.resid_dropout(self.c_proj(merge_heads(y[:, :, None].to(v.dtype))))

    # --- cache / cost -------------------------------------------------------------------
    def init_cache(self, batch_size, max_len, device, dtype):
        D, sd = self.head_dim, state_dtype(dtype)
        return LinearAttentionState(
            S=torch.zeros(batch_size, self.n_head, D, D, device=device, dtype=sd),
            z=torch.zeros(batch_size, self.n_head, D, device=device, dtype=sd),
        )

    def cache_bytes_per_token(self, dtype=torch.bfloat16):
        return 0

    def cache_bytes(self, batch_size, seq_len, dtype=torch.bfloat16):
        """Fixed: S and z in float32 for any model dtype below float64 (whatever ``seq_len``)."""
        D = self.head_dim
        return batch_size * self.n_head * (D * D + D) * dtype_bytes(state_dtype(dtype))

    def flops_forward(self, batch_size, seq_len, causal_halved=True):
        """Projections + the chunked form with chunks of ``chunk_size`` (last one may be short).

        Per head: intra-chunk scores and values ``2 * pairs * (D + Dv)`` where pairs is
        sum_c L_c(L_c+1)/2 (``causal_halved``) or sum_c L_c^2 (the masked C x C matmuls
        executed); chunk states ``K_c^T V_c`` 2*T*D*Dv; inter-chunk ``Q_c S_prev`` 2*T*D*Dv;
        denominator ``Q_c z_prev`` 2*T*D.  Feature map, cumsums and the division are not counted.
        """
        T, D = seq_len, self.head_dim
        C = max(1, min(self.chunk_size, T)) if T > 0 else 1
        full, rest = divmod(T, C)
        lens = [C] * full + ([rest] if rest else [])
        pairs = sum(L * (L + 1) // 2 if causal_halved else L * L for L in lens)
        per_head = 2 * pairs * (D + D) + 2 * T * D * D * 2 + 2 * T * D
        tokens = batch_size * seq_len
        proj = 2 * tokens * self.n_embd * (3 * self.n_embd) + 2 * tokens * self.n_embd * self.n_embd
        return proj + batch_size * self.n_head * per_head

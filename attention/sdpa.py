"""Scaled dot-product attention through ``torch.nn.functional.scaled_dot_product_attention``.

Same projections and math as ``baseline``; the score/softmax/value product runs in one
fused kernel chosen by SDPA.  ``impl`` pins the backend with ``sdpa_kernel`` so that the
kernel that ran is known (on H100 with torch >= 2.10 the default is cuDNN, not FA2):
``"cudnn"``, ``"flash"``, ``"efficient"``, ``"math"``; ``"auto"`` lets SDPA choose and
records the backend it would pick first; ``"reference"`` runs the explicit masked softmax.
Cache: full K/V, 2*n_embd values per token.

q, k, v go to SDPA as the strided views of the packed ``c_attn`` output, with no copy.  On the
H100 (torch 2.11, cuDNN 9.19) the cuDNN backward of such views gave correct gradients in a fresh
process but wrong ones (input-gradient relative error 1.39) after the same process had run a
cuDNN backward on q, k, v of the same shape and strides with a differently laid out output
gradient: the cached backward plan is reused across output-gradient layouts
(``benchmarks/cudnn_packed_layout.py``, ``reports/h100/kernels/cudnn_packed_layout*.json``).
Within one model every layer feeds the same layouts, so training is not affected; a process that
mixes layouts at one shape (as the kernel benchmark once did) must not trust cuDNN's gradients.
Copying q, k, v to contiguous sidesteps the collision but cost 6 % of training throughput.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from .base import FusedQKVAttention, KVCache, causal_mask, dense_attention

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def auto_backend_name(q: torch.Tensor) -> str:
    """Best guess of the backend SDPA picks by default (recorded as ``sdpa:auto->...``).

    Inside ``torch.compile`` it asks the device nothing and returns ``"compiled?"``: the
    compiled graph's backend is fixed when the graph is built, and ``benchmarks/
    sdpa_under_compile.py`` shows which kernel that is (cuDNN on the H100; with ``auto`` the
    compiled module also ran an extra layout copy and was 20-40 % slower than pinned cuDNN,
    which is why the presets pin the backend).
    """
    if q.device.type != "cuda":
        return "cpu-flash" if q.dtype in (torch.float32, torch.bfloat16, torch.float16) else "math"
    if torch.compiler.is_compiling():
        return "compiled?"
    major, _ = torch.cuda.get_device_capability(q.device)
    if major >= 9 and torch.backends.cudnn.is_available():
        return "cudnn?"
    return "flash?"


_BACKEND_NAMES = {
    SDPBackend.MATH: "math",
    SDPBackend.FLASH_ATTENTION: "flash",
    SDPBackend.EFFICIENT_ATTENTION: "efficient",
    SDPBackend.CUDNN_ATTENTION: "cudnn",
}


def sdpa_choice(q, k, v, *, causal: bool, dropout_p: float = 0.0, enable_gqa: bool = False,
                attn_mask=None) -> str:
    """Name of the backend SDPA's own dispatcher picks for these inputs (``"auto"`` dispatch).

    Asks ``torch._fused_sdp_choice`` (respects the enabled backends and the cuDNN-first
    priority on Hopper), so the recorded kernel is what runs, not a guess.  The CPU fused
    kernel is reported as ``"cpu-flash"``.  Falls back to :func:`auto_backend_name` (a
    guess, marked with ``?``) where the query is not possible, e.g. while compiling.
    """
    if torch.compiler.is_compiling():
        return auto_backend_name(q)
    try:
        choice = torch._fused_sdp_choice(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                         is_causal=causal, enable_gqa=enable_gqa)
        name = _BACKEND_NAMES.get(SDPBackend(choice), str(SDPBackend(choice)).split(".")[-1].lower())
    except Exception:  # private API; never let naming break a forward
        return auto_backend_name(q)
    if name == "flash" and q.device.type == "cpu":
        name = "cpu-flash"
    return name


def causal_sdpa_choice(q, k, v, *, dropout_p: float = 0.0, enable_gqa: bool = False) -> str:
    """:func:`sdpa_choice` for the call :func:`causal_sdpa` makes with these shapes."""
    tq, tk = q.shape[2], k.shape[2]
    if tq == tk:
        return sdpa_choice(q, k, v, causal=True, dropout_p=dropout_p, enable_gqa=enable_gqa)
    if tq == 1:
        return sdpa_choice(q, k, v, causal=False, dropout_p=dropout_p, enable_gqa=enable_gqa)
    # lower-right causal bias: SDPA tries flash, then efficient, then a materialised mask
    return "lower-right:" + sdpa_choice(q, k, v, causal=False, dropout_p=dropout_p, enable_gqa=enable_gqa)


def auto_kernel_name(module, q, k, v, *, dropout_p: float = 0.0, enable_gqa: bool = False) -> str:
    """:func:`causal_sdpa_choice`, memoised on ``module`` per call signature.

    The dispatcher's choice depends on device, dtype, head counts/dim, dropout, grad mode and
    the masking case, not on the exact sequence length (for the backends named here), so one
    query per combination keeps the per-step overhead off decode loops.
    """
    key = (q.device, q.dtype, q.shape[1], k.shape[1], q.shape[-1], v.shape[-1],
           q.shape[2] == k.shape[2], q.shape[2] == 1, dropout_p > 0.0,
           torch.is_grad_enabled() and q.requires_grad)
    return memoised_choice(module, key, lambda: causal_sdpa_choice(q, k, v, dropout_p=dropout_p,
                                                                  enable_gqa=enable_gqa))


def memoised_choice(module, key, ask) -> str:
    """``ask()`` once per ``key`` on ``module``; guesses (names ending in ``?``) are not kept."""
    memo = module.__dict__.setdefault("_sdpa_choice_memo", {})
    name = memo.get(key)
    if name is None:
        name = ask()
        if not name.endswith("?"):
            memo[key] = name
    return name


def sdpa(q, k, v, *, causal: bool, backend: str | None, dropout_p: float = 0.0,
         enable_gqa: bool = False, attn_mask=None) -> torch.Tensor:
    """Call SDPA, pinned to ``backend`` when one is named."""
    kwargs = dict(attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal)
    if enable_gqa:
        kwargs["enable_gqa"] = True
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    with sdpa_kernel(BACKENDS[backend]):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def causal_sdpa(q, k, v, *, backend: str | None, dropout_p: float = 0.0, enable_gqa: bool = False):
    """Causal SDPA that also handles decoding (queries = last Tq of Tk keys).

    ``is_causal=True`` is top-left aligned in SDPA, which is wrong when Tq < Tk; one-token
    decode needs no mask at all, chunked decode gets a bottom-right causal bias
    (``causal_lower_right``), which SDPA runs in the flash or efficient kernel where they are
    enabled (a plain boolean mask would rule out a pinned FLASH backend) and materialises as
    a boolean mask otherwise.
    """
    tq, tk = q.shape[2], k.shape[2]
    if tq == tk:
        return sdpa(q, k, v, causal=True, backend=backend, dropout_p=dropout_p, enable_gqa=enable_gqa)
    if tq == 1:
        return sdpa(q, k, v, causal=False, backend=backend, dropout_p=dropout_p, enable_gqa=enable_gqa)
    if tq > tk:
        raise ValueError(f"causal_sdpa: {tq} queries but only {tk} keys")
    return sdpa(q, k, v, causal=False, backend=backend, dropout_p=dropout_p,
                enable_gqa=enable_gqa, attn_mask=causal_lower_right(tq, tk))


class SDPAAttention(FusedQKVAttention):
    name = "sdpa"
    param_defaults = {}
    kernels = tuple(BACKENDS)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        q, k, v = self.project_qkv(x, cache)  # (B, H, T, D), keys/values incl. the cache
        p = self.dropout if self.training else 0.0
        if self.impl == "reference":
            y = dense_attention(q, k, v, causal_mask(q.shape[2], k.shape[2], x.device),
                                dropout_p=p, training=self.training)
            self.kernel = "reference:dense-mask"
        else:
            backend = None if self.impl == "auto" else self.impl
            y = causal_sdpa(q, k, v, backend=backend, dropout_p=p)
            self.kernel = f"sdpa:{backend}" if backend else f"sdpa:auto->{auto_kernel_name(self, q, k, v, dropout_p=p)}"
        return self.project_out(y)




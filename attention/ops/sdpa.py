"""``torch.nn.functional.scaled_dot_product_attention``: dispatch, pinning and backend names.

Shared by every variant that runs softmax attention through SDPA (``sdpa``, ``gqa``,
``mla``, ``flash2``'s vendored FA2, the masked paths of ``flex`` and ``sliding_window``).

Kernel names are definite.  A pinned backend is named as pinned (``"cudnn"``, ``"flash"``,
``"efficient"``, ``"math"``); with ``impl="auto"`` a module either runs the backend that
:func:`attention.selection.autotune` measured and pinned for it (``module.auto_pin``), or,
in eager calls that were not tuned, lets SDPA choose and records SDPA's own choice
(:func:`sdpa_choice`, which asks the dispatcher).  Inside ``torch.compile`` the dispatcher
cannot be asked; a compiled module must have been tuned (or run once eagerly at the same
case) first, otherwise :func:`auto_backend` raises :class:`UnresolvedAuto` rather than
record a guess.

Why ``auto`` pins after tuning instead of leaving the choice to SDPA: on an H100/H200 with
torch 2.11, an unpinned SDPA call inside a compiled GPT-2 ran cuDNN behind an extra layout
copy (20-40 % slower than pinned cuDNN) and, after an eager backward at the same shape in
the same process, trained with wrong gradients (cuDNN's backward plan is cached per
shape and q/k/v/o strides and reused for an output gradient of another layout; see
``benchmarks/sdpa_divergence.py``).  Pinned, the compiled graph calls the kernel exactly as
the eager module does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
_BACKEND_NAMES = {backend: name for name, backend in BACKENDS.items()}


class UnresolvedAuto(RuntimeError):
    """``impl="auto"`` reached a compiled SDPA call whose backend nobody resolved eagerly."""


def backend_name(name: str, device: torch.device) -> str:
    """The recorded name of SDPA backend ``name`` on ``device`` (PyTorch's FLASH backend on
    CPU is a FlashAttention-style CPU loop, not FA2, and is named ``cpu-flash``)."""
    return "cpu-flash" if name == "flash" and device.type == "cpu" else name


def sdpa_choice(q, k, v, *, causal: bool, dropout_p: float = 0.0, enable_gqa: bool = False,
                attn_mask=None) -> str:
    """Name of the backend SDPA's own dispatcher picks for these inputs (eager calls only).

    Asks ``torch._fused_sdp_choice``, which honours the enabled backends and the cuDNN-first
    priority on Hopper, so the recorded kernel is what runs.
    """
    if torch.compiler.is_compiling():
        raise UnresolvedAuto("sdpa_choice cannot ask the dispatcher inside torch.compile")
    choice = torch._fused_sdp_choice(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                     is_causal=causal, enable_gqa=enable_gqa)
    name = _BACKEND_NAMES.get(SDPBackend(choice), str(SDPBackend(choice)).split(".")[-1].lower())
    return backend_name(name, q.device)


def call_case(q, k, *, dropout_p: float = 0.0, extra=()) -> tuple:
    """What SDPA's choice depends on (device, dtype, heads, head dims, masking case, dropout,
    autograd), not the exact lengths: the key of a module's memo of names."""
    return (q.device.type, q.dtype, q.shape[1], k.shape[1], q.shape[-1],
            q.shape[2] == k.shape[2], q.shape[2] == 1, dropout_p > 0.0,
            torch.is_grad_enabled() and q.requires_grad, *extra)


def memoised_choice(module, key, ask) -> str:
    """``ask()`` once per ``key`` on ``module`` (eager); under compile only the memo is read."""
    memo = module.__dict__.setdefault("_sdpa_choice_memo", {})
    name = memo.get(key)
    if name is None:
        if torch.compiler.is_compiling():
            raise UnresolvedAuto(
                f"{type(module).__name__}: impl='auto' has no resolved SDPA backend for this call inside "
                "torch.compile; run attention.selection.prepare(model, example) (or one eager call of the "
                "same shape) before compiling")
        name = ask()
        memo[key] = name
    return name


def auto_backend(module, q, k, v, *, dropout_p: float = 0.0, enable_gqa: bool = False) -> tuple[str | None, str]:
    """(backend to pin or None, recorded name) for a causal SDPA call of ``module``.

    ``impl`` names a backend: that one.  ``impl="auto"``: the module's tuned ``auto_pin``
    for full causal calls (queries = keys; the training and prefill case); otherwise SDPA's
    own choice, asked once per call case.
    """
    if module.impl != "auto":
        return module.impl, backend_name(module.impl, q.device)
    pin = getattr(module, "auto_pin", None)
    if pin is not None and q.shape[2] == k.shape[2]:
        return pin, "auto->" + backend_name(pin, q.device)
    key = call_case(q, k, dropout_p=dropout_p, extra=(enable_gqa,))
    name = memoised_choice(module, key, lambda: causal_sdpa_choice(q, k, v, dropout_p=dropout_p,
                                                                  enable_gqa=enable_gqa))
    return None, "auto->" + name


def sdpa(q, k, v, *, causal: bool, backend: str | None, dropout_p: float = 0.0,
         enable_gqa: bool = False, attn_mask=None, scale: float | None = None) -> torch.Tensor:
    """Call SDPA, pinned to ``backend`` when one is named."""
    kwargs = dict(attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal)
    if enable_gqa:
        kwargs["enable_gqa"] = True
    if scale is not None:
        kwargs["scale"] = scale
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    with sdpa_kernel(BACKENDS[backend]):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def causal_sdpa(q, k, v, *, backend: str | None, dropout_p: float = 0.0, enable_gqa: bool = False,
                scale: float | None = None):
    """Causal SDPA that also handles decoding (queries = last Tq of Tk keys).

    ``is_causal=True`` is top-left aligned in SDPA, which is wrong when Tq < Tk; one-token
    decode needs no mask at all, chunked decode gets a bottom-right causal bias
    (``causal_lower_right``), which SDPA runs in the flash or efficient kernel where they are
    enabled (a plain boolean mask would rule out a pinned FLASH backend) and materialises as
    a boolean mask otherwise.  A pinned backend applies to full calls (Tq = Tk) only when
    given; decode calls with ``backend=None`` let SDPA choose.
    """
    tq, tk = q.shape[2], k.shape[2]
    if tq == tk:
        return sdpa(q, k, v, causal=True, backend=backend, dropout_p=dropout_p, enable_gqa=enable_gqa,
                    scale=scale)
    if tq == 1:
        return sdpa(q, k, v, causal=False, backend=backend, dropout_p=dropout_p, enable_gqa=enable_gqa,
                    scale=scale)
    if tq > tk:
        raise ValueError(f"causal_sdpa: {tq} queries but only {tk} keys")
    return sdpa(q, k, v, causal=False, backend=backend, dropout_p=dropout_p, enable_gqa=enable_gqa,
                attn_mask=causal_lower_right(tq, tk), scale=scale)


def causal_sdpa_choice(q, k, v, *, dropout_p: float = 0.0, enable_gqa: bool = False) -> str:
    """:func:`sdpa_choice` for the call :func:`causal_sdpa` makes with these shapes."""
    tq, tk = q.shape[2], k.shape[2]
    if tq == tk:
        return sdpa_choice(q, k, v, causal=True, dropout_p=dropout_p, enable_gqa=enable_gqa)
    if tq == 1:
        return sdpa_choice(q, k, v, causal=False, dropout_p=dropout_p, enable_gqa=enable_gqa)
    # lower-right causal bias: SDPA tries flash, then efficient, then a materialised mask
    return "lower-right:" + sdpa_choice(q, k, v, causal=False, dropout_p=dropout_p, enable_gqa=enable_gqa)

"""The registry contract, checked on a class before any job runs (``check_class``).

What a variant must do is written in ``attention.base``; this module tries every part of it
on tiny CPU inputs.  Each call into the class is guarded, so that whatever the class raises
(a ``TypeError`` from a ``forward`` without ``cache``, a bare ``NotImplementedError`` from
``init_cache``, ...) comes back as one ``ValueError`` line naming the call, what it raised
and what the contract expects -- never the class's own traceback.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from .base import cache_bytes_per_token_of

# Causality is checked at each of these lengths: a short one, one spanning a few blocks of a
# typical chunk, and one longer than any internal block, chunk or window a class might
# switch on at (a class that is causal only for short inputs must fail here, not train).
LENGTHS = (7, 64, 300)
# (n_embd, n_head) of the check: tiny, so that all of it takes milliseconds per class
TINY = (32, 4)
BATCH = 2
DECODE_LEN = 64   # decoding check: PREFILL tokens through the cache, then one token at a time
PREFILL = 5
# Outputs before the changed positions must not move by more than float noise; a leak moves
# them by orders of magnitude more (inputs and outputs are O(1)).
ATOL = 1e-5

EXPECTS = {
    "build": "cls(n_embd, n_head, **params) builds the module",
    "forward": "module(x) maps x of shape (B, T, n_embd) to a tensor of the same shape",
    "backward": "training backpropagates through module(x)",
    "init_cache": "init_cache(batch_size, max_len, device, dtype) returns the cache that "
                  "module(x, cache=cache) reads and advances",
    "decode": "module(x_new, cache=cache) returns the outputs for the new positions and advances the cache",
    "cache_bytes_per_token": "cache_bytes_per_token(dtype) returns the cache bytes per token and sequence "
                             "(a non-negative number), or is that number",
    "cache_bytes": "cache_bytes(batch_size, seq_len, dtype) returns the cache size in bytes (a non-negative number)",
    "flops_forward": "flops_forward(batch_size, seq_len, causal_halved) returns a non-negative number, "
                     "or is left out (optional; so is raising NotImplementedError)",
}


def describe(err: BaseException) -> str:
    """One line for an exception: its type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__


def check_api(name: str, cls: type, n_embd: int = TINY[0], n_head: int = TINY[1], **params: Any) -> None:
    """:func:`check_class` at one shape, params as keywords (``attention.register``, tests)."""
    check_class(name, cls, params, shapes=((n_embd, n_head),))


def check_class(name: str, cls: type, params: dict[str, Any], *, shapes=(TINY,), max_len: int | None = None) -> None:
    """Verify that ``cls`` fits the registry contract (``attention.base``) on CPU.

    Built at the first of ``shapes`` (n_embd, n_head) it can be built at (a config passes
    its model's shape second, for params that only fit it).  Checks: an ``nn.Module``;
    ``module(x)`` keeps the shape, sets ``kernel`` and is causal -- inputs after position t
    changed, outputs up to t unchanged -- at each of :data:`LENGTHS` (capped at ``max_len``,
    the longest input the run gives it) in eval and training mode (same RNG stream and
    module state for both inputs, so dropout or random hashing change nothing); backward
    works; a prefill then token-by-token decoding with ``init_cache`` reproduces the full
    forward; ``cache_bytes_per_token`` (method or number) and ``cache_bytes`` are
    non-negative numbers; ``flops_forward``, where defined, too.  Raises ``ValueError``
    saying what does not fit and what the contract expects.
    """
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        what = getattr(cls, "__qualname__", f"a {type(cls).__name__} object")
        raise ValueError(f"attention variant {name!r}: {what} is not a torch.nn.Module subclass")
    where = f"attention variant {name!r} ({cls.__module__}.{cls.__qualname__})"
    # Tiny tensors: one intra-op thread is as fast, and does not stall for milliseconds per op
    # on cores that other processes (running jobs) keep busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check(where, cls, params, shapes, max_len)
    finally:
        torch.set_num_threads(threads)


def _check(where: str, cls: type, params: dict[str, Any], shapes, max_len: int | None) -> None:
    module, n_embd = _build(where, cls, params, shapes)
    for attr in ("init_cache", "cache_bytes_per_token", "cache_bytes"):
        if _guard(where, f"reading {attr}", attr, lambda: getattr(module, attr, None)) is None:
            raise ValueError(f"{where}: has no {attr}; the contract: {EXPECTS[attr]}")
    lengths = sorted({min(T, max_len) for T in LENGTHS}) if max_len else LENGTHS
    gen = torch.Generator().manual_seed(0)
    for training in (False, True):
        module.train(training)
        for T in lengths:
            _check_causal(where, module, torch.randn(BATCH, T, n_embd, generator=gen), training, gen)
    # still in training mode: a training step's forward and backward
    y = _forward(where, module, torch.randn(BATCH, lengths[0], n_embd, generator=gen, requires_grad=True))
    _guard(where, "backward through forward(x)", "backward", lambda: y.sum().backward())
    module.eval()
    _check_decode(where, module, torch.randn(BATCH, min(DECODE_LEN, lengths[-1]), n_embd, generator=gen))
    _check_sizes(where, module)


def _build(where: str, cls: type, params: dict[str, Any], shapes) -> tuple[torch.nn.Module, int]:
    for n_embd, n_head in shapes:
        try:
            return cls(n_embd, n_head, **params), n_embd
        except ValueError as err:  # the class names the bad param itself
            error = str(err)
        except Exception as err:
            error = (f"cls(n_embd={n_embd}, n_head={n_head}, **{params}) raised {describe(err)}; "
                     f"the contract: {EXPECTS['build']}")
    raise ValueError(f"{where}: {error}")


def _guard(where: str, call: str, part: str, fn: Callable[[], Any]) -> Any:
    """``fn()``; whatever it raises becomes a ValueError naming ``call`` and the contract's ``part``."""
    try:
        return fn()
    except Exception as err:
        raise ValueError(f"{where}: {call} raised {describe(err)}; the contract: {EXPECTS[part]}") from None


def _forward(where: str, module: torch.nn.Module, x: torch.Tensor, **kw) -> torch.Tensor:
    """``module(x)`` checked for shape and ``kernel``."""
    call = f"forward(x{', cache=cache' if kw else ''}) with x of shape {tuple(x.shape)}"
    y = _guard(where, call, "decode" if kw else "forward", lambda: module(x, **kw))
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise ValueError(f"{where}: {call} returned {tuple(getattr(y, 'shape', ())) or type(y).__name__}; "
                         f"the contract: {EXPECTS['decode' if kw else 'forward']}")
    if not torch.isfinite(y).all():
        raise ValueError(f"{where}: {call} returned non-finite values (inf or NaN) for a random input")
    if not isinstance(getattr(module, "kernel", None), str):
        raise ValueError(f"{where}: forward must set the string attribute 'kernel' (the implementation that ran)")
    return y


def _fresh_forward(where: str, module: torch.nn.Module, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The output of a copy of ``module`` on ``x`` from seed 0: two calls differ only by ``x``
    (a training forward may draw dropout masks or hash rotations and advance counters)."""
    with torch.random.fork_rng(devices=[]), torch.set_grad_enabled(training):
        torch.manual_seed(0)
        return _forward(where, copy.deepcopy(module), x).detach()


def _check_causal(where: str, module: torch.nn.Module, x: torch.Tensor, training: bool,
                  gen: torch.Generator) -> None:
    T = x.shape[1]
    y = _fresh_forward(where, module, x, training)
    for t in sorted({0, T // 3, 2 * T // 3, T - 2} & set(range(T - 1))):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn(x.shape[0], T - t - 1, x.shape[2], generator=gen)
        moved = (_fresh_forward(where, module, x2, training)[:, :t + 1] - y[:, :t + 1]).abs().amax(dim=(0, 2))
        bad = (~(moved <= ATOL)).nonzero()  # NaN counts as moved
        if len(bad):
            p = int(bad[0])
            raise ValueError(
                f"{where}: leaks the future at T={T} in {'training' if training else 'eval'} mode: output "
                f"position {p} changed by {float(moved[p]):.3g} when only inputs after position {t} changed; "
                "the contract: output position t depends only on inputs at positions <= t")


def _check_decode(where: str, module: torch.nn.Module, x: torch.Tensor) -> None:
    B, T, _ = x.shape
    prefill = min(PREFILL, T - 1)
    with torch.no_grad():
        y = _forward(where, module, x)
        cache = _guard(where, f"init_cache({B}, {T}, cpu, torch.float32)", "init_cache",
                       lambda: module.init_cache(B, T, x.device, x.dtype))
        steps = [_forward(where, module, x[:, :prefill], cache=cache)]
        steps += [_forward(where, module, x[:, t:t + 1], cache=cache) for t in range(prefill, T)]
    diff = float((torch.cat(steps, dim=1) - y).abs().max())
    if not diff <= 1e-4 * max(1.0, float(y.abs().max())):
        raise ValueError(f"{where}: a {prefill}-token prefill then token-by-token decoding with init_cache() "
                         f"differs from the full forward by {diff:.3g} at T={T}; the contract: {EXPECTS['decode']}")


def _check_sizes(where: str, module: torch.nn.Module) -> None:
    dtype = torch.float32
    sizes = {
        "cache_bytes_per_token": _guard(where, "cache_bytes_per_token(torch.float32)", "cache_bytes_per_token",
                                        lambda: cache_bytes_per_token_of(module, dtype)),
        "cache_bytes": _guard(where, "cache_bytes(2, 7, torch.float32)", "cache_bytes",
                              lambda: module.cache_bytes(2, 7, dtype)),
    }
    if callable(getattr(module, "flops_forward", None)):
        try:
            sizes["flops_forward"] = module.flops_forward(2, 7, causal_halved=True)
        except NotImplementedError:
            pass  # optional: the FLOP metrics of this class are recorded as unavailable
        except Exception as err:
            raise ValueError(f"{where}: flops_forward(2, 7, causal_halved=True) raised {describe(err)}; "
                             f"the contract: {EXPECTS['flops_forward']}") from None
    for part, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not size >= 0:
            raise ValueError(f"{where}: {part} gave {size!r}; the contract: {EXPECTS[part]}")

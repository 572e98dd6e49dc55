"""The registry contract, checked on a class before any job runs (``check_api``).

What a variant must do is written in ``attention.base``; this module tries it on tiny CPU
inputs and says in one sentence what does not fit.
"""

from __future__ import annotations

from typing import Any

import torch


def check_api(name: str, cls: type, n_embd: int = 32, n_head: int = 4, **params: Any) -> None:
    """Verify that ``cls`` fits the registry contract on a tiny CPU input.

    Checks: constructible as ``cls(n_embd, n_head, **params)``; an ``nn.Module``; maps
    (B, T, n_embd) to the same shape; sets ``kernel``; has ``init_cache`` and decoding with a
    cache reproduces the full forward; reports ``cache_bytes_per_token``.  Raises
    ``ValueError`` saying what does not fit.
    """
    where = f"attention variant {name!r} ({getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)})"
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"{where}: is not a torch.nn.Module subclass")
    try:
        module = cls(n_embd, n_head, **params)
    except TypeError as err:
        raise ValueError(f"{where}: cannot be built as cls(n_embd, n_head, **params): {err}") from err
    module.eval()
    for attr in ("init_cache", "cache_bytes_per_token"):
        if not callable(getattr(module, attr, None)):
            raise ValueError(f"{where}: missing method {attr}()")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, n_embd, generator=gen)
    with torch.no_grad():
        y = module(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            raise ValueError(f"{where}: forward(x) must return a tensor of shape {tuple(x.shape)}, "
                             f"got {getattr(y, 'shape', type(y))}")
        if not isinstance(getattr(module, "kernel", None), str):
            raise ValueError(f"{where}: must set the string attribute 'kernel' in forward")
        cache = module.init_cache(2, 6, x.device, x.dtype)
        steps = [module(x[:, t:t + 1], cache=cache) for t in range(6)]
        y_dec = torch.cat(steps, dim=1)
        if not torch.allclose(y_dec, y, atol=1e-4, rtol=1e-4):
            raise ValueError(f"{where}: token-by-token decoding with init_cache() does not match the full forward")
    size = module.cache_bytes_per_token(torch.float32)
    if not isinstance(size, (int, float)) or size < 0:
        raise ValueError(f"{where}: cache_bytes_per_token() must return a non-negative number, got {size!r}")


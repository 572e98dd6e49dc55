"""Decoding with a fixed-shape one-token step, replayed as one CUDA graph.

Eager cached decoding (``model(tok, caches=...)``) slices the cache to the filled length and
advances a Python position, so every step has new shapes and pays one kernel launch per op:
at batch 1 it is launch-bound.  Here the step's shapes never change, so it can be captured
once into a ``torch.cuda.CUDAGraph`` and replayed per token:

* each attention module's static cache is preallocated at ``max_len`` (a sliding window's
  ring at ``window`` slots, linear attention's fixed state), from its ``init_static_cache``;
* the position is an int64 device scalar (:attr:`StaticCaches.pos`), read by the position
  embedding and by each module's ``decode_step_static(x, cache, pos)``, which writes the new
  key/value at ``pos`` (``index_copy_``) and attends over the whole buffer with a mask of the
  visible slots, and advanced on the device at the end of the step;
* prefill stays the eager path (``model(prompt, caches=...)``, one forward of the prompt),
  then its caches are copied into the static buffers (``load_static_cache``).

:func:`decode_step` is the plain eager reference of the step (also what CPU tests run);
:class:`GraphDecoder` captures exactly that function.  A model where any attention module
has no ``decode_step_static`` (or sets ``graph_unsupported``, e.g. LSH) has no graph decode:
:func:`unsupported_reason` says why and callers record eager decoding only.

:func:`attention.selection.capture_graph` is the shared "warm up on a side stream, then capture"
step; :class:`GraphPrefill` uses it for one fixed-shape full forward (the probe's graph prefill).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attention.selection import capture_graph

GRAPH_NEEDS_CUDA = "CUDA graphs need a CUDA device"


@dataclass
class StaticCaches:
    """Per-layer static caches plus the position of the next token, on the device."""

    layers: list = field(default_factory=list)
    pos: torch.Tensor | None = None     # int64 scalar: tokens written so far
    max_len: int = 0


def unsupported_reason(model) -> str | None:
    """Why ``model`` has no fixed-shape decode step (None when every layer has one)."""
    for m in model.attention_modules:
        reason = getattr(m, "graph_unsupported", None)
        if reason:
            return f"{type(m).__name__}: {reason}"
        if not all(callable(getattr(m, hook, None))
                   for hook in ("init_static_cache", "load_static_cache", "decode_step_static")):
            return (f"{type(m).__name__} defines no decode_step_static/init_static_cache/load_static_cache "
                    "(the optional fixed-shape decode step)")
    return None


def init_static_caches(model, batch_size: int, max_len: int, device, dtype) -> StaticCaches:
    if max_len > model.config.block_size:
        raise ValueError(f"max_len={max_len} exceeds the model's block_size={model.config.block_size}")
    layers = [m.init_static_cache(batch_size, max_len, device, dtype) for m in model.attention_modules]
    return StaticCaches(layers=layers, pos=torch.zeros((), dtype=torch.long, device=device), max_len=max_len)


def prefill(model, prompt: torch.Tensor, static: StaticCaches) -> torch.Tensor:
    """Eager prefill of ``prompt`` (B, P) (the model's own cached forward, unchanged), then its
    caches copied into ``static``; returns the prompt's logits (B, P, V)."""
    B, P = prompt.shape
    dtype = next(model.parameters()).dtype
    eager = model.init_caches(B, static.max_len, prompt.device, dtype)
    logits, _ = model(prompt, caches=eager)
    for m, s, e in zip(model.attention_modules, static.layers, eager.layers):
        m.load_static_cache(s, e)
    static.pos.fill_(eager.pos)
    return logits


def decode_step(model, tok: torch.Tensor, static: StaticCaches) -> torch.Tensor:
    """One token (B, 1) at ``static.pos`` -> logits (B, V); advances ``static.pos`` on the device.

    The same computation as ``model(tok, caches=...)`` (``GPT.forward`` and ``Block.forward``,
    eval mode), with each attention's eager cached call replaced by its static step.  No host
    synchronisation and no shape that depends on the position: capturable.  The caller keeps
    ``pos < max_len`` (it cannot be checked on the device without a sync).
    """
    tr, pos = model.transformer, static.pos
    x = tr.drop(tr.wte(tok) + tr.wpe(pos.view(1)))
    for block, cache in zip(tr.h, static.layers):
        x = x + block.attn.decode_step_static(block.ln_1(x), cache, pos)
        x = x + block.mlp(block.ln_2(x))
    logits = model.lm_head(tr.ln_f(x))[:, -1]
    pos.add_(1)
    return logits


class GraphPrefill:
    """One forward ``model(tokens)[0]`` (eval, fixed shape) captured as a CUDA graph over a
    static copy of ``tokens``: :meth:`replay` reruns it and returns the static logits
    (B, T, V), rewritten by the next replay.  ``load(tokens)`` copies new tokens of the same
    shape in.  Needs CUDA and a model in eval mode (training-mode dropout or per-forward
    random draws would be frozen into the graph); a forward that cannot be captured (a host
    synchronisation, a data-dependent shape) raises from the constructor."""

    def __init__(self, model, tokens: torch.Tensor, warmup: int = 2):
        device = tokens.device
        if device.type != "cuda":
            raise RuntimeError(GRAPH_NEEDS_CUDA)
        if model.training:
            raise ValueError("no graph prefill in training mode: dropout and per-forward draws would be frozen")
        self.model = model
        self.tokens = tokens.clone()
        self.graph, self.logits = capture_graph(lambda: model(self.tokens)[0], device, warmup)
        self.kernel = model.kernel()     # what the captured forward runs

    def load(self, tokens: torch.Tensor) -> None:
        self.tokens.copy_(tokens)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.logits


class GraphDecoder:
    """Greedy decoding with :func:`decode_step` captured once as a CUDA graph.

    ``dec = GraphDecoder(model, B, max_len)`` allocates the static caches, warms the step up
    on a side stream (SDPA backend choices, cuBLAS workspaces), captures one step and clears
    the caches.  Per prompt: ``dec.prefill(prompt)``; then each :meth:`step` replays the graph
    and returns the static logits (B, V) (overwritten by the next step: copy to keep).  The
    graph itself writes the greedy next token into its input buffer :attr:`tok`; pass ``tok``
    to :meth:`step` to feed another one.

    ``capture=False`` runs the same body eagerly per step, on any device: the plain reference
    of the replay (the CPU tests drive the probe's graph path with it).
    """

    def __init__(self, model, batch_size: int, max_len: int, warmup: int = 2, capture: bool = True):
        device = next(model.parameters()).device
        if capture and device.type != "cuda":
            raise RuntimeError(GRAPH_NEEDS_CUDA)
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"no graph decode: {reason}")
        dtype = next(model.parameters()).dtype
        self.model, self.max_len = model, max_len
        self.static = init_static_caches(model, batch_size, max_len, device, dtype)
        self.tok = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        self.graph = None
        if not capture:
            self.kernel = "not-run"
            self.reset()
            return
        self.graph, self.logits = capture_graph(self._body, device, warmup, after_warmup=self.static.pos.zero_)
        self.kernel = model.kernel()     # what the captured step runs
        self.reset()

    def _body(self) -> torch.Tensor:
        logits = decode_step(self.model, self.tok, self.static)
        self.tok.copy_(logits.argmax(-1, keepdim=True))   # greedy: the next step's input
        return logits

    def reset(self) -> None:
        for cache in self.static.layers:
            for t in vars(cache).values():
                if isinstance(t, torch.Tensor):
                    t.zero_()
        self.static.pos.zero_()
        self.steps = 0

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """Eager prefill into the static caches; :attr:`tok` becomes the greedy first token."""
        logits = prefill(self.model, prompt, self.static)
        self.tok.copy_(logits[:, -1].argmax(-1, keepdim=True))
        self.steps = prompt.shape[1]
        return logits

    def step(self, tok: torch.Tensor | None = None) -> torch.Tensor:
        if self.steps >= self.max_len:
            raise ValueError(f"static cache full: {self.steps} tokens = max_len={self.max_len}")
        if tok is not None:
            self.tok.copy_(tok)
        if self.graph is None:
            self.logits = self._body()
            self.kernel = self.model.kernel()
        else:
            self.graph.replay()
        self.steps += 1
        return self.logits

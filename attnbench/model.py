"""GPT-2 (Radford et al. 2019) in the style of nanoGPT's model.py, attention taken from the registry.

Pre-LN transformer: token + learned position embeddings, ``n_layer`` blocks of
``x + attn(ln_1(x))`` and ``x + mlp(ln_2(x))``, final LayerNorm, LM head tied to the token
embedding.  With the ``baseline`` attention and the same weights it computes exactly what
HF ``GPT2LMHeadModel`` computes (tested).

Fair comparison across variants: every parameter is initialised from its own generator
seeded by ``(seed, parameter name)``, so the embeddings, MLPs and norms start identical in
every variant whatever the attention module's parameter count.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import attention


@dataclass(frozen=True)
class GPTConfig:
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64 for fast matmuls
    dropout: float = 0.0
    bias: bool = True
    attention: str = "sdpa"
    attention_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_settings(cls, model: dict, entry: dict, **overrides) -> "GPTConfig":
        """The config of a job: the ``model`` settings section and one variant ``entry``
        (``attnbench.settings.variant_entry``); ``overrides`` replace fields (e.g. n_layer)."""
        fields = dict(n_layer=model["n_layer"], n_head=model["n_head"], n_embd=model["n_embd"],
                      block_size=model["block_size"], vocab_size=model["vocab_size"],
                      dropout=model["dropout"], bias=model["bias"],
                      attention=attention.registry_name(entry), attention_params=dict(entry["params"]))
        return cls(**{**fields, **overrides})


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        params = dict(cfg.attention_params)
        if cfg.attention in attention.BUILTIN:  # a user's class gets only its own params
            params = {"dropout": cfg.dropout, "bias": cfg.bias, **params}
        self.attn = attention.build(cfg.attention, cfg.n_embd, cfg.n_head, **params)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None):
        x = x + (self.attn(self.ln_1(x)) if cache is None else self.attn(self.ln_1(x), cache=cache))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, seed: int = 0):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (GPT-2)
        init_weights(self, seed)

    # --- bookkeeping ---------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied lm_head counted once
        if non_embedding:
            n -= self.transformer.wpe.weight.numel() + self.transformer.wte.weight.numel()
        return n

    def attention_params(self) -> int:
        return sum(p.numel() for b in self.transformer.h for p in b.attn.parameters())

    @property
    def attention_modules(self) -> list[nn.Module]:
        return [b.attn for b in self.transformer.h]

    def kernel(self) -> str:
        kernels = sorted({getattr(m, "kernel", "?") for m in self.attention_modules})
        return "+".join(kernels)

    def cache_bytes_per_token(self, dtype=torch.bfloat16) -> int:
        return sum(attention.base.cache_bytes_per_token_of(m, dtype) for m in self.attention_modules)

    def cache_bytes(self, batch_size: int, seq_len: int, dtype=torch.bfloat16) -> int:
        return sum(m.cache_bytes(batch_size, seq_len, dtype) if callable(getattr(m, "cache_bytes", None))
                   else batch_size * seq_len * attention.base.cache_bytes_per_token_of(m, dtype)
                   for m in self.attention_modules)

    # --- forward -------------------------------------------------------------------------
    def init_caches(self, batch_size: int, max_len: int, device, dtype) -> attention.base.LayerCaches:
        if max_len > self.config.block_size:
            raise ValueError(f"max_len={max_len} exceeds the model's block_size={self.config.block_size}")
        layers = [m.init_cache(batch_size, max_len, device, dtype) for m in self.attention_modules]
        return attention.base.LayerCaches(layers=layers, pos=0)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                caches: attention.base.LayerCaches | None = None, *, return_logits: bool = True):
        """idx (B, T) -> (logits (B, T, V), None); with ``targets`` (logits, mean cross-entropy).

        Targets equal to -100 are ignored (padding).  With ``caches``, ``idx`` holds the next
        tokens after ``caches.pos`` and the caches advance.

        A training step calls ``model(x, y, return_logits=False)`` and gets ``(None, loss)``: a
        compiled step that also outputs the logits pays a logits-sized buffer per step.  With a
        differentiable output autograd materialises a zero gradient for it in every backward;
        with any output aliasing the logits the compiled backward may not reuse the saved logits'
        buffer for their gradient (AOTAutograd donates only saved tensors no output aliases).  On
        an H200 at 16 x 512 each cost 0.82 GB of the step's peak (allocator traces,
        ``reports/h200/head-f983543/``; #20).
        """
        B, T = idx.shape
        start = caches.pos if caches is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size={self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache=None if caches is None else caches.layers[i])
        if caches is not None:
            caches.pos += T
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return (logits if return_logits else None), loss


def _param_generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


@torch.no_grad()
def init_weights(model: GPT, seed: int) -> None:
    """nanoGPT init, each tensor from a generator keyed by its name (see module docstring).

    Linear/Embedding weights ~ N(0, 0.02); residual projections (``c_proj``) ~
    N(0, 0.02/sqrt(2 n_layer)) (GPT-2 paper); biases 0; norm weights 1.  Other parameters
    of an attention module keep the module's own initialisation.
    """
    std_proj = 0.02 / math.sqrt(2 * model.config.n_layer)
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            w = module.weight
            if id(w) in seen:
                continue  # tied lm_head
            seen.add(id(w))
            std = std_proj if mod_name.endswith("c_proj") else 0.02
            w.copy_(torch.randn(w.shape, generator=_param_generator(seed, mod_name + ".weight")) * std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


def non_attention_state(model: GPT) -> dict[str, torch.Tensor]:
    """State dict without attention-module tensors (for equal-init checks across variants)."""
    return {k: v for k, v in model.state_dict().items() if ".attn." not in k}


def build_model(settings: dict, device) -> GPT:
    """The job's GPT on ``device``, initialised from ``settings["seed"]``."""
    cfg = GPTConfig.from_settings(settings["model"], settings["entry"])
    torch.manual_seed(settings["seed"])  # for any attention init outside init_weights
    return GPT(cfg, seed=settings["seed"]).to(device)


def weights_bytes(model: GPT) -> bytes:
    """``model.safetensors`` contents (the tied lm_head is not stored; safetensors, no pickle)."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    return save(state, metadata={"config": repr(model.config.to_dict())})


def load_weights(model: GPT, path: str | Path) -> None:
    """Load ``model.safetensors`` (safetensors only: no pickle)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)

"""FLOPs: analytic per-step counts, a FlopCounterMode cross-check, peak FLOP/s and MFU.

Conventions (``CONVENTION``): matmul FLOPs only, 2 per multiply-add; softmax, norms,
activations, embeddings and the optimizer are not counted.  Attention modules contribute
their own ``flops_forward(B, T, causal_halved)`` (projections + attention core); every
``nn.Linear`` outside the attention modules (MLP ``c_fc``/``c_proj``, ``lm_head`` over all
T positions) contributes ``2 * B * T * in * out``.  A training step = 3 x forward (backward =
2 x forward: grads w.r.t. inputs and weights).  ``forward_per_step`` / ``train_per_step``
count the causal core as T(T+1)/2 query-key pairs (the FlashAttention convention: the work
a causal kernel needs, used for MFU); the ``*_dense`` totals count T^2 pairs, what a dense
masked implementation executes and what ``FlopCounterMode`` reports for SDPA.

``FlopCounterMode`` (torch.utils.flop_counter) counts the aten matmul family, SDPA's CUDA
kernels (flash/efficient/cudnn, counted dense: "We aren't accounting for causal attention")
and flex_attention; its SDPA backward formula is 2.5 x forward (recomputed scores), so for
models with fused SDPA ``counted_vs_analytic`` sits slightly above 1.  It misses ops without
a formula (CPU flash SDPA ``_scaled_dot_product_flash_attention_for_cpu``, custom ops) and
anything outside the aten dispatcher (raw Triton launches such as fla's kernels): those
count 0 and are listed in ``uncounted_ops``.
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import torch
import torch.nn as nn

CONVENTION = ("matmul FLOPs (2 per multiply-add); attention modules' flops_forward + 2*B*T*in*out per "
              "other Linear (MLP, lm_head over all positions); train = 3 x forward; causal attention "
              "core counted as T(T+1)/2 query-key pairs (FlashAttention convention); *_dense totals count "
              "T^2 pairs (as executed by dense masks, and as FlopCounterMode counts SDPA)")

COUNTER_CONVENTION = ("torch.utils.flop_counter.FlopCounterMode over one forward+backward in eager mode: "
                      "matmul-family ops, SDPA CUDA kernels and flex_attention (all counted dense, SDPA "
                      "backward = 2.5 x forward); ops without a formula count 0 (uncounted_ops)")

# Dense bf16/fp16 tensor-core peaks (datasheets), matched on torch.cuda.get_device_name().
PEAK_FLOPS_BF16 = [
    (("H200",), 989e12, "H200 bf16 dense (datasheet)"),
    (("H100", "PCIE"), 756e12, "H100 PCIe bf16 dense (datasheet)"),
    (("H100", "HBM3"), 989e12, "H100 SXM bf16 dense (datasheet)"),
    (("H100", "SXM"), 989e12, "H100 SXM bf16 dense (datasheet)"),
    (("A100",), 312e12, "A100 bf16 dense (datasheet)"),
]

# Substrings marking an executed op as FLOP-relevant when FlopCounterMode has no formula.
_HEAVY = ("mm", "matmul", "conv", "attention", "attn", "einsum", "linear", "gemm", "dot", "triton",
          "flex", "scan", "lstm", "gru", "rnn")
_CORE_NAMESPACES = ("aten", "prim", "prims", "higher_order")


# --- analytic -------------------------------------------------------------------------

def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Outermost submodules (or the model itself) that expose ``flops_forward``, or follow the
    attention contract (``init_cache``) without it (``flops_forward`` is optional there: their
    FLOPs are then unavailable, not counted as MLP layers)."""
    found: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if not (callable(getattr(mod, "flops_forward", None)) or callable(getattr(mod, "init_cache", None))):
            continue
        if any(name == p or name.startswith(p + ".") or p == "" for p, _ in found):
            continue
        found.append((name, mod))
    return found


def _linear_like_flops(mod: nn.Module, tokens: int) -> int | None:
    if isinstance(mod, nn.Linear):
        return 2 * tokens * mod.in_features * mod.out_features
    if type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2:
        return 2 * tokens * mod.weight.numel()  # HF GPT-2's transposed Linear
    return None


def model_flops(model: nn.Module, batch_size: int, seq_len: int) -> dict[str, Any]:
    """Analytic FLOPs of one training step on ``batch_size x seq_len`` tokens.

    Returns ``{forward_per_step, train_per_step, forward_per_step_dense, train_per_step_dense,
    train_per_token, convention, breakdown: {attention, attention_dense, mlp_and_other_linear,
    lm_head}, n_attention_modules, unavailable: {"flops.<key>": reason}}``.
    """
    model = _unwrap(model)
    B, T = int(batch_size), int(seq_len)
    tokens = B * T
    unavailable: dict[str, str] = {}
    attn = attention_modules(model)
    attn_halved = attn_dense = 0
    attn_error = None
    for name, mod in attn:
        try:
            if not callable(getattr(mod, "flops_forward", None)):
                raise NotImplementedError("no flops_forward (optional in the attention contract)")
            attn_halved += int(mod.flops_forward(B, T, causal_halved=True))
            attn_dense += int(mod.flops_forward(B, T, causal_halved=False))
        except Exception as err:  # NotImplementedError from a variant without a formula
            attn_error = f"attention module {name or type(mod).__name__}.flops_forward failed: {type(err).__name__}: {err}"
            break
    prefixes = [n for n, _ in attn]
    linear = lm_head = 0
    for name, mod in model.named_modules():
        if any(p == "" or name == p or name.startswith(p + ".") for p in prefixes):
            continue
        f = _linear_like_flops(mod, tokens)
        if f is None:
            continue
        if name.split(".")[-1] == "lm_head":
            lm_head += f
        else:
            linear += f
    # The same model with standard causal multi-head attention in every attention module (GPT-2's
    # projections, T(T+1)/2 pairs): equal work per token for every variant, so an MFU on this
    # count ranks variants by speed; the variant's own count says how busy its kernels were.
    standard = 0
    for _, mod in attn:
        C, H = getattr(mod, "n_embd", None), getattr(mod, "n_head", None)
        if not C or not H:
            standard = None
            break
        standard += 2 * tokens * C * 3 * C + 2 * tokens * C * C + 2 * B * H * (T * (T + 1) // 2) * (2 * (C // H))
    out: dict[str, Any] = {
        "forward_per_step": None, "train_per_step": None,
        "forward_per_step_dense": None, "train_per_step_dense": None, "train_per_token": None,
        "train_per_step_standard": None,
        "convention": CONVENTION,
        "breakdown": {"attention": attn_halved, "attention_dense": attn_dense,
                      "mlp_and_other_linear": linear, "lm_head": lm_head},
        "n_attention_modules": len(attn),
        "batch_size": B, "seq_len": T,
    }
    if attn_error is not None:
        for k in ("forward_per_step", "train_per_step", "forward_per_step_dense", "train_per_step_dense",
                  "train_per_token"):
            unavailable[f"flops.{k}"] = attn_error
        out["breakdown"]["attention"] = out["breakdown"]["attention_dense"] = None
    else:
        fwd = attn_halved + linear + lm_head
        fwd_dense = attn_dense + linear + lm_head
        out.update(forward_per_step=fwd, train_per_step=3 * fwd, forward_per_step_dense=fwd_dense,
                   train_per_step_dense=3 * fwd_dense, train_per_token=3 * fwd / tokens if tokens else None)
    if standard is not None and attn:
        out["train_per_step_standard"] = 3 * (standard + linear + lm_head)
    else:
        unavailable["flops.train_per_step_standard"] = ("no attention module with n_embd and n_head"
                                                        if attn else "no attention module found")
        if not attn:
            out["note"] = "no module with flops_forward found: attention not counted"
    out["unavailable"] = unavailable
    return out


# --- FlopCounterMode cross-check -------------------------------------------------------

class _OpRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the overload packets of ops that actually execute (entered *outside*
    FlopCounterMode, so it sees what the counter executed after its decompositions)."""

    supports_higher_order_operators = True

    def __init__(self):
        super().__init__()
        self.ops: dict[str, int] = {}
        self.packets: dict[str, Any] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = getattr(func, "_overloadpacket", func)
        name = _op_name(packet)
        self.ops[name] = self.ops.get(name, 0) + 1
        self.packets.setdefault(name, packet)
        return func(*args, **(kwargs or {}))


def _op_name(op) -> str:
    if isinstance(op, torch._ops.HigherOrderOperator):
        return f"higher_order.{getattr(op, '_name', None) or op}"
    return str(op)


def _flop_relevant(name: str) -> bool:
    ns = name.split(".", 1)[0]
    if ns not in _CORE_NAMESPACES:
        return True  # custom op (torch.library / triton_op): counted only if registered
    low = name.lower()
    return any(s in low for s in _HEAVY)


def _model_inputs(model: nn.Module, B: int, T: int, device, gen: torch.Generator):
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", None)
    if vocab is None:
        emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
        vocab = emb.num_embeddings if emb is not None else None
    if vocab is not None:
        idx = torch.randint(0, vocab, (B, T), generator=gen).to(device)
        tgt = torch.randint(0, vocab, (B, T), generator=gen).to(device)
        return (idx, tgt), (idx,)
    n_embd = getattr(model, "n_embd", None) or getattr(cfg, "n_embd", None)
    if n_embd is None:
        raise ValueError("cannot build inputs: model has neither config.vocab_size, an nn.Embedding, nor n_embd")
    x = torch.randn(B, T, n_embd, generator=gen).to(device).requires_grad_(True)
    return (x,), (x,)


def _loss_of(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        if len(out) > 1 and isinstance(out[1], torch.Tensor) and out[1].dim() == 0:
            return out[1]
        out = out[0]
    if isinstance(out, dict):
        out = out.get("loss") if out.get("loss") is not None else out.get("logits")
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"cannot find a loss or logits tensor in the model output ({type(out).__name__})")
    return out if out.dim() == 0 else out.float().sum()


def count_flops(model: nn.Module, batch_size: int, seq_len: int, device, *, dtype: torch.dtype | None = None,
                backward: bool = True, analytic: dict | None = None) -> dict[str, Any]:
    """Count one forward+backward with ``FlopCounterMode`` (call it outside timed windows).

    Inputs are random tokens (``model(idx, targets)``, falling back to ``model(idx)``) or, for
    a bare attention module, a random ``(B, T, n_embd)`` tensor.  ``dtype`` runs it under
    autocast (use the training dtype so the same kernels run).  The model's ``.grad`` and the
    RNG states are restored afterwards, so the training run is unaffected.

    Returns ``{"flops": {...}, "executed_ops": {op: calls}, "unavailable": {"flops.<key>": reason}}``
    where ``flops`` (made to be merged into the result's ``flops`` section) holds
    ``counted_forward_per_step, counted_backward_per_step, counted_train_per_step,
    counted_vs_analytic`` (counted train / analytic *dense* train), ``counted_vs_analytic_forward``,
    ``uncounted_ops: [...]``, ``counted_by_op: {op: flops}`` (forward+backward),
    ``counted_by_op_forward``, ``counted_attention: {counted_forward, analytic_forward_dense,
    counted_vs_analytic_dense, kernels}``, ``counted_convention``, ``count_seconds``.
    Never raises: a failure leaves the counts ``None`` with the reason.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = _unwrap(model)
    device = torch.device(device)
    B, T = int(batch_size), int(seq_len)
    keys = ("counted_forward_per_step", "counted_backward_per_step", "counted_train_per_step",
            "counted_vs_analytic", "counted_vs_analytic_forward")
    res: dict[str, Any] = {k: None for k in keys}
    res.update(uncounted_ops=[], counted_by_op={}, counted_by_op_forward={}, counted_attention=None,
               counted_convention=COUNTER_CONVENTION, count_seconds=None)
    executed: dict[str, int] = {}
    unavailable: dict[str, str] = {}
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if device.type == "cuda" and torch.cuda.is_available() else None
    was_training = model.training
    t_start = time.perf_counter()
    try:
        for p in params:
            p.grad = None
        gen = torch.Generator().manual_seed(1234)
        args, args_fallback = _model_inputs(model, B, T, device, gen)
        rec = _OpRecorder()
        autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None and dtype != torch.float32
                    else _null())
        root = type(model).__name__
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rec, FlopCounterMode(display=False) as fc:
                with autocast:
                    try:
                        out = model(*args)
                    except TypeError:
                        out = model(*args_fallback)
                    loss = _loss_of(out)
                fwd_counts = copy.deepcopy(fc.get_flop_counts())
                fwd_total = fc.get_total_flops()
                if backward:
                    loss.backward()
                all_counts = fc.get_flop_counts()
                total = fc.get_total_flops()
        registry = fc.flop_registry
        res["counted_forward_per_step"] = int(fwd_total)
        if backward:
            res["counted_train_per_step"] = int(total)
            res["counted_backward_per_step"] = int(total - fwd_total)
        else:
            unavailable["flops.counted_train_per_step"] = "backward not run (backward=False)"
            unavailable["flops.counted_backward_per_step"] = "backward not run (backward=False)"
        res["counted_by_op"] = {_op_name(k): int(v) for k, v in all_counts.get("Global", {}).items()}
        res["counted_by_op_forward"] = {_op_name(k): int(v) for k, v in fwd_counts.get("Global", {}).items()}
        executed = dict(sorted(rec.ops.items()))
        uncounted = sorted(n for n, pk in rec.packets.items() if pk not in registry and _flop_relevant(n))
        # per attention module: counted forward vs analytic dense forward
        attn = attention_modules(model)
        if attn:
            counted_attn = 0
            analytic_attn = 0
            kernels = set()
            for name, mod in attn:
                key = root if name == "" else f"{root}.{name}"
                counted_attn += int(sum(fwd_counts.get(key, {}).values()))
                try:
                    analytic_attn += int(mod.flops_forward(B, T, causal_halved=False))
                except Exception:
                    analytic_attn = None
                    break
                kernels.add(str(getattr(mod, "kernel", "?")))
            ratio = counted_attn / analytic_attn if analytic_attn else None
            res["counted_attention"] = {"counted_forward": counted_attn, "analytic_forward_dense": analytic_attn,
                                        "counted_vs_analytic_dense": ratio, "kernels": sorted(kernels)}
            if ratio is not None and ratio < 0.9 and not any("attention" in u or "attn" in u for u in uncounted):
                uncounted.append(f"attention kernel(s) {sorted(kernels)}: counted {ratio:.0%} of the analytic dense "
                                 "forward; either work outside the aten dispatcher (e.g. raw Triton) or the "
                                 "analytic formula describes another algorithm than the one that ran")
        res["uncounted_ops"] = uncounted
        if analytic is None:
            analytic = model_flops(model, B, T)
        fd, td = analytic.get("forward_per_step_dense"), analytic.get("train_per_step_dense")
        if fd:
            res["counted_vs_analytic_forward"] = fwd_total / fd
        else:
            unavailable["flops.counted_vs_analytic_forward"] = "no analytic dense forward FLOPs"
        if td and backward:
            res["counted_vs_analytic"] = total / td
        else:
            unavailable["flops.counted_vs_analytic"] = ("no analytic dense train FLOPs" if backward
                                                        else "backward not run (backward=False)")
    except Exception as err:
        reason = f"FlopCounterMode counting failed: {type(err).__name__}: {err}"
        for k in keys:
            res[k] = None
            unavailable[f"flops.{k}"] = reason
    finally:
        for p, g in zip(params, saved_grads):
            p.grad = g
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        model.train(was_training)
        res["count_seconds"] = time.perf_counter() - t_start
    return {"flops": res, "executed_ops": executed, "unavailable": unavailable}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- peak and MFU ----------------------------------------------------------------------

def peak_flops(device, peak_tflops: float | None = None, dtype: torch.dtype | None = torch.bfloat16
               ) -> dict[str, Any]:
    """``{"peak_tflops": TFLOP/s | None, "source": str | None, "unavailable": reason | None}``.

    ``peak_tflops`` (TFLOP/s) wins; else the dense bf16/fp16 datasheet table by CUDA device
    name; ``None`` with the reason on CPU, unknown devices, or other dtypes."""
    def no(reason: str) -> dict[str, Any]:
        return {"peak_tflops": None, "source": None, "unavailable": reason}

    if peak_tflops is not None:
        return {"peak_tflops": float(peak_tflops), "source": "given (peak_tflops)", "unavailable": None}
    dev = torch.device(device)
    if dev.type != "cuda":
        return no(f"device is {dev.type}: no peak FLOP/s table for CPUs (pass peak_tflops)")
    if dtype is not None and dtype not in (torch.bfloat16, torch.float16):
        return no(f"peak table holds bf16/fp16 tensor-core peaks; training dtype is {dtype} (pass peak_tflops)")
    try:
        name = torch.cuda.get_device_name(dev)
    except Exception as err:
        return no(f"cannot read the device name: {err}")
    up = name.upper()
    for needles, value, source in PEAK_FLOPS_BF16:
        if all(n in up for n in needles):
            return {"peak_tflops": value / 1e12, "source": f"{source}; device {name!r}", "unavailable": None}
    return no(f"device {name!r} not in the peak FLOP/s table (pass peak_tflops)")


def flops_section(analytic: dict, counted: dict | None, seconds_per_step: float | None, device, *,
                  peak_tflops: float | None = None, dtype: torch.dtype | None = torch.bfloat16
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """The result's ``flops`` section and its ``unavailable`` entries.

    ``{forward_per_step, train_per_step, convention, counted_train_per_step, counted_vs_analytic,
    uncounted_ops, achieved_tflops, mfu, peak_tflops}`` plus ``forward_per_step_dense``,
    ``train_per_step_dense``, ``peak_source``.  ``achieved_tflops`` = analytic train FLOPs
    (causal-halved) per step / ``seconds_per_step``; ``mfu`` = that / peak.
    ``mfu_standard`` counts the step as if every attention module were standard causal MHA
    (``train_per_step_standard``): the same work for every variant, so it ranks them by speed.
    """
    unavailable = {k: v for k, v in (analytic.get("unavailable") or {}).items()}
    out: dict[str, Any] = {
        "forward_per_step": analytic.get("forward_per_step"),
        "train_per_step": analytic.get("train_per_step"),
        "forward_per_step_dense": analytic.get("forward_per_step_dense"),
        "train_per_step_dense": analytic.get("train_per_step_dense"),
        "convention": analytic.get("convention", CONVENTION),
        "counted_train_per_step": None, "counted_vs_analytic": None, "uncounted_ops": [],
        "achieved_tflops": None, "mfu": None, "peak_tflops": None, "peak_source": None,
    }
    if counted is None:
        for k in ("counted_train_per_step", "counted_vs_analytic"):
            unavailable[f"flops.{k}"] = "FlopCounterMode count not run"
    else:
        c = counted.get("flops", counted)
        out.update({k: v for k, v in c.items() if k != "unavailable"})
        out["uncounted_ops"] = list(c.get("uncounted_ops") or [])
        unavailable.update(counted.get("unavailable") or {})
    out["train_per_step_standard"] = analytic.get("train_per_step_standard")
    std = out["train_per_step_standard"]
    out["achieved_tflops_standard"] = std / seconds_per_step / 1e12 if std and seconds_per_step else None
    out["mfu_standard"] = None
    train = out["train_per_step"]
    if train is not None and seconds_per_step:
        out["achieved_tflops"] = train / seconds_per_step / 1e12
    else:
        unavailable["flops.achieved_tflops"] = ("no analytic train FLOPs" if train is None
                                                else "no step time measured")
    peak = peak_flops(device, peak_tflops, dtype)
    if peak["peak_tflops"] is None:
        unavailable["flops.peak_tflops"] = peak["unavailable"]
        unavailable["flops.mfu"] = peak["unavailable"]
    else:
        out["peak_tflops"] = peak["peak_tflops"]
        out["peak_source"] = peak["source"]
        if out["achieved_tflops"] is not None:
            out["mfu"] = out["achieved_tflops"] / peak["peak_tflops"]
        else:
            unavailable["flops.mfu"] = unavailable["flops.achieved_tflops"]
        if out["achieved_tflops_standard"] is not None:
            out["mfu_standard"] = out["achieved_tflops_standard"] / peak["peak_tflops"]
    if out["mfu_standard"] is None:
        unavailable["flops.mfu_standard"] = (unavailable.get("flops.train_per_step_standard")
                                             or unavailable.get("flops.mfu") or "no step time measured")
    return out, unavailable

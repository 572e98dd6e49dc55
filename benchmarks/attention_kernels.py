#!/usr/bin/env python
"""Attention kernels on one device: correctness of every variant's fast path, then throughput.

For every variant in ``attention.VARIANTS`` (default params, plus a few extra configs) this
script, on CUDA in bf16 autocast:

1. **checks** that the ``impl="auto"`` path and every named kernel (``cls.kernels``) agree with
   ``impl="reference"`` built with the same weights — relative error ||out - ref|| / ||ref|| of
   the output and of the input gradient (both sides in bf16 autocast; pass: out < 2e-2,
   dx < 5e-2) — and records ``module.kernel`` after each call; it also checks cached decoding
   (prefill + one-token steps) against the full forward;
2. **times** the attention module (projections included) forward and forward+backward at
   each sequence length with B*T tokens fixed (default T = 512 and 2048, 32768 tokens,
   n_embd 768, 12 heads): median of per-call CUDA-event timings after warm-up (compile and
   cuDNN plan building happen in warm-up and in step 1).  TFLOP/s use the analytic count
   ``module.flops_forward(B, T, causal_halved=True)`` for the forward and 3x that for
   forward+backward (the backward counted as two forwards; FlashAttention's papers use 3.5x
   for the attention core because their backward recomputes the scores);
3. **times the raw kernels** (SDPA cuDNN / FLASH / EFFICIENT causal, compiled flex causal) on
   q, k, v laid out as the modules produce them (views of one (B, T, 3C) projection), for
   comparison with the figures in the project notes (``notes_ms``).

Variants that fail are recorded with their error and skipped.  Results go to
``<out>/attention_kernels.json`` (rewritten after every variant) and a printed table.  A time
budget (``--budget-s``) skips what would not fit; the whole run is meant to stay under four
minutes on an H100.  ``--device cpu --tiny`` is a smoke test of the same code in fp32.

The forward timing runs with autograd recording (as in training), so that it reuses the
compiled flex kernels of the forward+backward timing instead of compiling a no-grad variant.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import attention  # noqa: E402
from attention.ops.flash_attn import flash_attn_available  # noqa: E402
from attnbench.optim import begin_step  # noqa: E402

OUT_TOL = 2e-2
GRAD_TOL = 5e-2
# extra configurations besides each variant's defaults (run after them, dropped first)
EXTRA_CONFIGS = [
    ("gqa", {"n_kv_head": 1}),
    ("flex", {"score_mod": "alibi"}),
    ("linear", {"impl": "chunked"}),     # the plain PyTorch chunked form beside fla's kernel
]
# kernel-level figures from ../shared/notes/gpu-machine.md (H100, torch 2.11; ms fwd / fwd+bwd,
# causal, 12 heads x 64, bf16, B*T = 32k tokens)
NOTES_MS = {
    ("sdpa_cudnn", 512): (0.143, 0.868), ("sdpa_cudnn", 2048): (0.311, 1.357),
    ("sdpa_flash", 512): (0.216, 1.163), ("sdpa_flash", 2048): (0.452, 1.988),
    ("sdpa_efficient", 512): (0.306, 1.617), ("sdpa_efficient", 2048): (0.970, 4.169),
    ("flex_causal", 512): (0.255, 0.980), ("flex_causal", 2048): (0.455, 2.016),
}


# --- small utilities -------------------------------------------------------------------------

class Budget:
    def __init__(self, seconds: float):
        self.t0 = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device, warmup: int, repeats: int) -> dict:
    """Median per-call time (ms): CUDA events on GPU (calls queued back to back), perf_counter on CPU."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        pairs = []
        for _ in range(repeats):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            pairs.append((s, e))
        torch.cuda.synchronize(device)
        ms = [s.elapsed_time(e) for s, e in pairs]
    else:
        ms = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
            "repeats": repeats, "warmup_s": round(warm_s, 3)}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def autocast(device, dtype):
    if dtype in (torch.bfloat16, torch.float16):
        return torch.autocast(device.type, dtype=dtype)
    return nullcontext()


def short_error(err: BaseException) -> str:
    msg = f"{type(err).__name__}: {err}"
    return msg if len(msg) < 600 else msg[:600] + " ..."


def free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def config_id(name: str, params: dict) -> str:
    return name if not params else name + "(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"


# --- step 1: correctness -----------------------------------------------------------------------

def run_once(module, x, gy, device, dtype, seed=0):
    """Forward + backward; returns (out, dx, kernel)."""
    xi = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)  # variants with random parts (LSH) draw the same numbers on both sides
    with autocast(device, dtype):
        out = module(xi)
    dx, = torch.autograd.grad(out, xi, gy.to(out.dtype))
    return out.detach(), dx, module.kernel


def check_variant(name, params, args, device, dtype, shape) -> dict:
    """Compare auto and each named kernel with impl='reference' (same weights)."""
    B, T = shape
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(B, T, args.n_embd, generator=gen).to(device)
    gy = torch.randn(B, T, args.n_embd, generator=gen).to(device)
    torch.manual_seed(0)
    ref_mod = attention.build(name, args.n_embd, args.n_head, **{**params, "impl": "reference"}).to(device).train()
    state = ref_mod.state_dict()
    ref_out, ref_dx, ref_kernel = run_once(ref_mod, x, gy, device, dtype)
    result = {"shape": [B, T], "reference_kernel": ref_kernel, "paths": {}}
    del ref_mod
    cls = attention.VARIANTS[name]
    for impl in ("auto", *getattr(cls, "kernels", ())):
        entry: dict = {}
        try:
            mod = attention.build(name, args.n_embd, args.n_head, **{**params, "impl": impl}).to(device).train()
            mod.load_state_dict(state)
            out, dx, kernel = run_once(mod, x, gy, device, dtype)
            entry = {"kernel": kernel, "out_rel_err": rel_err(out, ref_out), "dx_rel_err": rel_err(dx, ref_dx)}
            entry["pass"] = entry["out_rel_err"] < OUT_TOL and entry["dx_rel_err"] < GRAD_TOL
            del mod, out, dx
        except Exception as err:  # a kernel that cannot run here is a result, not a crash
            entry = {"error": short_error(err), "pass": None}
        result["paths"][impl] = entry
        free(device)
    return result


def check_decode(name, params, args, device, dtype, prompt=64, steps=16, batch=2) -> dict:
    """Prefill ``prompt`` tokens with a cache, then ``steps`` one-token calls (auto impl); compare
    with the full forward over prompt+steps tokens of impl='reference' with the same weights
    (inference mode; the reference side avoids one more flex compile)."""
    T = prompt + steps
    torch.manual_seed(0)
    mod = attention.build(name, args.n_embd, args.n_head, **params).to(device).eval()
    ref = attention.build(name, args.n_embd, args.n_head, **{**params, "impl": "reference"}).to(device).eval()
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(batch, T, args.n_embd, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad(), autocast(device, dtype):
        torch.manual_seed(0)
        full = ref(x)
        full_kernel = ref.kernel
        cache = mod.init_cache(batch, T, device, dtype)
        torch.manual_seed(0)
        outs = [mod(x[:, :prompt], cache=cache)]
        prefill_kernel = mod.kernel
        outs += [mod(x[:, t:t + 1], cache=cache) for t in range(prompt, T)]
        step_kernel = mod.kernel
    err = rel_err(torch.cat(outs, dim=1), full)
    return {"prompt": prompt, "steps": steps, "rel_err": err, "pass": err < OUT_TOL,
            "full_kernel": full_kernel, "prefill_kernel": prefill_kernel, "decode_kernel": step_kernel}


def peak_extra_gib(fn, device) -> float | None:
    """Peak CUDA memory (GiB) one call of ``fn`` allocates above what is allocated before it."""
    if device.type != "cuda":
        return None
    free(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**30


# --- step 2: module throughput -------------------------------------------------------------------

def time_module(name, params, args, device, dtype, T) -> dict:
    B = max(1, args.tokens // T)
    torch.manual_seed(0)
    mod = attention.build(name, args.n_embd, args.n_head, **params).to(device).train()
    x = torch.randn(B, T, args.n_embd, device=device, requires_grad=True)
    gy = torch.randn(B, T, args.n_embd, device=device, dtype=dtype)
    leaves = [x] + [p for p in mod.parameters() if p.requires_grad]

    def fwd():
        begin_step(mod)  # per-step state as a training step pays it (LSH draws its rotations)
        with autocast(device, dtype):
            return mod(x)

    def fwd_bwd():
        out = fwd()
        return torch.autograd.grad(out, leaves, gy.to(out.dtype), allow_unused=True)

    fb = time_calls(fwd_bwd, device, args.warmup, args.repeats)
    f = time_calls(fwd, device, 1, args.repeats)
    peak = peak_extra_gib(fwd_bwd, device)
    flops = mod.flops_forward(B, T, causal_halved=True)
    row = {"T": T, "B": B, "kernel": mod.kernel, "params": sum(p.numel() for p in mod.parameters()),
           "flops_forward": flops,
           "fwd_ms": f["median_ms"], "fwd_bwd_ms": fb["median_ms"],
           "fwd_tflops": flops / (f["median_ms"] * 1e-3) / 1e12,
           "fwd_bwd_tflops": 3 * flops / (fb["median_ms"] * 1e-3) / 1e12,
           "fwd_bwd_min_ms": fb["min_ms"], "fwd_bwd_max_ms": fb["max_ms"], "warmup_s": fb["warmup_s"],
           "peak_extra_mem_gib": peak}
    del mod, x, gy, leaves
    free(device)
    return row


# --- step 3: raw kernels ----------------------------------------------------------------------

def raw_qkv(B, T, n_head, head_dim, device, dtype):
    """q, k, v leaves (B, H, T, D) with the strides the modules produce (views of (B, T, 3C))."""
    C = n_head * head_dim
    qkv = torch.randn(B, T, 3 * C, device=device, dtype=dtype)
    return [t.view(B, T, n_head, head_dim).transpose(1, 2).detach().requires_grad_(True)
            for t in qkv.split(C, dim=2)]


def raw_kernels(args, device, dtype, budget, which) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F
    from attention.base import causal_pairs, core_attention_flops
    from attention.ops.flex import block_mask, causal_mask_mod, compiled_flex_attention

    head_dim = args.n_embd // args.n_head
    kernels = {
        "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
        "sdpa_flash": SDPBackend.FLASH_ATTENTION,
        "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
        "sdpa_math": SDPBackend.MATH,
        "flex_causal": None,
    }
    kernels = {k: b for k, b in kernels.items() if k in which}
    rows = []
    for T in args.seq_lens:
        B = max(1, args.tokens // T)
        for kname, backend in kernels.items():
            row = {"kernel": kname, "T": T, "B": B, "notes_ms": NOTES_MS.get((kname, T))}
            if budget.left() < 5:
                row["skipped"] = "time budget"
                rows.append(row)
                continue
            if kname == "sdpa_math" and device.type == "cuda" and T > 1024:
                row["skipped"] = "math backend materialises B*H*T*T scores; not timed at this length"
                rows.append(row)
                continue
            try:
                q, k, v = raw_qkv(B, T, args.n_head, head_dim, device, dtype)
                if backend is None:
                    if device.type != "cuda":
                        raise RuntimeError("compiled flex has no backward on CPU")
                    bm = block_mask(causal_mask_mod, T, T, device)
                    flex = compiled_flex_attention()

                    def fwd():
                        return flex(q, k, v, block_mask=bm)
                else:
                    def fwd(backend=backend):
                        with sdpa_kernel(backend):
                            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
                # the output gradient laid out as the modules produce it (a (B, T, H, D) tensor seen as
                # (B, H, T, D)): cuDNN reuses its backward plan for q, k, v of one shape and strides
                # whatever the gradient's layout, so a contiguous one here gave the `sdpa` module
                # checked later in this process wrong input gradients (cudnn_packed_layout.py)
                gy = torch.randn(B, T, args.n_head, head_dim, device=device, dtype=dtype).transpose(1, 2)

                def fwd_bwd():
                    return torch.autograd.grad(fwd(), (q, k, v), gy)

                fb = time_calls(fwd_bwd, device, args.warmup, args.repeats)
                f = time_calls(fwd, device, 1, args.repeats)
                flops = core_attention_flops(B, args.n_head, T, head_dim, head_dim, causal_pairs(T))
                row.update(fwd_ms=f["median_ms"], fwd_bwd_ms=fb["median_ms"],
                           fwd_tflops=flops / (f["median_ms"] * 1e-3) / 1e12,
                           fwd_bwd_tflops=3 * flops / (fb["median_ms"] * 1e-3) / 1e12,
                           fwd_bwd_tflops_fa_convention=3.5 * flops / (fb["median_ms"] * 1e-3) / 1e12,
                           warmup_s=fb["warmup_s"])
                del q, k, v, gy
            except Exception as err:
                row["error"] = short_error(err)
            free(device)
            rows.append(row)
    return rows


# --- driver -------------------------------------------------------------------------------------

def environment(device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "flash_attn_importable": flash_attn_available(),
           "variants": sorted(attention.VARIANTS)}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        try:
            import triton
            env["triton"] = triton.__version__
        except Exception:
            env["triton"] = None
    return env


def print_table(results: dict) -> None:
    print("\n== correctness (rel. error vs impl='reference', same weights; pass: out < %.0e, dx < %.0e) ==" % (OUT_TOL, GRAD_TOL))
    print(f"{'config':34s} {'impl':12s} {'kernel':44s} {'out_err':>9s} {'dx_err':>9s} pass")
    for cid, res in results["variants"].items():
        chk = res.get("check")
        if not chk:
            print(f"{cid:34s} {'-':12s} {res.get('error', res.get('skipped', '')):.90s}")
            continue
        for impl, e in chk["paths"].items():
            if "error" in e:
                print(f"{cid:34s} {impl:12s} {'ERROR ' + e['error']:.90s}")
            else:
                print(f"{cid:34s} {impl:12s} {e['kernel']:44s} {e['out_rel_err']:9.2e} {e['dx_rel_err']:9.2e} {e['pass']}")
        dec = res.get("decode")
        if dec and "rel_err" in dec:
            print(f"{cid:34s} {'decode':12s} {dec['decode_kernel']:44s} {dec['rel_err']:9.2e} {'':>9s} {dec['pass']}")
        elif dec:
            print(f"{cid:34s} {'decode':12s} {'ERROR ' + dec.get('error', ''):.90s}")
    print("\n== attention module forward / forward+backward (median ms; TFLOP/s = flops_forward(causal_halved) x1 / x3) ==")
    print(f"{'config':34s} {'T':>5s} {'B':>4s} {'kernel':40s} {'fwd ms':>8s} {'f+b ms':>8s} {'fwd TF':>7s} {'f+b TF':>7s} {'mem GiB':>8s}")
    for cid, res in results["variants"].items():
        for row in res.get("throughput", []):
            if "error" in row or "skipped" in row:
                print(f"{cid:34s} {row['T']:5d} {'':4s} {row.get('error', row.get('skipped', '')):.80s}")
                continue
            mem = f"{row['peak_extra_mem_gib']:8.2f}" if row["peak_extra_mem_gib"] is not None else f"{'-':>8s}"
            print(f"{cid:34s} {row['T']:5d} {row['B']:4d} {row['kernel']:40.40s} {row['fwd_ms']:8.3f} "
                  f"{row['fwd_bwd_ms']:8.3f} {row['fwd_tflops']:7.1f} {row['fwd_bwd_tflops']:7.1f} {mem}")
    print("\n== raw kernels, causal (median ms; notes = project notes' H100 figures fwd / fwd+bwd) ==")
    print(f"{'kernel':16s} {'T':>5s} {'B':>4s} {'fwd ms':>8s} {'f+b ms':>8s} {'fwd TF':>7s} {'f+b TF':>7s} {'notes ms':>14s}")
    for row in results["raw_kernels"]:
        notes = "%.3f/%.3f" % row["notes_ms"] if row.get("notes_ms") else "-"
        if "fwd_ms" not in row:
            print(f"{row['kernel']:16s} {row['T']:5d} {row['B']:4d} {row.get('error', row.get('skipped', '')):.90s}")
            continue
        print(f"{row['kernel']:16s} {row['T']:5d} {row['B']:4d} {row['fwd_ms']:8.3f} {row['fwd_bwd_ms']:8.3f} "
              f"{row['fwd_tflops']:7.1f} {row['fwd_bwd_tflops']:7.1f} {notes:>14s}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--out", default="results/attention_kernels", help="output directory")
    ap.add_argument("--tiny", action="store_true", help="small shapes and few repeats (smoke test)")
    ap.add_argument("--n-embd", type=int, default=None, help="default 768 (--tiny: 64)")
    ap.add_argument("--n-head", type=int, default=None, help="default 12 (--tiny: 4)")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=None, help="default 512 2048 (--tiny: 32 64)")
    ap.add_argument("--tokens", type=int, default=None, help="B*T per call, default 32768 (--tiny: 128)")
    ap.add_argument("--warmup", type=int, default=None, help="default 3 (--tiny: 1)")
    ap.add_argument("--repeats", type=int, default=None, help="default 20 (--tiny: 3)")
    ap.add_argument("--variants", nargs="*", default=None, help="subset of attention.VARIANTS (default: all)")
    ap.add_argument("--no-extra", action="store_true", help="skip the extra configs " + str(EXTRA_CONFIGS))
    ap.add_argument("--budget-s", type=float, default=200.0,
                    help="stop starting new steps after this many seconds (default 200)")
    args = ap.parse_args(argv)
    defaults = (dict(n_embd=64, n_head=4, seq_lens=[32, 64], tokens=128, warmup=1, repeats=3) if args.tiny else
                dict(n_embd=768, n_head=12, seq_lens=[512, 2048], tokens=32768, warmup=3, repeats=20))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available; use --device cpu", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    budget = Budget(args.budget_s)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / "attention_kernels.json"
    cfg = torch._dynamo.config
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, max(getattr(cfg, attr), 64))
            break

    names = list(attention.VARIANTS) if args.variants is None else args.variants
    configs = [(n, {}) for n in names]
    if not args.no_extra:
        configs += [(n, p) for n, p in EXTRA_CONFIGS if n in attention.VARIANTS and (args.variants is None or n in names)]
    check_shape = (max(1, args.tokens // args.seq_lens[0]), args.seq_lens[0])
    results = {
        "meta": {
            **environment(device),
            "dtype": str(dtype).replace("torch.", "") + (" autocast" if dtype != torch.float32 else ""),
            "n_embd": args.n_embd, "n_head": args.n_head, "seq_lens": args.seq_lens, "tokens_per_call": args.tokens,
            "check_shape": list(check_shape), "out_tol": OUT_TOL, "grad_tol": GRAD_TOL,
            "timing": ("median of per-call CUDA-event times, calls queued back to back" if device.type == "cuda"
                       else "median of per-call perf_counter times") + f", {args.warmup} warm-up calls, {args.repeats} timed",
            "forward_timing": "forward with autograd recording (as in training)",
            "flops_convention": "analytic module.flops_forward(B, T, causal_halved=True) (projections + causal "
                                "attention core, ~T^2/2 pairs; sliding window counts its window pairs); "
                                "forward+backward = 3x forward. Raw kernels: core attention only, "
                                "also given with FlashAttention's 3.5x convention.",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "variants": {},
        "raw_kernels": [],
    }

    def save():
        results["meta"]["elapsed_s"] = round(budget.elapsed(), 1)
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str))
        os.replace(tmp, out_path)

    print(f"[{budget.elapsed():6.1f}s] raw SDPA kernels", flush=True)
    results["raw_kernels"] = raw_kernels(args, device, dtype, budget,
                                         ("sdpa_cudnn", "sdpa_flash", "sdpa_efficient", "sdpa_math"))
    save()
    for name, params in configs:
        cid = config_id(name, params)
        res: dict = {"name": name, "params": params}
        results["variants"][cid] = res
        if name not in attention.VARIANTS:
            res["error"] = f"unknown variant {name!r}"
            save()
            continue
        if budget.left() < 10:
            res["skipped"] = "time budget"
            save()
            continue
        print(f"[{budget.elapsed():6.1f}s] {cid}", flush=True)
        try:
            res["check"] = check_variant(name, params, args, device, dtype, check_shape)
        except Exception as err:
            res["error"] = short_error(err)
            res["traceback"] = traceback.format_exc(limit=6)
            free(device)
            save()
            continue
        free(device)
        try:
            res["decode"] = check_decode(name, params, args, device, dtype,
                                         prompt=16 if args.tiny else 64, steps=8 if args.tiny else 16)
        except Exception as err:
            res["decode"] = {"error": short_error(err), "pass": None}
        free(device)
        res["throughput"] = []
        for T in args.seq_lens:
            if budget.left() < 10:
                res["throughput"].append({"T": T, "skipped": "time budget"})
                continue
            try:
                res["throughput"].append(time_module(name, params, args, device, dtype, T))
            except Exception as err:
                res["throughput"].append({"T": T, "error": short_error(err)})
            free(device)
        save()

    # after the flex variants, whose compiled kernels (same shapes and strides) it may reuse
    print(f"[{budget.elapsed():6.1f}s] raw flex kernel", flush=True)
    results["raw_kernels"] += raw_kernels(args, device, dtype, budget, ("flex_causal",))
    save()
    print_table(results)
    print(f"\nwrote {out_path} ({budget.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

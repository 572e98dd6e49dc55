#!/usr/bin/env python
"""Linear attention: fla's Triton kernel against the plain chunked PyTorch form, per length.

Why: ``linear``'s ``impl="auto"`` must run the faster of its two correct training paths at
each sequence length, and the project notes measured fla's chunked kernel at 2.7 ms for 64x512
fwd+bwd -- slower than causal cuDNN SDPA -- so "fla is always faster" cannot be assumed.

For each sequence length T (B*T tokens fixed, default 32768; n_embd 768, 12 heads; bf16
autocast on CUDA with TF32 matmuls on, as ``attnbench.train`` sets them) and each path

* ``fla``             -- ``impl="fla"`` eager (``fla:chunk``),
* ``fla+compile``     -- the same under ``torch.compile(dynamic=False)``: fla's call is opaque
  to the compiler (a graph break), the projections and feature maps around it are compiled,
* ``chunked``         -- ``impl="chunked"`` eager (``torch:chunked``, float32 inside),
* ``chunked+compile`` -- the same module under ``torch.compile(dynamic=False)``,

(the pipeline trains the whole GPT-2 under ``torch.compile`` and probes it eagerly)

it builds the ``linear`` attention module with the same weights and records: forward+backward
and forward median ms (CUDA events, after warm-up that includes compilation and fla's
autotuning), peak memory above the inputs, the kernel the module reports, and the relative
error of the output and input gradient against the float32 chunked eager path (same weights,
same inputs).  Then one-token cached decode steps (after a 512-token prefill) for fla's fused
recurrent kernel against the torch chunked form with a cache, batch 1 and 16.

The summary gives, for eager and for compiled calls, the faster path per T and
``fla_max_len``: the longest measured T up to which fla is faster at every measured T (``None``
if it is not at the shortest) -- the value of ``linear``'s ``fla_max_len`` param, which
``impl="auto"`` uses for eager calls (``fla_min_len`` gives the opposite pattern: fla faster
from some T on).  (The committed ``reports/h100/kernels/linear_crossover*.json`` predate
``fla_max_len`` in the summary; their rows give eager 2048, compiled None.)

    python benchmarks/linear_crossover.py --out results/linear_crossover.json
    python benchmarks/linear_crossover.py --device cpu --tiny --out results/linear_crossover_tiny.json # smoke (no fla)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import attention  # noqa: E402
from attention_kernels import autocast, environment, free, peak_extra_gib, rel_err, short_error, time_calls  # noqa: E402

PATHS = ("fla", "fla+compile", "chunked", "chunked+compile")


def build(impl: str, args, device) -> torch.nn.Module:
    torch.manual_seed(0)      # same weights for every path (parameters are created in one order)
    return attention.build("linear", args.n_embd, args.n_head, impl=impl,
                           chunk_size=args.chunk_size).to(device).train()


def run_path(path, T, args, device, dtype, ref) -> tuple[dict, tuple | None]:
    """Time one path at length T; returns (row, ref) where ``ref`` = (out, dx) of the first path run."""
    B = max(1, args.tokens // T)
    impl = path.split("+")[0]
    mod = build(impl, args, device)
    step = torch.compile(mod, dynamic=False) if path.endswith("+compile") else mod
    gen = torch.Generator(device="cpu").manual_seed(T)
    x = torch.randn(B, T, args.n_embd, generator=gen).to(device).requires_grad_(True)
    gy = torch.randn(B, T, args.n_embd, generator=gen).to(device)
    leaves = [x] + list(mod.parameters())

    def fwd():
        with autocast(device, dtype):
            return step(x)

    def fwd_bwd():
        out = fwd()
        return out, torch.autograd.grad(out, leaves, gy.to(out.dtype))

    t0 = time.perf_counter()
    out, grads = fwd_bwd()                      # first call: compile / autotune
    first_s = time.perf_counter() - t0
    row = {"path": path, "T": T, "B": B, "kernel": mod.kernel, "first_call_s": round(first_s, 2)}
    if mod.kernel.endswith("fla-fallback)"):
        row["error"] = f"fla did not run: {mod.fla_error}"
        return row, ref
    if ref is None:
        ref = (out.detach().float(), grads[0].detach().float())
    row["out_rel_err"] = rel_err(out.detach(), ref[0])
    row["dx_rel_err"] = rel_err(grads[0].detach(), ref[1])
    del out, grads
    fb = time_calls(fwd_bwd, device, args.warmup, args.repeats)
    f = time_calls(fwd, device, 1, args.repeats)
    row.update(fwd_bwd_ms=fb["median_ms"], fwd_bwd_min_ms=fb["min_ms"], fwd_bwd_max_ms=fb["max_ms"],
               fwd_ms=f["median_ms"], peak_extra_mem_gib=peak_extra_gib(fwd_bwd, device))
    return row, ref


def decode_step(path, batch, args, device, dtype, prefill=512) -> dict:
    """Median ms of one cached one-token step after a ``prefill``-token prefill (no grad)."""
    mod = build(path, args, device).eval()
    x = torch.randn(batch, prefill + 1, args.n_embd, device=device)
    with torch.no_grad(), autocast(device, dtype):
        cache = mod.init_cache(batch, prefill + 1, device, dtype)
        mod(x[:, :prefill], cache=cache)
        one = x[:, prefill:]

        def step():
            return mod(one, cache=cache)   # the state keeps growing in count, not in size

        t = time_calls(step, device, args.warmup, args.repeats)
    return {"path": path, "batch": batch, "prefill": prefill, "kernel": mod.kernel, "step_ms": t["median_ms"],
            "step_min_ms": t["min_ms"], "step_max_ms": t["max_ms"]}


def crossover(rows: list[dict]) -> dict:
    """Per mode (eager, compiled) and T the faster of fla and chunked, and the smallest T from
    which fla is faster at every longer measured T."""
    by = {(r["path"], r["T"]): r for r in rows if "fwd_bwd_ms" in r}
    out = {"rule": "fla_max_len = longest measured T with fla faster (fwd+bwd) at it and every shorter "
                   "measured T (the module's param: impl=auto runs fla up to it; None = not at the shortest); "
                   "fla_min_len = shortest measured T with fla faster at it and every longer one (None = "
                   "not at the longest)"}
    for mode, suffix in (("eager", ""), ("compiled", "+compile")):
        faster = {}
        for T in sorted({r["T"] for r in rows}):
            a, b = by.get(("fla" + suffix, T)), by.get(("chunked" + suffix, T))
            if a and b:
                faster[T] = {"faster": "fla" if a["fwd_bwd_ms"] < b["fwd_bwd_ms"] else "chunked",
                             "fla_ms": a["fwd_bwd_ms"], "chunked_ms": b["fwd_bwd_ms"],
                             "ratio_chunked_over_fla": b["fwd_bwd_ms"] / a["fwd_bwd_ms"]}
        measured = sorted(faster)
        fla_min_len = next((T for i, T in enumerate(measured)
                            if all(faster[u]["faster"] == "fla" for u in measured[i:])), None)
        fla_max_len = next((T for i, T in reversed(list(enumerate(measured)))
                            if all(faster[u]["faster"] == "fla" for u in measured[:i + 1])), None)
        out[mode] = {"per_length": faster, "fla_max_len": fla_max_len, "fla_min_len": fla_min_len}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("results/linear_crossover.json"))
    ap.add_argument("--tiny", action="store_true", help="small shapes, few repeats (smoke test)")
    ap.add_argument("--seq-lens", type=int, nargs="+", default=None)
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    ap.add_argument("--chunk-size", type=int, default=64, help="chunk of the torch chunked form (module default 64)")
    ap.add_argument("--decode-batches", type=int, nargs="*", default=None)
    ap.add_argument("--budget-s", type=float, default=400.0, help="start nothing new after this many seconds")
    args = ap.parse_args(argv)
    defaults = (dict(n_embd=64, n_head=4, tokens=256, seq_lens=[32, 64, 128], warmup=1, repeats=3, decode_batches=[1])
                if args.tiny else
                dict(n_embd=768, n_head=12, tokens=32768, seq_lens=[512, 1024, 2048, 4096, 8192, 16384],
                     warmup=3, repeats=15, decode_batches=[1, 16]))
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True     # as attnbench.train sets them
        torch.backends.cudnn.allow_tf32 = True
    cfg = torch._dynamo.config
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, max(getattr(cfg, attr), 64))
            break
    paths = [p for p in PATHS if p in args.paths and not (p.startswith("fla") and device.type != "cuda")]
    doc = {"meta": {**environment(device), "n_embd": args.n_embd, "n_head": args.n_head, "tokens_per_call": args.tokens,
                    "chunk_size": args.chunk_size, "dtype": str(dtype) + (" autocast" if device.type == "cuda" else ""),
                    "tf32": device.type == "cuda", "paths": paths,
                    "timing": f"median CUDA-event ms, {args.warmup} warm-up calls after the first "
                              f"(compiling/autotuning) call, {args.repeats} timed",
                    "errors_vs": "chunked eager (float32 inside) with the same weights and inputs"},
           "training": [], "decode": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def save():
        doc["meta"]["elapsed_s"] = round(time.perf_counter() - start, 1)
        doc["summary"] = crossover(doc["training"])
        args.out.write_text(json.dumps(doc, indent=1))

    order = ["chunked"] + [p for p in paths if p != "chunked"]   # the reference path first at each T
    for T in args.seq_lens:
        ref = None
        for path in order:
            if time.perf_counter() - start > args.budget_s:
                doc["training"].append({"path": path, "T": T, "skipped": "time budget"})
                continue
            try:
                row, ref = run_path(path, T, args, device, dtype, ref)
            except Exception as err:  # e.g. OOM at long T: a result, not a crash
                row = {"path": path, "T": T, "error": short_error(err)}
            torch._dynamo.reset()
            free(device)
            doc["training"].append(row)
            if "fwd_bwd_ms" in row:
                print(f"T={T:6d} B={row['B']:3d} {path:16s} {row['kernel']:14s} f+b {row['fwd_bwd_ms']:8.3f} ms "
                      f"(min {row['fwd_bwd_min_ms']:.3f} max {row['fwd_bwd_max_ms']:.3f})  fwd {row['fwd_ms']:8.3f} "
                      f"mem+{row['peak_extra_mem_gib'] or 0:5.2f} GiB  out_err {row['out_rel_err']:.1e} "
                      f"dx_err {row['dx_rel_err']:.1e}  first {row['first_call_s']} s", flush=True)
            else:
                print(f"T={T:6d} {path:16s} {row.get('error') or row.get('skipped')}", flush=True)
            save()
    for batch in args.decode_batches:
        for path in [p for p in ("fla", "chunked") if p in paths]:
            if time.perf_counter() - start > args.budget_s:
                doc["decode"].append({"path": path, "batch": batch, "skipped": "time budget"})
                continue
            try:
                row = decode_step(path, batch, args, device, dtype, prefill=32 if args.tiny else 512)
                print(f"decode B={batch:3d} {path:8s} {row['kernel']:20s} {row['step_ms']:.3f} ms/step", flush=True)
            except Exception as err:
                row = {"path": path, "batch": batch, "error": short_error(err)}
                print(f"decode B={batch:3d} {path:8s} {row['error']}", flush=True)
            free(device)
            doc["decode"].append(row)
            save()
    save()
    print(json.dumps(doc["summary"], indent=1))
    print(f"wrote {args.out.name} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""cuDNN causal SDPA on the packed-QKV views of GPT-2's ``c_attn``: when is its backward wrong?

Why: in session 2 ``attention_kernels.py`` found the ``sdpa`` module's cuDNN input gradient
wrong (relative error 1.39) while FLASH, EFFICIENT and MATH agreed to 3e-3.  This script
isolates the case: x -> Linear(C, 3C) -> split -> (B, H, T, D) views -> cuDNN causal SDPA ->
merge heads, and for each choice of tensors copied to contiguous (none, q, k, v, k+v, q+k+v),
eager and under ``torch.compile``, records the relative error of the output and of dL/dx
against the float32 MATH backend (same weights and inputs) and the compiled forward+backward
median time.  ``--prime`` first runs one cuDNN forward+backward at the same shape on packed
views with a *contiguous* (B, H, T, D) output gradient -- what the benchmark's raw-kernel step
did before the module checks.  Finding on the H100 (torch 2.11, cuDNN 9.19): without priming
every case is right; after priming the uncopied case is wrong and any copy (a different q/k/v
stride, so a different cached plan) is right -- cuDNN's cached backward plan is reused across
output-gradient layouts.

    python benchmarks/cudnn_packed_layout.py --out results/cudnn_packed_layout.json
    python benchmarks/cudnn_packed_layout.py --prime --out results/cudnn_packed_layout_primed.json
    python benchmarks/cudnn_packed_layout.py --device cpu --tiny --out results/cudnn_packed_layout_tiny.json   # smoke (MATH only)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from attention_kernels import autocast, environment, free, rel_err, short_error, time_calls  # noqa: E402

COPIES = {"none": "", "q": "q", "k": "k", "v": "v", "kv": "kv", "qkv": "qkv"}


def attend(x, c_attn, n_head, copy: str, backend):
    B, T, C = x.shape
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in c_attn(x).split(C, dim=2))
    q, k, v = (t.contiguous() if name in copy else t for name, t in zip("qkv", (q, k, v)))
    with sdpa_kernel(backend):
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(B, T, C)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("results/cudnn_packed_layout.json"))
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--prime", action="store_true",
                    help="first run one raw cuDNN fwd+bwd at the same shape on packed views with a contiguous "
                         "(B, H, T, D) output gradient, as attention_kernels.py's raw-kernel step does")
    args = ap.parse_args(argv)
    B, T, C, H, warmup, repeats = (2, 32, 64, 4, 1, 3) if args.tiny else (64, 512, 768, 12, 3, 20)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backend = SDPBackend.CUDNN_ATTENTION if device.type == "cuda" else SDPBackend.MATH
    torch.manual_seed(0)
    c_attn = torch.nn.Linear(C, 3 * C).to(device)
    x = torch.randn(B, T, C, device=device, requires_grad=True)
    gy = torch.randn(B, T, C, device=device)
    if args.prime:
        from attention_kernels import raw_qkv
        q, k, v = raw_qkv(B, T, H, C // H, device, dtype)
        with sdpa_kernel(backend):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(y, (q, k, v), torch.randn(y.shape, device=device, dtype=y.dtype))  # contiguous
        del q, k, v, y
    ref_out = attend(x, c_attn, H, "", SDPBackend.MATH)           # float32 reference
    ref_dx, = torch.autograd.grad(ref_out, x, gy)
    doc = {"meta": {**environment(device), "shape": [B, T, C, H], "dtype": str(dtype),
                    "backend": str(backend), "reference": "float32 SDPA MATH, same weights and inputs",
                    "primed": args.prime, "timing": f"median CUDA-event ms of compiled fwd+bwd, {warmup} warm-up, {repeats} timed"},
           "cases": []}
    for copy in COPIES:
        for compiled in (False, True):
            row = {"copy": copy or "none", "compiled": compiled}
            try:
                torch._dynamo.reset()
                fn = (lambda x, copy=copy: attend(x, c_attn, H, COPIES[copy], backend))
                step = torch.compile(fn) if compiled else fn

                def fwd_bwd(step=step):
                    with autocast(device, dtype):
                        out = step(x)
                    return out, torch.autograd.grad(out, [x, *c_attn.parameters()], gy.to(out.dtype))

                out, grads = fwd_bwd()
                row.update(out_rel_err=rel_err(out.detach(), ref_out.detach()),
                           dx_rel_err=rel_err(grads[0], ref_dx))
                if compiled:
                    row["fwd_bwd_ms"] = time_calls(fwd_bwd, device, warmup, repeats)["median_ms"]
            except Exception as err:
                row["error"] = short_error(err)
            free(device)
            doc["cases"].append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

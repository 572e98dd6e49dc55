#!/usr/bin/env python
"""Peak memory of one attention module's forward+backward versus sequence length.

Shows that the sub-quadratic variants (``linear`` chunked, ``lsh`` in both partitions) grow
linearly in T, against exact attention: SDPA pinned to its MATH backend (materialises the
T x T scores, quadratic) and SDPA's default fused kernel (``cpu-flash`` on CPU, linear).

Setup: one module, B=1, n_embd=768, 12 heads, float32, input (1, T, 768) with
``requires_grad``; one forward, ``out.square().sum().backward()``.  Every measurement runs in
a fresh subprocess (``--one``), after a small warm-up call (thread pools, lazy inits):

* CPU: peak resident set size.  ``/proc/self/clear_refs`` <- "5" resets the kernel's
  high-water mark (VmHWM) to the current RSS; ``peak = VmHWM after - VmRSS before``.  It
  counts everything the call touches (activations saved for backward, gradients of the
  module's ~2.4M parameters, allocator slack).  The child runs with glibc's
  ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the RSS at once.
  tracemalloc does not see torch's allocations.
* CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated() - memory_allocated()`` before.

A configuration whose estimated T x T footprint exceeds ``--max-quadratic-gb`` is skipped and
recorded as such.  Output: JSON (``--out``) and a printed table with the log-log growth
exponent between consecutive lengths (1 = linear, 2 = quadratic).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_EMBD, N_HEAD, BATCH = 768, 12, 1

VARIANTS = [
    # label, registry name, params, quadratic memory?
    ("linear", "linear", {}, False),
    ("lsh:position", "lsh", {"seed": 0}, False),
    ("lsh:bucket", "lsh", {"seed": 0, "partition": "bucket"}, False),
    ("sdpa:auto", "sdpa", {}, False),
    ("sdpa:math", "sdpa", {"impl": "math"}, True),
]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(spec: dict) -> dict:
    """Child process: build, warm up, reset the peak, run forward+backward once, report."""
    import torch

    import attention

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    m = attention.build(spec["name"], N_EMBD, N_HEAD, **spec["params"]).to(device).train()
    warm = torch.randn(BATCH, 64, N_EMBD, device=device, requires_grad=True)
    m(warm).square().sum().backward()
    m.zero_grad(set_to_none=True)
    del warm
    x = torch.randn(BATCH, spec["T"], N_EMBD, device=device, requires_grad=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        before = _status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    out = m(x)
    out.square().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        method = "cuda max_memory_allocated delta"
    else:
        peak = _status_kb("VmHWM") * 1024 - before
        method = "VmHWM (reset via clear_refs) - VmRSS before"
    seconds = time.perf_counter() - t0
    return {"kernel": m.kernel, "peak_bytes": peak, "seconds": round(seconds, 3), "method": method,
            "before_bytes": before}


def child_env() -> dict:
    """glibc malloc: serve every block >= 64 KiB by mmap and unmap it on free (a fixed
    threshold; the default one adapts upward and keeps freed tensors resident), so that RSS
    follows the live tensors."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "65536")
    return env


def quadratic_estimate_gb(T: int) -> float:
    """Rough T x T footprint of MATH SDPA fwd+bwd: ~4 fp32 (B, H, T, T) tensors alive."""
    return 4 * BATCH * N_HEAD * T * T * 4 / 2**30


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-lens", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--variants", nargs="+", default=[v[0] for v in VARIANTS],
                    help=f"labels from {[v[0] for v in VARIANTS]}")
    ap.add_argument("--max-quadratic-gb", type=float, default=None,
                    help="skip quadratic configs above this estimate (default: 40%% of available RAM)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/attention_memory_cpu.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        print(json.dumps(measure_one(json.loads(args.one))))
        return 0

    import psutil
    import torch

    from attnbench.results import atomic_write_json, provenance

    limit = args.max_quadratic_gb
    if limit is None:
        limit = 0.4 * psutil.virtual_memory().available / 2**30
    rows = []
    for label, name, params, quadratic in VARIANTS:
        if label not in args.variants:
            continue
        for T in args.seq_lens:
            row = {"variant": label, "name": name, "params": params, "T": T, "batch_size": BATCH,
                   "n_embd": N_EMBD, "n_head": N_HEAD, "dtype": "float32", "device": args.device}
            if quadratic and quadratic_estimate_gb(T) > limit:
                row.update(status="skipped", reason=f"estimated {quadratic_estimate_gb(T):.1f} GiB "
                                                     f"of T x T tensors > limit {limit:.1f} GiB")
                rows.append(row)
                print(f"{label:14s} T={T:6d}  skipped ({row['reason']})", flush=True)
                continue
            spec = {"name": name, "params": params, "T": T, "device": args.device, "threads": args.threads}
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                                  capture_output=True, text=True, cwd=ROOT, env=child_env())
            if proc.returncode != 0:
                row.update(status="failed", reason=(proc.stderr.strip().splitlines() or ["?"])[-1])
            else:
                row.update(status="ok", **json.loads(proc.stdout.strip().splitlines()[-1]))
            rows.append(row)
            peak = f"{row['peak_bytes'] / 2**20:9.1f} MiB" if row["status"] == "ok" else row["status"]
            print(f"{label:14s} T={T:6d}  {peak}  {row.get('kernel', '')}  {row.get('seconds', '')} s",
                  flush=True)

    # growth exponents between consecutive measured lengths
    summary = {}
    for label in dict.fromkeys(r["variant"] for r in rows):
        pts = [(r["T"], r["peak_bytes"]) for r in rows if r["variant"] == label and r["status"] == "ok"]
        pts.sort()
        slopes = {f"{a[0]}->{b[0]}": round(math.log(b[1] / a[1]) / math.log(b[0] / a[0]), 2)
                  for a, b in zip(pts, pts[1:]) if a[1] > 0 and b[1] > 0}
        summary[label] = {"peak_mib": {T: round(p / 2**20, 1) for T, p in pts}, "growth_exponent": slopes}

    doc = {"schema": "attnbench.attention_memory/1",
           "setup": {"batch_size": BATCH, "n_embd": N_EMBD, "n_head": N_HEAD, "dtype": "float32",
                     "pass": "one forward + backward of the attention module (projections included)",
                     "threads": args.threads, "device": args.device,
                     "quadratic_limit_gib": round(limit, 1)},
           "rows": rows, "summary": summary,
           "provenance": provenance(seed=0, device=torch.device(args.device))}
    atomic_write_json(args.out, doc)

    Ts = sorted({r["T"] for r in rows})
    print("\npeak memory of forward+backward (MiB), B=1, n_embd=768, 12 heads, fp32,", args.device)
    print(f"{'variant':14s}" + "".join(f"{'T=' + str(T):>12s}" for T in Ts) + "   growth exponent")
    for label, s in summary.items():
        cells = "".join(f"{s['peak_mib'].get(T, float('nan')):12.1f}" for T in Ts)
        print(f"{label:14s}{cells}   {s['growth_exponent']}")
    out = Path(args.out).resolve()
    root = Path(__file__).resolve().parent.parent
    print(f"\nwrote {out.relative_to(root) if out.is_relative_to(root) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

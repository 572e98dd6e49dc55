"""Every variant and every kernel it offers, on the GPU, in one hostile process.

Before any module is checked, the process primes what can poison a kernel: raw cuDNN SDPA
forward+backward passes at the modules' shapes and strides with a *contiguous* output
gradient (the layout the modules never produce: cuDNN reuses its cached backward plan for it,
``benchmarks/cudnn_packed_layout.py``), and an eager FlopCounterMode forward+backward of a
GPT-2.  Then each (variant, impl) runs its output and input gradient against its float32
reference path (``attention.selection.compare``), ``impl="auto"`` after tuning here
(``autotune``).  ``auto`` must pass everywhere: it checks its candidates in this process and
never runs a wrong one.  A pinned kernel must pass too -- unless it is cuDNN and it passes in a
fresh process, which proves the failure is the cached-plan collision the priming provoked
(reported, and exactly what ``auto`` and the jobs' self-checks guard against).
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import attention
from attention.selection import GraphedCall, autotune, compare, median_ms

ROOT = Path(__file__).resolve().parents[2]
B, T, C, H = 8, 512, 768, 12
DTYPE = torch.bfloat16
ROUNDS = 9
PARAMS = {"gqa": {"n_kv_head": 4}, "sliding_window": {"window": 128}, "mla": {"kv_lora_rank": 256}}


def make(name: str, impl: str, seed: int = 0):
    torch.manual_seed(seed)
    return attention.build(name, C, H, **{**PARAMS.get(name, {}), "impl": impl}).cuda().train()


def x_input(seed: int = 0):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed)).cuda()


def prime_foreign_layouts() -> None:
    """cuDNN forward+backward on q, k, v laid out as the modules lay them out (views of one
    (B, T, 3C) projection) with a contiguous (B, H, T, D) output gradient, at the shapes the
    checks below use; then an eager FlopCounterMode pass of a GPT-2 with sdpa."""
    from attnbench import measure
    from attnbench.model import GPT, GPTConfig

    D = C // H
    for dims in ((B, T), (2, T)):
        qkv = torch.randn(*dims, 3 * C, device="cuda", dtype=DTYPE)
        q, k, v = (t.view(*dims, H, D).transpose(1, 2).detach().requires_grad_(True) for t in qkv.split(C, dim=2))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(torch.randn(dims[0], H, dims[1], D, device="cuda", dtype=DTYPE))
    model = GPT(GPTConfig(n_layer=2, n_head=H, n_embd=C, block_size=T, attention="sdpa")).cuda().train()
    measure.count_flops(model, B, T, torch.device("cuda"), dtype=DTYPE)
    torch.cuda.synchronize()


def fresh_process_check(name: str, impl: str) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r});"
            f"import test_gpu_kernels as t; from attention.selection import compare;"
            f"r = compare(t.make({name!r}, {impl!r}), t.x_input(), t.DTYPE); print('RESULT', json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    return json.loads(line[7:]) if line else {"error": proc.stderr[-2000:]}


def test_every_variant_and_kernel_against_reference_after_priming(gpu_log):
    prime_foreign_layouts()
    rows, problems = [], []
    for name in sorted(attention.BUILTIN):
        for impl in ("auto", *attention.VARIANTS[name].kernels):
            row = {"variant": name, "impl": impl}
            try:
                m = make(name, impl)
                if impl == "auto":
                    row["selection"] = autotune(m, x_input(1), DTYPE)
                row.update(compare(m, x_input(), DTYPE))
            except Exception as err:  # a kernel this machine does not offer (flash_attn not installed...)
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            if row.get("pass") is False:
                if impl == "cudnn":
                    row["fresh_process"] = fresh_process_check(name, impl)
                    row["collision"] = row["fresh_process"].get("pass") is True
                if impl == "auto" or not row.get("collision"):
                    problems.append(row)
            rows.append(row)
            print(f"{name:15s} {impl:11s} {row.get('kernel', '-'):28s} "
                  f"out {row.get('out_rel_err', float('nan')):.2e} dx {row.get('dx_rel_err', float('nan')):.2e} "
                  f"pass {row.get('pass')}" + (" (cuDNN plan collision: passes in a fresh process)"
                                               if row.get("collision") else "") + (f" {row['error']}" if "error" in row else ""))
            torch.cuda.empty_cache()
    gpu_log("kernels_after_priming", rows)
    unavailable = [r for r in rows if "error" in r]
    assert all(r["impl"] != "auto" for r in unavailable), unavailable
    assert not problems, json.dumps(problems, indent=1, default=str)[:4000]


@pytest.mark.parametrize("name", ["sdpa", "gqa", "mla"])
def test_auto_is_as_fast_as_the_best_pinned_kernel_compiled(name, gpu_log):
    """The compiled module with ``auto`` (tuned here, then pinned) against every pinned SDPA
    backend that passes its check: median forward+backward time, same process, interleaved."""
    # 32 rows (about 8 ms a call): long enough that launch jitter stays well under the 5 % margin
    x = torch.randn(32, T, C, generator=torch.Generator().manual_seed(3)).cuda().requires_grad_(True)
    gy = torch.randn(32, T, C, device="cuda")
    auto = make(name, "auto")
    rec = autotune(auto, x.detach(), DTYPE)
    candidates = {"auto": auto}
    for impl in ("cudnn", "flash", "efficient"):
        if impl in attention.VARIANTS[name].kernels:
            m = make(name, impl)
            try:
                if compare(m, x.detach(), DTYPE)["pass"]:
                    candidates[impl] = m
            except Exception:  # backend without a kernel for these inputs
                pass
    times = {k: [] for k in candidates}
    compiled = {k: torch.compile(m) for k, m in candidates.items()}

    def step(k):
        with torch.autocast("cuda", dtype=DTYPE, cache_enabled=False):
            out = compiled[k](x)
        out.backward(gy.to(out.dtype))

    def reset():
        for m in candidates.values():
            m.zero_grad(set_to_none=True)
        x.grad = None

    # Interleaved rounds, the order rotated each round (no module always runs first or after the
    # same neighbour).  The best pinned kernel is the one with the lowest median over rounds; the
    # verdict is the median of the per-round ratios best / auto, so a slow stretch of the machine
    # hits both sides of a ratio alike.  (Taking the fastest pinned kernel *per round* would
    # compare the minimum of three noisy samples with one: biased against auto by the noise
    # alone, which is what failed here with 5-10 % round-to-round jitter on an H200.)
    # Each compiled step is captured as a CUDA graph and timed by replays (the GPU's time: one
    # eager call of one layer times the host, 20 % apart between rounds on an H200); eager
    # timing only if a capture fails, for all alike.
    keys = list(compiled)
    for k in keys:
        median_ms(lambda: step(k), torch.device("cuda"), 5, 1)  # compile and autotune outside the rounds
    try:
        graphs = {k: GraphedCall(lambda k=k: step(k), torch.device("cuda"), reset) for k in keys}
        for g in graphs.values():
            g.calibrate()
        timing = "cuda-graph replays"
    except Exception as err:
        graphs, timing = None, f"eager (capture failed: {type(err).__name__}: {err})"[:300]
    for r in range(ROUNDS):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            times[k].append(graphs[k].ms() if graphs else median_ms(lambda: step(k), torch.device("cuda"), 5, 50))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = min((k for k in keys if k != "auto"), key=med.get)
    ratios = [times[best][i] / times["auto"][i] for i in range(ROUNDS)]
    result = {"variant": name, "chosen": rec["chosen"], "timing": timing, "selection_timing": rec.get("timing"),
              "ms": med, "ms_per_round": times, "best_pinned": best,
              "auto_vs_best_pinned": statistics.median(ratios), "auto_vs_best_pinned_per_round": ratios,
              # the same kernel pinned by hand: auto's graph should be that graph
              "auto_vs_same_kernel_pinned": (statistics.median(times[rec["chosen"]][i] / times["auto"][i]
                                                               for i in range(ROUNDS))
                                             if rec["chosen"] in times else None),
              "selection_ms": {c["impl"]: c.get("ms") for c in rec["candidates"]}, "kernel": auto.kernel}
    print(json.dumps(result))
    gpu_log(f"auto_vs_pinned_{name}", result)
    assert "?" not in auto.kernel and f"auto->{rec['chosen']}" in auto.kernel
    assert result["auto_vs_best_pinned"] >= 0.95, result


@pytest.mark.parametrize("name", ["sdpa", "gqa", "mla"])
def test_auto_chooses_the_same_kernel_every_time_at_the_training_shape(name, gpu_log):
    """At the default preset's training shape (16 x 512 x 768, bf16) ``auto`` times CUDA-graph
    replays and, tuned three times in one process, pins the same kernel each time.  (Timed
    eagerly it picked FLASH in one job and EFFICIENT in the next: host noise, not kernels.)
    Tuning leaves nothing allocated beyond the first tuning's one-off cuBLAS workspaces of the
    timers' stream (a new stream per timer once left 65 MiB per candidate, 0.26 GB at a job's
    timed start)."""
    x = torch.randn(16, T, C, generator=torch.Generator().manual_seed(5)).cuda()
    records, left = [], []
    for _ in range(3):
        m = make(name, "auto")
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        records.append(autotune(m, x, DTYPE))
        torch.cuda.synchronize()
        left.append(torch.cuda.memory_allocated() - before)
        del m
    summary = [{"chosen": r["chosen"], "timing": r["timing"], "allocated_left_bytes": b,
                "ms": {c["impl"]: c.get("ms") for c in r["candidates"]},
                "ms_per_round": {c["impl"]: c.get("ms_per_round") for c in r["candidates"]}}
               for r, b in zip(records, left)]
    gpu_log(f"auto_stability_{name}", summary)
    assert all(r["timing"] == "cuda-graph replays (GPU time)" for r in records), summary
    assert len({r["chosen"] for r in records}) == 1, summary
    assert max(left[1:]) <= 2**20, f"tuning again left {left[1:]} bytes allocated (first tuning: {left[0]})"


def test_half_rms_norm_in_one_call_equals_the_float32_path_on_the_gpu(gpu_log):
    """MLA's norms in the probe's bf16 model call F.rms_norm on bf16 directly (CUDA's fused kernel,
    float32 inside) instead of casting around a float32 call: the two must agree bit for bit (or
    the fast path changes what MLA computes)."""
    import torch.nn.functional as F

    from attention.mla import rms_norm_fp32

    norm = torch.nn.RMSNorm(512, eps=1e-6).cuda()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(512, generator=torch.Generator().manual_seed(1)).cuda() + 0.5)
    rows = {}
    for dtype in (torch.bfloat16, torch.float16):
        half = copy.deepcopy(norm).to(dtype)
        x = (3 * torch.randn(16, 64, 512, generator=torch.Generator().manual_seed(2))).cuda().to(dtype)
        fast, fp32 = rms_norm_fp32(half, x), F.rms_norm(x.float(), (512,), half.weight.float(), 1e-6).to(dtype)
        rows[str(dtype)] = {"equal": torch.equal(fast, fp32), "max_abs_diff": (fast.float() - fp32.float()).abs().max().item()}
    gpu_log("rms_norm_half_fast_path", rows)
    assert all(r["equal"] for r in rows.values()), rows

#!/usr/bin/env python
"""Why ``sdpa`` trained wrong in the H200 default run (``impl: auto``), and that it no longer does.

The default preset's ``sdpa`` row (commit f6da826) trained with wrong gradients from the first
step on (val 4.42 at step 100 where baseline had 4.01), recording ``sdpa:auto->cudnn``.  That
train job ran, in one process: an eager forward+backward for the FlopCounterMode cross-check,
then the ``torch.compile``d training steps, with SDPA left to choose its backend inside the
compiled graph.  This script replays those orders, each case in a fresh process (its own cuDNN
plan cache), on GPT-2 at the default preset's shape (n_embd 768, 12 heads, T = 512, B = 16,
bf16 autocast; 4 layers instead of 12 to keep compile time short: the kernel runs per layer):

* ``f6da826``: unpinned ``auto`` (names filled by one eager forward), the eager FLOP-count
  forward+backward, then the compiled step -- the train job's order at f6da826;
* ``f6da826-no-count``: the same without the eager backward;
* ``pinned-cudnn``: ``impl: cudnn`` (the paper preset), eager count first, then compiled;
* ``now``: today's train job: ``attention.selection.prepare`` (measured choice, pinned), an
  eager FLOP count first anyway (the worst order), then the compiled step.

For each case it records the kernel check of the compiled step against a float32 copy on the
plain path (``attnbench.selfcheck.model_check``: logits, input-embedding gradient, all
parameter gradients), and, from the profiler, the shapes and strides that
``aten::_scaled_dot_product_cudnn_attention_backward`` received in the eager backward and in
the compiled one (its first argument is the output gradient), plus the median time of a
compiled forward+backward.

    python benchmarks/sdpa_divergence.py --out results/sdpa_divergence.json
    python benchmarks/sdpa_divergence.py --device cpu --tiny --out results/sdpa_divergence_cpu.json  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CASES = ("f6da826", "f6da826-no-count", "pinned-cudnn", "now")
OP = "_scaled_dot_product_cudnn_attention_backward"


def sdpa_calls(prof, needle: str) -> list[dict]:
    """Input dims and strides of every profiled op whose name contains ``needle``."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        events = json.loads(Path(path).read_text()).get("traceEvents", [])
    finally:
        os.unlink(path)
    seen, out = set(), []
    for e in events:
        if needle in e.get("name", "") and e.get("args", {}).get("Input Dims"):
            key = json.dumps([e["args"].get("Input Dims"), e["args"].get("Input Strides")])
            if key not in seen:
                seen.add(key)
                out.append({"op": e["name"], "dims": e["args"]["Input Dims"][:5],
                            "strides": (e["args"].get("Input Strides") or [])[:5]})
    return out


def run_case(case: str, args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from attention.selection import median_ms, prepare
    from attnbench import measure, selfcheck
    from attnbench.model import GPT, GPTConfig

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True
    impl = "cudnn" if case == "pinned-cudnn" else "auto"
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.seq_len,
                    attention="sdpa", attention_params={"impl": impl})
    model = GPT(cfg, seed=1337).to(device).train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 50257, (args.batch, args.seq_len), generator=gen).to(device)
    y = torch.randint(0, 50257, (args.batch, args.seq_len), generator=gen).to(device)
    res: dict = {"case": case, "impl": impl}
    if case == "now":
        res["kernel_selection"] = prepare(model, x, torch.randn(args.batch, args.seq_len, args.n_embd, device=device),
                                          dtype)
    else:  # what f6da826 did: one eager forward names the dispatcher's choice, nothing pinned
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            model(x)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    if case != "f6da826-no-count":
        with profile(activities=acts, record_shapes=True) as prof:
            measure.count_flops(model, args.batch, args.seq_len, device, dtype=dtype if dtype != torch.float32 else None)
        res["eager_backward_calls"] = sdpa_calls(prof, OP)
    step = torch.compile(model)
    t0 = time.perf_counter()
    rec = selfcheck.model_check(model, step, x, y, dtype)
    res["check_s"] = time.perf_counter() - t0
    res["model_check"] = rec
    with profile(activities=acts, record_shapes=True) as prof:
        selfcheck.forward_backward(model, step, x, y, dtype)
    res["compiled_backward_calls"] = sdpa_calls(prof, OP)

    def fwd_bwd():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            _, loss = step(x, y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    res["compiled_fwd_bwd_ms"] = median_ms(fwd_bwd, device, 3, args.repeats)
    res["kernel"] = model.kernel()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="results/sdpa_divergence.json")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke shapes")
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    ap.add_argument("--case", help=argparse.SUPPRESS)  # child process: run one case, print JSON
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    dims = (dict(n_layer=1, n_head=2, n_embd=32, seq_len=16, batch=2, repeats=2) if args.tiny else
            dict(n_layer=4, n_head=12, n_embd=768, seq_len=512, batch=16, repeats=10))
    for k, v in dims.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.case:
        print("RESULT " + json.dumps(run_case(args.case, args), default=str))
        return 0
    import torch

    meta = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "shape": {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "seq_len", "batch")},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    results = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--device", args.device, "--case", case] + (["--tiny"] if args.tiny else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        results.append(json.loads(line[7:]) if line else {"case": case, "error": proc.stderr[-3000:]})
        r = results[-1]
        mc = r.get("model_check", {})
        print(f"{case:18s} pass={mc.get('pass')} out={mc.get('out_rel_err', float('nan')):.3g} "
              f"dx={mc.get('dx_rel_err', float('nan')):.3g} grad={mc.get('grad_rel_err', float('nan')):.3g} "
              f"(tol {mc.get('tolerance', {})}) kernel={r.get('kernel')} fwd+bwd={r.get('compiled_fwd_bwd_ms')} ms"
              + (f" ERROR {r['error'][-400:]}" if "error" in r else ""), flush=True)
        for side in ("eager_backward_calls", "compiled_backward_calls"):
            for c in r.get(side, []):
                print(f"    {side}: dims {c['dims']} strides {c['strides']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "cases": results}, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

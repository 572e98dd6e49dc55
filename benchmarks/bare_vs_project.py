"""A bare compiled GPT-2 training loop and the project's loop, side by side in one process.

The bare loop is the minimal nanoGPT-style reference of ../shared/notes/gpu-machine.md:
GPT-2 124M, tied embeddings, vocab 50304, torch.compile, bf16 autocast, fused AdamW, SDPA
pinned to one backend, random tokens, no measurement.  The project's loop is
``attnbench.train.run`` with every measurement on (NVML windows, power sampler, CodeCarbon,
FlopCounterMode cross-check), on the tokenized data, with the same model shape and batch.
Both are timed over steps after warm-up, in interleaved pairs (bare, project, bare, project,
...: drift of the machine falls on both sides); each pair's ratio project/bare, and their
median per variant and mode is printed last.  ``--compile-mode default reduce-overhead`` runs
both loops under each mode in turn within every pair (CUDA graphs: ``train.compile_mode``).

    python benchmarks/bare_vs_project.py --tokens-dir results/tokens --variants sdpa flash2 \
        --batch-size 16 --pairs 3 --out bare_vs_project.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class BareBlock(nn.Module):
    def __init__(self, d, h, backend):
        super().__init__()
        self.h, self.backend = h, backend
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(self.backend):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))


class BareGPT(nn.Module):
    def __init__(self, n_layer=12, d=768, h=12, vocab=50304, block=1024, backend=None):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.blocks = nn.ModuleList([BareBlock(d, h, backend) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0, 0.02)

    def forward(self, idx, y):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


def fresh_compiler() -> None:
    """Every loop compiles from scratch: without this, dynamo reuses an earlier loop's graphs (a
    later pair's warm-up is not comparable), keeps its CUDA-graph pools alive, and past its
    recompile limit (8 entries per function) would silently run a loop eagerly."""
    import gc

    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def bare_loop(batch_size: int, seq_len: int, backend_name: str, warmup: int, steps: int,
              compile_mode: str = "default", clip: float = 0.0) -> dict:
    """A bare compiled GPT-2 step (the yardstick).  ``clip`` > 0 clips gradients by global norm as
    the project's loop does (``train.grad_clip``): how much of a gap to the project is clipping."""
    from torch.nn.attention import SDPBackend

    fresh_compiler()

    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend_name]
    torch.manual_seed(0)
    model = BareGPT(backend=backend).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    cmodel = torch.compile(model, **({} if compile_mode == "default" else {"mode": compile_mode}))
    x = torch.randint(0, 50257, (batch_size, seq_len + 1), device="cuda")

    def step():
        if compile_mode != "default":  # CUDA-graph trees: a new iteration (as attnbench.optim.begin_step)
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = cmodel(x[:, :-1], x[:, 1:])
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    from attnbench.measure.memory import MIN_WARMUP_STEPS_FOR_PEAK  # as the train job (graphs record)
    warmup_peak = torch.cuda.max_memory_allocated() if warmup >= MIN_WARMUP_STEPS_FOR_PEAK else None
    torch.cuda.reset_peak_memory_stats()
    allocated_at_start = torch.cuda.memory_allocated()  # weights, optimizer state: what stays across steps
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    graphs = compile_mode in ("reduce-overhead", "max-autotune")
    row = {"loop": f"bare ({backend_name}, {compile_mode}{f', clip {clip:g}' if clip > 0 else ''})",
           "tokens_per_s": steps * batch_size * seq_len / dt, "step_ms": 1000 * dt / steps, "warmup_s": warm,
           "peak_allocated_bytes": None if graphs else torch.cuda.max_memory_allocated(),
           "allocated_at_start_bytes": None if graphs else allocated_at_start,
           "peak_allocated_warmup_bytes": warmup_peak, "peak_reserved_bytes": torch.cuda.max_memory_reserved()}
    if graphs:  # as the project's train job records it (attnbench.train_result)
        row["allocated_unavailable"] = (f"compile_mode {compile_mode} replays CUDA graphs, whose pool the "
                                        "allocator does not count as allocated; compare peak_reserved_bytes")
    return row


def project_loop(variant: str, config_path: Path, tokens_dir: Path, batch_size: int, steps: int,
                 warmup: int, out_dir: Path, compile_mode: str = "default") -> dict:
    from attnbench import settings as S
    from attnbench import train

    fresh_compiler()
    cfg = yaml.safe_load(config_path.read_text())
    cfg["train"].update(batch_size=batch_size, steps=steps, warmup_steps=warmup, eval_every=0, eval_batches=2,
                        compile_mode=compile_mode)
    cfg = S.validate(cfg)
    job = S.stage_settings(cfg, "train", variant)
    res = train.run(job, tokens_dir, out_dir / variant)
    if res["status"] != "ok":
        return {"loop": f"project ({variant})", "status": res["status"], "failure": res["failure"]}
    return {"loop": f"project ({variant})", "kernel": res["kernel"], "tokens_per_s": res["timing"]["tokens_per_s"],
            "step_ms": res["timing"]["step_ms_p50"], "warmup_s": res["timing"]["warmup_s"],
            "peak_allocated_bytes": res["memory"]["peak_allocated_bytes"],
            "peak_allocated_warmup_bytes": res["memory"].get("peak_allocated_warmup_bytes"),
            "peak_reserved_bytes": res["memory"].get("peak_reserved_bytes"),
            "allocated_at_start_bytes": res["memory"].get("allocated_at_timed_start_bytes"),
            "allocated_unavailable": res.get("unavailable", {}).get("memory.peak_allocated_bytes"),
            "gpu_mj_per_token": (res["energy"].get("gpu_j_per_token") or math.nan) * 1000,
            "mfu": res["flops"].get("mfu"), "gpu_busy": res["energy"].get("gpu_busy"),
            "cudagraph_skips": res["training"].get("cudagraph_skips"), "phases_s": res["job"].get("phases_s")}


def write(args, modes, rows, ratios, pairs_done: int) -> dict:
    medians = {k: statistics.median(x) if x else None for k, x in ratios.items()}
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch_size": args.batch_size,
           "seq_len": 512, "compile_modes": modes, "pairs": args.pairs, "pairs_done": pairs_done, "rows": rows,
           "ratio_to_bare_per_pair": ratios, "ratio_to_bare_median": medians}
    args.out.write_text(json.dumps(out, indent=2))
    return medians


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    ap.add_argument("--tokens-dir", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", default=["sdpa"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--bare-steps", type=int, default=100)
    ap.add_argument("--backend", default="cudnn", choices=["cudnn", "flash"])
    ap.add_argument("--pairs", type=int, default=3, help="interleaved bare/project rounds")
    ap.add_argument("--compile-mode", nargs="+", default=["default"],
                    choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"],
                    help="one or more: each pair runs bare and project under every mode in turn")
    ap.add_argument("--bare-clip", type=float, default=0.0,
                    help="clip the bare loop's gradients by global norm too (the project's train.grad_clip)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    modes = args.compile_mode
    keys = [f"{v} {m}" for v in args.variants for m in modes]
    rows, ratios, medians = [], {k: [] for k in keys}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.pairs):
            for mode in modes:
                bare = bare_loop(args.batch_size, 512, args.backend, 10, args.bare_steps, mode, args.bare_clip)
                rows.append({"pair": pair, **bare})
                for v in args.variants:
                    r = project_loop(v, args.config, args.tokens_dir, args.batch_size, args.steps, args.warmup,
                                     Path(tmp) / f"pair{pair}-{mode}", mode)
                    r["loop"] += f" {mode}"
                    if r.get("tokens_per_s"):
                        r["ratio_to_bare"] = r["tokens_per_s"] / bare["tokens_per_s"]
                        ratios[f"{v} {mode}"].append(r["ratio_to_bare"])
                    rows.append({"pair": pair, **r})
            medians = write(args, modes, rows, ratios, pair + 1)  # after every pair: a cut-short run keeps them
    print(f"{'pair':<5} {'loop':<48} {'tokens/s':>10} {'step ms':>8} {'busy':>5} {'ratio':>6}")
    for r in rows:
        print(f"{r['pair']:<5} {r['loop']:<48} {r.get('tokens_per_s', float('nan')):>10.0f} "
              f"{r.get('step_ms', float('nan')):>8.2f} {r.get('gpu_busy') or float('nan'):>5.2f} "
              f"{r.get('ratio_to_bare', float('nan')):>6.3f}")
    for k, m in medians.items():
        print(f"project/bare {k} (batch {args.batch_size}): median of {len(ratios[k])} pairs "
              + (f"{m:.3f}" if m is not None else "n/a"))


if __name__ == "__main__":
    main()

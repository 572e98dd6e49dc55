"""What each committed README's generated fragments say, read from the documents beside it
(the renderers of :mod:`attnbench.report.readme`; each reads only files under its README's folder)."""

from __future__ import annotations

import datetime
import functools
import math
import re
import statistics
from pathlib import Path
from typing import Callable

from .readme import (H100_ORDER, ROOT, commit, dig, gib, kilo, load, mib, names, pct, seq, sig, span,  # noqa: F401
                     table)
from ..stats import bootstrap_mean, bootstrap_ratio
from .provenance import _time, concurrency
from .table import tokens_per_busy_s


def sweep_points(doc: dict, scope: str = "attention", mode: str = "forward_backward") -> dict[int, dict]:
    """A sweep document's points of one scope by length: ``{seq_len: point[mode]}``."""
    return {p["seq_len"]: p[mode] for p in doc["points"] if p.get("scope", "attention") == scope}


def _unsettled(mode: dict) -> bool:
    """A sweep point whose p90/p50 stayed at or above its timing's target (older sweeps record none)."""
    ratio, target = mode.get("p90_over_p50"), mode.get("timing_target")
    return ratio is not None and target is not None and ratio >= target


def sweep_table(points: dict[str, dict[int, dict]], kernels: bool = False) -> str:
    """Forward+backward ms p50 per variant (rows) and length (columns); a point that did not run
    shows its status.  ``kernels``: a last column with the kernel strings the points ran."""
    lengths = sorted({T for pts in points.values() for T in pts})
    rows = []
    for v, pts in points.items():
        # "*": the point's p90/p50 stayed >= the timing's target within its budget (sweeps since f7ae870)
        row = [f"`{v}`"] + [sig(pts[T]["ms_p50"]) + ("*" if _unsettled(pts[T]) else "")
                            if pts.get(T, {}).get("status") == "ok"
                            else str(pts.get(T, {}).get("status", "—")).upper() for T in lengths]
        if kernels:
            ran = list(dict.fromkeys(p.get("kernel") for p in pts.values() if p.get("kernel")))
            row.append(", ".join(f"`{k}`" for k in ran))
        rows.append(row)
    return table(["variant"] + [seq(T) for T in lengths] + (["kernel"] if kernels else []), rows)


# --- reports/h100 -------------------------------------------------------------------------------

class H100:
    def __init__(self, folder: Path):
        self.dir = folder
        runs = folder / "runs"
        self.train = {v: load(runs / "train" / v / "metrics.json") for v in H100_ORDER}
        self.probe = {v: load(runs / "probe" / v / "probe.json") for v in H100_ORDER}
        self.sweep = {v: load(runs / "sweep" / v / "sweep.json") for v in H100_ORDER}
        self.controls = {p.stem: load(p) for p in sorted((runs / "controls").glob("*.json"))}
        self.kernels = {p.stem: load(p) for p in sorted((folder / "kernels").glob("*.json"))}

    def by_speed(self) -> list[str]:
        return sorted(H100_ORDER, key=lambda v: -self.train[v]["timing"]["tokens_per_s"])

    def fb(self, v: str, scope: str = "attention", mode: str = "forward_backward") -> dict[int, dict]:
        return sweep_points(self.sweep[v], scope, mode)

    def machine(self) -> str:
        p = self.train["linear"]["provenance"]
        same = all(self.train[v]["provenance"].get(k) == p.get(k) for v in H100_ORDER
                   for k in ("device", "driver", "torch", "cuda", "cudnn", "triton", "fla"))
        cudnn = p["cudnn"]
        return (f"Machine: one {p['device']} (driver {p['driver']}, CUDA {p['cuda']}, torch {p['torch']}, cuDNN "
                f"{cudnn // 10000}.{cudnn % 10000 // 100}, triton {p['triton']}, fla-core {p['fla']}"
                + ("; the same in every training document" if same else "; versions differ between documents")
                + ").")

    def commits(self) -> str:
        rows = []
        for kind, docs in (("train", self.train), ("probe", self.probe), ("sweep", self.sweep)):
            by: dict[str, list[str]] = {}
            for v, d in docs.items():
                by.setdefault(commit(d), []).append(v)
            rows.append([kind] + ["; ".join(f"{c}: {', '.join(vs)}" for c, vs in by.items())])
        return table(["documents", "commit (`provenance.git_commit`): variants"], rows)

    def training_table(self) -> str:
        rows = []
        for v in self.by_speed():
            d = self.train[v]
            t, e, f, m = d["timing"], d["energy"], d["flops"], d["memory"]
            params = ", ".join(f"{k}={x}" for k, x in d["attention"]["params"].items() if k != "impl")
            rows.append([f"`{v}`" + (f" ({params})" if params else ""), d["kernel"], kilo(t["tokens_per_s"]),
                         f"{sig(t['step_ms_p50'])} / {sig(t['step_ms_p90'])}", f"{sig(100 * f['mfu'])} %",
                         sig(1000 * e["gpu_j_per_token"]), f"{e['gpu_mean_w']:.0f}", f"{e['sampled_vs_counter_ratio']:.3f}",
                         gib(m["peak_allocated_bytes"]), f"{d['training']['val_loss']:.4f}", sig(t["timed_s"]),
                         f"{d['model']['params_total'] / 1e6:.0f}M"])
        return table(["variant", "kernel that ran", "tokens/s", "step ms p50 / p90", "MFU", "GPU mJ/token",
                      "mean W", "sampled/counter", "peak alloc GiB", "val loss", "timed s", "params"], rows)

    def training_notes(self) -> str:
        d = self.train["gqa"]
        ratios = [self.train[v]["energy"]["sampled_vs_counter_ratio"] for v in H100_ORDER]
        idle = [self.train[v]["energy"]["idle_w"] for v in H100_ORDER]
        steps = {(x["training"]["steps"], x["training"]["warmup_steps"], x["training"]["batch_size"],
                  x["training"]["seq_len"]) for x in self.train.values()}
        (n, w, B, T), = steps
        return (f"Every variant trained {n} steps ({w} warm-up steps untimed) of {B} × {T} tokens. MFU counts "
                f"analytic matmul FLOPs with causal attention halved, against {d['flops']['peak_tflops']:.0f} "
                f"TFLOP/s. \"sampled/counter\" is the integral of the power samples over the timed windows divided "
                f"by the NVML energy-counter delta ({min(ratios):.3f}–{max(ratios):.3f}, within "
                f"{100 * max(abs(r - 1) for r in ratios):.1f} % for every variant). Idle power before each job: "
                f"{min(idle):.0f}–{max(idle):.0f} W.")

    def repeated_gqa(self) -> str:
        runs = [("the table's row", self.train["gqa"])] + [
            (f"`runs/controls/{k}.json`", d) for k, d in self.controls.items() if d["variant"] == "gqa"]
        losses = [d["training"]["val_loss"] for _, d in runs]
        return (f"**Validation loss between identical runs**: `gqa` trained {len(runs)} times with the same data and "
                f"seed in the committed documents ({', '.join(w for w, _ in runs)}) ended at "
                + ", ".join(f"{x:.4f}" for x in losses)
                + f" — a spread of {max(losses) - min(losses):.4f} from non-deterministic kernels (and two commits, "
                + ", ".join(sorted({commit(d) for _, d in runs})) + "). Loss differences of that size between rows "
                "are noise.")

    def bare_loop(self) -> str:
        b = load(self.dir / "bare_vs_project.json")
        bare, proj = b["rows"][0], b["rows"][1]
        return (f"**Against the bare loop** (`bare_vs_project.json`, {proj.get('kernel')}, one call): bare "
                f"{kilo(bare['tokens_per_s'])}, project {kilo(proj['tokens_per_s'])} tokens/s, ratio "
                f"**{proj['ratio_to_bare']:.3f}** (target ≥ 0.95).")

    def controls_text(self) -> str:
        c, g = self.controls["gqa_beside_linear"], self.train["gqa"]
        s, gs = self.controls["sdpa_with_layout_copy"], self.controls["gqa_beside_sdpa_copy"]
        return (f"Beside the retrained `linear`, a `gqa` control trained at {kilo(c['timing']['tokens_per_s'])} "
                f"tokens/s, {sig(1000 * c['energy']['gpu_j_per_token'])} mJ/token (table row: "
                f"{kilo(g['timing']['tokens_per_s'])}, {sig(1000 * g['energy']['gpu_j_per_token'])}; "
                "`runs/controls/gqa_beside_linear.json`). `sdpa` with a contiguous copy of q, k, v trained at "
                f"{kilo(s['timing']['tokens_per_s'])} tokens/s beside a {kilo(gs['timing']['tokens_per_s'])} `gqa` "
                f"control ({pct(1 - s['timing']['tokens_per_s'] / gs['timing']['tokens_per_s'])} below it; "
                "`runs/controls/sdpa_with_layout_copy.json`), so the copy was removed.")

    def inference_table(self) -> str:
        rows = []
        for v in H100_ORDER:
            p = self.probe[v]
            pre = {(r["batch_size"], r["prompt_len"]): r for r in p["prefill"]}
            dec = {r["batch_size"]: r for r in p["decode"]}
            d1, d16 = dec[1], dec[16]
            fixed = self.train[v]["model"]["cache_bytes_per_token"] == 0 or \
                self.train[v]["model"]["cache_bytes_at_seq_len"] < 512 * self.train[v]["model"]["cache_bytes_per_token"]
            ok = {b: r["cache_matches_full_forward"] for b, r in dec.items()}
            rows.append([f"`{v}`", sig(pre[(1, 512)]["ms_p50"]), sig(pre[(16, 896)]["ms_p50"]),
                         f"{sig(d1['ms_per_token_p50'])} / {sig(d16['ms_per_token_p50'])}",
                         sig(d1["gpu_j_per_token"]), mib(d1["cache_bytes"]) + (" (fixed)" if fixed else ""),
                         "yes" if all(ok.values()) else ", ".join(f"batch {b} {'yes' if x else '**no**'}"
                                                                   for b, x in sorted(ok.items()))])
        P = self.probe["sdpa"]["decode"][0]
        return table(["variant", "prefill 512, batch 1 (ms)", "prefill 896, batch 16 (ms)",
                      "decode ms/token batch 1 / 16", "J/token batch 1",
                      f"cache after {P['prompt_len'] + P['new_tokens']} tokens, batch 1", "decode = full forward"],
                     rows)

    def inference_notes(self) -> str:
        exact = [v for v in ("sdpa", "flash2", "gqa", "flex") if v in self.probe]
        b1 = [next(r for r in self.probe[v]["decode"] if r["batch_size"] == 1)["ms_per_token_p50"] for v in exact]
        lsh = next(r for r in self.probe["lsh"]["decode"] if r["batch_size"] == 16)
        return (f"Decode at batch 1 takes {sig(min(b1))}–{sig(max(b1))} ms per token for the fused exact kernels "
                f"({', '.join(exact)}): launch-bound (eager, no CUDA graphs), not bound by cache size. `lsh` at "
                f"batch 16: max |Δlogit| {lsh['cache_vs_full_forward_max_abs_diff']:.2f} at logit scale "
                f"{lsh['logit_scale']:.1f}, above the bf16 tolerance.")

    def sweep_table(self) -> str:
        return sweep_table({v: self.fb(v) for v in ("baseline", "sdpa", "gqa", "flash2", "flex", "mla",
                                                     "sliding_window", "lsh", "linear")})

    def crossovers(self) -> str:
        """For each approximate variant, from which length on it is faster (p50) than each other
        variant at that length and every longer one; "nowhere" when never."""
        lengths = sorted(self.fb("sdpa"))
        ms = {v: {T: x["ms_p50"] for T, x in self.fb(v).items() if x.get("status") == "ok"} for v in H100_ORDER}
        p90 = {v: {T: x["ms_p90"] for T, x in self.fb(v).items() if x.get("status") == "ok"} for v in H100_ORDER}
        out = []
        for a in ("sliding_window", "lsh", "linear"):
            parts = []
            for b in H100_ORDER:
                if b == a:
                    continue
                common = [T for T in lengths if T in ms[a] and T in ms[b]]
                start = next((T for i, T in enumerate(common) if all(ms[a][U] < ms[b][U] for U in common[i:])), None)
                failed = [T for T in lengths if T in ms[a] and T not in ms[b]]
                where = (f"nowhere up to {seq(common[-1])}" if start is None else
                         "at every length" if start == lengths[0] else f"from {seq(start)}")
                if start is not None and ms[b][start] <= p90[a][start]:
                    where += " (a tie there: the p50–p90 ranges overlap)"
                if failed:
                    where += f" (`{b}` ran out of memory at {', '.join(seq(T) for T in failed)})"
                parts.append(f"`{b}` {where}")
            out.append(f"- `{a}` is faster than " + "; ".join(parts) + ".")
        T16 = lengths[-1]
        fwd = {v: {T: x["ms_p50"] for T, x in self.fb(v, mode="forward").items() if x.get("status") == "ok"}
               for v in H100_ORDER}
        fwd_from = next(T for i, T in enumerate(lengths) if all(
            min(fwd, key=lambda v: fwd[v].get(U, math.inf)) == "sliding_window" for U in lengths[i:]))
        base_fwd = self.fb("baseline", mode="forward")[T16]
        return "\n".join(out) + (
            f"\n\n{self.at_longest()} The eager `baseline` runs out of memory at {seq(T16)} forward+backward (its forward alone peaks "
            f"at {gib(base_fwd['peak_allocated_bytes'])} GiB). Forward only, `sliding_window` is the fastest from "
            f"{seq(fwd_from)}.")

    def at_longest(self) -> str:
        T = max(self.fb("sdpa"))
        ms = {v: self.fb(v)[T]["ms_p50"] for v in H100_ORDER if self.fb(v).get(T, {}).get("status") == "ok"}
        return f"At {seq(T)}: " + ", ".join(f"`{v}` {sig(x)}" for v, x in sorted(ms.items(), key=lambda t: t[1])) + " ms."

    def linear_kernels(self) -> str:
        lc = self.kernels["linear_crossover"]
        paths = ("chunked", "fla", "fla+compile", "chunked+compile")
        by = {(x["path"], x["T"]): x for x in lc["training"]}
        lengths = sorted({x["T"] for x in lc["training"]})
        rows = [[f"`{p}`"] + [sig(by[(p, T)]["fwd_bwd_ms"]) if (p, T) in by else "—" for T in lengths] for p in paths]
        errs = [x[k] for x in lc["training"] for k in ("out_rel_err", "dx_rel_err") if x.get(k) is not None]
        return (table(["`linear` module fwd+bwd ms (`kernels/linear_crossover.json`)"] + [seq(T) for T in lengths],
                      rows)
                + f"\n\nEvery path agrees with the float32 chunked form to ≤ {max(errs):.1e} (output and input "
                "gradient).")

    def kernel_checks(self) -> str:
        k = self.kernels["attention_kernels"]
        meta = k["meta"]
        ok, bad = [], []
        skipped = [v for v, rec in k["variants"].items() if "check" not in rec]
        for v, rec in k["variants"].items():
            for path, p in (rec.get("check") or {}).get("paths", {}).items():
                if p.get("pass") is True:
                    ok.append(p)
                elif p.get("pass") is False:
                    bad.append(f"`{v}` {path}: output {p['out_rel_err']:.1e}, input gradient {p['dx_rel_err']:.2f}")
        decode = all(rec["decode"].get("pass") for rec in k["variants"].values() if "decode" in rec)
        fresh, primed = self.kernels["cudnn_packed_layout"], self.kernels["cudnn_packed_layout_primed"]
        uncopied = [c["dx_rel_err"] for c in primed["cases"] if c["copy"] == "none"]
        copied = [c["dx_rel_err"] for c in primed["cases"] if c["copy"] != "none"]
        s = self.kernels["attention_kernels_sdpa"]["variants"]["sdpa"]
        sp = list(s["check"]["paths"].values())
        thr = {t["T"]: t["fwd_bwd_ms"] for t in s["throughput"]}
        return "\n".join([
            f"- `attention_kernels.json`: every CUDA path against its `impl=\"reference\"` path in bf16 (B, T = "
            f"{meta['check_shape'][0]}, {meta['check_shape'][1]}; pass: output rel. error < {meta['out_tol']}, input "
            f"gradient < {meta['grad_tol']}). {len(ok)} paths pass (output ≤ {max(p['out_rel_err'] for p in ok):.1e}, "
            f"input gradient ≤ {max(p['dx_rel_err'] for p in ok):.1e}); decode with cache "
            + ("passes for every variant checked" if decode else "fails for some variant") + "; fail: " + "; ".join(bad)
            + (f"; skipped in that run: {names(skipped)}" if skipped else "") + ".",
            f"- `cudnn_packed_layout.json` (fresh process): input gradient ≤ "
            f"{max(c['dx_rel_err'] for c in fresh['cases']):.1e} in all {len(fresh['cases'])} cases. "
            f"`cudnn_packed_layout_primed.json` (after one cuDNN backward at the same shape with another gradient "
            f"layout): uncopied " + " – ".join(sorted({f"{x:.3f}" for x in uncopied}))
            + f", any of q, k, v copied ≤ {max(copied):.1e}.",
            f"- `attention_kernels_sdpa.json` (raw kernels at the modules' gradient layout first, then `sdpa`): every "
            f"path passes (output ≤ {max(p['out_rel_err'] for p in sp):.2e}, input gradient ≤ "
            f"{max(p['dx_rel_err'] for p in sp):.2e}); module fwd+bwd "
            + " / ".join(f"{sig(thr[T])}" for T in sorted(thr)) + " ms at T = "
            + " / ".join(str(T) for T in sorted(thr)) + ".",
        ])

    def raw_kernels(self) -> str:
        rows = []
        for name in ("attention_kernels", "attention_kernels_extras"):
            for r in self.kernels[name].get("raw_kernels", []):
                if r.get("fwd_ms") is None:
                    continue
                notes = r.get("notes_ms")
                rows.append([f"`{name}.json`", r["kernel"], str(r["T"]), f"{r['fwd_ms']:.3f} / {r['fwd_bwd_ms']:.3f}",
                             f"{notes[0]} / {notes[1]}" if notes else "—"])
        return table(["file", "raw causal kernel", "T", "fwd / fwd+bwd ms", "the notes' figures (`notes_ms`)"], rows)

    def module_tflops(self) -> str:
        rows = []
        for name in ("attention_kernels", "attention_kernels_extras"):
            for key, rec in self.kernels[name]["variants"].items():
                thr = {t["T"]: t for t in rec.get("throughput", []) if t.get("fwd_bwd_tflops")}
                if not thr:
                    continue
                rows.append([f"`{key}`", f"`{name}.json`"] + [
                    f"{thr[T]['fwd_bwd_tflops']:.0f}" if T in thr else "—" for T in (512, 2048)])
        return table(["module", "file", "fwd+bwd TFLOP/s, T = 512", "T = 2048"], rows)

    def measurement(self) -> str:
        m = self.kernels["measurement_check"]
        w = {x["workload"]: x["ratio"] for x in m["energy"]["windows"]}
        o = m["overhead"]
        f = m["flops"]["paths"][0]
        return (f"- `measurement_check.json`: (a) NVML counter vs integrated samples {w['matmul']:.4f} (matmul loop) "
                f"and {w['gpt_train']:.4f} (GPT training); (b) throughput with all measurement on / off "
                f"{o['on_over_off']:.4f} ({o['tokens_per_s_on_median']:,.0f} vs {o['tokens_per_s_off_median']:,.0f} "
                f"tokens/s; interleaved pairs {min(o['pairwise_on_over_off']):.3f}–"
                f"{max(o['pairwise_on_over_off']):.3f}); (c) `sdpa` FlopCounterMode vs analytic (dense) FLOPs "
                f"{f['forward_ratio_dense']:.4f} forward, {f['train_ratio_dense']:.4f} forward+backward.")

    def under_compile(self) -> str:
        u = self.kernels["sdpa_under_compile"]
        ms = {(c["variant"], c["impl"], c["compiled"]): c["fwd_bwd_ms"] for c in u["cases"] if c.get("fwd_bwd_ms")}
        pairs = [f"`{v}` {sig(ms[(v, 'auto', True)])} vs {sig(ms[(v, 'cudnn', True)])} ms"
                 for v in ("sdpa", "gqa", "mla") if (v, "auto", True) in ms and (v, "cudnn", True) in ms]
        return ("- `sdpa_under_compile.json` (compiled module fwd+bwd, `impl=\"auto\"` vs cuDNN pinned): "
                + ", ".join(pairs) + ".")

    def findings(self) -> str:
        tr = self.train
        e = {v: tr[v]["energy"]["gpu_j_per_token"] for v in H100_ORDER}
        r = {v: tr[v]["timing"]["tokens_per_s"] for v in H100_ORDER}
        loss = {v: tr[v]["training"]["val_loss"] for v in H100_ORDER}
        mem = {v: tr[v]["memory"]["peak_allocated_bytes"] for v in H100_ORDER}
        fused = ["gqa", "sdpa", "flex", "flash2"]
        exact = ["baseline", "sdpa", "flash2", "flex"]
        best = min(e, key=e.get)
        mla_above = [v for v in exact if e["mla"] > e[v]]
        mla_below = [v for v in exact if e["mla"] < e[v]]
        pts = [(v, e[v], loss[v]) for v in H100_ORDER]
        front = sorted((v for v, x, y in pts if not any(x2 <= x and y2 <= y and (x2, y2) != (x, y) for _, x2, y2 in pts)),
                       key=e.get)
        bpt = {v: tr[v]["model"]["cache_bytes_per_token"] for v in H100_ORDER}
        return "\n".join([
            "One seed per variant: no intervals, so every order below is a single run's (see the spread of repeated "
            "`gqa` runs above).",
            f"- **Least GPU energy per token and fastest: `{best}`** ({kilo(r[best])} tokens/s, "
            f"{sig(1000 * e[best])} mJ/token); " + ", ".join(f"`{v}`" for v in fused if v != best)
            + f" within {pct(max(1 - r[v] / r[best] for v in fused))} of it in tokens/s and "
            f"{pct(max(e[v] / e[best] - 1 for v in fused))} in energy; `sliding_window` costs "
            f"{pct(e['sliding_window'] / e[best] - 1)} more energy at T = 512, the eager `baseline` "
            f"{pct(e['baseline'] / e[best] - 1)} more.",
            f"- **LSH is the least efficient at T = 512**: {sig(1000 * e['lsh'])} mJ/token ({e['lsh'] / e[best]:.2f}× "
            f"{best}) at {kilo(r['lsh'])} tokens/s; linear attention {sig(1000 * e['linear'])} mJ/token "
            f"({e['linear'] / e[best]:.2f}×) at {kilo(r['linear'])}; MLA {sig(1000 * e['mla'])} mJ/token "
            f"({e['mla'] / e[best]:.2f}×) at {kilo(r['mla'])}. MLA uses more energy per token than "
            f"{names(mla_above)} and less than {names(mla_below)}.",
            f"- **Validation loss**: lowest `{min(loss, key=loss.get)}` ({min(loss.values()):.4f}), highest "
            f"`{max(loss, key=loss.get)}` ({max(loss.values()):.4f}); the exact variants span "
            f"{min(loss[v] for v in exact):.4f}–{max(loss[v] for v in exact):.4f}. Pareto front in GPU energy per "
            f"token vs validation loss: {names(front)}.",
            f"- **Memory**: `{min(mem, key=mem.get)}` trains in the least memory ({gib(min(mem.values()))} GiB); "
            f"`gqa` keeps {bpt['gqa'] // 1024} KiB of cache per token against {bpt['sdpa'] // 1024} for MHA, `mla` "
            f"{bpt['mla'] // 1024} KiB; " + names([v for v in H100_ORDER if bpt[v] == 0])
            + " keep a fixed-size state and `sliding_window` a window; `baseline` and `lsh` need "
            f"{gib(mem['baseline'])} and {gib(mem['lsh'])} GiB.",
        ])

    def gaps(self) -> str:
        t = self.train
        k = {v: {x["T"]: x.get("fwd_bwd_ms") for x in rec.get("throughput", [])}
             for v, rec in self.kernels["attention_kernels"]["variants"].items()}
        return (f"- `sliding_window` trains {pct(1 - t['sliding_window']['timing']['tokens_per_s'] / t['flex']['timing']['tokens_per_s'])} "
                f"below `flex` ({kilo(t['sliding_window']['timing']['tokens_per_s'])} vs "
                f"{kilo(t['flex']['timing']['tokens_per_s'])}) although its attention module alone is faster at "
                f"T = 512 ({sig(k['sliding_window'][512])} vs {sig(k['flex'][512])} ms, `attention_kernels.json`); "
                f"not explained yet (its mean power is {t['sliding_window']['energy']['gpu_mean_w']:.0f} W against "
                f"{t['flex']['energy']['gpu_mean_w']:.0f}, so the GPU waits on something).")


# --- reports/h200/default ----------------------------------------------------------------------

class H200:
    def __init__(self, folder: Path):
        self.dir = folder
        runs = folder / "runs" / "train"
        self.order = ("baseline", "sdpa", "flash2", "flex", "gqa", "sliding_window", "linear", "lsh", "mla")
        self.train = {v: load(runs / v / "metrics.json") for v in self.order}

    def gap(self, v: str) -> float | None:
        """Largest |val loss - baseline's| over the eval points both recorded."""
        if v == "baseline" or not dig(self.train[v], "attention.exact"):
            return None
        mine = {h["step"]: h["val_loss"] for h in self.train[v]["training"]["val_history"]}
        ref = {h["step"]: h["val_loss"] for h in self.train["baseline"]["training"]["val_history"]}
        return max(abs(mine[s] - ref[s]) for s in mine if s in ref)

    def table(self) -> str:
        rows = []
        for v in self.order:
            d = self.train[v]
            params = ", ".join(f"{k}={x}" for k, x in d["attention"]["params"].items())
            g = self.gap(v)
            kc = d["kernel_check"]
            rows.append([f"{v}" + (f" ({params})" if params else ""), d["kernel"], kilo(d["timing"]["tokens_per_s"]),
                         sig(1000 * d["energy"]["gpu_j_per_token"]), f"{d['training']['val_loss']:.4f}",
                         f"agrees, {g:.4f}" if g is not None else "", "pass" if kc["start"]["pass"] else "FAIL",
                         "pass" if kc["end"]["pass"] else "FAIL"])
        return table(["variant", "kernel (definite)", "tokens/s", "GPU mJ/token", "val loss",
                      "exact: max gap to baseline over evals", "kernel check start", "end"], rows)

    def agreement(self) -> str:
        gaps = {v: self.gap(v) for v in self.order if self.gap(v) is not None}
        worst = max(gaps, key=gaps.get)
        return ("**The exact variants train right**: " + ", ".join(f"`{v}` {g:.4f}" for v, g in gaps.items())
                + f" at most from baseline's validation curve (largest `{worst}`; tolerance "
                f"{self.tolerance():g}, `report.exact_tolerance` of the report's config).")

    def tolerance(self) -> float:
        return load(self.dir / "report" / "results.json")["config"]["report"]["exact_tolerance"]

    def selection(self) -> str:
        out = []
        for v in ("sdpa", "gqa", "mla"):
            sel = self.train[v]["kernel_selection"][0]
            cands = [c for c in sel["candidates"] if c.get("ms") is not None]
            out.append(f"`{v}` " + ", ".join(f"{c['impl']} {c['ms']:.2f}" for c in cands) + f" ms → "
                       f"`{self.train[v]['kernel']}`")
        return ("**Every kernel string is definite**: `auto` measured the candidates in each job (fwd+bwd of one "
                "module at the training shape, `kernel_selection` in each `metrics.json`): " + "; ".join(out) + ".")

    def pinned(self) -> str:
        c = load(self.dir / "pinned" / "pinned_controls.json")
        parts = [f"`{v}` **{r['auto_vs_pinned']:.3f}** ({kilo(r['auto_tokens_per_s'])} `{r['auto_kernel']}` vs "
                 f"{kilo(r['tokens_per_s'])} `{r['kernel']}`)" for v, r in c["runs"].items()]
        return (f"**auto against the pinned kernel, same call** (`pinned/pinned_controls.json`, {c['steps']}-step "
                f"trainings pinned to {c['impl']}; auto / pinned tokens/s): " + "; ".join(parts) + ".")

    def old_code(self) -> str:
        rows = []
        for name, label in (("old_baseline", "baseline"), ("old_sdpa_count", "sdpa, FLOP count on (as shipped)"),
                            ("old_sdpa_nocount", "sdpa, FLOP count off")):
            d = load(self.dir / "old-code" / f"{name}.metrics.json")
            hist = d["training"]["val_history"]
            cell = " / ".join(f"{h['val_loss']:.4f}" for h in hist)
            rows.append([label, f"**{cell}**" if "on" in label else cell])
        steps = " / ".join(str(h["step"]) for h in d["training"]["val_history"])
        return table(["run (f6da826 code)", f"val loss at {steps}"], rows)

    def f6da826(self) -> str:
        """The default run at f6da826 (``f6da826-run/``: its documents, from the run a user made)."""
        runs = {v: load(self.dir / "f6da826-run" / f"metrics-{v}.json") for v in ("baseline", "sdpa")}
        hist = {v: [h["val_loss"] for h in d["training"]["val_history"]] for v, d in runs.items()}
        steps = " / ".join(str(h["step"]) for h in runs["sdpa"]["training"]["val_history"])
        gaps = [a - b for a, b in zip(hist["sdpa"], hist["baseline"])]
        return (f"At f6da826 the same command trained `sdpa` ({runs['sdpa']['kernel']}) to validation losses "
                + " / ".join(f"{x:.2f}" for x in hist["sdpa"]) + " at steps " + steps + " against baseline's "
                + " / ".join(f"{x:.2f}" for x in hist["baseline"]) + f": {min(gaps):.2f}–{max(gaps):.2f} above it "
                "from the first eval on (`f6da826-run/`, that run's documents).")

    def divergence_timing(self) -> str:
        d = load(self.dir / "gpu-checks-call1" / "sdpa_divergence.json")
        cases = {c["case"]: c for c in d["cases"]}
        timed = {k: c["compiled_fwd_bwd_ms"] for k, c in cases.items() if c.get("compiled_fwd_bwd_ms") is not None}
        return ("`sdpa_divergence.json` (" + f"{d['meta']['shape']['n_layer']} layers), compiled fwd+bwd: "
                + ", ".join(f"{k} {sig(ms)} ms" for k, ms in timed.items()) + ".")

    def machine(self) -> str:
        docs = [*self.train.values()]
        p = docs[0]["provenance"]
        keys = ("git_commit", "device", "driver", "torch", "cuda", "cudnn", "triton", "python", "snakemake")
        same = all(d["provenance"].get(k) == p.get(k) for d in docs for k in keys)
        log = (self.dir / "snakemake.log").read_text(encoding="utf-8")
        done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
        elapsed = re.search(r"Elapsed time: (\d+):(\d+):(\d+)", log)
        minutes = int(elapsed.group(1)) * 60 + int(elapsed.group(2)) + int(elapsed.group(3)) / 60 if elapsed else None
        return (f"Commit `{p['git_commit'][:7]}`, {p['device']} (driver {p['driver']}, torch {p['torch']}, CUDA "
                f"{p['cuda']}, cuDNN {p['cudnn'] // 10000}.{p['cudnn'] % 10000 // 100}, triton {p['triton']}, Python "
                f"{p['python']}, Snakemake {p['snakemake']})" + ("; the same in every training document" if same else "")
                + (f". Snakemake finished {done[-1][0]} of {done[-1][1]} jobs in {minutes:.1f} min (`snakemake.log`)."
                   if done and minutes else "."))

    def selfcheck(self) -> str:
        def model(phase, key, names):
            return span([self.train[v]["kernel_check"][phase]["model"][key] for v in names])
        rest = [v for v in self.order if v != "lsh"]
        lsh = self.train["lsh"]["kernel_check"]
        probe = {v: [r["kernel_check"]["out_rel_err"] for r in load(self.dir / "runs" / "probe" / v / "probe.json")
                     ["prefill"]] for v in self.order}
        ok = all(r["kernel_check"]["pass"] for v in self.order
                 for r in load(self.dir / "runs" / "probe" / v / "probe.json")["prefill"])
        others = [x for v in rest for x in probe[v]]
        return (f"Model check against float32 (every variant but LSH): start logits {model('start', 'out_rel_err', rest)}, "
                f"input-embedding gradient {model('start', 'dx_rel_err', rest)}, all gradients "
                f"{model('start', 'grad_rel_err', rest)}; end logits {model('end', 'out_rel_err', rest)}, gradients "
                f"{model('end', 'grad_rel_err', rest)}. LSH: logits {lsh['start']['model']['out_rel_err']:.1e} at the "
                f"start (tolerance {lsh['start']['model']['tolerance']['out']:.2f}), gradients "
                f"{lsh['end']['model']['grad_rel_err']:.1e} at the end (tolerance "
                f"{lsh['end']['model']['tolerance']['grad']:.2f}). Probes checked their prefill logits at every shape ("
                + ("all pass" if ok else "not all pass") + f": {span(others)}; LSH {span(probe['lsh'])}).")

    def gpu_suite(self) -> str:
        out = []
        for call in ("gpu-suite", "gpu-checks-call1"):
            ratios = []
            for v in ("sdpa", "gqa", "mla"):
                r = load(self.dir / call / f"auto_vs_pinned_{v}.json")
                best = min(r["ms"][k] for k in r["ms"] if k != "auto")
                ratios.append(f"`{v}` {r['ms']['auto']:.3f} ms (`{r['kernel']}`) vs best pinned {best:.3f}, "
                              f"{r['auto_vs_best_pinned']:.2f}")
            out.append(f"`{call}/`: " + "; ".join(ratios))
        primed = load(self.dir / "gpu-suite" / "kernels_after_priming.json")
        bad = [x for x in primed if x.get("pass") is False]
        good = [x["dx_rel_err"] for x in primed if x.get("pass") is True]
        log = (self.dir / "gpu-suite" / "gpu_suite.log").read_text(encoding="utf-8")
        summary = re.findall(r"=+ (\d+ failed, \d+ passed[^=]*?) in", log)
        return ("Kernel test after priming (`gpu-suite/kernels_after_priming.json`): "
                f"{len(good)} variant/impl pairs pass (input gradient ≤ {max(good):.1e}); fail: "
                + "; ".join(f"`{x['variant']}` {x['impl']} (input gradient {x['dx_rel_err']:.2f})" for x in bad)
                + ". `auto` against the best pinned kernel, compiled module fwd+bwd (best / auto): "
                + ". ".join(out) + "." + (f" Suite result (`gpu-suite/gpu_suite.log`): {summary[-1]}." if summary else ""))

def _ms(row: dict | None, key: str) -> str:
    return sig(row[key]) if row and row.get(key) is not None else "—"


def decode_cells(probe_doc: dict) -> tuple[str, str]:
    """A probe's decode figures as two cells: ms/token at batch 1 and tokens/s at batch 16, each
    "graph / eager" ("—" where a figure is missing)."""
    dec = {r["batch_size"]: r for r in probe_doc.get("decode") or [] if "status" not in r}
    b1, b16 = dec.get(1), dec.get(16)

    def rate(key):
        return kilo(b16[key]) if b16 and b16.get(key) else "—"
    return (f"{_ms(b1, 'graph_ms_per_token_p50')} / {_ms(b1, 'eager_ms_per_token_p50')}",
            f"{rate('graph_tokens_per_s')} / {rate('eager_tokens_per_s')}")


# #20's decode targets (named for exact variants; held here to every variant with a graph decode)
DECODE_MS_TARGET, DECODE_RATE_TARGET = 1.0, 15_000


CAPTURE_FAILED = "CUDA graph capture failed"  # the probe's reason when a graph step could not be captured


def _graph_unavailable(rows: list[dict]) -> str | None:
    """Why a variant has no graph decode by design (LSH's data-dependent step, no CUDA): None where it
    has one, or where only a capture failed (a miss, not a design limit)."""
    return next((r["graph_unavailable"] for r in rows if r.get("graph_unavailable")
                 and not r["graph_unavailable"].startswith(CAPTURE_FAILED)), None)


def decode_targets(rows_by_name: dict[str, list[dict]], noun: str = "variants") -> str:
    """#20's targets over decode rows (a probe's ``decode`` or decode_graph.json's ``rows``: one format),
    one entry per named model: the graph decodes that meet both targets; every miss with its figure or
    why there is none (no figure, out of memory, a failed capture, a graph decode that differs from the
    full forward); the models without a graph decode by design, with their reason."""
    graphs, misses, eager_only = [], [], []
    for name, rows in rows_by_name.items():
        why = _graph_unavailable(rows)
        if why is not None:
            eager_only.append(f"{name} ({why.split(': ', 1)[-1]})")
            continue
        graphs.append(name)
        by_batch = {r.get("batch_size"): r for r in rows}
        for b, key, fmt, misses_target in (
                (1, "graph_ms_per_token_p50", lambda x: f"{sig(x)} ms/token", lambda x: x > DECODE_MS_TARGET),
                (16, "graph_tokens_per_s", lambda x: f"{kilo(x)} tokens/s", lambda x: x < DECODE_RATE_TARGET)):
            r = by_batch.get(b) or {}
            x = r.get(key)
            if r.get("status"):
                miss = "out of memory" if r["status"] == "oom" else r["status"]
            elif r.get("graph_unavailable"):
                miss = r["graph_unavailable"]
            elif not finite(x):
                miss = "no figure"
            elif misses_target(x):
                miss = fmt(x)
            elif r.get("graph_matches_full_forward") is False:
                miss = "a graph decode that differs from the full forward"
            else:
                continue
            misses.append(f"{name} {miss} at batch {b}")
    none = " No graph decode: " + "; ".join(_by_seed_groups(eager_only)) + "." if eager_only else ""
    if not graphs:
        return "No graph decode here." + none
    variants = len({g.split(" seed ")[0] for g in graphs})
    met = (f"met by all {len(graphs)} {noun if len(graphs) > 1 else noun.rstrip('s')} that "
           f"{'have' if len(graphs) > 1 else 'has'} one"
           + (f" ({variants} variant{'s' if variants > 1 else ''})" if noun != "variants" else "")
           + f" ({', '.join(_by_seed_groups(graphs))})" if not misses else "missed by " + "; ".join(misses))
    return (f"#20's targets (≤ {DECODE_MS_TARGET:g} ms/token at batch 1, ≥ {kilo(DECODE_RATE_TARGET)} tokens/s at "
            f"batch 16), graph decode: {met}." + none)


def _by_seed_groups(names: list[str]) -> list[str]:
    """Entries named "`v` seed N" or "`v` seed N (why)" as one entry per variant and reason: "`v` seeds
    1337, 1338 (why)" (a run of three seeds lists each variant once); other names unchanged, in order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in names:
        m = re.fullmatch(r"(.+?) seed (\d+)(.*)", name, flags=re.S)
        key = (m.group(1), m.group(3)) if m else (name, "")
        groups.setdefault(key, []).append(m.group(2) if m else "")
    return [f"{v} seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}{rest}" if seeds[0] else v
            for (v, rest), seeds in groups.items()]


def _widest_spread(sweep_doc: dict) -> str:
    """A sweep's largest p90/p50 over its timed points, and where ("—" without one)."""
    spreads = [(m["ms_p90"] / m["ms_p50"], f"{p['scope']} {mode.replace('_', '+')} at {seq(p['seq_len'])}")
               for p in sweep_doc.get("points") or [] for mode in ("forward", "forward_backward")
               for m in [p.get(mode)] if isinstance(m, dict) and finite(m.get("ms_p50")) and finite(m.get("ms_p90"))
               and m["ms_p50"] > 0]
    if not spreads:
        return "—"
    ratio, where = max(spreads)
    return f"{ratio:.2f} ({where})"


def _started(doc: dict):
    """When a job began to hold its GPU: its process's start (the record's start less the process's
    age then) plus the time it took to claim a GPU slot, waiting for a free one included."""
    start = _time(dig(doc, "job.started_utc"))
    if start is None:
        return None
    held_before_record = (dig(doc, "job.startup_s") or 0) - (dig(doc, "job.startup_parts_s.gpu_slot_claim") or 0)
    return start - datetime.timedelta(seconds=max(held_before_record, 0))


def campaign_config(folder: Path) -> dict:
    """A campaign's config as its run got it (``config.yaml`` beside ``results/``), schema
    defaults applied."""
    import yaml
    from ..settings import validate
    return validate(yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")))


class RunFolder:
    """A run of the README's command on a GPU, committed as it came back: ``runs/train/<variant>/
    seed<k>/metrics.json``, ``runs/probe/...``, ``snakemake.log`` and the GPU suite's ``gpu-suite/``.
    Any subset of the jobs (a partial run says how many finished)."""

    ORDER = ("baseline", "sdpa", "flash2", "flex", "gqa", "sliding_window", "linear", "lsh", "mla")
    _assessment: dict | None = None  # made once, by assessment()

    def __init__(self, folder: Path, shape: str | None = None):
        self.dir = folder
        # One shape of a campaign (:class:`Campaign`): its documents under ``results/`` as the
        # pipeline lays them, its report settings from the campaign's ``config.yaml``.
        self.shape = shape
        self.train = self._docs("train", "metrics.json")
        self.probe = self._docs("probe", "probe.json")

    def stage_dir(self, kind: str, under: str = "runs") -> Path:
        """The folder of one stage's documents (``<variant>/seed<k>/`` or ``<variant>/`` below it):
        ``runs/<kind>`` of a committed run; ``results/<kind>/<shape>`` of a campaign's shape, whose
        sweeps lie under its model size (``results/sweep/<size>``), as the pipeline writes them."""
        if self.shape is None or under != "runs":
            return self.dir / under / kind
        if kind == "sweep":
            from ..settings import shape_size
            return self.dir / "results" / "sweep" / (shape_size(self.config, self.shape) or "")
        return self.dir / "results" / kind / self.shape

    @functools.cached_property
    def config(self) -> dict:
        return campaign_config(self.dir)

    def report_settings(self) -> dict:
        """What the report job of this run (or shape) got as its settings."""
        if self.shape is None:
            return load(self.dir / "report_config.json")
        from ..settings import report_settings
        return report_settings(self.config, self.shape)

    def tokens_stats(self) -> Path:
        return self.dir / ("runs/tokens_stats.json" if self.shape is None else "results/tokens/stats.json")

    def _paths(self, kind: str, name: str, under: str = "runs") -> list[Path]:
        """One stage's documents (``<variant>/seed<k>/<name>``), by variant in ORDER, then seed."""
        found = self.stage_dir(kind, under).glob(f"*/seed*/{name}")
        return sorted(found, key=lambda p: (self.ORDER.index(p.parent.parent.name), int(p.parent.name[4:])))

    def _docs(self, kind: str, name: str, under: str = "runs") -> dict[tuple[str, int], dict]:
        return {(p.parent.parent.name, int(p.parent.name[4:])): load(p) for p in self._paths(kind, name, under)}

    def by_seed(self, variant: str, get: Callable[[dict], float | None]) -> dict[int, float | None]:
        """``get`` of each finished (ok) training of ``variant``, by seed."""
        return {s: get(d) for (n, s), d in self.train.items() if n == variant and d["status"] == "ok"}

    def gap(self, v: str, seed: int) -> float | None:
        """Largest |val loss - baseline's| over the eval points both recorded, same seed."""
        d, ref = self.train.get((v, seed)), self.train.get(("baseline", seed))
        if v == "baseline" or d is None or ref is None or not dig(d, "attention.exact"):
            return None
        mine = {h["step"]: h["val_loss"] for h in d["training"]["val_history"]}
        base = {h["step"]: h["val_loss"] for h in ref["training"]["val_history"]}
        return max(abs(mine[s] - base[s]) for s in mine if s in base)

    def machine(self) -> str:
        docs = list(self.train.values())
        p = docs[0]["provenance"]
        keys = ("device", "driver", "torch", "cuda", "cudnn", "triton", "python", "snakemake")
        same = all(d["provenance"].get(k) == p.get(k) for d in docs for k in keys)
        commits = sorted({commit(d) for d in [*docs, *self.probe.values()]})
        finished = []  # one Snakemake log per session of a resumed run: each reran only what was missing
        for log in sorted(self.dir.glob("snakemake*.log")):
            steps = re.findall(r"(\d+) of (\d+) steps \(\d+%\) done", log.read_text(encoding="utf-8"))
            if steps:
                finished.append(f"{steps[-1][0]} of {steps[-1][1]} jobs (`{log.name}`)")
        done = "Snakemake finished " + ", then ".join(finished) if finished else ""
        return (f"Commit {', '.join(commits)}; {p['device']} (driver {p['driver']}, torch {p['torch']}, CUDA "
                f"{p['cuda']}, cuDNN {p['cudnn'] // 10000}.{p['cudnn'] % 10000 // 100}, triton {p['triton']}, "
                f"Python {p['python']}, Snakemake {p['snakemake']})"
                + ("; the same in every training document" if same else "; versions differ between documents")
                + (f". {done}; in this folder: " + ", ".join(
                    f"{n} {noun}{'s' if n != 1 else ''}" for n, noun in (
                        (len(self.train), "training"), (len(self.probe), "probe"),
                        (len(list(self.stage_dir("sweep").glob("*/sweep.json"))), "sweep"))) + "."
                   if done else "."))

    def table(self) -> str:
        rows = []
        for (v, seed), d in self.train.items():
            kc, e = d.get("kernel_check") or {}, d.get("energy") or {}
            busy = e.get("gpu_busy")
            rows.append([v, str(seed), f"`{d['kernel']}`", kilo(d["timing"]["tokens_per_s"]),
                         pct(busy) if busy is not None else "not recorded",
                         sig(1000 * e["gpu_j_per_token"]), f"{d['training']['val_loss']:.4f}",
                         " / ".join("pass" if dig(kc, f"{ph}.pass") else "FAIL" for ph in ("start", "end")),
                         f"{d['control']['tflops']:.0f}"])
        return table(["variant", "seed", "kernel (definite)", "tokens/s", "GPU busy", "GPU mJ/token", "val loss",
                      "kernel check start / end", "control TFLOP/s"], rows)

    def checks(self) -> str:
        ok = [d for d in self.train.values() if d["status"] == "ok"]
        definite = all("?" not in d["kernel"] for d in ok)
        passed = all(dig(d, f"kernel_check.{ph}.pass") for d in ok for ph in ("start", "end"))
        probes_ok = [d for d in self.probe.values() if d["status"] == "ok"]
        decode = all(d.get("decode_matches_full_forward") for d in probes_ok)
        prefill = all(r["kernel_check"]["pass"] for d in probes_ok for r in d["prefill"] if "kernel_check" in r)
        fallbacks = [f"`{v}` seed {seed}" for (v, seed), d in self.train.items() if d.get("kernel_fallback")]
        probes = ("no probe in this folder." if not self.probe else
                  ("every probe's prefill logits check passes; " if prefill else "some prefill check FAILED; ")
                  + ("every cached decode equals the full forward." if decode else "some decode differs from the "
                     "full forward."))
        return (f"{len(ok)} of {len(self.train)} trainings and {len(probes_ok)} of {len(self.probe)} probes `ok`; "
                + ("every kernel string definite; " if definite else "some kernel string not definite; ")
                + ("every self-check passes at the start and the end of training; " if passed
                   else "some self-check FAILED; ")
                + (f"the start check rejected auto's first kernel in {', '.join(fallbacks)}; " if fallbacks else "")
                + probes)

    def checks_and_agreement(self) -> str:
        """The checks, then the report's exact-agreement check (suspect rows, agreeing rows, lone
        excursions) as the report states it."""
        return " ".join([self.checks(), *self.assessment()["verdict"]["agreement"]])

    def agreement(self) -> str:
        parts = []
        for (v, seed) in self.train:
            g = self.gap(v, seed)
            if g is not None:
                parts.append(f"`{v}` seed {seed} {g:.4f}")
        if not parts:
            return "No exact variant has a baseline of its seed yet."
        return ("Exact agreement (largest gap to baseline's validation loss of the same seed over the eval "
                "points): " + "; ".join(parts) + ".")

    def spread(self) -> str:
        ctl = [d["control"]["tflops"] for d in self.train.values()]
        by: dict[tuple[str, str], list[float]] = {}
        for (v, _), d in self.train.items():
            by.setdefault((v, d["kernel"]), []).append(d["timing"]["tokens_per_s"])
        many = {k: xs for k, xs in by.items() if len(xs) > 1}
        busy = [d["energy"]["gpu_busy"] for d in self.train.values() if dig(d, "energy.gpu_busy") is not None]
        out = (f"The same-process control (a 2 s bf16 matmul in each job) read {min(ctl):.0f}–{max(ctl):.0f} TFLOP/s "
               f"in all {len(ctl)} trainings ({100 * (max(ctl) / min(ctl) - 1):.1f} % apart)")
        if many:
            out += ("; one configuration (variant and kernel) across seeds: " + "; ".join(
                f"`{v}` {kilo(min(xs))}–{kilo(max(xs))} ({100 * (max(xs) / min(xs) - 1):.0f} %)"
                for (v, _), xs in many.items()))
        if busy:
            out += f"; GPU busy in the timed windows {pct(min(busy))}–{pct(max(busy))}"
        return out + "."

    def sweeps(self) -> str:
        """Which length sweeps the run has (a resumed run may not have all yet)."""
        done = sorted(p.parent.name for p in self.stage_dir("sweep").glob("*/sweep.json")
                      if load(p).get("status") == "ok")
        variants = sorted({v for v, _ in self.train}, key=self.ORDER.index)
        missing = [v for v in variants if v not in done]
        line = (f"Length sweeps: {len(done)} of {len(variants)}"
                + (f" ({', '.join(f'`{v}`' for v in done)})" if done else "")
                + (f"; not yet: {', '.join(f'`{v}`' for v in missing)}." if missing else "."))
        if not done:
            return line
        docs = {v: load(self.stage_dir("sweep") / v / "sweep.json") for v in sorted(done, key=self.ORDER.index)}
        first = next(iter(docs.values()))
        return (line + f" Attention module forward+backward, ms per call (p50), {first['dtype']}, "
                f"{first['tokens_per_call']:,} tokens per call (batch x length), kernel as each point ran it:\n\n"
                + sweep_table({v: sweep_points(d) for v, d in docs.items()}, kernels=True)
                + "\n\nLargest p90/p50 of a sweep's points (every scope and mode): "
                + "; ".join(f"`{v}` {_widest_spread(d)}" for v, d in docs.items()) + "."
                + (" \\* the point's p90/p50 stayed at or above the timing's target within its budget."
                   if any(_unsettled(m) for d in docs.values() for m in sweep_points(d).values()) else ""))

    def busy_normalised(self) -> str:
        """tokens/s over GPU busy, per configuration: the throughput the GPU's own work allows, where the
        host left it idle part of the time (NVML utilisation over the same timed windows)."""
        by: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for (v, _), d in self.train.items():
            if tokens_per_busy_s(d) is not None:
                by.setdefault((v, d["kernel"]), []).append((d["timing"]["tokens_per_s"], tokens_per_busy_s(d)))
        many = {k: xs for k, xs in by.items() if len(xs) > 1}
        if not many:
            return "No configuration ran more than once with GPU busy recorded."

        def spread(xs):
            return f"{kilo(min(xs))}–{kilo(max(xs))} ({100 * (max(xs) / min(xs) - 1):.0f} %)"
        return ("Tokens/s against tokens per GPU-busy second (tokens/s ÷ GPU busy), one configuration across "
                "seeds: " + "; ".join(f"`{v}` `{k}` {spread([t for t, _ in xs])} against "
                                      f"{spread([b for _, b in xs])}" for (v, k), xs in many.items()) + ".")

    def paired(self) -> str:
        """Each variant against baseline, paired per seed (same data order and init): validation
        loss, GPU energy per token above idle, tokens per GPU-busy second."""
        from ..stats import paired_difference

        def scaled(path: str, k: float):
            return lambda d: None if dig(d, path) is None else k * dig(d, path)

        def per_busy(d):
            rate = tokens_per_busy_s(d)
            return None if rate is None else rate / 1000
        metrics = (("validation loss", scaled("training.val_loss", 1), "{:+.3f}", "[{:+.3f}, {:+.3f}]"),
                   ("GPU mJ/token above idle", scaled("energy.gpu_j_per_token_above_idle", 1000),
                    "{:+.3f}", "[{:+.3f}, {:+.3f}]"),
                   ("tokens per GPU-busy s", per_busy, "{:+.0f}k", "[{:+.0f}k, {:+.0f}k]"))

        # an exact variant computes baseline's function: its loss differs only by bf16 drift
        exact = {v for (v, _), d in self.train.items() if dig(d, "attention.exact")}
        rows, seeds, exact_starred = [], set(), []
        for v in self.ORDER[1:]:
            cells = []
            for what, get, fmt, ci in metrics:
                e = paired_difference(self.by_seed(v, get), self.by_seed("baseline", get))
                seeds.add(e.n)
                star = e.has_interval and (e.high < 0 or e.low > 0)
                if star and what == "validation loss" and v in exact:
                    exact_starred.append(v)
                cells.append("—" if not e.has_interval else fmt.format(e.mean) + " " + ci.format(e.low, e.high)
                             + (" *" if star else ""))
            if any(c != "—" for c in cells):
                rows.append([f"{v} (exact)" if v in exact else v, *cells])
        # only where the report's exact-agreement check holds the variant near the exact median (a
        # suspect one's star stands as it is)
        if exact_starred:
            suspect = set(self.assessment()["verdict"]["suspect"])
            exact_starred = [v for v in exact_starred if v not in suspect]
        if not rows:
            return "No variant shares two seeds with baseline."
        n = "–".join(str(k) for k in sorted({min(seeds - {0, 1}), max(seeds)}))
        return (table(["variant − baseline, paired per seed", *[m[0] for m in metrics]], rows)
                + f"\n\nMean per-seed difference to `baseline` over the seeds both finished ({n}), 95 % "
                "t-interval; `*` where it excludes 0."
                + (f" An exact variant computes baseline's function, so its loss differs only by bf16 rounding "
                   f"drift: the `*` on {names(exact_starred)} is that drift over {n} seeds, not a difference in "
                   "quality (the exact-agreement check holds every eval point of theirs near the exact median, "
                   "`attnbench/report/agreement.py`)."
                   if exact_starred else ""))

    def selection(self) -> str:
        """`auto`'s choice per variant over its seeds: the kernel chosen at each seed (one word where
        every seed chose the same), each candidate's median fwd+bwd ms (a range over the seeds)."""
        # one entry per variant and tuned module (a model can tune more than one attention class)
        by: dict[tuple[str, str | None], list[tuple[int, str, dict[str, float], list[float], str | None]]] = {}
        for (v, seed), d in self.train.items():
            for sel in d.get("kernel_selection") or []:
                cands = [c for c in sel.get("candidates", []) if c.get("ms") is not None]
                if not cands:
                    continue
                rejected = [i for fb in d.get("kernel_fallback") or [] for i in fb.get("rejected", {}).values()]
                chosen = sel["chosen"] + (f" (rejected by the start check: {', '.join(rejected)}; trained on "
                                          f"`{d.get('kernel')}`)" if rejected else "")
                by.setdefault((v, sel.get("module")), []).append((seed, chosen, {c["impl"]: c["ms"] for c in cands},
                                             [x for c in cands for x in c.get("ms_per_round") or [c["ms"]]],
                                             sel.get("timing")))
        parts = []
        modules: dict[str, set] = {}
        for v, module in by:
            modules.setdefault(v, set()).add(module)
        for (v, module), runs in by.items():
            name = f"`{v}`" + (f" ({module})" if len(modules[v]) > 1 and module else "")
            chosen = {c for _, c, *_ in runs}
            seeds = [seed for seed, *_ in runs]
            if len(chosen) > 1:
                choice = ", ".join(f"{c} at seed {seed}" for seed, c, *_ in runs)
            else:
                choice = runs[0][1] + (" at both seeds" if len(seeds) == 2 else f" at all {len(seeds)} seeds"
                                       if len(seeds) > 2 else f" at seed {seeds[0]}" if len(self.seeds) > 1 else "")
            impls = dict.fromkeys(i for _, _, ms, *_ in runs for i in ms)
            cands = ", ".join(f"{i} " + span([ms[i] for _, _, ms, *_ in runs if i in ms], ".2f") for i in impls)
            rounds = [x for *_, rs, _ in runs for x in rs]
            timing = {t for *_, t in runs if t}
            parts.append(f"{name} → {choice} ({cands} ms; rounds {min(rounds):.2f}–{max(rounds):.2f})"
                         + (f" timed by {', '.join(sorted(timing))}" if timing else ""))
        return ("`auto`'s choice per variant (median fwd+bwd ms per candidate" + (", over the seeds" if len(self.seeds) > 1
                                                                                 else "") + "): "
                + "; ".join(parts) + "." if parts else "No job tuned `auto`.")

    @property
    def seeds(self) -> list[int]:
        return sorted({seed for _, seed in self.train})

    def assessment(self) -> dict:
        """What the report states over this folder's documents (:func:`attnbench.report.build.assess`,
        the report's own code) with the run's report settings (``report_config.json``: its preset as
        the report job got it; a campaign shape's from ``config.yaml``)."""
        if self._assessment is None:
            from .build import assess
            self._assessment = assess(self._paths("train", "metrics.json"), self._paths("probe", "probe.json"),
                                      sorted(self.stage_dir("sweep").glob("*/sweep.json")), self.tokens_stats(),
                                      self.report_settings())
        return self._assessment

    # The earlier project's published claim (../shared/research/anchors-attention.md): FlashAttention,
    # LSH and MLA the most efficient variants.
    CLAIMED = ("flash2", "lsh", "mla")

    def claim(self) -> str:
        """The published claim against this run: GPU energy per training token (total, above idle) of
        each claimed variant against the run's leader, paired per seed (95 % t-interval of the
        ratio), and whether the report's verdict counts it in the leading tie."""
        from ..stats import paired_ratio

        verdict = {c["what"]: c for c in self.assessment()["verdict"]["constraints"]}
        suspect = set(self.assessment()["verdict"].get("suspect") or [])
        parts = []
        for what, path in (("GPU energy per token", "energy.gpu_j_per_token"),
                           ("GPU energy per token above idle", "energy.gpu_j_per_token_above_idle")):
            c = verdict.get(what)
            if not c or c["status"] == "missing":
                parts.append(f"{what}: not measured.")
                continue
            lead = c["best"][0]["name"]
            tied = {x["name"] for x in c["best"]}
            ordered = c["status"] in ("clear", "tie")  # else the verdict claims no order (one seed, say)

            def energy(d: dict, path: str = path) -> float | None:
                return dig(d, path)
            said = []
            for v in self.CLAIMED:
                if v == lead:
                    said.append(f"`{v}` leads")
                    continue
                if not self.by_seed(v, energy):
                    said.append(f"`{v}` has no finished run here")
                    continue
                r = paired_ratio(self.by_seed(v, energy), self.by_seed(lead, energy))
                where = ("suspect, left out of the verdict" if v in suspect else "in the leading tie" if v in tied
                         else "behind" if ordered else f"no order claimed: {c['status_text']}")
                said.append(f"`{v}` ×{r.mean:.3f} [{r.low:.3f}, {r.high:.3f}] {where}" if r.has_interval
                            else f"`{v}` not compared (fewer than two seeds shared with `{lead}`)")
            parts.append(f"{what}, against `{lead}` per seed: " + "; ".join(said) + ".")
        return " ".join(parts)

    def findings(self) -> str:
        """The report's findings: each order with its interval, or a tie."""
        return "\n".join(f"- {f}" for f in self.assessment()["findings"])

    # The verdict's rows a README states in a few lines (#24): speed, energy (total and above idle),
    # loss per energy, memory, quality, decode.
    HEADLINES = ("Training speed", "GPU energy per token", "GPU energy per token above idle",
                 "Quality per energy: loss drop per kJ", "Training memory (peak GPU)", "Quality: validation loss",
                 "Inference latency: decode")

    def verdict_lines(self) -> str:
        """The report's verdict in a few lines: per headline constraint the variant it recommends (or
        the tie) with figure and interval, and the by-length answer of the sweeps."""
        v = self.assessment()["verdict"]
        lines = []
        for c in v["constraints"]:
            if c["what"] not in self.HEADLINES:
                continue
            if c["status"] == "missing":
                lines.append(f"- {c['what']}: {c['status_text']}")
            elif len(c["best"]) > 1:
                lines.append(f"- {c['what']}: tie within noise of " + ", ".join(leader_figure(x) for x in c["best"]))
            else:
                lines.append(f"- {c['what']}: " + leader_figure(c["best"][0]) + f" ({c['status_text']})")
        lines.append("- By sequence length (attention forward+backward): " + length_answer(v["length"]))
        return "\n".join(lines)

    def seed_summary(self) -> str:
        """Per variant over its seeds (#17): mean and 95 % bootstrap interval of training tokens/s,
        GPU energy per token (total and above idle), validation loss and the warm-up peak memory."""
        cols = (("tokens/s", "timing.tokens_per_s", 1, kilo),
                ("GPU mJ/token", "energy.gpu_j_per_token", 1000, sig),
                ("above idle", "energy.gpu_j_per_token_above_idle", 1000, sig),
                ("val loss", "training.val_loss", 1, lambda x: f"{x:.4f}"),
                ("peak GiB (warm-up)", "memory.peak_allocated_warmup_bytes", 1 / 2**30, lambda x: f"{x:.2f}"))
        rows = []
        for v in self.ORDER:
            docs = [d for (n, _), d in self.train.items() if n == v and d["status"] == "ok"]
            if not docs:
                continue
            cells = []
            for _, key, k, fmt in cols:
                e = bootstrap_mean(k * dig(d, key) for d in docs if finite(dig(d, key)))
                cells.append("—" if e.mean is None else fmt(e.mean) + (f" [{fmt(e.low)}, {fmt(e.high)}]"
                                                                       if e.has_interval else "")
                             + (f" (n = {e.n})" if e.mean is not None and e.n != len(docs) else ""))
            rows.append([f"`{v}`", str(len(docs)), *cells])
        if not rows:
            return "No training in this folder."
        return (table(["variant", "seeds", *(c[0] for c in cols)], rows)
                + "\n\nMean over the seeds and its 95 % percentile-bootstrap interval (10,000 resamples), as "
                "`summary.csv` gives it. With three seeds that interval is the seeds' own range, which holds the "
                "mean less often than 95 %: read it as the spread; an order between variants is claimed from "
                "their paired per-seed intervals (the report's verdict, and the table against baseline below).")

    def probes(self) -> str:
        rows = []
        for (v, seed), d in self.probe.items():
            if d["status"] != "ok":
                rows.append([v, str(seed), d["status"], "", "", "", ""])
                continue
            pre = {(r["batch_size"], r["prompt_len"]): r for r in d["prefill"] if "status" not in r}
            p = pre.get((1, 512))
            rows.append([v, str(seed), *decode_cells(d),
                         f"{_ms(p, 'graph_ms_p50')} / {_ms(p, 'eager_ms_p50')}",
                         "yes" if d.get("decode_matches_full_forward") else "NO",
                         "; ".join(d.get("prefill_flags") or []) or "none"])
        return (table(["variant", "seed", "decode ms/token, batch 1, prompt 512: graph / eager",
                       "decode tokens/s, batch 16: graph / eager", "prefill ms, batch 1 × 512: graph / eager",
                       "decode = full forward", "prefill order flags"], rows)
                + self._graph_prefill_line() + self._eager_prefill_line())

    def _eager_prefill_line(self) -> str:
        """The eager prefill's timing (bound by the host's launches at batch 1): how many rows reached
        p90/p50 below the target within their budget, and the rows that did not, with their ratio."""
        rows = [(v, seed, r) for (v, seed), d in self.probe.items() for r in d.get("prefill") or []
                if finite(r.get("eager_p90_over_p50")) and "eager_timing_stable" in r]
        if not rows:
            return ""
        loose = [f"`{v}` seed {seed} batch {r['batch_size']} × {r['prompt_len']} ({r['eager_p90_over_p50']:.2f}"
                 + (f", {r['eager_n']} calls" if r.get("eager_n") else "") + ")"
                 for v, seed, r in rows if not r["eager_timing_stable"]]
        target = next((dig(r, "eager_timing.target_p90_over_p50") for *_, r in rows
                       if dig(r, "eager_timing.target_p90_over_p50")), None)
        return (f" Eager prefill: {len(rows) - len(loose)} of {len(rows)} rows settled"
                + (f" (p90/p50 below {target:g})" if target else "")
                + ("." if not loose else "; not within the budget: " + ", ".join(loose) + "."))

    def prefill_rows(self) -> str:
        """The GPU suite's probe.prefill_rows on the GPT-2 124M shape (random init): per variant, each
        prompt length's eager p50 (p90) and graph p50 at batch 1, and the probe's order flags."""
        found = sorted((self.dir / "gpu-suite" / "gpu_suite").glob("prefill_rows_*.json"))
        if not found:
            return "No prefill_rows log in `gpu-suite/`."
        parts = []
        for f in found:
            d = load(f)
            cells = ", ".join(f"{r['prompt_len']}: eager {sig(r['eager_ms_p50'])} ({sig(r['eager_ms_p90'])}), graph "
                              f"{sig(r['graph_ms_p50'])}" for r in d["rows"])
            parts.append(f"`{f.stem.removeprefix('prefill_rows_')}` {cells}; flags: "
                         + ("; ".join(d["flags"]) if d["flags"] else "none"))
        return ("`probe.prefill_rows` on the GPU suite (batch 1, ms p50 (p90) per prompt length): "
                + "; ".join(parts) + ".")

    def decode_targets(self) -> str:
        """#20's decode targets over this run's probes (trained models), one entry per probe."""
        many = len({seed for _, seed in self.probe}) > 1
        failed = [f"`{v}` seed {seed} ({d['status']})" for (v, seed), d in self.probe.items() if d["status"] != "ok"]
        return "Probes: " + decode_targets({f"`{v}`" + (f" seed {seed}" if many else ""): d.get("decode") or []
                                            for (v, seed), d in self.probe.items() if d["status"] == "ok"},
                                           noun="probes") + (f" Not ok: {', '.join(failed)}." if failed else "")

    def _graph_prefill_line(self) -> str:
        """The graph prefill (the probe's headline mode): its largest p90/p50, and whether a longer
        prompt ever prefilled faster than a shorter one beyond the spread (the probe's own criterion,
        probe.prefill_inversions; #20: such a prefill is a timing error)."""
        from ..probe import prefill_inversions

        ratios, falls, probes = [], [], 0
        for (v, seed), d in self.probe.items():
            rows = d.get("prefill") or []
            graph = [r["graph_ms_p90"] / r["graph_ms_p50"] for r in rows
                     if finite(r.get("graph_ms_p50")) and finite(r.get("graph_ms_p90")) and r["graph_ms_p50"] > 0]
            ratios += graph
            probes += bool(graph)
            falls += [f"`{v}` seed {seed} batch {b}" for b in sorted(
                {x["batch_size"] for x in prefill_inversions(rows) if x["series"] == "cuda-graph"})]
        if not ratios:
            return ""
        return (f"\n\nGraph prefill over {len(ratios)} rows of {probes} probes: p90/p50 at most {max(ratios):.3f}; "
                + ("no longer prompt prefilled faster than a shorter one beyond the spread." if not falls else
                   "a longer prompt prefilled faster than a shorter one beyond the spread in " + ", ".join(falls) + "."))

    def parallel(self) -> str:
        """Jobs that ran at the same time on different GPUs (``--resources gpu=N``, attnbench.gpuslots)
        against jobs that ran alone (in ``runs/`` or in ``serial/``): the GPUs per overlapping pair,
        wall time per sitting, and each variant's training throughput and energy alone and concurrent
        (#19: parallel equals serial)."""
        return " ".join(part for part in self.parallel_parts() if part)

    def parallel_parts(self) -> tuple[str, str]:
        """:meth:`parallel` in two: the jobs, pairs and sittings (of the whole campaign, for a
        campaign's shape), then this folder's (shape's) variants alone against alongside."""
        jobs = []
        # ``serial/``: another run's jobs in the runs/ layout, one after another on one GPU (a reference
        # from another session, say; its commit is in each document)
        serial = [("train", self._docs("train", "metrics.json", "serial")), ("probe", self._docs("probe", "probe.json", "serial"))]
        if self.shape is not None:
            # a campaign's other shapes and its sweeps ran in the same sittings: they are neighbours
            # too (a job beside one of them did not run alone; one on its GPU shared it)
            from ..settings import shapes
            for other in shapes(self.config):
                if other != self.shape:
                    f = RunFolder(self.dir, other)
                    f.config = self.config  # validated once
                    serial += [("elsewhere", f.train), ("elsewhere", f.probe)]
            serial.append(("elsewhere", {(p.parent.name, p.parent.parent.name): load(p)
                                         for p in (self.dir / "results" / "sweep").glob("*/*/sweep.json")}))
        for kind, docs in (("train", self.train), ("probe", self.probe), *serial):
            for (v, seed), d in docs.items():
                jobs.append({"kind": kind, "variant": v, "seed": seed, "doc": d,
                             "device_uuid": dig(d, "provenance.device_uuid"),
                             "start": _started(d), "end": _time(dig(d, "job.finished_utc"))})
        sittings = concurrency(jobs)
        timed = [j for j in jobs if "concurrent" in j]
        if not timed:
            return "No job recorded its GPU and times.", ""
        pairs = sum(j["concurrent"] for j in timed) // 2
        same = sum(j["same_gpu"] for j in timed) // 2
        text = [("Whole campaign (every shape and sweep): " if self.shape is not None else "")
                + f"{len(timed)} jobs with GPU and times: {pairs} pairs overlapped on different GPUs, "
                + (f"{same} on one GPU (their figures are not trustworthy)" if same else "none on one GPU") + ". "
                + "; ".join(f"sitting {i + 1}: {s['jobs']} jobs on {s['gpus']} GPU{'s' if s['gpus'] > 1 else ''}, "
                            f"wall {s['wall_s'] / 60:.1f} min for {s['job_s'] / 60:.1f} min of jobs"
                            # on one GPU the ratio says nothing of concurrency (the gaps: jobs not here, startup)
                            + (f" ({s['job_s'] / s['wall_s']:.2f} at a time)" if s["wall_s"] > 0 and s["gpus"] > 1 else "")
                            for i, s in enumerate(sittings)) + "."]

        def est(e):
            if e.mean is None:
                return "—"
            return f"{e.mean:.3f}" + (f" [{e.low:.3f}, {e.high:.3f}]" if e.has_interval else "")

        def figure(d, key):  # None where a job could not measure it (no energy counter, no control)
            x = dig(d, key)
            return x if finite(x) else None

        rows, ratios, normalised, again = [], [], [], []
        for v in self.ORDER:
            # a job that shared its GPU is neither: its figures are not the variant's
            train = [j for j in timed if j["kind"] == "train" and j["variant"] == v
                     and j["doc"].get("status") == "ok" and j["same_gpu"] == 0]
            alone = [j["doc"] for j in train if j["concurrent"] == 0]
            along = [j["doc"] for j in train if j["concurrent"] > 0]
            if not alone or not along:
                continue
            rate = [[figure(d, "timing.tokens_per_s") for d in g] for g in (alone, along)]
            per_tflop = [[r / c if r and c else None for r, c in zip(rs, (figure(d, "control.tflops") for d in g))]
                         for rs, g in zip(rate, (alone, along))]
            mj = [[1000 * e if e else None for e in (figure(d, "energy.gpu_j_per_token") for d in g)]
                  for g in (alone, along)]
            r, n = bootstrap_ratio(rate[1], rate[0]), bootstrap_ratio(per_tflop[1], per_tflop[0])
            # one training run twice, alone and alongside: how far the validation loss moves between two
            # runs of one training -- the floor under any loss difference ranked
            for a, b in ((a, b) for a in alone for b in along if _same_training(a, b)):
                la, lb = figure(a, "training.val_loss"), figure(b, "training.val_loss")
                if la is not None and lb is not None:
                    again.append((abs(la - lb), v))
            ratios.append(r.mean)
            normalised.append(n.mean)
            mean_of = [bootstrap_mean(x).mean for x in (*rate, *mj)]
            rows.append([f"`{v}`", *(f"{len(g)}: " + (kilo(m) if m is not None else "—")
                                      for g, m in zip((alone, along), mean_of[:2])),
                         est(r), est(n), " / ".join(sig(m) if m is not None else "—" for m in mean_of[2:])])
        if not rows:
            return text[0], "No variant trained both alone and alongside another job."
        over, over_n = bootstrap_mean(ratios), bootstrap_mean(normalised)
        return text[0], (
            f"Training tokens/s alongside another job against alone, mean over {over.n} variants: {est(over)}; "
            f"divided by each job's control (TFLOP/s of the same-process matmul): {est(over_n)}."
            + self._probes_alongside(timed, est)
            + (f" Validation loss of one training run twice, alone and alongside (the same seed, settings hash and "
               f"tokens): |difference| median "
               f"{statistics.median(a for a, _ in again):.4f}, largest {max(again)[0]:.4f} (`{max(again)[1]}`), "
               f"over {len(again)} pairs." if again else "")) + "\n\n" + table(
            ["variant", "alone: trainings, tokens/s", "concurrent: trainings, tokens/s",
             "concurrent / alone (95 % interval where both have two)", "same, per control TFLOP/s",
             "GPU mJ/token alone / concurrent"], rows)

    def _probes_alongside(self, timed: list[dict], est) -> str:
        """The probes' CUDA-graph figures (GPU time: the host's share is small) alongside another job
        against alone: decode ms/token at batch 1 and prefill ms at batch 1 x 512, per variant the ratio
        of the means, then the mean ratio over the variants."""
        def graph(d: dict, section: str, key: str, want: dict) -> float | None:
            rows = [r for r in d.get(section) or [] if all(r.get(k) == x for k, x in want.items()) and "status" not in r]
            return rows[0].get(key) if rows and finite(rows[0].get(key)) else None
        parts = []
        for what, section, key, want in (("graph decode ms/token at batch 1", "decode", "graph_ms_per_token_p50",
                                          {"batch_size": 1}),
                                         ("graph prefill ms at batch 1 x 512", "prefill", "graph_ms_p50",
                                          {"batch_size": 1, "prompt_len": 512})):
            ratios = []
            for v in self.ORDER:
                probes = [j for j in timed if j["kind"] == "probe" and j["variant"] == v
                          and j["doc"].get("status") == "ok" and j["same_gpu"] == 0]
                groups = [[graph(j["doc"], section, key, want) for j in probes if (j["concurrent"] > 0) == along]
                          for along in (False, True)]
                if all(any(x is not None for x in g) for g in groups):
                    ratios.append(bootstrap_ratio(groups[1], groups[0]).mean)
            if ratios:
                parts.append(f"{what}, {est(bootstrap_mean(ratios))} over {len(ratios)} variants")
        return (" Probes alongside another job against alone (mean of the per-variant ratios): " + "; ".join(parts) + "."
                if parts else "")

    def suite(self) -> str:
        folder = self.dir / "gpu-suite"
        log = (folder / "gpu_suite.log").read_text(encoding="utf-8")
        summary = _pytest_summaries(log)
        machine = (folder / "machine.txt").read_text(encoding="utf-8")
        at = re.search(r"commit (\w+)", machine)
        sub = folder / "gpu_suite" if (folder / "gpu_suite").is_dir() else folder
        ratios = []
        for v in ("sdpa", "gqa", "mla"):
            f = sub / f"auto_vs_pinned_{v}.json"
            if f.exists():
                r = load(f)
                best = r.get("best_pinned") or "the fastest pinned kernel of each round"
                ratios.append(f"`{v}` {r['auto_vs_best_pinned']:.3f} (auto chose {r['chosen']}, best pinned {best}"
                              + (f"; timed by {r['timing']}" if r.get("timing") else "") + ")")
        failed = re.findall(r"^FAILED (\S+)", log, flags=re.M)
        errors = list(dict.fromkeys(m.strip() for m in re.findall(r"^E\s+(\w*Error: .*)$", log, flags=re.M)))
        return (f"GPU suite at commit `{at.group(1) if at else 'unknown'}` (`gpu-suite/gpu_suite.log`): "
                + (summary[-1] if summary else "no summary line")
                + (f" (failed: {', '.join(f'`{t}`' for t in dict.fromkeys(failed))}; "
                   + " / ".join(f"`{e[:400]}`" for e in errors) + ")" if failed else "")
                + (". `auto` against the best pinned kernel, compiled module fwd+bwd, best / auto as the suite's test "
                   "computed it: " + "; ".join(ratios) + "." if ratios else ".")
                + "".join(" " + line for line in (self._fallback_line(sub), self._graphs_line(sub),
                                                    self._variant_graphs_line(folder, sub)) if line))

    @staticmethod
    def _variant_graphs_line(folder: Path, sub: Path) -> str:
        """tests/gpu/test_gpu_variant_graphs.py, run in its own call (``gpu_suite_variant_graphs.log``)."""
        runs = {f.stem.removeprefix("variant_graphs_"): load(f) for f in sorted(sub.glob("variant_graphs_*.json"))}
        if not runs:
            return ""
        log = folder / "gpu_suite_variant_graphs.log"
        summary = _pytest_summaries(log.read_text(encoding="utf-8")) if log.exists() else []
        parts = []
        for v, r in runs.items():
            if r["status"] != "ok":
                parts.append(f"`{v}` {r['status']}: {(r.get('failure') or {}).get('message', '')[:200]}")
                continue
            parts.append(f"`{v}` `{r['kernel']}` checks {_start_end_checks(r)}, loss {r['first_loss']:.2f} → {r['last_loss']:.2f}, "
                         f"CUDA-graph skips {r['cudagraph_skips']}, {kilo(r['tokens_per_s'])} tokens/s, GPU busy "
                         + (pct(r["gpu_busy"]) if r.get("gpu_busy") is not None else "not measured"))
        return ("Every variant under `compile_mode: reduce-overhead` (`gpu_suite_variant_graphs.log`"
                + (f": {summary[-1]}" if summary else "") + "): " + "; ".join(parts) + ".")

    @staticmethod
    def _fallback_line(sub: Path) -> str:
        runs = {f.stem.removeprefix("kernel_fallback_"): load(f) for f in sorted(sub.glob("kernel_fallback_*.json"))}
        if not runs:
            return ""
        parts = []
        for mode, r in runs.items():
            fb = (r.get("kernel_fallback") or [{}])[0]
            parts.append(f"{mode}: {r['status']}, first choice {r['first_choice']}, rejected "
                         + (", ".join(f"{m} {i}" for m, i in (fb.get("rejected") or {}).items()) or "nothing")
                         + f", trained on `{r.get('kernel')}`, checks start/end " + _start_end_checks(r)
                         + (f", CUDA-graph skips {r['cudagraph_skips']}" if r.get("cudagraph_skips") is not None else ""))
        return "Kernel fallback (fixture whose cuDNN is right at 16 × 512 and wrong at the check's batch 2): " + "; ".join(parts) + "."

    @staticmethod
    def _graphs_line(sub: Path) -> str:
        f = next(iter(sorted(sub.glob("training_graphs_*.json"))), None)
        if f is None:
            return ""
        d = load(f)
        parts = []
        for mode, r in d["runs"].items():
            fb = r.get("kernel_fallback") or []
            rejected = ", ".join(f"{m} {i}" for x in fb for m, i in x["rejected"].items())
            figures = [f"{c['module']} input-gradient rel. error {c['dx_rel_err']:.3g}" for x in fb
                       for c in x["failed_check"].get("modules", []) if c.get("pass") is False and c.get("dx_rel_err")]
            rejected += f": {', '.join(figures)}" if figures else ""
            parts.append(f"{mode} `{r['kernel']}`" + (f" (the start check rejected {rejected})" if rejected else "")
                         + f", val loss {r['val_loss']:.4f}, {kilo(r['tokens_per_s'])} tokens/s, GPU busy "
                         + (pct(r["gpu_busy"]) if r.get("gpu_busy") is not None else "not measured")
                         + (f", peak allocated {gib(r['peak_allocated_bytes'])} GiB" if r.get("peak_allocated_bytes")
                            else ", peak allocated not recorded (CUDA graphs: the allocator does not count their pool)")
                         + (f", warm-up peak allocated {gib(r['peak_allocated_warmup_bytes'])} GiB"
                            if r.get("peak_allocated_warmup_bytes") else "")
                         + (f", peak reserved {gib(r['peak_reserved_bytes'])} GiB" if r.get("peak_reserved_bytes") else ""))
        ro, de = d["runs"].get("reduce-overhead", {}), d["runs"].get("default", {})
        ratio = (f"; reduce-overhead warm-up peak / default timed peak allocated "
                 f"{ro['peak_allocated_warmup_bytes'] / de['peak_allocated_bytes']:.3f}"
                 if ro.get("peak_allocated_warmup_bytes") and de.get("peak_allocated_bytes") else "")
        return (f"Training with `compile_mode: reduce-overhead` against `default` (`{f.name}`, loss "
                f"{d['first_loss']:.2f} → {d['last_loss']:.2f}): largest step-loss gap {d['max_step_loss_gap']:.3f}"
                + (f" (default against itself: {d['max_step_loss_gap_default_twice']:.3f})"
                   if d.get("max_step_loss_gap_default_twice") is not None else " (no default-twice control)") + "; "
                + "; ".join(parts) + ratio + ".")


def _pytest_summaries(log: str) -> list[str]:
    """pytest's closing counts ("45 passed, 4 skipped, ..."), one per run in the log."""
    return re.findall(r"=+ (\d+ (?:failed|passed)[^=]*?) in ", log)


def _start_end_checks(doc: dict) -> str:
    return "/".join(str(dig(doc, f"kernel_check.{ph}.pass")) for ph in ("start", "end"))


def finite(x) -> bool:
    """A number that is neither None nor NaN/inf (benchmarks write NaN where a figure was not measured)."""
    return isinstance(x, (int, float)) and math.isfinite(x)


class LoopFolder:
    """The loop benchmarks of one GPU session, committed as they came back: ``bare_vs_project_*.json``
    (interleaved bare/project pairs per compile mode), ``profile_*.json`` (benchmarks/loop_profile.py)
    and ``probe-head/<variant>/seed<k>/probe.json`` (a probe at the folder's commit)."""

    def __init__(self, folder: Path):
        self.dir = folder

    def pairs(self) -> str:
        out = []
        for f in sorted(self.dir.glob("bare_vs_project_*.json")):
            d = load(f)
            rows = [[str(r["pair"]), r["loop"], kilo(r["tokens_per_s"]) if r.get("tokens_per_s") else r.get("status", "—"),
                     sig(r["step_ms"]) if r.get("step_ms") else "—",
                     pct(r["gpu_busy"]) if r.get("gpu_busy") is not None else "not measured",
                     gib(r["allocated_at_start_bytes"]) if r.get("allocated_at_start_bytes") else "not recorded",
                     gib(r["peak_allocated_bytes"]) if r.get("peak_allocated_bytes") else "—",
                     gib(r["peak_allocated_warmup_bytes"]) if r.get("peak_allocated_warmup_bytes") else "—",
                     gib(r["peak_reserved_bytes"]) if r.get("peak_reserved_bytes") else "not recorded",
                     pct(r["mfu"]) if finite(r.get("mfu")) else "—",
                     sig(r["gpu_mj_per_token"]) if finite(r.get("gpu_mj_per_token")) else "not measured",
                     f"{r['ratio_to_bare']:.3f}" if r.get("ratio_to_bare") else "—"] for r in d["rows"]]
            medians = "; ".join(
                f"{k}: {m:.3f} (pairs " + ", ".join(f"{x:.3f}" for x in d["ratio_to_bare_per_pair"][k]) + ")"
                if m is not None else f"{k}: none" for k, m in d["ratio_to_bare_median"].items())
            by_mode: dict[str, list] = {}
            for r in d["rows"]:
                if r["loop"].startswith("project") and r.get("gpu_busy") is not None:
                    by_mode.setdefault(r["loop"].split(") ", 1)[-1], []).append(r["gpu_busy"])
            busy = "; ".join(f"{k}: {pct(min(b))}–{pct(max(b))}" for k, b in by_mode.items())
            medians += f". The project's GPU busy per mode over the pairs: {busy}" if busy else ""
            failed = [f"pair {r['pair']} `{r['loop']}` {r['status']}: {r['failure']['message'].rstrip('.')}"
                      for r in d["rows"] if r.get("status") not in (None, "ok")]
            medians += (". Failed rows: " + "; ".join(failed)) if failed else ""
            out.append(f"`{f.name}`: batch {d['batch_size']} × {d['seq_len']}, {d['device']}, torch {d['torch']}; "
                       f"{d.get('pairs_done', d['pairs'])} of {d['pairs']} pairs finished.\n\n"
                       + table(["pair", "loop", "tokens/s", "step ms", "GPU busy", "allocated at start GiB",
                                "peak allocated GiB", "warm-up peak allocated GiB", "peak reserved GiB",
                                "MFU", "GPU mJ/token",
                                "project / bare"], rows)
                       + f"\n\nProject / bare, median over the pairs: {medians}.")
        return "\n\n".join(out) if out else "No bare_vs_project output in this folder."

    def alloc_peaks(self) -> str:
        """``alloc/alloc_peak_*.json`` (benchmarks/alloc_peak.py): what was live at an allocator trace's peak;
        ``alloc/alloc_live_at_*.json`` (its ``--live-at``): what was live at a named point."""
        def blocks(entries: list[dict], n: int) -> str:
            return table(["MiB", "blocks", "source (first project frame, allocating frame)"],
                         [[f"{r['bytes'] / 2**20:.0f}", str(r["blocks"]), f"`{r['source']}`"] for r in entries[:n]])

        out = []
        for f in sorted(self.dir.glob("alloc/alloc_peak_*.json")):
            d = load(f)
            until = (f", replay from the first event under `{d['since']}`" if d.get("since") else "") + \
                (f", replay ended at the first event under `{d['until']}`" if d.get("until") else "")
            out.append(f"`{f.name}` (trace `{d['snapshot']}`{until}): peak of the blocks allocated during the trace "
                       f"{gib(d['peak_bytes_since_start'])} GiB in {d['blocks_at_peak']} blocks; largest at the peak:\n\n"
                       + blocks(d["largest_at_peak"], 6))
        for f in sorted(self.dir.glob("alloc/alloc_live_at_*.json")):
            d = load(f)
            out.append(f"`{f.name}` (trace `{d['snapshot']}`): live at the first event under `{d['live_at']}` "
                       f"{gib(d['live_bytes'])} GiB in {d['blocks_live']} blocks; largest:\n\n"
                       + blocks(d["largest_live"], 8))
        return "\n\n".join(out) if out else "No allocator trace analysis in this folder."

    def profiles(self) -> str:
        rows = []
        for f in sorted(self.dir.glob("profile_*.json")):
            d = load(f)
            ops = ", ".join(f"`{o['name']}` {sig(o['self_cpu_ms_per_step'])}" for o in d["top_cpu_ops"][:5])
            rows.append([f"`{d['variant']}` {d.get('compile_mode') or 'eager'}", f"`{d['kernel']}`",
                         str(d["batch_size"]), sig(d["wall_ms_per_step"]),
                         sig(d["gpu_device_ms_per_step"]) if d.get("gpu_device_ms_per_step") is not None else "—",
                         pct(d["gpu_idle_share"]) if d.get("gpu_idle_share") is not None else "—",
                         sig(d["cpu_ms_per_step_all_ops"]),
                         gib(d["peak_allocated_bytes"]) if d.get("peak_allocated_bytes") else "—", ops])
        if not rows:
            return "No loop profile in this folder."
        return table(["step model", "kernel", "batch", "wall ms/step", "GPU device ms/step", "GPU idle",
                      "host op ms/step", "peak allocated", "top host operators (self ms/step)"], rows)

    def probes(self) -> str:
        rows = []
        for f in sorted(self.dir.glob("probe-head/*/seed*/probe.json")):
            d = load(f)
            rows.append([f"`{d['variant']}`", commit(d), d["status"], *decode_cells(d),
                         "yes" if d.get("decode_matches_full_forward") else "NO"])
        if not rows:
            return "No probe in this folder."
        return table(["variant", "commit", "status", "decode ms/token, batch 1: graph / eager",
                      "decode tokens/s, batch 16: graph / eager", "decode = full forward"], rows)


    def decode_bench(self) -> str:
        """``decode_graph.json`` (benchmarks/decode_graph.py): every variant's decode, graph and eager,
        on random-init models of the preset's shape, against #20's targets."""
        files = sorted(self.dir.glob("decode_graph*.json"))
        return "\n\n".join(self._decode_bench(f) for f in files) if files else "No decode_graph.json in this folder."

    def _decode_bench(self, f: Path) -> str:
        d = load(f)
        rows = []
        for v, rec in d["variants"].items():
            if rec["status"] != "ok":
                rows.append([f"`{v}`", rec["status"], "", "", "", "", "", (rec.get("error") or "")[:120]])
                continue
            b1 = next((r for r in rec["rows"] if r.get("batch_size") == 1 and "status" not in r), None)
            b1_cell, b16_cell = decode_cells({"decode": rec["rows"]})
            why = next((r["graph_unavailable"] for r in rec["rows"] if r.get("graph_unavailable")), None)
            differ = [f"{sig(r[f'{m}_vs_full_forward_max_abs_diff'])} at logit scale {sig(r['logit_scale'])}"
                      for r in rec["rows"] if "status" not in r for m in ("graph", "eager")
                      if r.get(f"{m}_matches_full_forward") is False]
            rows.append([f"`{v}`", "ok", f"`{b1.get('graph_kernel') or b1.get('eager_kernel')}`" if b1 else "—",
                         b1_cell, f"{_ms(b1, 'graph_ms_per_token_p90')} / {_ms(b1, 'eager_ms_per_token_p90')}",
                         b16_cell, "NO: " + ", ".join(differ) if differ else "yes",
                         "graph: " + (why if why.startswith(CAPTURE_FAILED) else why.split(": ", 1)[-1])
                         if why else ""])
        target = decode_targets({f"`{v}`": rec["rows"] for v, rec in d["variants"].items() if rec["status"] == "ok"})
        return (f"`{f.name}`: {d['device']}, torch {d['torch']}, prompt {d['prompt_len']}, "
                f"{d['new_tokens']} new tokens, {d['weights']}. " + target + "\n\n"
                + table(["variant", "status", "kernel", "decode ms/token, batch 1: graph / eager (p50)",
                         "batch 1 p90: graph / eager", "decode tokens/s, batch 16: graph / eager",
                         "graph and eager = full forward", "no graph because"], rows))


class SessionFolder(RunFolder, LoopFolder):
    """One GPU session's checks at one commit: ``gpu-suite/``, loop benchmarks, a few trainings
    under ``runs/`` (RunFolder's layout); any subset."""


def _same_training(a: dict, b: dict) -> bool:
    """Two training documents of one training: the same seed, settings hash and tokens."""
    keys = ("provenance.seed", "provenance.config_hash", "data.tokens_sha256")
    return all(dig(a, k) is not None and dig(a, k) == dig(b, k) for k in keys)


def leader_figure(x: dict) -> str:
    """A verdict's variant with its figure and, where it has one, the 95 % interval of its mean."""
    text = x.get("interval") or ""  # "95 % interval LOW–HIGH UNIT, n = K", or "n = 1" alone
    iv = text.removeprefix("95 % interval ").split(", n = ")[0] if text.startswith("95 % interval") else ""
    return f"`{x['name']}` {x['figure']}" + (f" [{iv}]" if iv else "")


def length_answer(length: dict) -> str:
    """The verdict's answer by sequence length (the sweeps), with the variants it could not compare."""
    if not length.get("rows"):
        return f"not measured ({length.get('missing') or 'no sweep'})"
    among = (f" (compared: {', '.join(length['compared'])} only; no sweep for {length['absent']})"
             if length.get("compared") else "")
    return length["summary"] + among


def _per_shape(fragment: Callable[[RunFolder], str]) -> Callable[["Campaign"], str]:
    """A :class:`Campaign` fragment: ``fragment`` of each shape's :class:`RunFolder`."""
    def render(self: "Campaign") -> str:
        return self._each(fragment)
    render.__doc__ = f"{fragment.__name__} of every shape that has documents."
    return render


class Campaign:
    """A campaign of several shapes (model size x training length, ``config.yaml`` beside it) as it
    came back over one or more sessions: ``results/`` and ``logs/`` as the pipeline lays them, one
    ``snakemake-session*.log`` per Snakemake invocation.  Each fragment gives every shape that has
    documents, in the config's order, from :class:`RunFolder` of that shape."""

    def __init__(self, folder: Path):
        from ..settings import shapes
        self.dir = folder
        self.config = campaign_config(folder)
        self.planned = shapes(self.config)
        self.shapes = [s for s in self.planned if (folder / "results" / "train" / s).is_dir()]
        self._folders: dict[str, RunFolder] = {}

    def folder(self, shape: str) -> RunFolder:
        """One shape's RunFolder, made once (its report assessment serves every fragment)."""
        if shape not in self._folders:
            f = RunFolder(self.dir, shape)
            f.config = self.config  # the campaign's, validated once
            self._folders[shape] = f
        return self._folders[shape]

    def _each(self, fragment: Callable[[RunFolder], str]) -> str:
        parts = []
        for shape in self.shapes:
            text = fragment(self.folder(shape))
            parts.append(f"**{shape}**" + ("\n\n" if "\n" in text else ": ") + text)
        return "\n\n".join(parts)

    def status(self) -> str:
        """What the campaign has and what it still lacks: per shape the trainings and probes
        against variants x seeds, per model size the sweeps, and the reports."""
        from ..settings import shape_size
        config = self.config
        n_variants, n_seeds = len(config["variants"]), len(config.get("seeds") or [config["seed"]])
        rows = []
        def done(docs) -> str:  # finished documents, those not ok named apart (a failed row is done, not ok)
            bad = sum(d.get("status") != "ok" for d in docs)
            return f"{len(docs)} of {n_variants * n_seeds}" + (f" ({bad} not ok)" if bad else "")
        for shape in self.planned:
            f = self.folder(shape)
            size = shape_size(config, shape)
            sweeps = len(list(f.stage_dir("sweep").glob("*/sweep.json"))) if size else 0
            report = (self.dir / "results" / "report" / shape / "index.html").exists()
            rows.append([shape, done(f.train.values()), done(f.probe.values()),
                         f"{size}: {sweeps} of {n_variants}" if size else "-", "yes" if report else "not yet"])
        return table(["shape", "trainings", "probes", "sweeps (per model size)", "report"], rows)

    # fragments of RunFolder, for every shape that has documents
    machine = _per_shape(RunFolder.machine)
    checks = _per_shape(RunFolder.checks_and_agreement)
    seeds = _per_shape(RunFolder.seed_summary)
    paired = _per_shape(RunFolder.paired)
    findings = _per_shape(RunFolder.findings)
    verdict = _per_shape(RunFolder.verdict_lines)
    claim = _per_shape(RunFolder.claim)

    def verdict_table(self) -> str:
        """The verdicts of every shape side by side, one row per headline constraint and one for the
        sweeps' answer by length: the variant each shape's report recommends with its figure and 95 %
        interval, the variants of a tie, or that an order is not established (one seed)."""
        def cell(c: dict) -> str:
            if c["status"] == "missing":
                return c["status_text"]
            if c["status"] == "tie":
                return "tie: " + ", ".join(f"`{x['name']}`" for x in c["best"])
            if c["status"] == "clear":
                return leader_figure(c["best"][0])
            # "one-seed": a variant without an interval, so no order is claimed, whatever the leader's own
            who = "one seed" if c["status_text"].startswith("one seed") else "a variant has one seed"
            return leader_figure(c["best"][0]) + f" (order not established: {who})"
        verdicts = {s: self.folder(s).assessment()["verdict"] for s in self.shapes}
        rows = []
        for what in RunFolder.HEADLINES:
            cells = [next((cell(c) for c in verdicts[s]["constraints"] if c["what"] == what), "—") for s in self.shapes]
            rows.append([what, *cells])
        rows.append(["By length (attention fwd+bwd, sweep)", *(length_answer(verdicts[s]["length"]) for s in self.shapes)])
        return table(["", *self.shapes], rows) if self.shapes else "No shape has documents yet."

    def data(self) -> str:
        """The corpus as the data stage made it (records read and kept, the file's truncated tail,
        splits and tokens), then per shape what one training draws from the training split: each
        ``pack`` training takes ``steps`` batches of windows (``seq_len + 1`` tokens at a stride of
        ``seq_len``: neighbours share one boundary token, a target of one and an input of the next)
        from one permutation per epoch (``attnbench.batches``), so no window is drawn twice while the
        batches drawn fit in one epoch."""
        s = load(self.dir / "results" / "tokens" / "stats.json")
        dl = s.get("download") or {}
        tail, dropped = dl.get("truncated_tail"), {k: n for k, n in (dl.get("records_dropped") or {}).items() if n}
        source = (f" (`{dl.get('package')}`, `{dl.get('file')}`, {dl['file_bytes']:,} bytes): "
                  f"{dl['records_read']:,} records read, {dl['records_kept']:,} kept"
                  + (f" (dropped: {', '.join(f'{n:,} {why}' for why, n in dropped.items())})" if dropped else "")
                  + (f"; the file stops mid-record, its last {tail['bytes']:,} bytes (from byte {tail['at_byte']:,}) "
                     "left out" if tail else "; the file parsed whole")
                  if all(k in dl for k in ("file_bytes", "records_read", "records_kept")) else
                  " (the data stage recorded no download statistics)")
        out = [f"`{s['dataset']}`{source}. {s['conversations']:,} conversations, {s['train_conversations']:,} for "
               f"training and {s['val_conversations']:,} held out; {s['train_tokens']:,} training and "
               f"{s['val_tokens']:,} validation tokens (`tokens_sha256` {s['tokens_sha256'][:8]}…)."]
        rows, hashes = [], set()
        for shape in self.shapes:
            docs = [d for d in self.folder(shape).train.values() if d.get("status") == "ok"]
            hashes |= {dig(d, "data.tokens_sha256") for d in docs}
            if not docs:
                continue
            t = docs[0]["training"]
            same_tokens = all(dig(d, "data.tokens_sha256") == s["tokens_sha256"] for d in docs)
            same_shape = all((d["training"]["steps"], d["training"]["batch_size"], d["training"]["seq_len"])
                             == (t["steps"], t["batch_size"], t["seq_len"]) for d in docs)
            windows = (s["train_tokens"] - 1) // t["seq_len"]
            per_epoch = windows // t["batch_size"]
            why = ("pad mode: one row per conversation" if s.get("mode") != "pack" else
                   "trainings differ in shape" if not same_shape else
                   "fewer windows than one batch" if per_epoch == 0 else None)
            if why:
                rows.append([shape, "—", "—", "—", f"not established ({why})"])
                continue
            rows.append([shape, f"{t['steps']} × {t['batch_size']} × {t['seq_len']:,} = {t['tokens_trained']:,}",
                         f"{windows:,}", f"{t['steps']:,} of {per_epoch:,} ({t['steps'] / per_epoch:.3f} epoch)",
                         ("yes" if t["steps"] <= per_epoch else "no: windows repeat after the first epoch")
                         + ("" if same_tokens else "; some training read other tokens (hash differs)")])
        if rows:
            out.append(table(["shape", "tokens per training (steps × batch × length)", "windows in the training split",
                              "batches per training, of one epoch's", "no window drawn twice"], rows)
                       + ("\n\nEvery training document names this `tokens_sha256`" if hashes == {s["tokens_sha256"]}
                          else "\n\nSome training documents name another `tokens_sha256`")
                       + "; the validation loss is taken on the held-out conversations, the same batches for every "
                       "variant of a seed.")
        return "\n\n".join(out)

    def parallel(self) -> str:
        """The jobs, pairs and sittings once (every shape's and sweep's jobs were each other's
        neighbours), then per shape its variants alone against alongside."""
        if not self.shapes:
            return "No job recorded its GPU and times."
        parts = {shape: self.folder(shape).parallel_parts() for shape in self.shapes}
        return parts[self.shapes[0]][0] + "\n\n" + self._each(lambda f: parts[f.shape][1])

    # (metric, header) of the H100 comparison: training speed and energy only -- the H100 run trained
    # on another corpus (chitchat, seen 3.2 times), so its losses are no yardstick, and it decoded
    # eagerly (before CUDA-graph decode), so a decode ratio would mix the machine with the method.
    AGAINST_H100 = (("tokens_per_s", "tokens/s"), ("gpu_j_per_token", "GPU J/token"),
                    ("gpu_j_per_token_above_idle", "above idle"))

    def h100(self) -> str:
        """This campaign against the H100 run (``reports/h100``, one seed): the ratios this / H100 that
        ``python -m attnbench.compare reports/h100 <shape's report> --out compare-h100-<shape>.csv``
        wrote here, with their 95 % interval where both runs have several seeds."""
        import pandas as pd

        found = [self.dir / f"compare-h100-{s}.csv" for s in self.planned if (self.dir / f"compare-h100-{s}.csv").exists()]
        if not found:
            return "Not compared yet (no `compare-h100-<shape>.csv` here)."
        # Which kernel ran, there and here: a ratio far from the others comes from the variant's
        # code changing between the runs (the H100 documents are from older commits), not the GPU.
        there = {v: f"{d['kernel']} ({commit(d)})" for v, d in H100(ROOT / "reports" / "h100").train.items()}
        parts = []
        for path in found:
            df = pd.read_csv(path)
            here = self.folder(path.stem.removeprefix("compare-h100-")).train
            rows = []
            for variant in dict.fromkeys(df["variant"]):
                kernels = sorted({d["kernel"] for (v, _), d in here.items() if v == variant})
                cells = [f"{there.get(variant, '—')} → {', '.join(kernels) or '—'}"]
                for metric, _ in self.AGAINST_H100:
                    r = df[(df["variant"] == variant) & (df["metric"] == metric)]
                    if r.empty:
                        cells.append("—")
                        continue
                    r = r.iloc[0]
                    iv = f" [{r['ratio_low']:.3f}, {r['ratio_high']:.3f}]" if pd.notna(r["ratio_low"]) else ""
                    cells.append(f"×{r['ratio_b_over_a']:.3f}{iv}")
                rows.append([f"`{variant}`", *cells])
            n_a, n_b = int(df["a_n"].max()), int(df["b_n"].max())
            parts.append(f"**{path.stem.removeprefix('compare-h100-')}** against the H100 run ({n_a} seed"
                         f"{'s' if n_a != 1 else ''} there, {n_b} here"
                         f"{': ratios without an interval' if min(n_a, n_b) < 2 else ''}):\n\n"
                         + table(["variant", "kernel: H100 (commit) → here", *(h for _, h in self.AGAINST_H100)],
                                 rows))
        return "\n\n".join(parts)


class Top:
    """The repository README's two results sections, from both report folders."""

    def __init__(self, folder: Path):
        self.h100 = H100(folder / "reports" / "h100")
        self.h200 = H200(folder / "reports" / "h200" / "default")
        self.run = RunFolder(folder / "reports" / "h200" / "default-fb47336")
        self.head = SessionFolder(folder / "reports" / "h200" / "head-1529080")  # the latest GPU suite
        self.latest = RunFolder(folder / "reports" / "h200" / "default-3877728")  # the latest README run
        self.campaign_dir = folder / "reports" / "h200" / "campaign-c432349"

    def campaign(self) -> str:
        """The H200 campaign's verdicts, every shape side by side."""
        return Campaign(self.campaign_dir).verdict_table()

    def h200_run(self) -> str:
        r = self.run
        return " ".join([r.machine(), r.checks(), r.agreement(), r.spread()])

    def h200_suite(self) -> str:
        return self.head.suite()

    def h200_head(self) -> str:
        """The latest session's part of the README's command, and its decode benchmark against #20's targets."""
        h = self.head
        return " ".join([h.machine(), h.checks(), h._decode_bench(h.dir / "decode_graph.json").split("\n\n")[0]])

    def h200_latest(self) -> str:
        """The latest run of the README's command: what finished, its checks, its probes against #20's targets."""
        r = self.latest
        return (" ".join([r.machine(), r.checks(), r.decode_targets()]) + "\n\n" + r.seed_summary()
                + "\n\n" + r.parallel().split("\n\n")[0])

    def h200_busy(self) -> str:
        return self.run.busy_normalised()

    def h200_summary(self) -> str:
        h = self.h200
        ok = [v for v, d in h.train.items() if d["status"] == "ok"]
        definite = all("?" not in h.train[v]["kernel"] for v in ok)
        checks = all(h.train[v]["kernel_check"][p]["pass"] for v in ok for p in ("start", "end"))
        gaps = {v: h.gap(v) for v in h.order if h.gap(v) is not None}
        c = load(h.dir / "pinned" / "pinned_controls.json")
        old = {n: {x["step"]: x["val_loss"] for x in load(h.dir / "old-code" / f"{n}.metrics.json")["training"]
                   ["val_history"]} for n in ("old_baseline", "old_sdpa_count", "old_sdpa_nocount")}
        step = sorted(old["old_baseline"])[1]
        commit_ = h.train["baseline"]["provenance"]["git_commit"][:7]
        return (f"On an H200 at commit `{commit_}`: {len(ok)} of {len(h.order)} variants trained, "
                + ("every kernel named definitely, " if definite else "")
                + ("every self-check passed, " if checks else "some self-check failed, ")
                + f"and the exact variants stayed within {max(gaps.values()):.4f} of baseline's validation curve "
                f"(final: " + ", ".join(f"`{v}` {h.train[v]['training']['val_loss']:.4f}" for v in gaps)
                + f", baseline {h.train['baseline']['training']['val_loss']:.4f}). `auto` trained at "
                + ", ".join(f"{r['auto_vs_pinned']:.3f} (`{v}`)" for v, r in c["runs"].items())
                + f" of the same variant pinned to {c['impl']} in the same call. f6da826's code replayed there: "
                f"`sdpa` with the FLOP count {old['old_sdpa_count'][step]:.2f} at step {step}, without it "
                f"{old['old_sdpa_nocount'][step]:.2f}, baseline {old['old_baseline'][step]:.2f}.")

    def h100_summary(self) -> str:
        h = self.h100
        bad = [p for rec in h.kernels["attention_kernels_sdpa"]["variants"].values()
               for p in rec["check"]["paths"].values()]
        primed = [c["dx_rel_err"] for c in h.kernels["cudnn_packed_layout_primed"]["cases"] if c["copy"] == "none"]
        return (h.findings().split("\n", 1)[1] + "\n- **Scaling sweep** (attention module forward+backward, fixed "
                "tokens per call; crossovers in the H100 README): " + h.at_longest()
                + f"\n- Found by the kernel check: cuDNN reuses a cached SDPA backward plan across output-gradient "
                f"layouts, so a process that runs one shape with two gradient layouts gets wrong input gradients "
                f"(relative error {max(primed):.3f}) from the second; with the modules' layout every path passes "
                f"(input gradient ≤ {max(p['dx_rel_err'] for p in bad):.1e}).")


READMES: dict[str, tuple[type, dict[str, Callable]]] = {
    "README.md": (Top, {"h200-summary": Top.h200_summary, "h100-summary": Top.h100_summary,
                        "h200-run": Top.h200_run, "h200-suite": Top.h200_suite, "h200-head": Top.h200_head,
                        "h200-busy": Top.h200_busy, "h200-latest": Top.h200_latest, "campaign": Top.campaign}),
    "reports/h100/README.md": (H100, {
        "machine": H100.machine, "commits": H100.commits, "training-table": H100.training_table,
        "training-notes": H100.training_notes, "repeated-gqa": H100.repeated_gqa, "bare-loop": H100.bare_loop,
        "controls": H100.controls_text, "inference-table": H100.inference_table,
        "inference-notes": H100.inference_notes, "sweep-table": H100.sweep_table, "crossovers": H100.crossovers,
        "linear-kernels": H100.linear_kernels, "kernel-checks": H100.kernel_checks, "raw-kernels": H100.raw_kernels,
        "module-tflops": H100.module_tflops, "measurement": H100.measurement, "under-compile": H100.under_compile,
        "findings": H100.findings, "gaps": H100.gaps}),
    "reports/h200/default/README.md": (H200, {
        "machine": H200.machine, "table": H200.table, "agreement": H200.agreement, "selection": H200.selection,
        "selfcheck": H200.selfcheck, "pinned": H200.pinned, "gpu-suite": H200.gpu_suite, "old-code": H200.old_code, "f6da826": H200.f6da826,
        "divergence-timing": H200.divergence_timing}),
    "reports/h200/default-fb47336/README.md": (RunFolder, {
        "machine": RunFolder.machine, "checks": RunFolder.checks, "table": RunFolder.table,
        "agreement": RunFolder.agreement, "spread": RunFolder.spread, "busy": RunFolder.busy_normalised,
        "paired": RunFolder.paired, "sweeps": RunFolder.sweeps, "selection": RunFolder.selection, "probes": RunFolder.probes, "suite": RunFolder.suite}),
    "reports/h200/head-a50fe53/README.md": (SessionFolder, {
        "suite": RunFolder.suite, "pairs": LoopFolder.pairs, "profiles": LoopFolder.profiles,
        "probes": LoopFolder.probes}),
    "reports/h200/head-5d7ee0a/README.md": (SessionFolder, {
        "machine": RunFolder.machine, "table": RunFolder.table, "checks": RunFolder.checks,
        "selection": RunFolder.selection, "suite": RunFolder.suite}),
    "reports/h200/head-fc888ed/README.md": (SessionFolder, {"suite": RunFolder.suite, "pairs": LoopFolder.pairs}),
    "reports/h200/head-f983543/README.md": (SessionFolder, {
        "suite": RunFolder.suite, "pairs": LoopFolder.pairs, "alloc": LoopFolder.alloc_peaks}),
    "reports/h200/head-dd1e664/README.md": (SessionFolder, {
        "suite": RunFolder.suite, "pairs": LoopFolder.pairs, "alloc": LoopFolder.alloc_peaks}),
    "reports/h200/head-1529080/README.md": (SessionFolder, {
        "suite": RunFolder.suite, "decode": LoopFolder.decode_bench, "machine": RunFolder.machine,
        "checks": RunFolder.checks, "table": RunFolder.table, "agreement": RunFolder.agreement,
        "selection": RunFolder.selection, "probes": RunFolder.probes}),
    "reports/h200/default-3877728/README.md": (RunFolder, {
        "machine": RunFolder.machine, "checks": RunFolder.checks, "table": RunFolder.table,
        "agreement": RunFolder.agreement, "selection": RunFolder.selection,
        "decode-targets": RunFolder.decode_targets, "probes": RunFolder.probes, "sweeps": RunFolder.sweeps,
        "parallel": RunFolder.parallel, "seeds": RunFolder.seed_summary, "paired": RunFolder.paired,
        "spread": RunFolder.spread, "findings": RunFolder.findings}),
    "reports/h200/head-d47d4f9/README.md": (RunFolder, {
        "suite": RunFolder.suite, "prefill-rows": RunFolder.prefill_rows, "machine": RunFolder.machine,
        "checks": RunFolder.checks, "table": RunFolder.table, "agreement": RunFolder.agreement,
        "selection": RunFolder.selection, "decode-targets": RunFolder.decode_targets, "probes": RunFolder.probes,
        "sweeps": RunFolder.sweeps, "parallel": RunFolder.parallel}),
    "reports/h200/campaign-c432349/README.md": (Campaign, {
        "status": Campaign.status, "machine": Campaign.machine, "checks": Campaign.checks, "seeds": Campaign.seeds,
        "paired": Campaign.paired, "findings": Campaign.findings, "parallel": Campaign.parallel,
        "verdict": Campaign.verdict, "h100": Campaign.h100, "claim": Campaign.claim, "data": Campaign.data}),
    "reports/h200/partial-e1a7e10/README.md": (RunFolder, {
        "machine": RunFolder.machine, "checks": RunFolder.checks, "table": RunFolder.table,
        "agreement": RunFolder.agreement, "spread": RunFolder.spread, "selection": RunFolder.selection,
        "suite": RunFolder.suite}),
}



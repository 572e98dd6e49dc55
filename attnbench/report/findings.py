"""The text parts of the report: the run header, the notes on unavailable metrics, the
failures (both grouped by reason for the page), and the findings (short statements that
follow from the numbers)."""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from typing import Any, Iterable

from ..results import config_hash, git_commit
from ..stats import order as stats_order
from ..stats import paired, scale_of
from . import agreement, cache, stale
from .charts import seq_label
from .format import clean, dig, fmt_bytes, fmt_joule, fmt_loss, fmt_ms, ratio
from .load import BASELINE, Variant, _common_reason
from .plots import energy_loss_points, pareto_front, sweep_series
from .table import Context


def _distinct(values: Iterable[tuple[str, Any]]) -> str | None:
    seen: "OrderedDict[str, list[str]]" = OrderedDict()
    for name, val in values:
        if val is None:
            continue
        seen.setdefault(str(val), []).append(name)
    if not seen:
        return None
    if len(seen) == 1:
        return next(iter(seen))
    return "; ".join(f"{val} ({', '.join(names)})" for val, names in seen.items())


def run_header(variants: list[Variant], stats: dict | None, stats_reason: str | None, config: dict,
               now: _dt.datetime, prov: dict[str, Any]) -> dict[str, Any]:
    """The run as a whole; ``prov`` is :func:`.provenance.summary` (each distinct commit,
    device and version with how many documents carry it)."""
    train_prov = [(v.name, (v.train.data or {}).get("provenance") or {}) for v in variants]
    t = config.get("train", {}) if isinstance(config, dict) else {}
    m = config.get("model", {}) if isinstance(config, dict) else {}
    d = config.get("data", {}) if isinstance(config, dict) else {}
    devices = _distinct((n, p.get("device")) for n, p in train_prov)
    seeds = config.get("seeds") if isinstance(config, dict) else None
    header = {
        "run_name": config.get("run_name") if isinstance(config, dict) else None,
        "generated_utc": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        # the report's own code may be newer than the jobs' (a campaign's reports re-rendered from
        # its committed documents): both commits are stated
        "report_commit": git_commit(),
        "git_commit": prov["commits"],
        "device": devices,
        "devices": prov["devices"],
        "hosts": prov["hosts"],
        "jobs_ran": prov["jobs_ran"],
        "driver": prov["driver"],
        "torch": prov["torch"],
        "cuda": prov["cuda"],
        "cudnn": prov["cudnn"],
        "python": prov["python"],
        "config_hash": config_hash(config),
        "seed": ", ".join(str(x) for x in seeds) if isinstance(seeds, list) and seeds else
                (config.get("seed") if isinstance(config, dict) else None),
        "dataset": d.get("dataset"),
        "data_mode": (stats or {}).get("mode") or d.get("mode"),
        "max_len": (stats or {}).get("max_len") or d.get("max_len"),
        "conversations": (stats or {}).get("conversations"),
        "train_tokens": (stats or {}).get("train_tokens"),
        "val_tokens": (stats or {}).get("val_tokens"),
        "train_conversations": (stats or {}).get("train_conversations"),
        "val_conversations": (stats or {}).get("val_conversations"),
        "truncated_conversations": (stats or {}).get("truncated_conversations"),
        "skipped_rows": (stats or {}).get("skipped_rows"),
        "stats_unavailable": stats_reason,
        "model": (f"{m.get('n_layer')} layers, {m.get('n_head')} heads, width {m.get('n_embd')}, "
                  f"context {m.get('block_size')}, vocab {m.get('vocab_size')}") if m else None,
        "training": (f"{t.get('steps')} steps ({t.get('warmup_steps')} warm-up) × batch {t.get('batch_size')} × "
                     f"{t.get('seq_len')} tokens") if t else None,
        "tokens_trained": _distinct((v.name, dig(v.train.data, "training.tokens_trained")) for v in variants),
        "dtype": _distinct((v.name, dig(v.train.data, "training.dtype")) for v in variants),
        "variants": len(variants),
        "variants_ok": sum(v.ok for v in variants),
        "seeds_per_variant": _distinct((v.name, len(v.ok_runs)) for v in variants if v.ok),
    }
    header["on_cpu"] = bool(devices) and all(str(p.get("device", "")).startswith("cpu")
                                              for _, p in train_prov if p.get("device"))
    return header


def unavailable_notes(variants: list[Variant]) -> list[dict[str, Any]]:
    """Every unavailable metric, grouped by (document, metric, reason) across variants."""
    groups: "OrderedDict[tuple[str, str, str], list[str]]" = OrderedDict()
    for v in variants:
        docs = [d for r in v.runs for d in (r.train, r.probe)] or [v.train, v.probe]  # every seed's
        for doc in (*docs, v.sweep):
            for key, reason in doc.unavailable.items():
                groups.setdefault((doc.kind, key, reason), []).append(v.name)
            if doc.data is None:
                groups.setdefault((doc.kind, "(whole document)", doc.missing or "missing"), []).append(v.name)
    n = len(variants)
    return [{"document": k, "metric": m, "reason": r,
             "variants": list(OrderedDict.fromkeys(names)), "variants_text": _who(names, n)}
            for (k, m, r), names in groups.items()]


def _who(names: list[str], n_variants: int) -> str:
    names = list(OrderedDict.fromkeys(names))
    return "all variants" if len(names) == n_variants and n_variants > 1 else ", ".join(names)


def failures(variants: list[Variant]) -> list[dict[str, Any]]:
    out = []
    for v in variants:
        for r in v.runs:
            for doc in (r.train, r.probe):
                if not doc.ok:
                    out.append(_failure(v, doc, r.seed))
        if not v.sweep.ok:
            out.append(_failure(v, v.sweep, None))
    return out


def _failure(v: Variant, doc, seed) -> dict[str, Any]:
    f = (doc.data or {}).get("failure") if doc.data else None
    f = f if isinstance(f, dict) else {}
    return {
        "variant": v.name, "stage": doc.kind, "seed": seed, "status": doc.status,
        "kind": f.get("kind") or ("skipped" if doc.status == "skipped" else doc.status),
        "step": f.get("step"),
        "message": clean(f.get("message") or (doc.data or {}).get("reason") or doc.missing or "no reason recorded"),
        "traceback": clean(f["traceback"]) if f.get("traceback") else None,
    }


def problems(fails: list[dict[str, Any]], notes: list[dict[str, Any]], n_variants: int,
             several_seeds: bool) -> dict[str, Any]:
    """Failures and unavailable metrics for the page, one line per reason: the failures by
    (stage, status, kind, step, message) with the variants (and, where a variant ran several
    seeds, which seeds); the unavailable metrics by reason, with the metrics (per document)
    and the variants each reason applies to."""
    by_fail: "OrderedDict[tuple, dict[str, Any]]" = OrderedDict()
    for f in fails:
        key = (f["stage"], f["status"], f["kind"], f["step"], f["message"])
        g = by_fail.setdefault(key, {**f, "variants": [], "seeds": []})
        g["variants"].append(f["variant"])
        if f["seed"] is not None and several_seeds:
            g["seeds"].append(f"{f['variant']} seed {f['seed']}")
    by_reason: "OrderedDict[str, dict[str, Any]]" = OrderedDict()
    for n in notes:
        g = by_reason.setdefault(n["reason"], {"reason": n["reason"], "metrics": OrderedDict(), "variants": []})
        g["metrics"].setdefault(n["document"], [])
        if n["metric"] not in g["metrics"][n["document"]]:
            g["metrics"][n["document"]].append(n["metric"])
        g["variants"] += n["variants"]
    unavailable = [{"reason": g["reason"], "variants": _who(g["variants"], n_variants),
                    "metrics": "; ".join(f"{doc}: {', '.join(ms)}" for doc, ms in g["metrics"].items())}
                   for g in by_reason.values()]
    failed = [{**g, "variants_text": _who(g["variants"], n_variants)} for g in by_fail.values()]
    return {"failures": failed, "unavailable": unavailable}


def _cv(v: Variant, key: str) -> float | None:
    c = v.cells.get(key)
    return c.value if c is not None and isinstance(c.value, (int, float)) else None


NOT_MEASURED = {"tokens_per_s": "Training throughput was not measured.",
                "gpu_j_per_token": "GPU energy was not measured, so this run does not rank the variants by energy.",
                "peak_allocated_bytes": "Peak GPU memory was not measured."}


def findings(variants: list[Variant], header: dict, ctx: Context, fails: list[dict], config: dict) -> list[str]:
    """Short statements that follow from the numbers; nothing the data does not show.
    Suspect rows (exact variants whose loss left baseline's, ``agreement.py``) come first and
    take part in no ranking."""
    out: list[str] = stale.describe(variants) + [s for s in (agreement.describe(v) for v in variants) if s]
    ok = [v for v in variants if v.ok and not v.suspect]
    if not variants:
        return ["No result documents were given, so there is nothing to report."]
    if not ok:
        out.append("No variant finished training, so no variant can be recommended from this run.")
    where = header.get("device") or "an unrecorded device"
    seeds = sorted({len(v.ok_runs) for v in variants if v.ok})
    runs = (f"{seeds[0]} seed{'s' if seeds[0] != 1 else ''}" if len(seeds) == 1 else
            f"{seeds[0]}-{seeds[-1]} seeds") if seeds else "no finished run"
    out.append(f"{sum(v.ok for v in variants)} of {len(variants)} variants finished training on {where}"
               + (f" ({header['training']})" if header.get("training") else "") + f", {runs} each (same data "
               "order and non-attention init per seed). An order below is claimed only where the variants differ "
               "per seed (95 % t-interval of their paired ratios, for losses differences, on one side of equal) "
               "or, sharing no seed, their 95 % bootstrap intervals over seeds separate; otherwise it says tie "
               "within noise"
               + (" — with one seed there are no intervals, so no order is established." if seeds == [1] else "."))
    if header.get("on_cpu"):
        out.append("This was a CPU run: its timings do not predict how the variants compare on a GPU.")

    def reason_of(key: str) -> str:
        return _common_reason((v.name, v.cells[key].reason) for v in ok if key in v.cells) if ok else "no variant finished"

    def ranked(key: str, better: str, what: str) -> str | None:
        cells = {v.name: v.cells[key] for v in ok
                 if v.cells.get(key) and v.cells[key].estimate and v.cells[key].estimate.mean is not None}
        if len(cells) < 2:
            return None
        ests = {k: c.estimate for k, c in cells.items()}
        per_seed = {k: c.per_seed for k, c in cells.items() if c.per_seed}
        unit = next(iter(cells.values())).unit  # one column: one unit
        scale = scale_of(unit.kind if unit else None)
        leaders, rest = stats_order(ests, better, per_seed, scale)

        def show(name: str) -> str:
            e, u = ests[name], cells[name].unit
            return f"{name} {u.text(e.mean)}" + (f" [{u.num(e.low)}, {u.num(e.high)}]" if e.has_interval else "")

        ordered = leaders + rest
        if not all(e.has_interval for e in ests.values()):
            return (f"{what}: order not established (one run per variant, no interval): "
                    + ", ".join(show(k) for k in ordered[:3])
                    + (f" (then {len(ordered) - 3} more)." if len(ordered) > 3 else "."))
        n = min(e.n for e in ests.values())
        what_paired = "ratios" if scale == "ratio" else "differences"
        if len(leaders) == 1:
            d = paired(per_seed.get(rest[0], {}), per_seed.get(leaders[0], {}), scale)
            u = cells[rest[0]].unit
            gap = ("" if not d.has_interval else
                   f"; per seed ×{ratio(d.mean)} the leader [{ratio(d.low)}, {ratio(d.high)}]" if scale == "ratio" else
                   f"; per seed {u.num(d.mean)} from the leader [{u.num(d.low)}, {u.num(d.high)}]")
            return (f"{what}: {show(leaders[0])}, ahead of every other variant (per seed: the 95 % t-interval of "
                    f"the paired {what_paired} on the worse side; without shared seeds: intervals apart) "
                    f"(next: {show(rest[0])}{gap}; n = {n} seeds).")
        # A variant outside the tie can have a better mean than one inside it: the one inside varies
        # more from seed to seed, so its paired interval reaches the leader's value; say so, or the
        # reader sees a better mean left out of a tie for no reason.
        sign = 1 if better == "max" else -1
        passed = [k for k in rest if sign * ests[k].mean > sign * ests[leaders[-1]].mean]
        wider = (f" {', '.join(show(k) for k in passed)} {'has' if len(passed) == 1 else 'have'} a better mean "
                 f"than {leaders[-1]} but {'is' if len(passed) == 1 else 'are'} separated from {leaders[0]} per seed; "
                 f"{leaders[-1]} is not, its {what_paired} to {leaders[0]} varying more from seed to seed."
                 if passed else "")
        return (f"{what}: tie within noise between " + ", ".join(show(k) for k in leaders)
                + f" (the paired per-seed {what_paired}, or without shared seeds the intervals, do not separate "
                  f"them; n = {n} seeds)." + wider)

    for key, better, what in (
            ("tokens_per_s", "max", "Fastest training (tokens/s)"),
            ("tokens_per_s_normalized", "max", "Fastest training, control-normalised (tokens/s)"),
            ("gpu_j_per_token", "min", "Least GPU energy per training token"),
            ("gpu_j_per_token_above_idle", "min", "Least GPU energy per training token above idle"),
            ("val_loss", "min", "Lowest validation loss"),
            ("loss_drop_per_kj", "max", "Most training-loss reduction per kJ of GPU energy (loss and energy over "
                                        "the same timed steps)"),
            ("peak_allocated_bytes", "min", "Lowest peak GPU memory in training"),
            ("decode_ms_per_token_p50", "min", f"Fastest cached decoding (batch {ctx.decode_B}, "
                                               f"{ctx.decode_P}-token prompt, ms/token)")):
        text = ranked(key, better, what)
        if text:
            out.append(text)
        elif ok and key in NOT_MEASURED and not any(v.cells.get(key) and v.cells[key].value is not None for v in ok):
            out.append(f"{NOT_MEASURED[key]} Reason: {reason_of(key)}.")
    pts, _ = energy_loss_points(ok)
    if len(pts) >= 2:
        front = pareto_front(pts)
        out.append("Pareto-optimal in GPU energy per token vs validation loss (means): "
                   + ", ".join(f"{n} ({fmt_joule(x)}, {fmt_loss(y)})" for n, x, y in front)
                   + ("; every other variant has both more energy and a higher loss than one of these."
                      if len(front) < len(pts) else "."))
    out.extend(_cache_findings(variants, config))
    # every finished seed's probe, not the first one's: one seed's decode that differs is a finding
    def decode_checks(v: Variant) -> list:
        return [r.probe.data.get("decode_matches_full_forward") for r in v.ok_runs or [v] if r.probe.ok]
    mismatch = [v.name for v in ok if False in decode_checks(v)]
    checked = [v.name for v in ok if any(x is not None for x in decode_checks(v))]
    if mismatch:
        out.append("Cached decoding did NOT reproduce the logits of a full forward for: " + ", ".join(mismatch)
                   + " (see decode rows in results.json).")
    elif checked:
        out.append(f"Cached decoding reproduced the logits of a full forward for all {len(checked)} probed variants.")
    out.extend(_sweep_findings(variants, config))
    train_fails = [f for f in fails if f["stage"] == "train"]
    if train_fails:
        out.append(f"{len(train_fails)} training job{'s' if len(train_fails) > 1 else ''} failed: "
                   + "; ".join(f"{f['variant']} ({f['kind']}" + (f" at step {f['step']}" if f['step'] is not None
                                                                  else "") + ")" for f in train_fails)
                   + ". Failed variants are kept in the table without numbers; see Failures and unavailable metrics.")
    return out


def _cache_findings(variants: list[Variant], config: dict) -> list[str]:
    shapes = {v.name: cache.profile(v, config) for v in variants}
    fixed = [f"{n} ({fmt_bytes(sizes[cache.LENGTHS[0]].value)})" for n, (sizes, shape) in shapes.items()
             if shape == "fixed-size state"]
    capped = [f"{n} ({shape}: {fmt_bytes(sizes[cache.LENGTHS[-1]].value)})" for n, (sizes, shape) in shapes.items()
              if shape.startswith("capped")]
    out = []
    if fixed or capped:
        out.append("Inference caches that stop growing with the context: " + ", ".join(fixed + capped)
                   + " (batch 1, all layers); the others grow with every token.")
    at = {n: sizes[cache.LENGTHS[-1]].value for n, (sizes, _) in shapes.items() if sizes[cache.LENGTHS[-1]].value}
    if len(at) >= 2:
        n = min(at, key=at.get)
        out.append(f"Smallest inference cache at {cache.LENGTHS[-1]:,} tokens: {n} ({fmt_bytes(at[n])}, batch 1).")
    return out


def _sweep_findings(variants: list[Variant], config: dict) -> list[str]:
    out = []
    series = sweep_series(variants, "attention", "forward_backward", "ms_p50", config=config)
    times = {s.name: dict(s.points) for s in series}
    fails = {s.name: s.failed for s in series}
    if not any(times.values()):
        return out
    oom = [f"{n} from T={min(x for x, _ in f):.0f}" for n, f in fails.items() if f]
    if oom:
        out.append("Sweep lengths that failed (out of memory or error): " + "; ".join(oom) + ".")
    base = times.get(BASELINE)
    if base and len(base) >= 2:
        cross = []
        for n, d in times.items():
            if n == BASELINE:
                continue
            common = sorted(T for T in d if T in base)
            if len(common) < 2 or d[common[0]] < base[common[0]]:
                continue  # faster from the start, or too few lengths: no crossover to state
            for i, T in enumerate(common):
                if all(d[U] < base[U] for U in common[i:]):
                    cross.append(f"{n} (T≥{T:.0f})")
                    break
        if cross:
            out.append(f"Slower than {BASELINE} at short lengths but faster (p50) at every measured length from some "
                       "T on: " + ", ".join(cross) + ".")
    out.extend(_overtakes_exact(variants, series))
    return out


def _overtakes_exact(variants: list[Variant], series) -> list[str]:
    """Where a variant that approximates attention becomes faster than the fastest exact one: the
    shortest length from which, at every longer compared length too, its p90 lies below the fastest
    exact variant's p50 there (beyond both spreads of the repeats).  A length the variant failed at
    (out of memory, error) while an exact one ran counts against it; one at which every exact variant
    failed and it ran counts for it, and is said.  Those not ahead at their longest compared length
    are named.  Suspect exact rows are no yardstick."""
    exact = {v.name for v in variants if v.exact and not v.suspect}
    by = {s.name: s for s in series}
    quantiles = {n: {T: (y, (e[1] if e and e[1] is not None else y))
                     for (T, y), e in zip(s.points, s.yerr or [None] * len(s.points))} for n, s in by.items()}
    failed = {n: {T for T, _ in s.failed} for n, s in by.items()}
    lengths = sorted({T for q in quantiles.values() for T in q} | {T for f in failed.values() for T in f})
    best_exact, exact_failed = {}, set()
    for T in lengths:
        at = [(q[T][0], n) for n, q in quantiles.items() if n in exact and T in q]
        if at:
            best_exact[T] = min(at)
        elif any(T in failed[n] for n in exact if n in failed):
            exact_failed.add(T)
    if not best_exact:
        return []
    ahead, never = [], []
    for name, q in quantiles.items():
        if name in exact or not (q or failed[name]):
            continue
        state = {}  # T -> True (ahead) / False (not), at the lengths both sides have a figure or a failure
        for T in lengths:
            if T in best_exact and T in q:
                state[T] = q[T][1] < best_exact[T][0]
            elif T in best_exact and T in failed[name]:
                state[T] = False
            elif T in exact_failed and T in q:
                state[T] = True
        common = sorted(state)
        if len(common) < 2:
            continue
        start = next((T for i, T in enumerate(common) if all(state[U] for U in common[i:])), None)
        if start is None:
            never.append(f"{name} ({seq_label(common[-1])})")
            continue
        where = (f"at every length from {seq_label(start)}" if start == common[0] else
                 f"at {seq_label(start)} only, its longest compared" if start == common[-1] else
                 f"from {seq_label(start)}")
        if start in best_exact:
            ms, who = best_exact[start]
            figure = f"{fmt_ms(q[start][0])} against {who} {fmt_ms(ms)} at {seq_label(start)}"
        else:
            figure = f"{fmt_ms(q[start][0])} at {seq_label(start)}, where every exact variant failed"
        failed_there = [seq_label(T) for T in common if T >= start and T in exact_failed]
        ahead.append((start, f"{name} {where} ({figure}"
                      + (f"; every exact variant failed at {', '.join(failed_there)}" if failed_there
                         and start not in exact_failed else "") + ")"))
    out = []
    if ahead:
        out.append("Variants that are not exact, faster than the fastest exact one at each length from some T on "
                   "(their p90 below its p50, attention forward+backward): "
                   + "; ".join(text for _, text in sorted(ahead)) + ".")
    if never:
        out.append("Not exact and not ahead of the fastest exact one at their longest compared length: "
                   + ", ".join(never) + ".")
    return out

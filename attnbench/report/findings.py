"""The text parts of the report: the run header, the notes on unavailable metrics, the
failures, and the findings (short statements that follow from the numbers)."""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from typing import Any, Iterable

from ..results import config_hash
from . import agreement
from .format import _num, dig, fmt_bytes, fmt_joule, fmt_loss, fmt_ms, fmt_rate
from .load import BASELINE, Variant, _common_reason
from .plots import _sweep_series, energy_loss_points, pareto_front
from ..stats import order as stats_order
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
               now: _dt.datetime) -> dict[str, Any]:
    docs = [(v.name, d) for v in variants for d in (v.train, v.probe, v.sweep) if d.data]
    prov = [(n, d.data.get("provenance") or {}) for n, d in docs]
    train_prov = [(v.name, (v.train.data or {}).get("provenance") or {}) for v in variants]

    def pv(key, source=prov):
        return _distinct((n, p.get(key)) for n, p in source)

    t = config.get("train", {}) if isinstance(config, dict) else {}
    m = config.get("model", {}) if isinstance(config, dict) else {}
    d = config.get("data", {}) if isinstance(config, dict) else {}
    devices = pv("device", train_prov) or pv("device")
    header = {
        "run_name": config.get("run_name") if isinstance(config, dict) else None,
        "generated_utc": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "git_commit": pv("git_commit"),
        "device": devices,
        "driver": pv("driver", train_prov),
        "torch": pv("torch"),
        "cuda": pv("cuda"),
        "cudnn": pv("cudnn"),
        "python": pv("python"),
        "host": pv("host", train_prov),
        "config_hash": config_hash(config),
        "seed": config.get("seed") if isinstance(config, dict) else None,
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
    }
    header["on_cpu"] = bool(devices) and all(str(p.get("device", "")).startswith("cpu")
                                              for _, p in train_prov if p.get("device"))
    return header


def unavailable_notes(variants: list[Variant]) -> list[dict[str, Any]]:
    """Every unavailable metric, grouped by (document, metric, reason) across variants."""
    groups: "OrderedDict[tuple[str, str, str], list[str]]" = OrderedDict()
    for v in variants:
        for doc in (v.train, v.probe, v.sweep):
            for key, reason in doc.unavailable.items():
                groups.setdefault((doc.kind, key, reason), []).append(v.name)
            if doc.data is None:
                groups.setdefault((doc.kind, "(whole document)", doc.missing or "missing"), []).append(v.name)
    n = len(variants)
    return [{"document": k, "metric": m, "reason": r,
             "variants": names, "variants_text": "all variants" if len(names) == n and n > 1 else ", ".join(names)}
            for (k, m, r), names in groups.items()]


def _family(metric: str) -> str:
    return metric.split(".")[0] if "." in metric else metric


def unavailable_summary(notes: list[dict[str, Any]], n_variants: int) -> list[dict[str, str]]:
    """Distinct reasons with the metric families and variants they affect (for the header)."""
    by: "OrderedDict[str, tuple[list[str], list[str]]]" = OrderedDict()
    for n in notes:
        fam = _family(n["metric"])
        fam = f"{n['document']} (whole document)" if fam in (n["document"], "(whole document)") \
            else f"{n['document']} {fam}"
        fams, names = by.setdefault(n["reason"], ([], []))
        if fam not in fams:
            fams.append(fam)
        names.extend(x for x in n["variants"] if x not in names)
    return [{"reason": r, "affects": ", ".join(f),
             "variants": "all variants" if len(v) == n_variants and n_variants > 1 else ", ".join(v)}
            for r, (f, v) in by.items()]


def failures(variants: list[Variant]) -> list[dict[str, Any]]:
    out = []
    for v in variants:
        for doc in (v.train, v.probe, v.sweep):
            if doc.ok:
                continue
            f = (doc.data or {}).get("failure") if doc.data else None
            f = f if isinstance(f, dict) else {}
            out.append({
                "variant": v.name, "stage": doc.kind, "status": doc.status,
                "kind": f.get("kind") or ("skipped" if doc.status == "skipped" else doc.status),
                "step": f.get("step"),
                "message": f.get("message") or (doc.data or {}).get("reason") or doc.missing or "no reason recorded",
                "traceback": f.get("traceback"),
            })
    return out


def _cv(v: Variant, key: str) -> float | None:
    c = v.cells.get(key)
    return c.value if c is not None and isinstance(c.value, (int, float)) else None


def _vs_base(v: Variant, base: Variant | None, key: str, unit_ratio: bool = True) -> str:
    if base is None or v is base:
        return ""
    a, b = _cv(v, key), _cv(base, key)
    if a is None or b is None or not b:
        return ""
    return f", {a / b:.2f}× {BASELINE}" if unit_ratio else f", {a - b:+.3f} vs {BASELINE}"


NOT_MEASURED = {"tokens_per_s": "Training throughput was not measured.",
                "gpu_j_per_token": "GPU energy was not measured, so this run does not rank the variants by energy."}


def findings(variants: list[Variant], header: dict, ctx: Context, fails: list[dict]) -> list[str]:
    """Short statements that follow from the numbers; nothing the data does not show.
    Suspect rows (exact variants whose loss left baseline's, ``agreement.py``) come first and
    take part in no ranking."""
    out: list[str] = [s for s in (agreement.describe(v) for v in variants) if s]
    ok = [v for v in variants if v.ok and not v.suspect]
    base = next((v for v in ok if v.name == BASELINE), None)
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
               "order and non-attention init per seed). An order below is claimed only where 95 % bootstrap "
               "intervals over seeds separate; otherwise it says tie within noise"
               + (" — with one seed there are no intervals, so no order is established." if seeds == [1] else "."))
    if header.get("on_cpu"):
        out.append("This was a CPU run: its timings do not predict how the variants compare on a GPU.")

    def best(key: str, mode: str) -> tuple[Variant, float] | None:
        cand = [(v, _cv(v, key)) for v in ok if _cv(v, key) is not None]
        if not cand:
            return None
        return (min if mode == "min" else max)(cand, key=lambda t: t[1])

    def reason_of(key: str) -> str:
        return _common_reason((v.name, v.cells[key].reason) for v in ok if key in v.cells) if ok else "no variant finished"

    def ranked(key: str, better: str, fmt, what: str) -> str | None:
        ests = {v.name: v.cells[key].estimate for v in ok
                if v.cells.get(key) and v.cells[key].estimate and v.cells[key].estimate.mean is not None}
        if len(ests) < 2:
            return None
        leaders, rest = stats_order(ests, better)

        def show(name: str) -> str:
            e = ests[name]
            return f"{name} {fmt(e.mean)}" + (f" [{fmt(e.low)}, {fmt(e.high)}]" if e.has_interval else "")

        ordered = leaders + rest
        if not all(e.has_interval for e in ests.values()):
            return (f"{what}: order not established (one run per variant, no interval): "
                    + ", ".join(show(k) for k in ordered[:3]) + (", …" if len(ordered) > 3 else "") + ".")
        n = min(e.n for e in ests.values())
        if len(leaders) == 1:
            return (f"{what}: {show(leaders[0])}, its 95 % interval clear of every other variant's "
                    f"(next: {show(rest[0])}; n = {n} seeds).")
        return (f"{what}: tie within noise between " + ", ".join(show(k) for k in leaders)
                + f" (95 % intervals overlap; n = {n} seeds).")

    for key, better, fmt, what in (
            ("tokens_per_s", "max", fmt_rate, "Fastest training (tokens/s)"),
            ("tokens_per_s_normalized", "max", fmt_rate, "Fastest training, control-normalised (tokens/s)"),
            ("gpu_j_per_token", "min", fmt_joule, "Least GPU energy per training token"),
            ("gpu_j_per_token_above_idle", "min", fmt_joule, "Least GPU energy per training token above idle"),
            ("val_loss", "min", fmt_loss, "Lowest validation loss")):
        text = ranked(key, better, fmt, what)
        if text:
            out.append(text)
        elif ok and key in NOT_MEASURED and not any(v.cells.get(key) and v.cells[key].value is not None for v in ok):
            out.append(f"{NOT_MEASURED[key]} Reason: {reason_of(key)}.")
    pts, _ = energy_loss_points(ok)
    if len(pts) >= 2:
        front = pareto_front(pts)
        per_kj = [(v, _num(dig(v.train.data, "efficiency.loss_drop_per_kj"))) for v in ok]
        per_kj = [(v, x) for v, x in per_kj if x is not None]
        if per_kj:
            v, x = max(per_kj, key=lambda t: t[1])
            out.append(f"Most training-loss reduction per unit of GPU energy: {v.name}, {x:.3g} nats per kJ "
                       "(loss and energy over the same timed steps).")
        out.append("Pareto-optimal in GPU energy vs validation loss: "
                   + ", ".join(f"{n} ({fmt_joule(x)}, {fmt_loss(y)})" for n, x, y in front)
                   + ("; every other variant has both more energy and a higher loss than one of these."
                      if len(front) < len(pts) else "."))
    r = best("peak_allocated_bytes", "min")
    if r and len(ok) > 1:
        out.append(f"Lowest peak GPU memory in training: {r[0].name} at {fmt_bytes(r[1])}"
                   f"{_vs_base(r[0], base, 'peak_allocated_bytes')}.")
    elif ok and not r:
        out.append(f"Peak GPU memory was not measured. Reason: {reason_of('peak_allocated_bytes')}.")
    r = best("decode_ms_per_token_p50", "min")
    if r and len(ok) > 1:
        out.append(f"Fastest cached decoding (batch {ctx.decode_B}, {ctx.decode_P}-token prompt): {r[0].name} at "
                   f"{fmt_ms(r[1])}/token{_vs_base(r[0], base, 'decode_ms_per_token_p50')}.")
    r = best("cache_bytes_per_token", "min")
    if r and len(ok) > 1:
        zero = [v.name for v in ok if _cv(v, "cache_bytes_per_token") == 0]
        if zero:
            out.append(f"Inference cache that does not grow with length (0 bytes per token): {', '.join(zero)}.")
        else:
            out.append(f"Smallest inference cache: {r[0].name} at {fmt_bytes(r[1])} per token"
                       f"{_vs_base(r[0], base, 'cache_bytes_per_token')}.")
    mismatch = [v.name for v in ok if v.probe.ok and v.probe.data.get("decode_matches_full_forward") is False]
    checked = [v.name for v in ok if v.probe.ok and v.probe.data.get("decode_matches_full_forward") is not None]
    if mismatch:
        out.append("Cached decoding did NOT reproduce the logits of a full forward for: " + ", ".join(mismatch)
                   + " (see decode rows in results.json).")
    elif checked:
        out.append(f"Cached decoding reproduced the logits of a full forward for all {len(checked)} probed variants.")
    out.extend(_sweep_findings(variants))
    train_fails = [f for f in fails if f["stage"] == "train"]
    if train_fails:
        out.append(f"{len(train_fails)} variant{'s' if len(train_fails) > 1 else ''} failed in training: "
                   + "; ".join(f"{f['variant']} ({f['kind']}" + (f" at step {f['step']}" if f['step'] is not None
                                                                  else "") + ")" for f in train_fails)
                   + (". They are" if len(train_fails) > 1 else ". It is") + " kept in the table without numbers; see Failures.")
    return out


def _sweep_findings(variants: list[Variant]) -> list[str]:
    out = []
    times = {s.name: dict(s.points) for s in _sweep_series(variants, "attention", "forward_backward", "ms_p50")}
    fails = {s.name: s.failed for s in _sweep_series(variants, "attention", "forward_backward", "ms_p50")}
    all_T = sorted({T for d in times.values() for T in d})
    if not all_T:
        return out
    longest = max((T for T in all_T if sum(T in d for d in times.values()) >= 2), default=None)
    if longest is not None:
        name, ms = min(((n, d[longest]) for n, d in times.items() if longest in d), key=lambda t: t[1])
        out.append(f"In the scaling sweep at the longest length measured by two or more variants (T={longest:.0f}), "
                   f"the fastest attention forward+backward is {name} ({fmt_ms(ms)}).")
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
            out.append(f"Slower than {BASELINE} at short lengths but faster at every measured length from some T on: "
                       + ", ".join(cross) + ".")
    return out

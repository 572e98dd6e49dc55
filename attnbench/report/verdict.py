"""The verdict at the top of the page: which variant to use by sequence length and by
constraint, each with its figure and interval, and how far the figures can be trusted.

* **By sequence length** (the scaling sweep, attention module forward+backward): the fastest
  variant per length, and every variant whose p50-p90 range of the repeats overlaps the
  fastest's as a tie (the sweep runs one job per variant, so the spread of its repeats is
  the only noise it records).  The fastest exact variant is named beside it: an approximate
  variant is a different model.
* **By constraint** (the summary table's cells, means over seeds): an order only where the
  95 % intervals separate (:func:`attnbench.stats.order`), "tie within noise" where they
  overlap, and "order not established" where a variant has no interval (naming those with
  one finished run; "one seed" when that is every variant).
* Suspect rows (exact variants whose loss left the seed's exact reference, :mod:`.agreement`)
  take part in no recommendation and are named.
"""

from __future__ import annotations

from typing import Any

from ..stats import order as stats_order
from ..stats import paired, scale_of
from . import agreement, stale
from .charts import seq_label
from .format import SCALES, _num, _sig, dig, fmt_ms, pick_unit, ratio
from .load import BASELINE, Variant, _common_reason
from .plots import sweep_series

CONSTRAINTS = (  # (what, table column, better)
    ("Training speed", "tokens_per_s", "max"),
    ("Training speed per GPU-busy second", "tokens_per_busy_s", "max"),
    ("GPU energy per token", "gpu_j_per_token", "min"),
    ("GPU energy per token above idle", "gpu_j_per_token_above_idle", "min"),
    ("Training memory (peak GPU)", "peak_allocated_bytes", "min"),
    ("Inference cache at 32k tokens", "cache_32768", "min"),
    ("Inference latency: decode", "decode_ms_per_token_p50", "min"),
    ("Inference latency: prefill", "prefill_ms_p50", "min"),
    ("Quality: validation loss", "val_loss", "min"),
    ("Quality per energy: loss drop per kJ", "loss_drop_per_kj", "max"),
)


HOST_BOUND_BUSY = 0.9  # GPU busy share below which a training loop is named host-bound


def _name(v: Variant) -> dict[str, Any]:
    return {"name": v.name, "exact": v.exact}


def by_length(variants: list[Variant], config: dict) -> dict[str, Any]:
    usable = [v for v in variants if not v.suspect]
    series = {s.name: s for s in sweep_series(usable, "attention", "forward_backward", "ms_p50", config=config)}
    by = {v.name: v for v in usable}
    lengths = sorted({x for s in series.values() for x, _ in s.points})
    if not lengths:
        reasons = [(s.name, s.missing) for s in series.values()]
        common = _common_reason(reasons)
        if len({r for _, r in reasons}) == 1:  # the same reason for every variant
            common = "for no variant: " + common
        return {"rows": [], "tokens": None, "missing": common}
    rows = []
    for T in lengths:
        pts = []
        for name, s in series.items():
            for (x, y), e in zip(s.points, s.yerr or [None] * len(s.points)):
                if x == T:
                    pts.append((name, y, e[1] if e and e[1] is not None else y))
        pts.sort(key=lambda p: p[1])
        top = pts[0]
        leaders = [p for p in pts if p is top or p[1] <= top[2]]  # [p50, p90] overlaps the fastest's
        exact = next((p for p in pts if by[p[0]].exact), None)
        failed = [name for name, s in series.items() if any(x == T for x, _ in s.failed)]
        rows.append({
            "T": T, "label": seq_label(T),
            "leaders": [{**_name(by[n]), "figure": fmt_ms(ms), "p90": fmt_ms(p90)} for n, ms, p90 in leaders],
            "tie": len(leaders) > 1,
            "exact": ({**_name(by[exact[0]]), "figure": fmt_ms(exact[1])} if exact else None),
            "failed": failed,
        })
    absent = [(n, s.missing) for n, s in series.items() if not s.points]
    return {"rows": rows, "summary": _ranges(rows), "tokens": _num(dig(next(
        (v.sweep.data for v in usable if v.sweep.ok), None), "tokens_per_call")),
        # a partial run compares only the variants with a sweep: say which, so a leader among two is not
        # read as the leader among all
        "compared": [n for n, s in series.items() if s.points] if absent else None,
        "absent": _grouped(absent) if absent else None}


def _grouped(pairs: list[tuple[str, str | None]]) -> str:
    """"baseline, sdpa (reason); lsh (other reason)": variants grouped by their reason."""
    groups: dict[str, list[str]] = {}
    for name, reason in pairs:
        groups.setdefault(reason or "no reason recorded", []).append(name)
    return "; ".join(f"{', '.join(names)} ({reason})" for reason, names in groups.items())


def _ranges(rows: list[dict[str, Any]]) -> str:
    """"512–2k: gqa; 4k–16k: sliding_window": consecutive lengths with the same fastest
    variant, a tie shown with its partners."""
    groups: list[tuple[list[str], str]] = []
    for r in rows:
        names = [x["name"] for x in r["leaders"]]
        key = names[0] + (f" (tie: {', '.join(names[1:])})" if len(names) > 1 else "")
        if groups and groups[-1][1] == key:
            groups[-1][0].append(r["label"])
        else:
            groups.append(([r["label"]], key))
    return "; ".join((f"{ls[0]}–{ls[-1]}" if len(ls) > 1 else ls[0]) + f": {key}" for ls, key in groups)


def by_constraint(variants: list[Variant], columns) -> list[dict[str, Any]]:
    usable = [v for v in variants if v.ok and not v.suspect]
    cols = {c.key: c for c in columns}
    out = []
    for what, key, better in CONSTRAINTS:
        col = cols.get(key)
        if col is None:
            continue
        row: dict[str, Any] = {"what": what, "metric": col.label + (f" ({col.sub})" if col.sub else ""),
                               "better": "lower" if better == "min" else "higher"}
        cells = {v.name: v.cells[key] for v in usable if isinstance(v.cells[key].value, (int, float))}
        if not cells:
            row.update(status="missing", status_text="not measured: " + _common_reason(
                (v.name, v.cells[key].reason) for v in usable) if usable else "no variant finished training")
            out.append(row)
            continue
        by = {v.name: v for v in usable}
        if not col.seeds:  # exact figures (the cache): equal values tie, nothing is noise
            ranked = sorted(cells, key=lambda n: cells[n].value, reverse=(better == "max"))
            leaders = [n for n in ranked if cells[n].value == cells[ranked[0]].value]
            status, text = ("tie" if len(leaders) > 1 else "clear"), "computed size (no noise)"
        else:
            ests = {n: c.estimate for n, c in cells.items()}
            per_seed = {n: c.per_seed for n, c in cells.items() if c.per_seed}
            scale = scale_of(col.kind)
            leaders, rest = stats_order(ests, better, per_seed, scale)
            ranked = leaders + rest
            singles = [n for n, e in ests.items() if not e.has_interval]
            if singles:
                leaders = ranked[:1]
                status = "one-seed"
                text = ("one seed: order not established" if len(singles) == len(ests) else
                        f"order not established: {', '.join(singles)} ha{'s' if len(singles) == 1 else 've'} "
                        "one finished run (no interval)")
            elif len(leaders) > 1:
                status, text = "tie", "tie within noise (" + _method(per_seed, ranked[0], scale, tie=True) + ")"
            else:
                status, text = "clear", "clear: separated from every other (" + _method(per_seed, ranked[0], scale,
                                                                                       tie=False) + ")"
        show = leaders if status == "tie" else ranked[:1]
        nxt = [n for n in ranked if n not in show][:2]
        scale = scale_of(col.kind)
        nexts = [_figure(by[n], cells[n], vs=cells[ranked[0]], scale=scale) for n in nxt]
        if status == "tie":
            # a separated runner-up can have a better mean than a tied variant (on the H200 at 3877728: sdpa's
            # energy 1.54 mJ/token, consistently above gqa's per seed, against flex 1.55, which varied more;
            # two shared seeds give a t-interval 4.3x as wide as three do)
            for n, x in zip(nxt, nexts):
                noisier = [t for t in show if (cells[t].value > cells[n].value if better == "min"
                                               else cells[t].value < cells[n].value)]
                if noisier:
                    one = len(noisier) == 1
                    x["beside"] = (f"a better mean than {', '.join(noisier)}, which tie{'s' if one else ''} with the "
                                   f"leader because {'its' if one else 'their'} comparison with it is less certain (a "
                                   "per-seed gap that varies more, or fewer seeds shared)")
        row.update(status=status, status_text=text,
                   best=[_figure(by[n], cells[n]) for n in show], next=nexts)
        out.append(row)
    return out


def _method(per_seed: dict, best: str, scale: str, *, tie: bool) -> str:
    """How the order was decided: paired per seed where the variants share seeds, else the intervals."""
    what = "ratios" if scale == "ratio" else "differences"
    is_paired = any(n != best and paired(per_seed[n], per_seed.get(best, {}), scale).has_interval for n in per_seed)
    if not is_paired:
        return "95 % intervals overlap" if tie else "95 % intervals apart"
    return (f"95 % t-intervals of the paired per-seed {what} reach the leader's side" if tie else
            f"95 % t-intervals of the paired per-seed {what} lie wholly on the worse side")


def _figure(v: Variant, cell, vs=None, scale: str = "difference") -> dict[str, Any]:
    """The figure in its own unit (a column's shared unit would show a 2 MiB cache as 0.00195 GiB);
    with ``vs`` (the leader's cell) also the comparison with it per shared seed, on ``scale``."""
    e = cell.estimate
    unit = pick_unit(cell.unit.kind, [cell.value], cell.unit.per) if cell.unit.kind in SCALES else cell.unit
    interval = (f"95 % interval {unit.num(e.low)}–{unit.text(e.high)}, n = {e.n}"
                if e is not None and e.has_interval else ("n = 1" if e is not None else None))
    out = {**_name(v), "figure": unit.text(cell.value), "interval": interval, "note": cell.note, "paired": None}
    if vs is not None and cell.per_seed and vs.per_seed:
        d = paired(cell.per_seed, vs.per_seed, scale)
        if d.has_interval and scale == "ratio":
            out["paired"] = f"×{ratio(d.mean)} the leader per seed (95 % [{ratio(d.low)}, {ratio(d.high)}], {d.n} seeds)"
        elif d.has_interval:
            out["paired"] = (f"{'+' if d.mean >= 0 else '−'}{unit.num(abs(d.mean))} vs the leader per seed (95 % "
                             f"[{unit.num(d.low)}, {unit.num(d.high)}], {d.n} seeds)")
    return out


def caveats(variants: list[Variant], header: dict) -> list[str]:
    out = []
    seeds = sorted({len(v.ok_runs) for v in variants if v.ok})
    if seeds == [1]:
        out.append("One seed per variant: every figure is a single run with no interval, so no order below is "
                   "established; small leads may be noise.")
    elif seeds:
        out.append(f"Figures are means over {seeds[0]}" + (f"–{seeds[-1]}" if len(seeds) > 1 else "")
                   + " seeds with 95 % bootstrap intervals; an order is claimed only where the variants differ per seed "
                   "(same data order and init): the 95 % t-interval of their paired ratios (losses: differences) "
                   "lies on one side of equal; for variants that share no seed, only where their intervals separate."
                   + (" With three seeds or fewer a percentile-bootstrap interval is the seeds' own range, which holds "
                      "the mean less often than 95 %: read it as the spread." if seeds[0] <= 3 else ""))
    controls = [c for v in variants for r in v.ok_runs if (c := _num(dig(r.train.data, "control.tflops")))]
    if len(controls) >= 2:
        lo, hi = min(controls), max(controls)
        out.append(f"Drift between jobs: the fixed matmul control timed in every train job ran at {_sig(lo)}–"
                   f"{_sig(hi)} TFLOP/s ({100 * (hi - lo) / lo:.1f} % apart); leads smaller than that are not "
                   "findings (the table also shows control-normalised throughput).")
    elif seeds:
        out.append("No drift control was recorded in these train documents (written before it was timed), so "
                   "drift between jobs cannot be measured from them.")
    busy = [b for v in variants for r in v.ok_runs if (b := _num(dig(r.train.data, "energy.gpu_busy"))) is not None]
    if busy and min(busy) < HOST_BOUND_BUSY:
        out.append(f"GPU busy in the timed windows: {100 * min(busy):.0f}–{100 * max(busy):.0f} %. Below about "
                   f"{100 * HOST_BOUND_BUSY:.0f} % the host (Python, launches) set the pace of training, by an "
                   "amount that can change from job to job and that the matmul control cannot see; tokens per "
                   "GPU-busy second takes that time out.")
    if header.get("on_cpu"):
        out.append("This was a CPU run: its timings do not predict how the variants compare on a GPU.")
    return out


def agreement_text(variants: list[Variant]) -> list[str]:
    """The suspect rows named first, then one line on the exact variants that agree."""
    out = stale.describe(variants) + [s for s in (agreement.describe(v) for v in variants) if s]
    ok = [v for v in variants if v.agreement and "suspect" in v.agreement and not v.suspect]
    if ok:
        tol = ok[0].agreement["tolerance"]  # one tolerance for the whole report
        lone = [s for s in (agreement.excursions(v) for v in ok) if s]
        n_lone = sum(len(v.agreement["excursions"]) for v in ok)
        kept = max(ok, key=lambda v: v.agreement["max_kept_diff"])
        but = {0: "", 1: " but the excursion below"}.get(n_lone, f" but the {n_lone} excursions below")
        points = {(p["seed"], p["step"]): p for v in ok for p in v.agreement["points"]}.values()
        if any(p["on_median"] for p in points):
            out.append(_median_agreement(variants, ok, list(points), tol, but, kept))
        else:
            out.append(f"Exact-agreement check: {', '.join(v.name for v in ok)} follow baseline's validation curve "
                       f"within ±{tol:g} at every eval point{but} (largest gap {kept.agreement['max_kept_diff']:.4f}, "
                       f"{kept.name}).")
        if lone:
            out.append(f"Past ±{tol:g} at a seed's first eval point only, by at most twice that, and back within "
                       "it at the next (early in training two correct bf16 runs drift a few steps apart; a wrong "
                       "kernel stays off): " + "; ".join(lone) + ".")
    unchecked = [f"{v.name} ({v.agreement['unavailable']})" for v in variants
                 if v.agreement and "unavailable" in v.agreement]
    if unchecked:
        out.append("Exact-agreement check not possible for: " + "; ".join(unchecked) + ".")
    return out


def _median_agreement(variants: list[Variant], ok: list[Variant], points: list[dict], tol: float, but: str,
                      kept: Variant) -> str:
    """The agreement line where the reference is the exact median at some eval point: what the
    median is of, how far baseline itself stands from it, the gap to baseline's curve alone, and
    where baseline's loss is the reference instead (:func:`agreement._references`)."""
    family = [BASELINE] + [v.name for v in variants if v.agreement and "points" in v.agreement]
    from_median = max(abs(p["baseline_off_median"]) for p in points if p["baseline_off_median"] is not None)
    to_base = max(ok, key=lambda v: v.agreement["max_baseline_diff"])
    few = sum(p["baseline_off_median"] is None for p in points)
    off = sum(not p["on_median"] for p in points) - few
    instead = ", ".join(s for s in (f"{few} with fewer than {agreement.MEDIAN_OF} runs" if few else "",
                                    f"{off} where baseline stands more than ±{tol:g} off the median" if off else "")
                        if s)
    return (f"Exact-agreement check: {', '.join(v.name for v in ok)} stay within ±{tol:g} of the exact median at "
            f"every seed and eval point{but} (largest gap {kept.agreement['max_kept_diff']:.4f}, {kept.name}). "
            f"The exact median is the median validation loss of {', '.join(family)} at each seed and eval point; "
            f"baseline itself stands at most {from_median:.4f} from it"
            + (" (one bf16 run, it drifts like the others)" if from_median <= tol else "") + ", "
            f"and the largest gap to baseline's curve alone is {to_base.agreement['max_baseline_diff']:.4f} "
            f"({to_base.name})"
            + (f"; at {few + off} of {len(points)} eval points baseline's loss is the reference instead ({instead})"
               if few + off else "") + ".")


def build(variants: list[Variant], columns, header: dict, config: dict, overlap: dict) -> dict:
    return {"length": by_length(variants, config), "constraints": by_constraint(variants, columns),
            "caveats": caveats(variants, header), "agreement": agreement_text(variants),
            "suspect": [v.name for v in variants if v.suspect], "overlap": overlap}

"""The report's figures: which data each one draws (``plot_*``), drawn by :mod:`.charts`.

Every point that is a mean over seeds carries its 95 % bootstrap interval as an error bar;
latencies that are medians over repeats of one job (sweep, probe with one seed) carry a
whisker from p50 to p90 of the repeats instead, and their captions say so.  A figure
without data carries the reason instead of a plot.

Hand-written SVG or matplotlib (issue 21): matplotlib.  The hand-written charts were ~40 %
of the old report module and still lacked error bars, shaded windows, labelled log-axis ends
and label placement; matplotlib has all of these.  Measured on the H200 campaign report: the
hand-written figures took 164 kB of a 217 kB page, matplotlib's (text kept as text, ids
namespaced, coordinates to 0.01 pt, :func:`.charts.inline_svg`) 351 kB of a 429 kB page with
error bars, shaded windows and the cache plot added: larger, but a self-contained page well
under a megabyte, so size does not outweigh having the features without hand-kept code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from ..stats import bootstrap_mean
from . import cache
from .charts import SHADE, Series, bar_chart, figure
from .format import Unit, _num, dig, pick_unit
from .load import BASELINE, Variant, _common_reason, _read_csv, _steps_points, loss_points
from .table import Context

MAX_POINTS = 200  # per line in a plot (the CSV/JSON keep everything)


@dataclass
class Plot:
    id: str
    title: str
    svg: Markup | None = None
    missing: str | None = None  # "not measured: ..." when there is no svg
    caption: str = ""


def _downsample(points: list[tuple[float, float]], n: int = MAX_POINTS) -> list[tuple[float, float]]:
    if len(points) <= n:
        return points
    k = math.ceil(len(points) / n)
    out = []
    for i in range(0, len(points), k):
        chunk = points[i:i + k]
        out.append((chunk[-1][0], sum(y for _, y in chunk) / len(chunk)))
    return out


def line_plot(pid: str, title: str, series: list[Series], *, xlabel: str, ylabel: str, caption: str = "",
              logx=False, logy=False, xunit: Unit | None = None, yunit: Unit | None = None, seq_x=False,
              base2_x=False, base2_y=False, y_zero=False, pareto=None, width=5.2, height=3.6) -> Plot:
    """A line/scatter :class:`Plot`, or its "not measured" placeholder when no series has a point."""
    def usable(x, y):
        return x is not None and y is not None and (not logx or x > 0) and (not logy or y > 0)

    for s in series:
        keep = [i for i, (x, y) in enumerate(s.points) if usable(x, y)]
        s.points = [s.points[i] for i in keep]
        s.yerr = [s.yerr[i] for i in keep] if s.yerr else None
        s.xerr = [s.xerr[i] for i in keep] if s.xerr else None
        s.markers = [(x, y) for x, y in s.markers if usable(x, y)]
    if not any(s.points or s.markers for s in series):
        return Plot(pid, title, None, _common_reason((s.name, s.missing) for s in series), caption)
    xs = [x for s in series for x, _ in s.points + s.markers] + [x for s in series for x, _ in s.failed]
    xs += [b for s in series for e in (s.xerr or []) if e for b in e]
    ys = [y for s in series for _, y in s.points + s.markers]
    ys += [b for s in series for e in (s.yerr or []) if e for b in e if not logy or b > 0]
    with figure(pid, title, width, height) as f:
        f.axes(xlabel=xlabel, ylabel=ylabel, logx=logx, logy=logy, xunit=xunit, yunit=yunit, xs=xs, ys=ys,
               y_zero=y_zero, seq_x=seq_x, base2_x=base2_x, base2_y=base2_y)
        f.draw(series, pareto=pareto)
        return Plot(pid, title, f.svg(), None, caption)


def _seed_note(variants: list[Variant]) -> str:
    seeds = sorted({len(v.ok_runs) for v in variants if v.ok})
    if seeds and seeds[-1] > 1:
        return " Lines show each variant's first finished seed."
    return ""


def plot_loss_vs_step(variants: list[Variant]) -> Plot:
    series = []
    for v in variants:
        pts = _downsample(_steps_points(v))
        markers, err = _val_means(v)
        series.append(Series(v.name, v.color, pts, v.dash, markers=markers, marker_err=err, missing=v.steps_reason,
                             failed_variant=not v.ok))
    several = any(s.marker_err for s in series)
    return line_plot("loss-step", "Loss vs training step", series, xlabel="step", ylabel="loss",
                     caption="Lines: training loss (bin means when there are many steps); open dots: validation loss"
                             + (", mean over seeds with its 95 % interval." if several else ".") + _seed_note(variants))


def _val_means(v: Variant) -> tuple[list[tuple[float, float]], list | None]:
    by_step: dict[float, list[float]] = {}
    for r in v.ok_runs:
        for h in dig(r.train.data, "training.val_history") or []:
            if isinstance(h, dict) and _num(h.get("step")) is not None and _num(h.get("val_loss")) is not None:
                by_step.setdefault(_num(h["step"]), []).append(_num(h["val_loss"]))
    pts, err = [], []
    for step in sorted(by_step):
        e = bootstrap_mean(by_step[step])
        pts.append((step, e.mean))
        err.append((e.low, e.high) if e.has_interval else None)
    return pts, (err if any(err) else None)


def plot_loss_vs_baseline(variants: list[Variant]) -> Plot:
    """Per-step training loss minus the baseline's (same seed and batches, so the gap is the variant's)."""
    base = next((v for v in variants if v.name == BASELINE and v.ok), None)
    title = f"Training loss minus {BASELINE}'s, per step"
    if base is None or not _steps_points(base):
        why = (f"no finished {BASELINE} variant to compare with" if base is None
               else f"{BASELINE}: {base.steps_reason or 'no steps.csv'}")
        return Plot("loss-delta", title, None, why)
    ref = dict(_steps_points(base))
    seed = dig(base.train.data, "provenance.seed")
    series = []
    for v in variants:
        if v is base:
            continue
        own, why = _steps_points(v), v.steps_reason
        if v.ok and dig(v.train.data, "provenance.seed") != seed:  # its first finished seed is not baseline's
            same = next((r for r in v.ok_runs if r.seed == seed), None)
            rows, why = _read_csv(same.train.path.parent / "steps.csv") if same and same.train.path else (
                None, f"no finished run of {BASELINE}'s seed {seed}")
            own = loss_points(rows)
        pts = [(s_, y - ref[s_]) for s_, y in own if s_ in ref]
        series.append(Series(v.name, v.color, _downsample(pts), v.dash, missing=why if not pts else None,
                             failed_variant=not v.ok))
    return line_plot("loss-delta", title, series, xlabel="step", ylabel=f"loss − {BASELINE} loss",
                     caption=f"Every variant sees the same batches in the same order, so this isolates the loss gap "
                             f"to {BASELINE} (below 0 = lower loss). Bin means when there are many steps."
                             + (f" Lines show each variant's run of {BASELINE}'s seed ({seed}); a variant without "
                                "one is named in the legend with the reason." if _seed_note(variants) else ""))


def _window_energy_points(v: Variant) -> tuple[list[tuple[float, float]], str | None]:
    if not v.ok:
        return [], v.train.not_ok_reason()
    windows = dig(v.train.data, "timing.windows") or []
    losses = {int(s): y for s, y in _steps_points(v)}
    pts, cum = [], 0.0
    for w in windows:
        e = _num(w.get("energy_j")) if isinstance(w, dict) else None
        if e is None:
            continue
        cum += e
        first, n = int(w.get("first_step", 0)), int(w.get("steps", 0))
        ls = [losses[i] for i in range(first, first + n) if i in losses]
        if ls:
            pts.append((cum, sum(ls) / len(ls)))
    if not pts:
        why = v.train.unavailable.get("energy.gpu_j_total") or v.train.reason("timing.windows.energy_j")
        return [], (v.steps_reason or why) if not losses else why
    return pts, None


def plot_loss_vs_energy(variants: list[Variant]) -> Plot:
    series = []
    for v in variants:
        pts, why = _window_energy_points(v)
        series.append(Series(v.name, v.color, _downsample(pts), v.dash, missing=why, failed_variant=not v.ok))
    unit = pick_unit("joule", [x for s in series for x, _ in s.points])
    return line_plot("loss-energy", "Training loss vs GPU energy", series, xlabel=f"cumulative GPU energy ({unit.name})",
                     ylabel="training loss (window mean)", xunit=unit,
                     caption="One point per timed window: cumulative GPU energy (counter) against the mean training "
                             "loss of that window; warm-up and evaluation are not included." + _seed_note(variants))


def pareto_front(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points not dominated in (x lower, y lower)."""
    front = []
    for name, x, y in points:
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for _, x2, y2 in points)
        if not dominated:
            front.append((name, x, y))
    return sorted(front, key=lambda p: p[1])


def energy_loss_points(variants: list[Variant]) -> tuple[list[tuple[str, float, float]], dict[str, str]]:
    """``(name, GPU J/token, validation loss)``: the table's means over seeds."""
    pts, missing = [], {}
    for v in variants:
        e, loss = v.cells.get("gpu_j_per_token"), v.cells.get("val_loss")
        if v.ok and e and loss and _num(e.value) is not None and _num(loss.value) is not None:
            pts.append((v.name, e.value, loss.value))
        else:
            missing[v.name] = v.train.not_ok_reason() or (
                e.reason if e and e.value is None else loss.reason if loss else None) or "no data"
    return pts, missing


def plot_energy_vs_loss(variants: list[Variant]) -> Plot:
    pts, missing = energy_loss_points(variants)
    front = pareto_front(pts)
    series = []
    for v in variants:
        if not any(n == v.name for n, _, _ in pts):
            series.append(Series(v.name, v.color, [], line=False, missing=missing.get(v.name), failed_variant=not v.ok))
            continue
        e, loss = v.cells["gpu_j_per_token"].estimate, v.cells["val_loss"].estimate
        series.append(Series(v.name, v.color, [(e.mean, loss.mean)], line=False, labels=True,
                             xerr=[(e.low, e.high) if e.has_interval else None],
                             yerr=[(loss.low, loss.high) if loss.has_interval else None]))
    unit = pick_unit("joule", [x for _, x, _ in pts], "/token")
    n = max((len(v.ok_runs) for v in variants), default=0)
    cap = ("Lower-left is better. Ringed points joined by the dashed line form the Pareto front: no other variant "
           "has both less energy and a lower loss." + (f" Pareto-optimal: {', '.join(x for x, _, _ in front)}."
                                                       if front else "")
           + (" Means over seeds with 95 % intervals in both directions." if n > 1 else
              " One seed per variant: no intervals, so the front may be noise."))
    if missing:
        cap += " Not shown: " + "; ".join(f"{n} ({why})" for n, why in missing.items()) + "."
    return line_plot("energy-loss", "Energy vs validation loss (Pareto front)", series,
                     xlabel=f"GPU energy over timed steps ({unit.name})", ylabel="validation loss", xunit=unit,
                     pareto=[(x, y) for _, x, y in front], caption=cap)


def _timed_windows(v: Variant) -> list[tuple[float, float]]:
    out = []
    for w in dig(v.train.data, "energy.windows") or []:
        a, b = (_num(w.get(k)) if isinstance(w, dict) else None for k in ("t_start_s", "t_end_s"))
        if a is not None and b is not None:
            out.append((a, b))
    return out


def plot_power(variants: list[Variant]) -> list[Plot]:
    data = {}
    for v in variants:
        pts = [(t, p) for r in v.power or [] if (t := _num(r.get("t_s"))) is not None
               and (p := _num(r.get("power_w"))) is not None]
        data[v.name] = pts
    if variants and not any(data.values()):
        return [Plot("power-all", "All variants", None, _common_reason((v.name, v.power_reason) for v in variants))]
    top = max(p for pts in data.values() for _, p in pts) * 1.05
    plots = []
    for v in variants:
        pts = data[v.name]
        if not pts:
            plots.append(Plot(f"power-{v.index}", v.name, None, v.power_reason or "power_train.csv has no samples"))
            continue
        windows = _timed_windows(v)
        with figure(f"power-{v.index}", f"GPU power: {v.name}", 3.6, 2.3) as f:
            f.axes(xlabel="time since start (s)", ylabel="power (W)", xs=[t for t, _ in pts], ylim=(0, top))
            for a, b in windows:
                f.ax.axvspan(a, b, color=SHADE, linewidth=0, zorder=0)
            f.draw([Series(v.name, v.color, _downsample(pts, 400))], legend=False)
            svg = f.svg()
        plots.append(Plot(f"power-{v.index}", v.name, svg, None, _power_caption(v, pts, windows)))
    return plots


def _power_caption(v: Variant, pts: list[tuple[float, float]], windows: list[tuple[float, float]]) -> str:
    inside = [p for t, p in pts if any(a <= t <= b for a, b in windows)]
    counter = _num(dig(v.train.data, "energy.gpu_mean_w"))
    seed = dig(v.train.data, "provenance.seed") if len(v.ok_runs) > 1 else None  # the timeline is one run's
    if windows:
        cap = ((f"Seed {seed}. " if seed is not None else "") + f"Timed windows (shaded, {len(windows)}): mean "
               + (f"{counter:.0f} W by the energy counter" if counter is not None else "by counter not measured")
               + (f", {sum(inside) / len(inside):.0f} W over the {len(inside)} samples inside them" if inside else "")
               + ".")
    else:
        cap = ("Timed windows: not recorded with their times in this document"
               + (f"; mean over them {counter:.0f} W by the energy counter." if counter is not None else "."))
    cap += f" Whole session incl. idle, compilation and evaluation: {len(pts)} samples, max {max(p for _, p in pts):.0f} W."
    if not v.ok:
        cap += f" {v.train.not_ok_reason()}"
    return cap


def _interval(c) -> tuple[float, float] | None:
    e = c.estimate if c is not None else None
    return (e.low, e.high) if e is not None and e.has_interval else None


def plot_memory(variants: list[Variant], config: dict) -> list[Plot]:
    plots = []
    for key, title in (("peak_allocated_bytes", "Peak GPU memory allocated (training)"),
                       ("peak_rss_bytes", "Peak host RSS (training process)")):
        items = [(v.name, v.color, v.cells[key].value, _interval(v.cells[key]), v.cells[key].reason, not v.ok)
                 for v in variants if key in v.cells]
        unit = pick_unit("bytes", [it[2] for it in items if it[2] is not None])
        svg = bar_chart(f"mem-{key}", items, title=title, unit=unit, xlabel=unit.name)
        seeds = max((len(v.ok_runs) for v in variants), default=0)
        plots.append(Plot(f"mem-{key}", title, svg, None if svg else _common_reason((it[0], it[4]) for it in items),
                          "Mean over seeds; error bars: 95 % interval." if seeds > 1 else
                          "One seed per variant: no interval."))
    plots.append(plot_cache(variants, config))
    return plots


def plot_cache(variants: list[Variant], config: dict) -> Plot:
    series, flat = [], []
    for v in variants:
        sizes, shape = cache.profile(v, config)
        if all(s.value is None for s in sizes.values()):
            series.append(Series(v.name, v.color, [], v.dash, missing=sizes[cache.LENGTHS[0]].reason))
            continue
        pts = [(L, sizes[L].value) for L in cache.LENGTHS if sizes[L].value is not None]
        series.append(Series(v.name, v.color, pts, v.dash))
        if shape != "grows with length":
            flat.append(f"{v.name} ({shape})")
    unit = pick_unit("bytes", [y for s in series for _, y in s.points])
    return line_plot("mem-cache", "Inference cache vs context length (batch 1)", series,
                     xlabel="context length (tokens)", ylabel="cache size", logx=True, logy=True,
                     yunit=unit, seq_x=True, base2_y=True, caption=(
                         f"All layers, bf16, at {', '.join(f'{x:,}' for x in cache.LENGTHS)} tokens. "
                         + (f"Flat or capped: {', '.join(flat)}; the others grow with every token. " if flat else "")
                         + "Derived from each train document (see the cache columns' tooltips)."))


def _latency_series(v: Variant, rows_of, xkey: str, ykey: str, y90: str) -> Series:
    """One variant's latency against ``xkey``: the mean over seeds with its 95 % interval where
    several seeds ran, else the one job's p50 with a whisker to its p90."""
    per_x: dict[float, list[float]] = {}
    p90: dict[float, float] = {}
    failed, why = [], None
    runs = v.ok_runs or v.runs[:1]
    for r in runs:
        rows, bad = rows_of(r)
        if bad:
            why = why or bad
            continue
        for row in rows:
            x = _num(row.get(xkey))
            if x is None:
                continue
            if row.get("status") not in (None, "ok"):
                failed.append((x, f"{row.get('status')}: {row.get('error', '')}"))
            elif _num(row.get(ykey)) is not None:
                per_x.setdefault(x, []).append(_num(row.get(ykey)))
                if _num(row.get(y90)) is not None:
                    p90.setdefault(x, _num(row.get(y90)))
    pts, err = [], []
    for x in sorted(per_x):
        e = bootstrap_mean(per_x[x])
        pts.append((x, e.mean))
        err.append((e.low, e.high) if e.has_interval else ((e.mean, p90[x]) if x in p90 else None))
    return Series(v.name, v.color, pts, v.dash, failed=failed, missing=why if not pts else None,
                  failed_variant=not v.ok, yerr=err)


def _probe_rows(section: str, fixed: dict[str, Any]):
    def rows_of(r):
        doc = r.probe
        bad = doc.not_ok_reason()
        if bad:
            return [], bad
        rows = [row for row in doc.data.get(section) or []
                if isinstance(row, dict) and all(row.get(k) == x for k, x in fixed.items())]
        return rows, (None if rows else doc.reason(section))
    return rows_of


def _whisker_note(variants: list[Variant]) -> str:
    seeds = {len(v.ok_runs) for v in variants if v.ok}
    if seeds and min(seeds) > 1:
        return " Error bars: 95 % interval of the mean over seeds."
    if seeds and max(seeds) > 1:
        return (" Error bars: 95 % interval of the mean over seeds where several ran, else p50 to p90 of the "
                "repeats of the one job.")
    return " Whiskers: p50 to p90 of the repeats (one job; not a confidence interval)."


def plot_inference(variants: list[Variant], ctx: Context) -> list[Plot]:
    plots = []
    s = [_latency_series(v, _probe_rows("prefill", {"batch_size": ctx.prefill_B}), "prompt_len", "ms_p50", "ms_p90")
         for v in variants]
    plots.append(line_plot("prefill", f"Prefill latency vs prompt length (batch {ctx.prefill_B})", s,
                           xlabel="prompt length (tokens)", ylabel="prefill latency p50 (ms)", logx=True, logy=True,
                           seq_x=True, caption="One forward over the prompt, median over repeats. × = out of memory "
                                               "/ error." + _whisker_note(variants)))
    # Decode: against context length when several were measured, else against batch size.
    lens = {r.get("prompt_len") for v in variants if v.probe.ok for r in v.probe.data.get("decode") or []
            if isinstance(r, dict) and r.get("batch_size") == ctx.decode_B}
    if len(lens) > 1:
        s = [_latency_series(v, _probe_rows("decode", {"batch_size": ctx.decode_B}), "prompt_len",
                             "ms_per_token_p50", "ms_per_token_p90") for v in variants]
        title, xlabel, seq = f"Decode latency per token vs context length (batch {ctx.decode_B})", "prompt length (tokens)", True
        cap = "Cached greedy decoding, median time per generated token."
    else:
        s = [_latency_series(v, _probe_rows("decode", {}), "batch_size", "ms_per_token_p50", "ms_per_token_p90")
             for v in variants]
        title = "Decode latency per token vs batch size" + (f" (context {ctx.decode_P})" if ctx.decode_P else "")
        xlabel, seq = "batch size", False
        cap = ("Cached greedy decoding, median time per generated token. Decoding was measured at one "
               f"context length ({ctx.decode_P} prompt tokens), so the x-axis is the batch size.")
    plots.append(line_plot("decode", title, s, xlabel=xlabel, ylabel="ms per token (p50)", logx=True, logy=True,
                           seq_x=seq, base2_x=not seq, caption=cap + _whisker_note(variants)))
    return plots


def sweep_series(variants: list[Variant], scope: str, mode: str, ykey: str, alt_reason: str | None = None,
                 config: dict | None = None) -> list[Series]:
    """Per variant: ``(T, p50)`` of the sweep with the p90 as ``yerr``'s upper end."""
    series = []
    # a null metric without a reason in sweep.json: the same metric's reason in a train document
    fallback = next((v.train.unavailable[alt_reason] for v in variants
                     if alt_reason and alt_reason in v.train.unavailable), None)
    scopes = dig(config, "sweep.scopes")
    for v in variants:
        pts, err, failed, why = [], [], [], v.sweep.not_ok_reason()
        older = False  # energy read over the timing's window (before 5ebf1d6): not the figure this plot shows
        if not why:
            for p in v.sweep.data.get("points") or []:
                if not isinstance(p, dict) or p.get("scope", "attention") != scope:
                    continue
                T, m = _num(p.get("seq_len")), p.get(mode)
                if T is None or not isinstance(m, dict):
                    continue
                if m.get("status") not in (None, "ok"):
                    failed.append((T, f"{m.get('status')}: {m.get('error', '')}"))
                elif ykey == "gpu_j_per_call" and m.get("energy_window_s") is None:
                    older = older or _num(m.get(ykey)) is not None
                elif _num(m.get(ykey)) is not None:
                    y, y90 = _num(m.get(ykey)), _num(m.get(ykey.replace("p50", "p90"))) if "p50" in ykey else None
                    pts.append((T, y))
                    err.append((y, y90) if y90 is not None else None)
            if not pts:
                unav = v.sweep.unavailable
                no_scope = (f"the sweep did not run the {scope} scope (sweep.scopes: {', '.join(scopes)})"
                            if isinstance(scopes, list) and scope not in scopes else
                            f"sweep.json has no {scope}-scope points" if not failed else None)
                why = (OLD_SWEEP_ENERGY if older else None) or (
                       unav.get(f"points.{ykey}") or (alt_reason and v.train.unavailable.get(alt_reason)) or fallback
                       or no_scope or (f"every length failed ({failed[0][1]})" if failed else None)
                       or f"{ykey} is null in sweep.json with no reason recorded")
        order = sorted(range(len(pts)), key=lambda i: pts[i][0])
        series.append(Series(v.name, v.color, [pts[i] for i in order], v.dash, failed=failed, missing=why,
                             yerr=[err[i] for i in order] if any(err) else None))
    return series


OLD_SWEEP_ENERGY = ("sweep.json reads energy over the timing's own window of milliseconds (before 5ebf1d6), "
                    "shorter than NVML's counter resolves: not plotted")
# the sweep's energy: NVML's counter over a window of seconds of back-to-back calls (attnbench.sweep)
ENERGY_NOTE = (" Energy: the GPU's whole draw (idle included) from NVML's energy counter over the point's energy"
               " window (sweep.energy_seconds of back-to-back calls), divided by its calls; no point where the window"
               " was under 1 s.")


def plot_sweep(variants: list[Variant], config: dict) -> tuple[list[Plot], list[Plot]]:
    main, more = [], []
    cap = ("Fixed tokens per call (B×T constant). Whiskers: p50 to p90 of the repeats (one job per variant; not "
           "a confidence interval). × at the top = out of memory / error at that T.")
    specs = [
        (main, "sweep-time", "attention", "forward_backward", "ms_p50", "Attention forward+backward time vs T",
         "time per call p50 (ms)", "ms", None),
        (main, "sweep-mem", "attention", "forward_backward", "peak_allocated_bytes",
         "Attention forward+backward peak memory vs T", "peak allocated", "bytes", "memory.peak_allocated_bytes"),
        (main, "sweep-energy", "attention", "forward_backward", "gpu_j_per_call",
         "Attention forward+backward GPU energy per call vs T", "GPU energy per call (J)", None, None),
        (more, "sweep-fwd", "attention", "forward", "ms_p50", "Attention forward-only time vs T",
         "time per call p50 (ms)", "ms", None),
        (more, "sweep-block", "block", "forward_backward", "ms_p50", "Whole block forward+backward time vs T",
         "time per call p50 (ms)", "ms", None),
        (more, "sweep-tflops", "attention", "forward_backward", "tflops", "Attention TFLOP/s vs T (analytic FLOPs)",
         "TFLOP/s", None, None),
    ]
    for dest, pid, scope, mode, ykey, title, ylabel, kind, alt in specs:
        s = sweep_series(variants, scope, mode, ykey, alt, config)
        unit = pick_unit(kind, [y for x in s for _, y in x.points]) if kind else None
        label = f"{ylabel} ({unit.name})" if kind == "bytes" else ylabel
        dest.append(line_plot(pid, title, s, xlabel="sequence length T (tokens)", ylabel=label + " (log)",
                              logx=True, logy=True, yunit=unit if kind == "bytes" else None, seq_x=True,
                              base2_y=kind == "bytes", caption=(cap if "p50" in ykey else cap.split(" Whiskers")[0]
                              + " × at the top = out of memory / error at that T.") + (ENERGY_NOTE if pid == "sweep-energy"
                                                                                     else "")))
    return main, more


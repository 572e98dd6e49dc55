"""The report's plots as hand-written inline SVG (no plotting library, no script): the chart
primitives (:func:`line_chart`, :func:`bar_chart`, ticks and scales) and the ``plot_*``
builders that pick the data of each figure; a figure without data carries the reason instead."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from markupsafe import Markup

from .format import _e, _num, dig, fmt_bytes, fmt_bytes_tick, fmt_joule, fmt_tick
from .load import BASELINE, Variant, _common_reason, _steps_points
from .table import Context

MAX_POINTS = 300  # per line in a plot (the CSV/JSON keep everything)


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float]]
    dash: str | None = None
    markers: list[tuple[float, float]] = field(default_factory=list)  # dots (e.g. validation loss)
    failed: list[tuple[float, str]] = field(default_factory=list)  # x positions marked "x" at the top
    missing: str | None = None  # reason when the series has no data
    failed_variant: bool = False  # the variant's training failed (legend says so)
    labels: bool = False  # write the name next to each point (scatter)
    line: bool = True


@dataclass
class Plot:
    id: str
    title: str
    svg: Markup | None = None
    missing: str | None = None  # "not measured: ..." when there is no svg
    caption: str = ""


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _log_ticks(lo: float, hi: float, base2: bool = False) -> list[float]:
    if base2:  # powers of two (bytes, sequence lengths, batch sizes)
        a, b = math.ceil(math.log2(lo) - 1e-9), math.floor(math.log2(hi) + 1e-9)
        if b - a >= 1:
            step = max(1, math.ceil((b - a + 1) / 8))
            return [2.0 ** k for k in range(a, b + 1, step)]
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    inside: list[float] = []
    for mults in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        if len(mults) == 1 and b - a <= 3:
            continue
        ticks = [m * 10 ** e for e in range(a, b + 1) for m in mults]
        inside = [t for t in ticks if lo * 0.999 <= t <= hi * 1.001]
        if len(inside) >= 3:
            return inside
    if len(inside) < 2:  # very narrow range: plain ticks
        inside = [t for t in _nice_ticks(lo, hi, 4) if t > 0]
    return inside


def _pow2_values(values: Iterable[float]) -> bool:
    vals = list(values)
    return bool(vals) and all(v >= 1 and float(v).is_integer() and (int(v) & (int(v) - 1)) == 0 for v in vals)


def _tick_labels(ticks: list[float], fmt: Callable[[float], str], log: bool) -> list[str]:
    """Tick labels; linear axes with the plain formatter get as many decimals as the step needs."""
    labels = [(fmt_bytes_tick if fmt is fmt_bytes else fmt)(t) for t in ticks]
    if (fmt is fmt_tick and not log and len(ticks) >= 2) or len(set(labels)) < len(labels):
        step = min(b - a for a, b in zip(ticks, ticks[1:])) if len(ticks) >= 2 else 1.0
        d = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
        if step > 0 and round(step / 10 ** math.floor(math.log10(step)), 6) == 2.5:
            d += 1
        if fmt is fmt_tick and all(abs(t) < 1e4 for t in ticks):
            labels = [f"{t:,.{d}f}" for t in ticks]
        elif len(set(labels)) < len(labels):
            labels = [f"{t:.{d + 3}g}" for t in ticks]
    return labels


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool):
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-12:
            pad = abs(lo) * 0.05 or 0.5
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.a, self.b, self.log = lo, hi, a, b, log

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(v)
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)


def _range(values: list[float], log: bool, zero: bool) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if log:
        return lo / 1.15, hi * 1.15
    if zero and lo >= 0:
        lo = 0.0
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return (lo if zero and lo == 0 else lo - pad), hi + pad


def line_chart(series: list[Series], *, title: str, xlabel: str, ylabel: str, logx: bool = False,
               logy: bool = False, fmt_x: Callable[[float], str] = fmt_tick,
               fmt_y: Callable[[float], str] = fmt_tick, y_zero: bool = False, width: int = 600,
               height: int = 330, legend: bool = True, pareto: list[tuple[float, float]] | None = None) -> Markup | None:
    """A line/scatter chart as inline SVG; ``None`` when no series has a point."""
    def usable(x, y):
        return (x is not None and y is not None and (not logx or x > 0) and (not logy or y > 0))

    pts = [(x, y) for s in series for (x, y) in s.points + s.markers if usable(x, y)]
    if not pts:
        return None
    xs = [x for x, _ in pts] + [x for s in series for x, _ in s.failed if not logx or x > 0]
    ys = [y for _, y in pts]
    legend_w = 150 if legend else 0
    L, R, T, B = 74, width - legend_w - 12, 22, height - 44
    xlo, xhi = _range(xs, logx, False)
    ylo, yhi = _range(ys, logy, y_zero)
    sx, sy = _Scale(xlo, xhi, L, R, logx), _Scale(ylo, yhi, B, T, logy)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img"><title>{_e(title)}</title>',
           f'<rect x="{L}" y="{T}" width="{R - L}" height="{B - T}" class="frame"/>']
    xt = _log_ticks(xlo, xhi, fmt_x is fmt_bytes or _pow2_values(xs)) if logx else _nice_ticks(xlo, xhi)
    yt = _log_ticks(ylo, yhi, fmt_y is fmt_bytes or _pow2_values(ys)) if logy else _nice_ticks(ylo, yhi)
    xt = [t for t in xt if xlo <= t <= xhi]
    yt = [t for t in yt if ylo <= t <= yhi]
    for t, label in zip(xt, _tick_labels(xt, fmt_x, logx)):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{B}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{B + 15}" class="tick" text-anchor="middle">{_e(label)}</text>')
    for t, label in zip(yt, _tick_labels(yt, fmt_y, logy)):
        y = sy(t)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{R}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{L - 5}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_e(label)}</text>')
    out.append(f'<text x="{(L + R) / 2:.0f}" y="{height - 8}" class="axis" text-anchor="middle">{_e(xlabel)}</text>'
               f'<text x="12" y="{(T + B) / 2:.0f}" class="axis" text-anchor="middle" '
               f'transform="rotate(-90 12 {(T + B) / 2:.0f})">{_e(ylabel)}</text>')
    if pareto:
        front = sorted((x, y) for x, y in pareto if usable(x, y))
        if len(front) >= 2:
            d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(front))
            out.append(f'<path d="{d}" class="pareto"><title>Pareto front: no other variant has both less '
                       f'energy and lower loss</title></path>')
        for x, y in front:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="8" class="pareto-ring"/>')
    for s in series:
        good = [(x, y) for x, y in s.points if usable(x, y)]
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        tip = f"<title>{_e(s.name)}</title>"
        if s.line and len(good) >= 2:
            d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(good))
            out.append(f'<path d="{d}" fill="none" stroke="{s.color}" stroke-width="1.8"{dash}>{tip}</path>')
        if not s.line or len(good) < 2 or len(good) <= 12:
            for x, y in good:
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{4 if not s.line else 2.5}" '
                           f'fill="{s.color}"><title>{_e(s.name)}: {_e(fmt_x(x))}, {_e(fmt_y(y))}</title></circle>')
        for x, y in s.markers:
            if usable(x, y):
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#fff" stroke="{s.color}" '
                           f'stroke-width="1.6"><title>{_e(s.name)}: {_e(fmt_y(y))} at {_e(fmt_x(x))}</title></circle>')
        if s.labels:
            for x, y in good:
                out.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 6:.1f}" class="pt-label">{_e(s.name)}</text>')
        for x, why in s.failed:
            if logx and x <= 0:
                continue
            cx = sx(x)
            out.append(f'<text x="{cx:.1f}" y="{T + 12}" class="fail-mark" fill="{s.color}" text-anchor="middle">×'
                       f'<title>{_e(s.name)} at {_e(fmt_x(x))}: {_e(why)}</title></text>')
    if legend:
        lx, ly = width - legend_w + 4, T + 4
        for i, s in enumerate(series):
            y = ly + i * 17
            if y > height - 10:
                out.append(f'<text x="{lx}" y="{y}" class="legend">… {len(series) - i} more</text>')
                break
            has = any(usable(x, y_) for x, y_ in s.points + s.markers)
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<line x1="{lx}" y1="{y - 4}" x2="{lx + 18}" y2="{y - 4}" stroke="{s.color}" '
                       f'stroke-width="3"{dash}/>')
            note = "" if has else (" (failed)" if s.failed_variant else " (not measured)")
            why = f"<title>{'failed' if s.failed_variant else 'not measured'}: {_e(s.missing or 'no data')}</title>" \
                if not has else ""
            cls = "legend" if has else "legend muted"
            out.append(f'<text x="{lx + 24}" y="{y}" class="{cls}">{_e(_short(s.name, 14))}{note}{why}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def bar_chart(items: list[tuple[str, str, float | None, str | None, bool]], *, title: str,
              fmt: Callable[[float], str], width: int = 420) -> Markup | None:
    """Horizontal bars, one per variant ``(name, color, value, reason, failed)``; a null value
    says "not measured" (or "failed"), with the reason in a tooltip."""
    vals = [v for _, _, v, _, _ in items if v is not None]
    if not vals:
        return None
    row, top = 22, 6
    height = top + row * len(items) + 8
    L, R = 120, width - 80
    vmax = max(vals) or 1.0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img"><title>{_e(title)}</title>']
    for i, (name, color, v, why, failed) in enumerate(items):
        y = top + i * row
        out.append(f'<text x="{L - 6}" y="{y + 14}" class="tick" text-anchor="end">{_e(_short(name, 18))}</text>')
        if v is None:
            word = "failed" if failed else "not measured"
            out.append(f'<text x="{L + 4}" y="{y + 14}" class="legend muted">— {word}'
                       f'<title>{word}: {_e(why)}</title></text>')
            continue
        w = max(1.0, (R - L) * v / vmax)
        out.append(f'<rect x="{L}" y="{y + 3}" width="{w:.1f}" height="{row - 7}" fill="{color}">'
                   f'<title>{_e(name)}: {_e(fmt(v))}</title></rect>'
                   f'<text x="{L + w + 5:.1f}" y="{y + 14}" class="tick">{_e(fmt(v))}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _downsample(points: list[tuple[float, float]], n: int = MAX_POINTS) -> list[tuple[float, float]]:
    if len(points) <= n:
        return points
    k = math.ceil(len(points) / n)
    out = []
    for i in range(0, len(points), k):
        chunk = points[i:i + k]
        out.append((chunk[-1][0], sum(y for _, y in chunk) / len(chunk)))
    return out


def plot_loss_vs_step(variants: list[Variant]) -> Plot:
    series = []
    for v in variants:
        pts = _downsample(_steps_points(v))
        vh = dig(v.train.data, "training.val_history") if v.ok else None
        markers = [(_num(h.get("step")), _num(h.get("val_loss"))) for h in vh or [] if isinstance(h, dict)]
        series.append(Series(v.name, v.color, pts, v.dash, markers=[m for m in markers if None not in m],
                             missing=v.steps_reason, failed_variant=not v.ok))
    svg = line_chart(series, title="Loss vs step", xlabel="step", ylabel="loss")
    return Plot("loss-step", "Loss vs training step", svg,
                None if svg else _common_reason((s.name, s.missing) for s in series),
                "Lines: training loss (bin means when there are many steps); open dots: validation loss.")


def plot_loss_vs_baseline(variants: list[Variant]) -> Plot:
    """Per-step training loss minus the baseline's (same seed and batches, so the gap is the variant's)."""
    base = next((v for v in variants if v.name == BASELINE and v.ok), None)
    title = f"Training loss minus {BASELINE}'s, per step"
    if base is None or not _steps_points(base):
        why = (f"no finished {BASELINE} variant to compare with" if base is None
               else f"{BASELINE}: {base.steps_reason or 'no steps.csv'}")
        return Plot("loss-delta", title, None, why)
    ref = dict(_steps_points(base))
    series = []
    for v in variants:
        pts = [(s_, y - ref[s_]) for s_, y in _steps_points(v) if s_ in ref]
        series.append(Series(v.name, v.color, _downsample(pts), v.dash, missing=v.steps_reason,
                             failed_variant=not v.ok))
    svg = line_chart(series, title=title, xlabel="step", ylabel=f"loss − {BASELINE} loss")
    return Plot("loss-delta", title, svg, None if svg else _common_reason((x.name, x.missing) for x in series),
                f"Every variant sees the same batches in the same order, so this isolates the loss gap to {BASELINE} "
                "(below 0 = lower loss). Bin means when there are many steps.")


def _window_energy_points(v: Variant) -> tuple[list[tuple[float, float]], str | None]:
    if not v.ok:
        return [], v.train.not_ok_reason()
    windows = dig(v.train.data, "timing.windows") or []
    losses = {int(s): y for s, y in _steps_points(v)}
    pts, cum, used = [], 0.0, 0
    for w in windows:
        e = _num(w.get("energy_j")) if isinstance(w, dict) else None
        if e is None:
            continue
        cum += e
        first, n = int(w.get("first_step", 0)), int(w.get("steps", 0))
        ls = [losses[i] for i in range(first, first + n) if i in losses]
        if ls:
            pts.append((cum, sum(ls) / len(ls)))
            used += 1
    if not pts:
        why = v.train.unavailable.get("energy.gpu_j_total") or v.train.reason("timing.windows.energy_j")
        if not losses:
            why = v.steps_reason or why
        return [], why
    return pts, None


def plot_loss_vs_energy(variants: list[Variant]) -> Plot:
    series = []
    for v in variants:
        pts, why = _window_energy_points(v)
        series.append(Series(v.name, v.color, _downsample(pts), v.dash, missing=why, failed_variant=not v.ok))
    svg = line_chart(series, title="Training loss vs cumulative GPU energy", xlabel="cumulative GPU energy (J)",
                     ylabel="training loss (window mean)", fmt_x=fmt_joule)
    return Plot("loss-energy", "Training loss vs GPU energy", svg,
                None if svg else _common_reason((s.name, s.missing) for s in series),
                "One point per timed window: cumulative GPU energy (counter) against the mean training loss "
                "of that window; warm-up and evaluation are not included.")


def pareto_front(points: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Points not dominated in (x lower, y lower)."""
    front = []
    for name, x, y in points:
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for _, x2, y2 in points)
        if not dominated:
            front.append((name, x, y))
    return sorted(front, key=lambda p: p[1])


def energy_loss_points(variants: list[Variant]) -> tuple[list[tuple[str, float, float]], dict[str, str]]:
    pts, missing = [], {}
    for v in variants:
        e, why_e = v.train.get("energy.gpu_j_total")
        loss, why_l = v.train.get("training.val_loss")
        if _num(e) is not None and _num(loss) is not None and v.ok:
            pts.append((v.name, _num(e), _num(loss)))
        else:
            missing[v.name] = (v.train.not_ok_reason() or (why_e if _num(e) is None else why_l) or "no data")
    return pts, missing


def plot_energy_vs_loss(variants: list[Variant]) -> Plot:
    pts, missing = energy_loss_points(variants)
    front = pareto_front(pts)
    by = {n: (x, y) for n, x, y in pts}
    series = [Series(v.name, v.color, [by[v.name]] if v.name in by else [], line=False, labels=True,
                     missing=missing.get(v.name), failed_variant=not v.ok) for v in variants]
    svg = line_chart(series, title="GPU energy vs validation loss", xlabel="GPU energy over timed steps (J)",
                     ylabel="validation loss", fmt_x=fmt_joule, pareto=[(x, y) for _, x, y in front])
    cap = ("Lower-left is better. Ringed points joined by the dashed line form the Pareto front: "
           "no other variant has both less energy and a lower loss."
           + (f" Pareto-optimal: {', '.join(n for n, _, _ in front)}." if front else ""))
    return Plot("energy-loss", "Energy vs validation loss (Pareto front)", svg,
                None if svg else _common_reason(missing.items()), cap)


def plot_power(variants: list[Variant]) -> list[Plot]:
    data = {}
    for v in variants:
        pts = []
        for r in v.power or []:
            t, p = _num(r.get("t_s")), _num(r.get("power_w"))
            if t is not None and p is not None:
                pts.append((t, p))
        data[v.name] = pts
    plots = []
    if variants and not any(data.values()):
        return [Plot("power-all", "All variants", None, _common_reason((v.name, v.power_reason) for v in variants))]
    for v in variants:
        pts = data[v.name]
        if not pts:
            plots.append(Plot(f"power-{v.index}", v.name, None, v.power_reason or "power_train.csv has no samples"))
            continue
        svg = line_chart([Series(v.name, v.color, _downsample(pts, 400))], title=f"GPU power: {v.name}",
                         xlabel="time since start (s)", ylabel="power (W)", width=340, height=190, legend=False,
                         y_zero=True, fmt_y=lambda w: f"{w:.0f}")
        mean = sum(p for _, p in pts) / len(pts)
        cap = f"{len(pts)} samples, mean {mean:.0f} W, max {max(p for _, p in pts):.0f} W"
        if not v.ok:
            cap += f"; {v.train.not_ok_reason()}"
        plots.append(Plot(f"power-{v.index}", v.name, svg, None, cap))
    return plots


def plot_memory(variants: list[Variant]) -> list[Plot]:
    plots = []
    for key, title, doc_attr, path in (
            ("peak_allocated_bytes", "Peak GPU memory allocated (training)", "train", "memory.peak_allocated_bytes"),
            ("peak_rss_bytes", "Peak host RSS (training process)", "train", "memory.peak_rss_bytes"),
            ("cache_bytes_per_token", "Inference cache per token (all layers, bf16)", None, None)):
        items = []
        for v in variants:
            c = v.cells.get(key)
            if c is None:
                continue
            items.append((v.name, v.color, c.value if isinstance(c.value, (int, float)) else None, c.reason,
                          not v.ok))
        svg = bar_chart(items, title=title, fmt=fmt_bytes)
        plots.append(Plot(f"mem-{key}", title, svg, None if svg else _common_reason((it[0], it[3]) for it in items)))
    return plots


def _probe_series(variants: list[Variant], section: str, xkey: str, fixed: dict[str, Any], ykey: str
                  ) -> list[Series]:
    series = []
    for v in variants:
        pts, failed = [], []
        why = v.probe.not_ok_reason()
        if not why:
            for r in v.probe.data.get(section) or []:
                if not isinstance(r, dict) or any(r.get(k) != x for k, x in fixed.items()):
                    continue
                x = _num(r.get(xkey))
                if x is None:
                    continue
                if r.get("status") not in (None, "ok"):
                    failed.append((x, f"{r.get('status')}: {r.get('error', '')}"))
                elif _num(r.get(ykey)) is not None:
                    pts.append((x, _num(r.get(ykey))))
            if not pts:
                why = v.probe.reason(f"{section}.{ykey}")
        series.append(Series(v.name, v.color, sorted(pts), v.dash, failed=failed, missing=why,
                             failed_variant=not v.ok))
    return series


def plot_inference(variants: list[Variant], ctx: Context) -> list[Plot]:
    plots = []
    s = _probe_series(variants, "prefill", "prompt_len", {"batch_size": ctx.prefill_B}, "ms_p50")
    svg = line_chart(s, title="Prefill latency vs prompt length", xlabel="prompt length (tokens)",
                     ylabel="prefill latency p50 (ms)", logx=True, logy=True)
    plots.append(Plot("prefill", f"Prefill latency vs prompt length (batch {ctx.prefill_B})", svg,
                      None if svg else _common_reason((x.name, x.missing) for x in s),
                      "One forward over the prompt, median over repeats. × = out of memory / error."))
    # Decode: against context length when several were measured, else against batch size.
    lens = {r.get("prompt_len") for v in variants if v.probe.ok for r in v.probe.data.get("decode") or []
            if isinstance(r, dict) and r.get("batch_size") == ctx.decode_B}
    if len(lens) > 1:
        s = _probe_series(variants, "decode", "prompt_len", {"batch_size": ctx.decode_B}, "ms_per_token_p50")
        title, xlabel = f"Decode latency per token vs context length (batch {ctx.decode_B})", "prompt length (tokens)"
        cap = "Cached greedy decoding, median time per generated token."
    else:
        s = _probe_series(variants, "decode", "batch_size", {}, "ms_per_token_p50")
        title = "Decode latency per token vs batch size" + (f" (context {ctx.decode_P})" if ctx.decode_P else "")
        xlabel = "batch size"
        cap = ("Cached greedy decoding, median time per generated token. Decoding was measured at one "
               f"context length ({ctx.decode_P} prompt tokens), so the x-axis is the batch size.")
    svg = line_chart(s, title=title, xlabel=xlabel, ylabel="ms per token (p50)", logx=True, logy=True)
    plots.append(Plot("decode", title, svg, None if svg else _common_reason((x.name, x.missing) for x in s), cap))
    return plots


def _sweep_series(variants: list[Variant], scope: str, mode: str, ykey: str, alt_reason: str | None = None
                  ) -> list[Series]:
    series = []
    # a null metric without a reason in sweep.json: the same metric's reason in a train document
    fallback = next((v.train.unavailable[alt_reason] for v in variants
                     if alt_reason and alt_reason in v.train.unavailable), None)
    for v in variants:
        pts, failed, why = [], [], v.sweep.not_ok_reason()
        if not why:
            for p in v.sweep.data.get("points") or []:
                if not isinstance(p, dict) or p.get("scope", "attention") != scope:
                    continue
                T, m = _num(p.get("seq_len")), p.get(mode)
                if T is None or not isinstance(m, dict):
                    continue
                if m.get("status") not in (None, "ok"):
                    failed.append((T, f"{m.get('status')}: {m.get('error', '')}"))
                elif _num(m.get(ykey)) is not None:
                    pts.append((T, _num(m.get(ykey))))
            if not pts:
                unav = v.sweep.unavailable
                why = (unav.get(f"points.{ykey}") or (alt_reason and v.train.unavailable.get(alt_reason)) or fallback
                       or (f"every length failed ({failed[0][1]})" if failed else None)
                       or f"{ykey} is null in sweep.json with no reason recorded")
        series.append(Series(v.name, v.color, sorted(pts), v.dash, failed=failed, missing=why))
    return series


def plot_sweep(variants: list[Variant]) -> tuple[list[Plot], list[Plot]]:
    main, more = [], []
    specs = [
        (main, "sweep-time", "attention", "forward_backward", "ms_p50", "Attention forward+backward time vs T",
         "time per call p50 (ms)", fmt_tick, None),
        (main, "sweep-mem", "attention", "forward_backward", "peak_allocated_bytes",
         "Attention forward+backward peak memory vs T", "peak allocated", fmt_bytes, "memory.peak_allocated_bytes"),
        (more, "sweep-fwd", "attention", "forward", "ms_p50", "Attention forward-only time vs T",
         "time per call p50 (ms)", fmt_tick, None),
        (more, "sweep-block", "block", "forward_backward", "ms_p50", "Whole block forward+backward time vs T",
         "time per call p50 (ms)", fmt_tick, None),
        (more, "sweep-tflops", "attention", "forward_backward", "tflops", "Attention TFLOP/s vs T (analytic FLOPs)",
         "TFLOP/s", fmt_tick, None),
    ]
    for dest, pid, scope, mode, ykey, title, ylabel, fy, alt in specs:
        s = _sweep_series(variants, scope, mode, ykey, alt)
        svg = line_chart(s, title=title, xlabel="sequence length T (tokens, log)", ylabel=ylabel + " (log)",
                         logx=True, logy=True, fmt_y=fy)
        dest.append(Plot(pid, title, svg, None if svg else _common_reason((x.name, x.missing) for x in s),
                         "Fixed tokens per call (B×T constant). × at the top = out of memory / error at that T."))
    return main, more

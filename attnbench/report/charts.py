"""Chart primitives drawn with matplotlib and inlined in the page as SVG.

matplotlib rather than hand-written SVG: error bars, log axes whose end ticks are labelled,
labels that do not overlap and shaded windows come with it, and the SVG it writes (text kept
as text, glyphs not outlined) is about the size of the hand-written one (see the module
``plots``).  Rendering uses matplotlib's Figure with the Agg and SVG canvases directly (no
pyplot, so no GUI backend is ever selected, and no global state changes); each figure's ids are prefixed with its plot id so that several
figures live in one page, and ``<title>`` carries its accessible name.  Text from the
documents is escaped by matplotlib's SVG writer and never parsed as mathtext.
"""

from __future__ import annotations

import io
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from markupsafe import Markup, escape
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FixedLocator, Formatter, MaxNLocator, NullLocator

from .format import SCALES, Unit

FONT = 10.5  # points; a 5.2-inch figure shown 360-480 px wide keeps it 10-14 px on screen
RC = {"svg.fonttype": "none", "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "font.size": FONT,
      "text.parse_math": False, "axes.titlesize": FONT, "axes.labelsize": FONT, "xtick.labelsize": FONT - 1,
      "ytick.labelsize": FONT - 1, "legend.fontsize": FONT - 1, "axes.edgecolor": "#9aa3af",
      "axes.grid": True, "grid.color": "#e6e9ee", "grid.linewidth": 0.7, "axes.axisbelow": True,
      "xtick.color": "#444", "ytick.color": "#444", "xtick.major.size": 0, "ytick.major.size": 0, "axes.labelcolor": "#222", "svg.image_inline": True}
SHADE = "#d7e6f5"  # timed windows


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float]]
    dash: str | None = None
    markers: list[tuple[float, float]] = field(default_factory=list)  # open dots (e.g. validation loss)
    failed: list[tuple[float, str]] = field(default_factory=list)  # x positions marked "×" at the top
    missing: str | None = None  # reason when the series has no data
    failed_variant: bool = False  # the variant's training failed (legend says so)
    labels: bool = False  # write the name next to each point (scatter)
    line: bool = True
    yerr: list[tuple[float, float] | None] | None = None  # (low, high) per point of ``points``
    xerr: list[tuple[float, float] | None] | None = None
    marker_err: list[tuple[float, float] | None] | None = None  # (low, high) per marker


def _dashes(dash: str | None):
    return (0, tuple(float(x) for x in dash.split())) if dash else "solid"


def _plain(v: float) -> str:
    """A log-axis tick: 0.5, 2, 20, 1,000 (no trailing zeros, at most three digits of precision)."""
    return f"{v:,.0f}" if abs(v) >= 100 or float(v).is_integer() else f"{v:.3g}"


def _compact_bytes(v: float) -> str:
    """A bytes tick in its own binary unit: 512 KiB, 2 MiB, 1 GiB."""
    size, name = next(((s, n) for s, n in SCALES["bytes"] if abs(v) >= s), SCALES["bytes"][-1])
    return f"{v / size:.3g} {name}"


def seq_label(v: float) -> str:
    """Token counts on an axis: 512, 1k, 2k, ..., 32k."""
    return f"{v / 1024:g}k" if v >= 1024 else f"{v:g}"


def log_ticks(lo: float, hi: float, base2: bool) -> list[float]:
    """Ticks that enclose [lo, hi] (the axis ends on a labelled tick at both ends, and spans at
    least two ticks): powers of two for token counts and bytes, else 1-2-5 steps (or
    1-10-100 over many decades)."""
    if base2:
        a, b = math.floor(math.log2(lo) + 1e-9), math.ceil(math.log2(hi) - 1e-9)
        if a == b:
            a, b = a - 1, b + 1
        step = max(1, math.ceil((b - a) / 7))
        return [2.0 ** k for k in range(a, b + step, step)]
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    mults = (1,) if b - a > 3 else (1, 2, 5) if b - a > 1 else (1, 1.5, 2, 3, 5, 7)
    cand = sorted(m * 10.0 ** e for e in range(a - 1, b + 2) for m in mults)
    first = max(i for i, t in enumerate(cand) if t <= lo * (1 + 1e-9))
    last = min(i for i, t in enumerate(cand) if t >= hi * (1 - 1e-9))
    if first == last:
        first, last = first - 1, last + 1
    return cand[first:last + 1]


class _UnitLocator(MaxNLocator):
    """Round tick steps in the display unit (2 GiB, not 2.33 GiB = 2.5e9 bytes)."""

    def __init__(self, factor: float):
        super().__init__(nbins=6, steps=[1, 2, 2.5, 5, 10])
        self.factor = factor

    def tick_values(self, vmin, vmax):
        return super().tick_values(vmin * self.factor, vmax * self.factor) / self.factor


class _Ticks(Formatter):
    """Tick labels in the axis's unit, with as many decimals as the tick step needs."""

    def __init__(self, unit: Unit | None, log: bool, seq: bool):
        self.unit, self.log, self.seq = unit, log, seq

    def __call__(self, x, pos=None):
        return self.format_ticks([x])[0]

    def format_ticks(self, values):
        if self.seq:
            return [seq_label(v) for v in values]
        if self.unit is not None and self.unit.kind == "bytes" and self.log:
            return [_compact_bytes(v) for v in values]
        f = self.unit.factor if self.unit else 1.0
        vals = [v * f for v in values]
        if self.log:
            return [_plain(v) for v in vals]
        steps = [b - a for a, b in zip(vals, vals[1:]) if b > a]
        d = max(0, -math.floor(math.log10(min(steps)) + 1e-9)) if steps else 0
        if steps and round(min(steps) / 10 ** math.floor(math.log10(min(steps))), 6) == 2.5:
            d += 1
        return [f"{v:,.{d}f}" for v in vals]


@contextmanager
def figure(pid: str, title: str, width: float = 5.2, height: float = 3.3):
    """A :class:`Figure` under the report's matplotlib settings (``with figure(...) as f:``;
    call ``f.svg()`` inside the block)."""
    with rc_context({**RC, "svg.hashsalt": pid}):
        yield Figure(pid, title, width, height)


class Figure:
    """One matplotlib figure that renders to inline SVG (``svg()``)."""

    def __init__(self, pid: str, title: str, width: float, height: float):
        self.pid, self.title = pid, title
        self.fig = MplFigure(figsize=(width, height), layout="constrained")
        self.ax = self.fig.add_subplot()

    def axes(self, *, xlabel: str, ylabel: str, logx=False, logy=False, xunit: Unit | None = None,
             yunit: Unit | None = None, xs=(), ys=(), y_zero=False, ylim=None, seq_x=False, base2_x=False,
             base2_y=False, categorical_y=False):
        """Scales, limits, ticks and labels.  Log axes end on labelled ticks (:func:`log_ticks`);
        linear axes get ticks at round numbers of the axis's display unit."""
        ax = self.ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        for axis, log, vals, unit, base2, lim in ((ax.xaxis, logx, xs, xunit, seq_x or base2_x, None),
                                                  (ax.yaxis, logy, ys, yunit, base2_y, ylim)):
            if categorical_y and axis is ax.yaxis:
                continue
            vals = [v for v in vals if v is not None and (not log or v > 0)]
            setlim = ax.set_xlim if axis is ax.xaxis else ax.set_ylim
            if log:
                (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log", base=2 if base2 else 10)
                if vals:
                    ticks = log_ticks(min(vals), max(vals), base2)
                    axis.set_major_locator(FixedLocator(ticks))
                    setlim(*(lim or (ticks[0], ticks[-1])))
                axis.set_minor_locator(NullLocator())
            else:
                axis.set_major_locator(_UnitLocator(unit.factor if unit else 1.0))
                if lim:
                    setlim(*lim)
                elif y_zero and axis is ax.yaxis and vals and min(vals) >= 0:
                    ax.set_ylim(bottom=0)
            axis.set_major_formatter(_Ticks(unit, log, seq=seq_x and axis is ax.xaxis))
        ax.margins(x=0.02 if logx else 0.03)

    def draw(self, series: list[Series], *, legend: bool = True, pareto=None):
        ax = self.ax
        handles = []
        for s in series:
            has = bool(s.points or s.markers)
            style = dict(color=s.color, linestyle=_dashes(s.dash), linewidth=1.7)
            xs, ys = [x for x, _ in s.points], [y for _, y in s.points]
            if s.line and len(xs) >= 2:
                (h,) = ax.plot(xs, ys, marker="o" if len(xs) <= 12 else None, markersize=3.2, **style)
            else:
                (h,) = ax.plot(xs, ys, linestyle="none", marker="o", markersize=5.5, color=s.color)
            if s.markers:
                ax.plot([x for x, _ in s.markers], [y for _, y in s.markers], linestyle="none", marker="o",
                        markersize=4.5, markerfacecolor="white", markeredgecolor=s.color, markeredgewidth=1.3)
            _errorbars(ax, s)
            for x, _why in s.failed:
                ax.plot([x], [0.96], marker="x", markersize=7, markeredgewidth=2, color=s.color,
                        transform=ax.get_xaxis_transform(), clip_on=False)
            note = "" if has else (" (failed)" if s.failed_variant else " (not measured)")
            h.set_label(s.name + note)
            handles.append(h)
        if pareto:
            front = sorted(pareto)
            if len(front) >= 2:
                ax.plot([x for x, _ in front], [y for _, y in front], linestyle=(0, (4, 3)), color="#333",
                        linewidth=1.1, zorder=1)
            ax.plot([x for x, _ in front], [y for _, y in front], linestyle="none", marker="o", markersize=12,
                    markerfacecolor="none", markeredgecolor="#333", markeredgewidth=1.1)
        labelled = [(x, y, s.name, s.color) for s in series if s.labels for x, y in s.points]
        if labelled:
            place_labels(self.fig, ax, labelled)
        if legend and len(series) > 1 and not labelled:  # labelled points name themselves
            self.fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)),
                            frameon=False, handlelength=2.2, columnspacing=1.2)

    def svg(self) -> Markup:
        buf = io.StringIO()
        self.fig.savefig(buf, format="svg", metadata={"Date": None})
        return Markup(inline_svg(buf.getvalue(), self.pid, self.title))


def _errorbars(ax, s: Series) -> None:
    """One error-bar collection per series and direction ((low, high) bounds, None = none)."""
    for pts, err, vertical in ((s.points, s.yerr, True), (s.points, s.xerr, False), (s.markers, s.marker_err, True)):
        have = [((x, y), e) for (x, y), e in zip(pts, err or []) if e is not None]
        if not have:
            continue
        xs, ys = [p[0] for p, _ in have], [p[1] for p, _ in have]
        centre = ys if vertical else xs
        spread = [[max(0.0, c - e[0]) for c, (_, e) in zip(centre, have)],
                  [max(0.0, e[1] - c) for c, (_, e) in zip(centre, have)]]
        # caps only on scattered points: on a line they add clutter (and a third of the SVG)
        ax.errorbar(xs, ys, **{"yerr" if vertical else "xerr": spread}, fmt="none", ecolor=s.color,
                    elinewidth=1.3, capsize=0 if s.line and len(s.points) > 1 else 3.5, capthick=1.3, clip_on=False)


def place_labels(fig, ax, points: list[tuple[float, float, str, str]]) -> None:
    """Write each point's name beside it without overlapping another name or leaving the
    axes: try right, left, above and below at growing distances; keep the first free spot."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    frame = ax.get_window_extent(renderer)
    taken = []
    for x, y, name, color in sorted(points, key=lambda p: (p[1], p[0])):
        px, py = ax.transData.transform((x, y))
        text = ax.annotate(name, (x, y), xytext=(7, 0), textcoords="offset points", fontsize=FONT - 1,
                           color="#222", va="center", ha="left", annotation_clip=False)
        for dist in (9, 16, 24, 34):  # points: clear of the point's marker and Pareto ring
            placed = False
            for dx, dy, ha, va in ((dist, 0, "left", "center"), (-dist, 0, "right", "center"),
                                   (0, dist, "center", "bottom"), (0, -dist, "center", "top"),
                                   (dist, dist, "left", "bottom"), (dist, -dist, "left", "top"),
                                   (-dist, dist, "right", "bottom"), (-dist, -dist, "right", "top")):
                text.set_position((dx, dy))
                text.set_ha(ha)
                text.set_va(va)
                box = text.get_window_extent(renderer).expanded(1.05, 1.15)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(box.overlaps(b) for b in taken):
                    taken.append(box)
                    placed = True
                    break
            if placed:
                break
        else:
            taken.append(text.get_window_extent(renderer))


_DROP = re.compile(r"<\?xml[^>]*\?>\s*|<!DOCTYPE[^>]*>\s*|<metadata>.*?</metadata>\s*", re.S)
_IDS = re.compile(r'\sid="([^"]+)"')
_COORD = re.compile(r"(-?\d+\.\d{2})\d+")
_NO_ROTATION = re.compile(r' transform="rotate\(-?0 [-\d.]+ [-\d.]+\)"')


def inline_svg(text: str, pid: str, title: str) -> str:
    """matplotlib's SVG document as an element for the page: no XML prolog or metadata; ids
    that something refers to prefixed with ``pid`` (several figures share one page), the rest
    dropped; coordinates to 0.01 pt and no indentation (a third of the size, nothing visible
    lost); the fixed point size dropped for CSS scaling (the viewBox keeps the aspect); a
    class and an accessible title."""
    text = _DROP.sub("", text)
    used = set(re.findall(r'href="#([^"]+)"', text)) | set(re.findall(r"url\(#([^)]+)\)", text))
    text = _IDS.sub(lambda m: f' id="{pid}-{m.group(1)}"' if m.group(1) in used else "", text)
    for old in used:
        text = text.replace(f'href="#{old}"', f'href="#{pid}-{old}"').replace(f"url(#{old})", f"url(#{pid}-{old})")
    text = _NO_ROTATION.sub("", _COORD.sub(r"\1", text))
    text = _unwrap_groups(re.sub(r"\s*\n\s*", " ", text).replace("> <", "><"))
    text = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1', text, count=1)
    return text.replace("<svg ", f'<svg class="plot" role="img" aria-label="{escape(title)}" ', 1) \
               .replace(">", f"><title>{escape(title)}</title>", 1).strip()


def _unwrap_groups(text: str) -> str:
    """Drop ``<g>`` elements without attributes (they group nothing a renderer sees), keeping
    their content; matplotlib wraps every artist in one."""
    out, stack = [], []
    for i, part in enumerate(re.split(r"(<g>|<g\s[^>]*[^/]>|</g>)", text)):
        if i % 2 == 0:  # between group tags
            out.append(part)
        elif part == "</g>":
            if stack.pop():
                out.append(part)
        else:
            stack.append(part != "<g>")
            if stack[-1]:
                out.append(part)
    return "".join(out)


def bar_chart(pid: str, items: list[tuple[str, str, float | None, tuple[float, float] | None, str | None, bool]],
              *, title: str, unit: Unit, xlabel: str) -> Markup | None:
    """Horizontal bars, one per variant ``(name, color, value, interval, reason, failed)``,
    with the 95 % interval as an error bar; a null value says "not measured" or "failed"."""
    vals = [v for _, _, v, _, _, _ in items if v is not None]
    if not vals:
        return None
    top = max(vals + [it[3][1] for it in items if it[3]])
    with figure(pid, title, 5.2, 0.9 + 0.3 * len(items)) as fig:
        return _bars(fig, items, top, unit, xlabel)


def _bars(fig: Figure, items, top: float, unit: Unit, xlabel: str) -> Markup:
    ax = fig.ax
    names = [n for n, *_ in items][::-1]
    for i, (name, color, v, iv, _why, failed) in enumerate(items[::-1]):
        if v is None:
            ax.text(0, i, "  — failed" if failed else "  — not measured", va="center", color="#888",
                    fontstyle="italic", fontsize=FONT - 1)
            continue
        ax.barh([i], [v], color=color, height=0.62)
        if iv:
            ax.errorbar([v], [i], xerr=[[max(0.0, v - iv[0])], [max(0.0, iv[1] - v)]], fmt="none", ecolor="#222",
                        elinewidth=1.2, capsize=3)
        ax.text((iv[1] if iv else v) + top * 0.015, i, unit.num(v), va="center", fontsize=FONT - 1.5)
    fig.axes(xlabel=xlabel, ylabel="", xunit=unit, categorical_y=True)
    ax.set_yticks(range(len(names)), names)
    ax.grid(axis="y", visible=False)
    ax.set_xlim(0, top * 1.22)  # room for the value labels
    ax.tick_params(axis="y", length=0)
    return fig.svg()

"""Number and unit formatting for the report's table, findings and plot axes, plus the two
accessors every part uses on document values (:func:`dig`, :func:`_num`) and HTML escaping
for the hand-written SVG (:func:`_e`)."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import escape


def _e(value: Any) -> str:
    """Escape for HTML/SVG text and attribute values."""
    return str(escape("" if value is None else str(value)))


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def dig(doc: Any, dotted: str) -> Any:
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _sig(value: float, digits: int = 3) -> str:
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def fmt_count(v: float) -> str:
    a = abs(v)
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{_sig(v / div)}{suf}"
    return _sig(v)


def fmt_bytes(v: float) -> str:
    a = abs(v)
    for div, suf in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if a >= div:
            return f"{_sig(v / div)} {suf}"
    return f"{v:,.0f} B"


def fmt_bytes_tick(v: float) -> str:
    a = abs(v)
    for div, suf in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if a >= div:
            return f"{v / div:.3g} {suf}"
    return f"{v:.0f} B"


def fmt_ms(v: float) -> str:
    return f"{_sig(v)} ms"


def fmt_pct(v: float) -> str:
    return f"{_sig(100 * v)} %"


def _scaled(v: float, units) -> str:
    """``v`` in the first unit of ``units`` ((min |v|, multiplier, name), largest first) whose
    minimum |v| reaches; the last unit takes everything smaller."""
    a = abs(v)
    for min_abs, mult, name in units[:-1]:
        if a >= min_abs:
            return f"{_sig(v * mult)} {name}"
    _, mult, name = units[-1]
    return f"{_sig(v * mult)} {name}"


def fmt_joule(v: float) -> str:
    if v == 0:
        return f"{_sig(v)} J"
    return _scaled(v, ((1e6, 1e-6, "MJ"), (1e3, 1e-3, "kJ"), (1, 1, "J"), (1e-3, 1e3, "mJ"), (0, 1e6, "µJ")))


def fmt_kwh(v: float) -> str:
    return _scaled(v, ((1, 1, "kWh"), (1e-3, 1e3, "Wh"), (0, 1e6, "mWh")))


def fmt_co2(kg: float) -> str:
    return _scaled(kg, ((1, 1, "kg"), (1e-3, 1e3, "g"), (0, 1e6, "mg")))


def fmt_loss(v: float) -> str:
    return f"{v:.4f}"


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else _sig(v)


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4:
        return fmt_count(v)
    if a >= 1:
        return f"{v:.10g}" if float(v).is_integer() else _sig(v, 3)
    if a >= 1e-3:
        return f"{v:.4g}"
    return f"{v:.0e}"


def _delta(d: float) -> str:
    return "±0" if abs(d) < 5e-5 else f"{d:+.4f}"

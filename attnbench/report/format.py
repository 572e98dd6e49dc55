"""Number and unit formatting for the report's table, verdict and plots, the two accessors
every part uses on document values (:func:`dig`, :func:`_num`), and :func:`clean` for text
from the documents (exception messages carry raw ``<... object at 0x...>`` reprs)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

_OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def clean(text: Any) -> str:
    """A document's reason or message for the page: a Python object repr (its address changes
    from run to run and says nothing) becomes its class name."""
    return _OBJECT_REPR.sub(lambda m: m.group(1).rsplit(".", 1)[-1], "" if text is None else str(text))


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


def ratio(value: float) -> str:
    """A per-seed ratio to the leader or baseline, three decimals; a value that is not 1 never
    reads as 1 (an interval that the verdict calls clear of 1 shows a bound clear of 1)."""
    if value == 0 or not 0.1 <= abs(value) < 1000:
        return _sig(value, 3)
    decimals = 3
    while decimals < 6 and value != 1 and round(value, decimals) == 1:
        decimals += 1
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Unit:
    """A display unit: the number shown is the value in base units x ``factor``.  A table
    column has one unit, named in its header, so every cell of it reads in that unit."""

    name: str
    factor: float = 1.0
    kind: str = ""
    per: str = ""  # the part of the name after the unit ("/token")

    def num(self, v: float) -> str:
        x = v * self.factor
        if self.kind == "rate":
            return f"{x:,.0f}" if abs(x) >= 100 else _sig(x)
        if self.kind == "loss":
            return f"{x:.4f}"
        return _sig(x)

    def text(self, v: float) -> str:
        return f"{self.num(v)} {self.name}" if self.name else self.num(v)


# (size of one unit in base units, name), largest first; the base unit is last
SCALES = {
    "bytes": ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")),
    "joule": ((1e6, "MJ"), (1e3, "kJ"), (1, "J"), (1e-3, "mJ"), (1e-6, "µJ")),
    "kwh": ((1, "kWh"), (1e-3, "Wh"), (1e-6, "mWh")),
    "kg": ((1, "kg"), (1e-3, "g"), (1e-6, "mg")),
    "count": ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")),
}
FIXED = {"ms": Unit("ms", kind="ms"), "pct": Unit("%", 100.0, "pct"), "rate": Unit("tok/s", kind="rate"),
         "loss": Unit("", kind="loss"), "text": Unit("", kind="text"), "watt": Unit("W", kind="watt"),
         "loss_per_kj": Unit("nats/kJ", kind="loss_per_kj")}


def pick_unit(kind: str, values: Iterable[Any] = (), per: str = "") -> Unit:
    """The unit for a set of values of one ``kind``: the largest unit in which the smallest
    value still reads 0.1 or more (one column reads 2.29 / 144 / 1,152 MiB, never GiB in one
    cell and MiB in the next, nor 0.00223 GiB).  ``per`` is appended to the name ("/token")."""
    if kind in FIXED:
        u = FIXED[kind]
        return Unit(u.name + per, u.factor, u.kind, per)
    vals = [abs(x) for x in (_num(v) for v in values) if x]
    low = min(vals) if vals else None
    scale = SCALES[kind]
    size, name = scale[-1]
    if low is not None:
        size, name = next(((s, n) for s, n in scale if low >= 0.1 * s), scale[-1])
    elif kind == "joule":
        size, name = 1, "J"
    return Unit(name + per, 1.0 / size, kind, per)


def fmt_count(v: float) -> str:
    return pick_unit("count", [v]).text(v).replace(" ", "")


def fmt_bytes(v: float) -> str:
    return pick_unit("bytes", [v]).text(v)


def fmt_ms(v: float) -> str:
    return f"{_sig(v)} ms"


def fmt_joule(v: float) -> str:
    return pick_unit("joule", [v]).text(v)


def fmt_kwh(v: float) -> str:
    return pick_unit("kwh", [v]).text(v)


def fmt_loss(v: float) -> str:
    return f"{v:.4f}"


def fmt_cudnn(version: Any) -> str | None:
    """cuDNN's integer version as its release: 91900 -> 9.19.0 (cuDNN 9: major*10000 +
    minor*100 + patch), 8907 -> 8.9.7 (cuDNN 8 and older: major*1000 + minor*100 + patch)."""
    v = _num(version)
    if v is None or not float(v).is_integer():
        return None if version is None else str(version)
    v = int(v)
    if v >= 10000:
        return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"
    return f"{v // 1000}.{v % 1000 // 100}.{v % 100}"


def _delta(d: float) -> str:
    return "±0" if abs(d) < 5e-5 else f"{d:+.4f}"

"""The HTML report: which attention variant to use, and what it costs.

:func:`build_report` reads every variant's result documents (``attnbench.train/1``
metrics.json with its ``steps.csv`` and ``power_train.csv`` sidecars, ``attnbench.probe/1``
probe.json, ``attnbench.sweep/1`` sweep.json) plus the tokenizer's ``stats.json`` and writes
three files into ``out_dir``:

* ``index.html`` -- one self-contained page (inline CSS, inline SVG plots, one tiny inline
  sorting script allowed by a hash in the page's Content-Security-Policy; no network);
* ``results.csv`` -- tidy: one row per variant, flat columns, empty cell = not measured;
* ``results.json`` -- the run header, every document as read, the summary values, the
  failures and the unavailable notes.

Rules the page keeps: a metric that was not measured is ``null`` in the documents and is
shown as "—" with the reason in a tooltip, never as 0; a plot without data says "not
measured: <reason>"; failed variants stay in the table and are listed with their reason;
every string from a document is HTML-escaped (Jinja2 autoescape, and :func:`_e` inside the
hand-written SVG).
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import hashlib
import io
import json
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from markupsafe import Markup, escape

from .results import atomic_write_json, atomic_write_text, config_hash

REPORT_SCHEMA = "attnbench.report/1"
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "reports" / "templates"
TEMPLATE = "report.html.j2"
BASELINE = "baseline"
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#79706e")
DASHES = (None, "6 3", "2 2", "8 3 2 3")
MAX_POINTS = 300  # per line in a plot (the CSV/JSON keep everything)

# The one script in the page: sorts the summary table.  Its hash goes into the CSP.
SORT_SCRIPT = """
(function () {
  var table = document.getElementById("summary");
  if (!table) { return; }
  var body = table.tBodies[0];
  var buttons = table.querySelectorAll("thead button[data-col]");
  function key(row, col) {
    var cell = row.cells[col];
    var v = cell ? cell.getAttribute("data-sort") : "";
    return v === null ? "" : v;
  }
  function sortBy(btn) {
    var col = Number(btn.getAttribute("data-col"));
    var th = btn.parentNode;
    var cur = th.getAttribute("aria-sort");
    // first click: best first (data-better="max" sorts descending); next clicks toggle
    var asc = cur ? cur !== "ascending" : btn.getAttribute("data-better") !== "max";
    var numeric = btn.getAttribute("data-type") === "num";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (x === "" && y === "") { return 0; }
      if (x === "") { return 1; }
      if (y === "") { return -1; }
      var c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  buttons.forEach(function (btn) {
    btn.addEventListener("click", function () { sortBy(btn); });
  });
})();
""".strip()


# --- small helpers ------------------------------------------------------------------------
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


# --- reading -----------------------------------------------------------------------------
def _read_json(path: Path | None, kind: str) -> tuple[dict | None, str | None]:
    if path is None:
        return None, f"no {kind} result document for this variant"
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{kind} result {path} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{kind} result {path} is unreadable: {err}"
    if not isinstance(doc, dict):
        return None, f"{kind} result {path} is not a JSON object"
    return doc, None


def _read_csv(path: Path) -> tuple[list[dict[str, str]] | None, str | None]:
    if not path.exists():
        return None, f"{path.name} was not written"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        return None, f"{path.name} is unreadable: {err}"
    return rows, None


def _unavailable_map(doc: dict | None) -> dict[str, str]:
    """The document's ``unavailable`` plus any nested ``<section>.unavailable`` maps."""
    out: dict[str, str] = {}
    if not isinstance(doc, dict):
        return out
    for key, val in doc.items():
        if isinstance(val, dict) and isinstance(val.get("unavailable"), dict):
            for k, reason in val["unavailable"].items():
                out[k if "." in k else f"{key}.{k}"] = str(reason)
    if isinstance(doc.get("unavailable"), dict):
        out.update({str(k): str(v) for k, v in doc["unavailable"].items()})
    return out


def _failure_text(failure: Any) -> str:
    if not isinstance(failure, dict):
        return str(failure) if failure else "no reason recorded"
    kind = failure.get("kind") or "error"
    step = failure.get("step")
    message = str(failure.get("message") or "no message")
    where = f" at step {step}" if step is not None and f"step {step}" not in message else ""
    return f"{kind}{where}: {message}"


@dataclass
class Doc:
    """One result document of one variant (train, probe or sweep)."""

    kind: str
    path: Path | None
    data: dict | None
    missing: str | None = None  # why there is no document

    @property
    def status(self) -> str:
        if self.data is None:
            return "missing"
        return str(self.data.get("status") or "ok")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def unavailable(self) -> dict[str, str]:
        return _unavailable_map(self.data)

    def not_ok_reason(self) -> str | None:
        if self.data is None:
            return self.missing
        st = self.status
        if st == "ok":
            return None
        if st == "skipped":
            return f"{self.kind} skipped: " + str(self.data.get("reason") or self.unavailable.get(self.kind)
                                                  or "no reason recorded")
        return f"{self.kind} {st}: " + _failure_text(self.data.get("failure"))

    def get(self, dotted: str) -> tuple[Any, str | None]:
        """``(value, None)`` or ``(None, reason)``; the reason comes from ``unavailable``
        (the key itself or a parent), else from the document's status, else says so."""
        value = dig(self.data, dotted) if self.data is not None else None
        if value is not None:
            return value, None
        return None, self.reason(dotted)

    def reason(self, dotted: str) -> str:
        unav = self.unavailable
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            k = ".".join(parts[:i])
            if k in unav:
                return unav[k]
        bad = self.not_ok_reason()
        if bad:
            return bad
        name = self.path.name if self.path else f"{self.kind} result"
        return f"null in {name} with no reason recorded"


@dataclass
class Variant:
    name: str
    index: int
    color: str
    dash: str | None
    train: Doc
    probe: Doc
    sweep: Doc
    steps: list[dict[str, str]] | None = None
    steps_reason: str | None = None
    power: list[dict[str, str]] | None = None
    power_reason: str | None = None
    cells: dict[str, "Cell"] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.train.ok

    @property
    def params(self) -> dict:
        p = dig(self.train.data, "attention.params")
        if not isinstance(p, dict):
            p = {}
        return p

    @property
    def params_text(self) -> str:
        return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in self.params.items())


def load_variants(train: Sequence, probe: Sequence, sweep: Sequence) -> list[Variant]:
    """Pair the documents by variant name (config order = the order of ``train``)."""
    train_docs = []
    for p in train:
        data, why = _read_json(Path(p), "train")
        train_docs.append(Doc("train", Path(p), data, why))

    def by_name(paths: Sequence, kind: str) -> dict[str, Doc]:
        out: dict[str, Doc] = {}
        for p in paths:
            data, why = _read_json(Path(p), kind)
            name = str(data.get("variant")) if data and data.get("variant") else Path(p).parent.name
            out[name] = Doc(kind, Path(p), data, why)
        return out

    probes, sweeps = by_name(probe, "probe"), by_name(sweep, "sweep")
    variants = []
    for i, doc in enumerate(train_docs):
        name = str(doc.data.get("variant")) if doc.data and doc.data.get("variant") else doc.path.parent.name
        v = Variant(name=name, index=i, color=PALETTE[i % len(PALETTE)],
                    dash=DASHES[(i // len(PALETTE)) % len(DASHES)], train=doc,
                    probe=probes.get(name) or Doc("probe", None, None, "no probe result document for this variant"),
                    sweep=sweeps.get(name) or Doc("sweep", None, None, "no sweep result document for this variant"))
        folder = doc.path.parent
        if doc.ok:
            v.steps, v.steps_reason = _read_csv(folder / "steps.csv")
        else:
            v.steps_reason = doc.not_ok_reason()
        v.power, v.power_reason = _read_csv(folder / "power_train.csv")
        if v.power is not None and not v.power:
            v.power, v.power_reason = None, None
        if v.power is None:
            v.power_reason = (doc.unavailable.get("energy.gpu_mean_w") or doc.unavailable.get("energy.gpu_j_total")
                              or (doc.not_ok_reason() if not doc.ok else None) or v.power_reason
                              or "power_train.csv has no samples")
        variants.append(v)
    return variants


# --- summary table -------------------------------------------------------------------------
@dataclass
class Cell:
    value: float | str | None
    text: str = ""
    reason: str | None = None
    detail: str | None = None  # extra tooltip text for a value
    best: bool = False
    compare: str | None = None  # "x1.23" / "+0.012" vs baseline

    @property
    def title(self) -> str:
        if self.value is None:
            return f"not measured: {self.reason}"
        parts = [self.detail] if self.detail else []
        if self.best:
            parts.append("best in column")
        return "; ".join(parts)

    @property
    def sort(self) -> str:
        if self.value is None:
            return ""
        return repr(float(self.value)) if isinstance(self.value, (int, float)) else str(self.value)


@dataclass
class Column:
    key: str
    label: str
    unit: str
    fmt: Callable[[float], str]
    get: Callable[[Variant, "Context"], tuple[Any, str | None, str | None]]  # value, reason, detail
    better: str | None = None  # "min" | "max"
    compare: str | None = None  # "ratio" | "delta"
    help: str = ""
    sub: str = ""  # shown under the label (the setting a value was measured at)


@dataclass
class Context:
    prefill_B: int | None = None
    prefill_L: int | None = None
    decode_B: int | None = None
    decode_P: int | None = None


def _from(doc_attr: str, dotted: str, detail: Callable[[Variant], str | None] | None = None):
    def get(v: Variant, ctx: Context):
        val, why = getattr(v, doc_attr).get(dotted)
        return _num(val), why, (detail(v) if detail and val is not None else None)
    return get


def _probe_row(v: Variant, section: str, want: dict[str, int | None], field_: str):
    doc = v.probe
    bad = doc.not_ok_reason()
    if bad:
        return None, bad, None
    rows = doc.data.get(section)
    if not isinstance(rows, list) or not rows:
        return None, doc.reason(section), None
    if any(x is None for x in want.values()):
        return None, f"no {section} measurement", None
    for row in rows:
        if isinstance(row, dict) and all(row.get(k) == x for k, x in want.items()):
            if row.get("status") not in (None, "ok"):
                return None, f"{row.get('status')} at " + ", ".join(f"{k}={x}" for k, x in want.items()) + \
                    (f": {row.get('error')}" if row.get("error") else ""), None
            val = _num(row.get(field_))
            if val is None:
                return None, doc.reason(f"{section}.{field_}"), None
            return val, None, None
    return None, f"no {section} row for " + ", ".join(f"{k}={x}" for k, x in want.items()), None


def _total_kwh(v: Variant, ctx: Context):
    doc = v.train
    parts, missing = [], []
    for k in ("cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh"):
        val, why = doc.get(f"emissions.{k}")
        if _num(val) is None:
            missing.append(f"{k.split('_')[0].upper()}: {why}")
        else:
            parts.append((k.split("_")[0].upper(), _num(val)))
    if not parts:
        why = doc.get("emissions.co2eq_kg")[1] if dig(doc.data, "emissions.co2eq_kg") is None else missing[0]
        return None, why, None
    method = dig(doc.data, "emissions.cpu_power_method")
    detail = "CodeCarbon, whole training session: " + " + ".join(f"{n} {fmt_kwh(x)}" for n, x in parts)
    if method:
        detail += f"; CPU power method: {method}"
    if missing:
        detail += "; not included: " + "; ".join(missing)
    return sum(x for _, x in parts), None, detail


def _mfu_detail(v: Variant) -> str | None:
    a, p = dig(v.train.data, "flops.achieved_tflops"), dig(v.train.data, "flops.peak_tflops")
    if _num(a) is None:
        return None
    return f"{_sig(a)} TFLOP/s achieved" + (f" of {_sig(p)} peak" if _num(p) else "")


def _params_detail(v: Variant) -> str | None:
    a = _num(dig(v.train.data, "model.params_attention"))
    return f"attention parameters: {fmt_count(a)}" if a is not None else None


def _cache_bpt(v: Variant, ctx: Context):
    val, why = v.train.get("model.cache_bytes_per_token")
    if _num(val) is None:
        pval, pwhy = v.probe.get("cache_bytes_per_token")
        if _num(pval) is not None:
            return _num(pval), None, "all layers, bf16 (from probe.json)"
    return _num(val), why, "all layers, bf16"


def _kernel(v: Variant, ctx: Context):
    k, why = v.train.get("kernel")
    pk = dig(v.probe.data, "kernel") if v.probe.ok else None
    if k is None and pk is not None:
        return str(pk), None, "kernel reported by the inference probe (training did not report one)"
    detail = f"inference probe ran: {pk}" if pk is not None and k is not None and pk != k else None
    return (str(k) if k is not None else None), why, detail


def columns(ctx: Context) -> list[Column]:
    pre = f"B={ctx.prefill_B}, L={ctx.prefill_L}" if ctx.prefill_B is not None else "no data"
    dec = f"B={ctx.decode_B}, P={ctx.decode_P}" if ctx.decode_B is not None else "no data"
    return [
        Column("kernel", "Kernel", "", str, _kernel, help="attention implementation that ran"),
        Column("params_total", "Params", "", fmt_count, _from("train", "model.params_total", _params_detail),
               help="all model parameters"),
        Column("tokens_per_s", "Train tokens/s", "tok/s", fmt_rate, _from("train", "timing.tokens_per_s"),
               "max", "ratio", "training throughput over the timed windows"),
        Column("step_ms_p50", "Step p50", "ms", fmt_ms, _from("train", "timing.step_ms_p50"), "min", "ratio",
               "median training step time (window means)"),
        Column("mfu", "MFU", "%", fmt_pct, _from("train", "flops.mfu", _mfu_detail), "max", "ratio",
               "model FLOPs utilisation: analytic training FLOPs / time / peak"),
        Column("peak_allocated_bytes", "Peak GPU mem", "bytes", fmt_bytes,
               _from("train", "memory.peak_allocated_bytes"), "min", "ratio",
               "peak memory allocated by the CUDA caching allocator during the timed steps"),
        Column("peak_rss_bytes", "Peak host RSS", "bytes", fmt_bytes, _from("train", "memory.peak_rss_bytes"),
               "min", "ratio", "peak resident set of the training process (whole process lifetime)"),
        Column("gpu_j_per_token", "GPU energy", "J/token", fmt_joule, _from("train", "energy.gpu_j_per_token"),
               "min", "ratio", "GPU energy counter over the timed windows / tokens"),
        Column("energy_total_kwh", "Energy total", "kWh", fmt_kwh, _total_kwh, "min", "ratio",
               "CodeCarbon CPU+RAM+GPU energy over the whole training session"),
        Column("co2eq_kg", "CO2eq", "kg", fmt_co2, _from("train", "emissions.co2eq_kg"), "min", "ratio",
               "CodeCarbon estimate for the whole training session"),
        Column("final_train_loss", "Train loss", "", fmt_loss, _from("train", "training.final_train_loss"),
               "min", "delta", "mean of the last 10 training-step losses"),
        Column("val_loss", "Val loss", "", fmt_loss, _from("train", "training.val_loss"), "min", "delta",
               "validation loss after the last step"),
        Column("prefill_ms_p50", "Prefill p50", "ms", fmt_ms,
               lambda v, c: _probe_row(v, "prefill", {"batch_size": c.prefill_B, "prompt_len": c.prefill_L},
                                       "ms_p50"), "min", "ratio",
               f"median latency of one forward over the prompt ({pre})", sub=pre),
        Column("decode_ms_per_token_p50", "Decode p50", "ms/token", fmt_ms,
               lambda v, c: _probe_row(v, "decode", {"batch_size": c.decode_B, "prompt_len": c.decode_P},
                                       "ms_per_token_p50"), "min", "ratio",
               f"median latency of one cached greedy decoding step ({dec} prompt tokens)", sub=dec),
        Column("cache_bytes_per_token", "Cache", "bytes/token", fmt_bytes, _cache_bpt, "min", "ratio",
               "inference cache bytes per token, all layers, bf16"),
    ]


def probe_context(variants: list[Variant]) -> Context:
    """The representative probe settings: smallest batch, longest prompt."""
    ctx = Context()
    pre = [(r.get("batch_size"), r.get("prompt_len")) for v in variants if v.probe.ok
           for r in (v.probe.data.get("prefill") or []) if isinstance(r, dict)]
    pre = [(b, L) for b, L in pre if isinstance(b, int) and isinstance(L, int)]
    if pre:
        ctx.prefill_B = min(b for b, _ in pre)
        ctx.prefill_L = max(L for b, L in pre if b == ctx.prefill_B)
    dec = [(r.get("batch_size"), r.get("prompt_len")) for v in variants if v.probe.ok
           for r in (v.probe.data.get("decode") or []) if isinstance(r, dict)]
    dec = [(b, P) for b, P in dec if isinstance(b, int) and isinstance(P, int)]
    if dec:
        ctx.decode_B = min(b for b, _ in dec)
        ctx.decode_P = Counter(P for b, P in dec if b == ctx.decode_B).most_common(1)[0][0]
    return ctx


def _delta(d: float) -> str:
    return "±0" if abs(d) < 5e-5 else f"{d:+.4f}"


def fill_cells(variants: list[Variant], cols: list[Column], ctx: Context) -> None:
    for v in variants:
        for col in cols:
            val, why, detail = col.get(v, ctx)
            if val is None:
                v.cells[col.key] = Cell(None, reason=why or "not recorded")
            else:
                text = col.fmt(val) if isinstance(val, (int, float)) else str(val)
                v.cells[col.key] = Cell(val, text=text, detail=detail)
    base = next((v for v in variants if v.name == BASELINE and v.ok), None)
    for col in cols:
        if col.better is None:
            continue
        # Best as displayed: values that print the same tie (e.g. equal losses to 4 decimals).
        shown = [(v.cells[col.key].value, v.cells[col.key].text) for v in variants
                 if v.ok and isinstance(v.cells[col.key].value, (int, float))]
        if len(shown) >= 2 and len({t for _, t in shown}) > 1:
            best_val, best_text = (min if col.better == "min" else max)(shown, key=lambda vt: vt[0])
            for v in variants:
                if v.ok and v.cells[col.key].text == best_text:
                    v.cells[col.key].best = True
        b = base.cells[col.key].value if base else None
        if not isinstance(b, (int, float)):
            continue
        for v in variants:
            c = v.cells[col.key]
            if v is base or not isinstance(c.value, (int, float)):
                continue
            if col.compare == "ratio" and b:
                c.compare = f"×{c.value / b:.2f}"
                c.detail = "; ".join(filter(None, [c.detail, f"{c.value / b:.3f} × {BASELINE}"]))
            elif col.compare == "delta":
                c.compare = _delta(c.value - b)
                c.detail = "; ".join(filter(None, [c.detail, f"{c.value - b:+.6f} vs {BASELINE}"]))


# --- SVG plots -----------------------------------------------------------------------------
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


def _common_reason(reasons: Iterable[str | None | tuple[str, str | None]]) -> str:
    """One line saying why something has no data: the most common reason, then any other
    reason with the variants it applies to (items are reasons or ``(variant, reason)``)."""
    pairs = [(r if isinstance(r, tuple) else ("", r)) for r in reasons]
    pairs = [(n, r) for n, r in pairs if r]
    if not pairs:
        return "no data"
    top = Counter(r for _, r in pairs).most_common(1)[0][0]
    others: "OrderedDict[str, list[str]]" = OrderedDict()
    for n, r in pairs:
        if r != top:
            others.setdefault(r, []).append(n)
    parts = [top]
    for r, names in others.items():
        who = ", ".join(n for n in names if n)
        parts.append(f"{who}: {r}" if who else r)
    return "; ".join(parts)


def _steps_points(v: Variant) -> list[tuple[float, float]]:
    pts = []
    for r in v.steps or []:
        s, loss = _num(r.get("step")), _num(r.get("loss"))
        if s is not None and loss is not None:
            pts.append((s, loss))
    return pts


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


# --- header, notes, failures, findings -----------------------------------------------------
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


def findings(variants: list[Variant], header: dict, ctx: Context, fails: list[dict]) -> list[str]:
    """Short statements that follow from the numbers; nothing the data does not show."""
    ok = [v for v in variants if v.ok]
    base = next((v for v in ok if v.name == BASELINE), None)
    out: list[str] = []
    if not variants:
        return ["No result documents were given, so there is nothing to report."]
    if not ok:
        out.append("No variant finished training, so no variant can be recommended from this run.")
    where = header.get("device") or "an unrecorded device"
    out.append(f"{len(ok)} of {len(variants)} variants finished training on {where}"
               + (f" ({header['training']})" if header.get("training") else "") + "; each variant was trained "
               "once with the same seed and data order, so small differences in loss are not evidence of a real "
               "difference.")
    if header.get("on_cpu"):
        out.append("This was a CPU run: its timings do not predict how the variants compare on a GPU.")

    def best(key: str, mode: str) -> tuple[Variant, float] | None:
        cand = [(v, _cv(v, key)) for v in ok if _cv(v, key) is not None]
        if not cand:
            return None
        return (min if mode == "min" else max)(cand, key=lambda t: t[1])

    def reason_of(key: str) -> str:
        return _common_reason((v.name, v.cells[key].reason) for v in ok if key in v.cells) if ok else "no variant finished"

    r = best("tokens_per_s", "max")
    if r and len(ok) > 1:
        slow = best("tokens_per_s", "min")
        out.append(f"Fastest training: {r[0].name} at {fmt_rate(r[1])} tokens/s{_vs_base(r[0], base, 'tokens_per_s')}"
                   f"; slowest: {slow[0].name} at {fmt_rate(slow[1])} tokens/s.")
    elif ok and not r:
        out.append(f"Training throughput was not measured. Reason: {reason_of('tokens_per_s')}.")
    r = best("gpu_j_per_token", "min")
    if r:
        out.append(f"Least GPU energy per training token: {r[0].name} at {fmt_joule(r[1])}/token"
                   f"{_vs_base(r[0], base, 'gpu_j_per_token')}.")
    elif ok:
        out.append("GPU energy was not measured, so this run does not rank the variants by energy. "
                   f"Reason: {reason_of('gpu_j_per_token')}.")
    r = best("val_loss", "min")
    if r and len(ok) > 1:
        ties = [v.name for v in ok if _cv(v, "val_loss") is not None and fmt_loss(_cv(v, "val_loss")) == fmt_loss(r[1])]
        worst = best("val_loss", "max")
        text = (f"Lowest validation loss: {', '.join(ties)} at {fmt_loss(r[1])}" if len(ties) > 1
                else f"Lowest validation loss: {r[0].name} at {fmt_loss(r[1])}")
        if base is not None and _cv(base, "val_loss") is not None and base.name not in ties:
            text += f" ({BASELINE}: {fmt_loss(_cv(base, 'val_loss'))}, difference {_delta(r[1] - _cv(base, 'val_loss'))})"
        text += f"; highest: {worst[0].name} at {fmt_loss(worst[1])}."
        out.append(text)
    pts, _ = energy_loss_points(ok)
    if len(pts) >= 2:
        front = pareto_front(pts)
        per_kj = []
        for v in ok:
            first = _steps_points(v)[:1]
            e, loss = _num(dig(v.train.data, "energy.gpu_j_total")), _cv(v, "val_loss")
            if first and e and loss is not None:
                per_kj.append((v, (first[0][1] - loss) / (e / 1000)))
        if per_kj:
            v, x = max(per_kj, key=lambda t: t[1])
            out.append(f"Most loss reduction per unit of GPU energy: {v.name}, {x:.3g} nats per kJ "
                       "((first-step loss − final validation loss) / GPU energy of the timed steps).")
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


# --- outputs ------------------------------------------------------------------------------
CSV_EXTRA = [
    ("status", lambda v: v.train.status),
    ("failure_kind", lambda v: dig(v.train.data, "failure.kind")),
    ("failure_step", lambda v: dig(v.train.data, "failure.step")),
    ("failure_message", lambda v: dig(v.train.data, "failure.message") or v.train.missing),
    ("attention", lambda v: dig(v.train.data, "attention.name")),
    ("attention_params", lambda v: json.dumps(v.params, sort_keys=True) if v.params else None),
]
CSV_MORE = [
    ("params_attention", "model.params_attention"), ("params_non_embedding", "model.params_non_embedding"),
    ("step_ms_p90", "timing.step_ms_p90"), ("warmup_s", "timing.warmup_s"), ("timed_s", "timing.timed_s"),
    ("achieved_tflops", "flops.achieved_tflops"), ("peak_tflops", "flops.peak_tflops"),
    ("train_flops_per_step", "flops.train_per_step"),
    ("peak_reserved_bytes", "memory.peak_reserved_bytes"), ("nvml_used_bytes", "memory.nvml_used_bytes"),
    ("gpu_j_total", "energy.gpu_j_total"), ("gpu_j_per_step", "energy.gpu_j_per_step"),
    ("gpu_mean_w", "energy.gpu_mean_w"), ("idle_w", "energy.idle_w"),
    ("cpu_energy_kwh", "emissions.cpu_energy_kwh"), ("ram_energy_kwh", "emissions.ram_energy_kwh"),
    ("gpu_energy_kwh", "emissions.gpu_energy_kwh"), ("cpu_power_method", "emissions.cpu_power_method"),
    ("tokens_trained", "training.tokens_trained"), ("steps", "training.steps"),
    ("batch_size", "training.batch_size"), ("seq_len", "training.seq_len"), ("dtype", "training.dtype"),
]


def csv_rows(variants: list[Variant], cols: list[Column]) -> tuple[list[str], list[dict[str, Any]]]:
    names = ["variant"] + [k for k, _ in CSV_EXTRA] + [c.key for c in cols] + [k for k, _ in CSV_MORE] + \
        ["probe_status", "sweep_status"]
    rows = []
    for v in variants:
        row: dict[str, Any] = {"variant": v.name}
        row.update({k: f(v) for k, f in CSV_EXTRA})
        row.update({c.key: v.cells[c.key].value for c in cols})
        row.update({k: dig(v.train.data, p) for k, p in CSV_MORE})
        row["probe_status"], row["sweep_status"] = v.probe.status, v.sweep.status
        rows.append(row)
    return names, rows


def _csv_text(names: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                    for k in names})
    return buf.getvalue()


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env


def build_report(train: list[Path], probe: list[Path], sweep: list[Path], stats: Path, config: dict,
                 out_dir: Path) -> dict:
    """Write ``index.html``, ``results.csv`` and ``results.json`` into ``out_dir``.

    ``train``/``probe``/``sweep``: one JSON path per variant (config order for ``train``;
    probe and sweep are matched by variant name).  Returns the ``results.json`` document
    (schema ``attnbench.report/1``) with ``files`` naming what was written.
    """
    out_dir = Path(out_dir)
    now = _dt.datetime.now(_dt.timezone.utc)
    variants = load_variants(list(train), list(probe or []), list(sweep or []))
    stats_doc, stats_reason = _read_json(Path(stats), "stats") if stats else (None, "no stats.json given")
    header = run_header(variants, stats_doc, stats_reason, config or {}, now)
    ctx = probe_context(variants)
    cols = columns(ctx)
    fill_cells(variants, cols, ctx)
    notes = unavailable_notes(variants)
    fails = failures(variants)
    sweep_main, sweep_more = plot_sweep(variants)
    plots = {
        "loss_step": plot_loss_vs_step(variants),
        "loss_delta": plot_loss_vs_baseline(variants),
        "loss_energy": plot_loss_vs_energy(variants),
        "energy_loss": plot_energy_vs_loss(variants),
        "power": plot_power(variants),
        "memory": plot_memory(variants),
        "inference": plot_inference(variants, ctx),
        "sweep": sweep_main,
        "sweep_more": sweep_more,
    }
    found = findings(variants, header, ctx, fails)
    names, rows = csv_rows(variants, cols)

    document = {
        "schema": REPORT_SCHEMA,
        "header": header,
        "findings": found,
        "columns": [{"key": c.key, "label": c.label, "unit": c.unit, "better": c.better, "help": c.help,
                     "measured_at": c.sub or None} for c in cols],
        "summary": rows,
        "failures": fails,
        "unavailable": notes,
        "stats": stats_doc,
        "config": config,
        "variants": [{"variant": v.name, "train": v.train.data, "probe": v.probe.data, "sweep": v.sweep.data,
                      "files": {"train": str(v.train.path) if v.train.path else None,
                                "probe": str(v.probe.path) if v.probe.path else None,
                                "sweep": str(v.sweep.path) if v.sweep.path else None}}
                     for v in variants],
    }
    script_hash = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    # Host RSS is in the table only when no variant has GPU memory (CPU runs); always in CSV/plots.
    has_gpu_mem = any(isinstance(v.cells["peak_allocated_bytes"].value, (int, float)) for v in variants)
    table_cols = [c for c in cols if not (c.key == "peak_rss_bytes" and has_gpu_mem)]
    html = _env().get_template(TEMPLATE).render(
        header=header, variants=variants, columns=table_cols, findings=found, failures=fails, notes=notes,
        notes_summary=unavailable_summary(notes, len(variants)), plots=plots, ctx=ctx, baseline=BASELINE,
        has_baseline=any(v.name == BASELINE and v.ok for v in variants),
        script=Markup(SORT_SCRIPT), script_hash=script_hash,
    )
    files = {"html": str(out_dir / "index.html"), "csv": str(out_dir / "results.csv"),
             "json": str(out_dir / "results.json")}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.csv", _csv_text(names, rows))
    atomic_write_json(out_dir / "results.json", _jsonable(document))
    atomic_write_text(out_dir / "index.html", html)
    document["files"] = files
    return document


def _jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj

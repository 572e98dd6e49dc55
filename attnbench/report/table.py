"""The summary table: which metric each column shows and where it is read (:func:`columns`),
the cells per variant (mean over seeds with its interval), one display unit per column,
best-in-column and baseline comparison (:func:`fill_cells`), and the same values as flat CSV
rows (:func:`csv_rows`)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from ..stats import Estimate, bootstrap_mean
from ..stats import order as stats_order
from ..stats import scale_of
from . import agreement, cache
from .format import clean, Unit, _delta, _num, _sig, dig, fmt_count, fmt_kwh, pick_unit
from .load import BASELINE, Variant

# CodeCarbon CPU power methods that estimate (from a TDP, a constant or the CPU load) rather
# than read a power counter
ESTIMATED_CPU_METHODS = ("tdp", "constant", "load")


@dataclass
class Cell:
    value: float | str | None
    text: str = ""
    reason: str | None = None
    detail: str | None = None  # extra tooltip text for a value
    best: bool = False
    compare: str | None = None  # "x1.23" / "+0.012" vs baseline
    estimate: Estimate | None = None  # mean over seeds with its 95 % interval (numeric columns)
    per_seed: dict | None = None  # {seed: value} of the finished runs: paired comparisons (stats.order)
    unit: Unit | None = None
    note: str | None = None  # small word under the value ("fixed", "est.")

    @property
    def interval_text(self) -> str | None:
        e = self.estimate
        if e is None or self.unit is None:
            return None
        if not e.has_interval:
            return f"{e.n} run{'s' if e.n != 1 else ''}: no interval"
        return f"mean of {e.n} seeds; 95 % interval {self.unit.text(e.low)} – {self.unit.text(e.high)}"

    @property
    def title(self) -> str:
        if self.value is None:
            return f"not measured: {self.reason}"
        parts = [p for p in (self.interval_text, self.detail) if p]
        if self.best:
            parts.append("best in column: ahead of every other row per seed (95 % t-interval of the paired "
                         "ratios or loss differences), or by intervals apart where rows share no seed")
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
    kind: str  # a format.pick_unit kind: the column's one display unit is picked from its values
    get: Callable[[Variant, "Context"], tuple[Any, str | None, str | None]]  # value, reason, detail
    better: str | None = None  # "min" | "max"
    compare: str | None = None  # "ratio" | "delta"
    help: str = ""
    sub: str = ""  # shown under the label (the setting a value was measured at)
    per: str = ""  # appended to the unit ("/token")
    seeds: bool = True  # a mean over seeds (False: a property of the architecture, the same in every seed)
    note: Callable[[Variant, "Context"], str | None] | None = None  # small word under a value
    unit: Unit | None = None  # set by fill_cells


@dataclass
class Context:
    prefill_B: int | None = None
    prefill_L: int | None = None
    decode_B: int | None = None
    decode_P: int | None = None
    control_median: float | None = None  # median control TFLOP/s over every train job of the report
    config: dict | None = None  # the run's config (the training length a failed job did not record)
    memory_phase: str = "timed"  # whose peak the memory column shows for every run: "timed" or "warm-up"


def _normalized_rate(v: Variant, ctx: Context):
    """tokens/s x (median control / this job's control): throughput with the drift between
    calls and machines that the job's own control saw divided out."""
    rate, why = v.train.get("timing.tokens_per_s")
    ctl, cwhy = v.train.get("control.tflops")
    if _num(rate) is None:
        return None, why, None
    if _num(ctl) is None or not ctx.control_median:
        return None, cwhy or "no control measured", None
    return _num(rate) * ctx.control_median / _num(ctl), None, f"control {_sig(ctl)} TFLOP/s in this job"


def _busy_rate(v: Variant, ctx: Context):
    """tokens/s / GPU busy: the rate of the GPU's own work, with the share of the timed windows in
    which the host left the GPU idle taken out (jobs whose loop is host-bound at a small batch vary
    with the host; this figure varies with the kernels)."""
    rate, why = v.train.get("timing.tokens_per_s")
    busy, bwhy = v.train.get("energy.gpu_busy")
    if _num(rate) is None:
        return None, why, None
    if _num(busy) is None:
        return None, f"GPU busy: {bwhy}" if bwhy else "GPU busy not recorded", None
    if _num(busy) <= 0:
        return None, "GPU busy 0 % in the timed windows (no kernel seen by NVML's sampler)", None
    return tokens_per_busy_s(v.train.data), None, "tokens/s ÷ GPU busy of each run"


def tokens_per_busy_s(doc: dict | None) -> float | None:
    """tokens/s ÷ GPU busy of one training document; None where either is missing or busy is 0
    (never a number made up).  The report's column and the READMEs' lines both read it here."""
    rate, busy = _num(dig(doc, "timing.tokens_per_s")), _num(dig(doc, "energy.gpu_busy"))
    return rate / busy if rate is not None and busy else None


def _from(doc_attr: str, dotted: str, detail: Callable[[Variant], str | None] | None = None):
    def get(v: Variant, ctx: Context):
        val, why = getattr(v, doc_attr).get(dotted)
        return _num(val), why, (detail(v) if detail and val is not None else None)
    return get


def _peak_memory(v: Variant, ctx: Context):
    """Peak allocated memory of the phase the report chose for every run (:func:`memory_phase`):
    the timed steps', or the warm-up steps' where CUDA graphs left some run without the timed
    figure (their replays allocate from a private pool the allocator does not count; the warm-up
    steps record the graphs and are counted -- a lower figure than a timed peak without graphs,
    hence one phase for every row)."""
    if ctx.memory_phase == "timed":
        val, why = v.train.get("memory.peak_allocated_bytes")
        return _num(val), why, None
    val, why = v.train.get("memory.peak_allocated_warmup_bytes")
    return _num(val), why, "over the warm-up steps, which record the step's CUDA graphs"


def memory_phase(variants: list[Variant]) -> str:
    """"warm-up" when some finished run has no timed peak but a warm-up one (CUDA graphs), else
    "timed": one phase for the whole column, so no ratio or ranking mixes the two."""
    for v in variants:
        for r in v.ok_runs:
            timed = _num(dig(r.train.data, "memory.peak_allocated_bytes"))
            if timed is None and _num(dig(r.train.data, "memory.peak_allocated_warmup_bytes")) is not None:
                return "warm-up"
    return "timed"


def _above_idle(v: Variant, ctx: Context):
    """GPU J/token above idle; documents written before the per-token figure existed carry the
    total above idle, divided here by the same timed tokens as ``gpu_j_per_token``."""
    val, why = v.train.get("energy.gpu_j_per_token_above_idle")
    if _num(val) is not None:
        return _num(val), None, None
    above, total, per = (_num(dig(v.train.data, f"energy.{k}"))
                         for k in ("gpu_j_above_idle", "gpu_j_total", "gpu_j_per_token"))
    if above is None or not total or not per:
        return None, why, None
    return above / (total / per), None, "gpu_j_above_idle / timed tokens (the document has no per-token figure)"


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
            return val, None, _timing_detail(row, doc.data.get("prefill_flags") if section == "prefill" else None)
    return None, f"no {section} row for " + ", ".join(f"{k}={x}" for k, x in want.items()), None


def _timing_detail(row: dict, flags: list | None) -> str | None:
    """How a probe figure was timed: the mode (eager or CUDA graph), whether the timing met
    p90/p50 < 1.2, and any order flag of the probe (a longer prompt timed faster)."""
    parts = []
    mode = row.get("prefill_mode") or row.get("decode_mode")
    if mode:
        parts.append(str(mode))
    if row.get("timing_stable") is False:
        parts.append(f"timing not stable (p90/p50 {row.get('p90_over_p50', float('nan')):.2f})")
    share = row.get("decode_share_of_window")
    if isinstance(share, (int, float)):
        parts.append(f"energy window: decode steps {100 * share:.0f} %, the rest each run's prompt prefill")
    shown = reported_flags(flags)
    parts += [f"flagged: {clean(f)}" for f in shown]
    parts += [f"other series flagged (not the figure shown): {clean(f)}" for f in flags or [] if f not in shown]
    return "; ".join(parts) or None


def reported_flags(flags: list | None) -> list:
    """The probe's prefill order flags that concern the reported figures.  Each flag names its
    series ("batch 1 (reported): ...", "(eager)", "(cuda-graph)"); on the H200 the eager
    series at batch 1 is launch-bound and its order by length is noise, while the reported
    figures are the CUDA-graph ones: an eager flag must not mark the graph figure shown."""
    return [f for f in flags or [] if isinstance(f, str) and "(reported)" in f]


def _timing_note(section: str):
    """The note under a latency cell: "timing error" / "unstable" from every finished seed's probe,
    naming the seeds where only some of several have it (the cell is their mean)."""
    def note(v: Variant, ctx: Context) -> str | None:
        if len(v.ok_runs) < 2:
            return one(v, ctx)
        found = _by_seed(v.ok_runs, lambda r: one(v.view(r), ctx) or None)
        return ", ".join(n if len(seeds) == len(v.ok_runs) else f"{n} (seed {', '.join(seeds)})"
                         for n, seeds in found.items()) or None

    def one(v: Variant, ctx: Context) -> str | None:
        doc = v.probe.data if v.probe.ok else None
        if not isinstance(doc, dict):
            return None
        if section == "prefill" and reported_flags(doc.get("prefill_flags")):
            return "timing error"
        want = ({"batch_size": ctx.prefill_B, "prompt_len": ctx.prefill_L} if section == "prefill"
                else {"batch_size": ctx.decode_B, "prompt_len": ctx.decode_P})
        for row in doc.get(section) or []:
            if isinstance(row, dict) and all(row.get(k) == x for k, x in want.items()):
                return "unstable" if row.get("timing_stable") is False else None
        return None
    return note


def estimated_energy(doc_data: dict | None) -> str | None:
    """Why CodeCarbon's CPU/RAM energy of a document is an estimate (None: it is not)."""
    method = str(dig(doc_data, "emissions.cpu_power_method") or "")
    if any(m in method.lower() for m in ESTIMATED_CPU_METHODS):
        return f"CPU power estimated by CodeCarbon ({method})"
    return None


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
    detail = "CodeCarbon, whole training session: " + " + ".join(f"{n} {fmt_kwh(x)}" for n, x in parts)
    for note in (estimated_energy(doc.data), dig(doc.data, "emissions.ram_power_method")):
        if note:
            detail += f"; {note}"
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


def _cache_at(length: int):
    def get(v: Variant, ctx: Context):
        size = cache.profile(v, ctx.config or {})[0][length]
        return size.value, size.reason, size.how + ("; fixed from here on" if size.fixed else "")
    return get


def _cache_fixed(length: int):
    def note(v: Variant, ctx: Context):
        return "fixed" if cache.profile(v, ctx.config or {})[0][length].fixed else None
    return note


def _kernel(v: Variant, ctx: Context):
    k, why = v.train.get("kernel")
    pk = dig(v.probe.data, "kernel") if v.probe.ok else None
    if k is None and pk is not None:
        return str(pk), None, "kernel reported by the inference probe (training did not report one)"
    detail = f"inference probe ran: {pk}" if pk is not None and k is not None and pk != k else None
    fallbacks = _fallbacks(v)
    if fallbacks:
        detail = "; ".join(filter(None, [detail, "the start check rejected auto's first choice: " + "; ".join(fallbacks)]))
    return (str(k) if k is not None else None), why, detail


def _fallbacks(v: Variant) -> list[str]:
    """What the training's start check rejected of ``auto``'s choices, per seed (attnbench.selfcheck.fall_back)."""
    out = []
    for r in v.ok_runs:  # the runs whose figures the row shows
        for fb in (r.train.data or {}).get("kernel_fallback") or []:
            seed = f"seed {r.seed}: " if r.seed is not None else ""
            out.append(seed + ", ".join(f"{mod} {impl}" for mod, impl in (fb.get("rejected") or {}).items()))
    return out


def columns(ctx: Context) -> list[Column]:
    pre = f"B={ctx.prefill_B}, L={ctx.prefill_L}" if ctx.prefill_B is not None else "no data"
    dec = f"B={ctx.decode_B}, P={ctx.decode_P}" if ctx.decode_B is not None else "no data"
    cols = [
        Column("kernel", "Kernel", "text", _kernel, help="attention implementation that ran",
               note=lambda v, c: "fallback" if _fallbacks(v) else None),
        Column("params_total", "Params", "count", _from("train", "model.params_total", _params_detail),
               help="all model parameters", seeds=False),
        Column("tokens_per_s", "Train tokens/s", "rate", _from("train", "timing.tokens_per_s"),
               "max", "ratio", "training throughput over the timed windows"),
        Column("step_ms_p50", "Step p50", "ms", _from("train", "timing.step_ms_p50"), "min", "ratio",
               "median training step time (window means)"),
        Column("tokens_per_s_normalized", "Train tokens/s, control-normalised", "rate",
               _normalized_rate, "max", "ratio",
               "tokens/s × median control TFLOP/s of all jobs / this job's control (a fixed matrix product "
               "timed in the job's own process): drift between calls and machines divided out"),
        Column("mfu", "MFU", "pct", _from("train", "flops.mfu", _mfu_detail), "max", "ratio",
               "model FLOPs utilisation on the variant's own FLOP count: how busy its kernels were"),
        Column("mfu_standard", "MFU (std. attention)", "pct", _from("train", "flops.mfu_standard"),
               "max", "ratio", "MFU counting every variant's attention as standard causal MHA: the same work "
                              "per token for all, so it ranks variants by speed"),
        Column("gpu_busy", "GPU busy", "pct", _from("train", "energy.gpu_busy"), None, "ratio",
               "share of the timed windows in which the GPU ran a kernel (NVML utilisation): well under "
               "100 % means the host (launches, Python) set the pace, so tokens/s and energy rank the "
               "loop around the attention as much as the attention"),
        Column("tokens_per_busy_s", "Train tokens per GPU-busy s", "rate", _busy_rate, "max", "ratio",
               "tokens/s ÷ GPU busy: the throughput of the GPU's own work with the time the host left it "
               "waiting taken out; where GPU busy is well under 100 % it ranks the GPU's work, tokens/s also the host "
               "(NVML counts a running kernel as busy however little of the GPU it fills)"),
        Column("peak_allocated_bytes", "Peak GPU mem", "bytes", _peak_memory, "min", "ratio",
               "peak memory allocated by the CUDA caching allocator during the timed steps; under CUDA graphs "
               "during the warm-up steps, which record the graphs (replays allocate from a pool it does not "
               "count), for every row alike", sub="warm-up steps" if ctx.memory_phase == "warm-up" else ""),
        Column("peak_rss_bytes", "Peak host RSS", "bytes", _from("train", "memory.peak_rss_bytes"),
               "min", "ratio", "peak resident set of the training process (whole process lifetime)"),
        Column("gpu_j_per_token", "GPU energy", "joule", _from("train", "energy.gpu_j_per_token"),
               "min", "ratio", "GPU energy counter over the timed windows / tokens", per="/token"),
        Column("gpu_j_per_token_above_idle", "GPU energy above idle", "joule", _above_idle, "min", "ratio",
               "the same minus the idle power measured before the job: what the work itself drew", per="/token"),
        Column("energy_total_kwh", "Energy total (CodeCarbon)", "kwh", _total_kwh, "min", "ratio",
               "CodeCarbon CPU+RAM+GPU energy over the whole training session; 'est.' = its CPU part is "
               "estimated (from the CPU's TDP, a constant or its load), not read from a power counter",
               note=lambda v, c: "est." if estimated_energy(v.train.data) else None),
        Column("co2eq_kg", "CO2eq (est.)", "kg", _from("train", "emissions.co2eq_kg"), "min", "ratio",
               "CodeCarbon estimate for the whole training session (energy × grid intensity)"),
        Column("final_train_loss", "Train loss", "loss", _from("train", "training.final_train_loss"),
               "min", "delta", "mean of the last 10 training-step losses"),
        Column("val_loss", "Val loss", "loss", _from("train", "training.val_loss"), "min", "delta",
               "validation loss after the last step"),
        Column("loss_drop_per_kj", "Loss drop per kJ", "loss_per_kj", _from("train", "efficiency.loss_drop_per_kj"),
               "max", "ratio", "training-loss reduction over the timed steps ÷ the GPU energy of the same steps: "
                               "quality bought per unit of energy"),
        Column("prefill_ms_p50", "Prefill p50", "ms",
               lambda v, c: _probe_row(v, "prefill", {"batch_size": c.prefill_B, "prompt_len": c.prefill_L},
                                       "ms_p50"), "min", "ratio",
               f"median latency of one forward over the prompt ({pre}), eager or replayed as a CUDA graph "
               "(the faster that matches eager); 'timing error' = a longer prompt timed faster in this probe, "
               "'unstable' = p90/p50 stayed >= 1.2", sub=pre, note=_timing_note("prefill")),
        Column("decode_ms_per_token_p50", "Decode p50", "ms",
               lambda v, c: _probe_row(v, "decode", {"batch_size": c.decode_B, "prompt_len": c.decode_P},
                                       "ms_per_token_p50"), "min", "ratio",
               f"median latency of one cached greedy decoding step ({dec} prompt tokens)", sub=dec, per="/token"),
    ]
    for L in cache.LENGTHS:
        cols.append(Column(f"cache_{L}", f"Cache at {cache._label(L)} tokens", "bytes", _cache_at(L), "min", "ratio",
                           f"inference cache after {L:,} tokens, batch 1, all layers, bf16; 'fixed' = the cache "
                           "no longer grows at this length", sub="batch 1", seeds=False, note=_cache_fixed(L)))
    return cols


def probe_context(variants: list[Variant], config: dict | None = None) -> Context:
    """The representative probe settings (smallest batch, longest prompt) and the median control."""
    ctx = Context(config=config or {}, memory_phase=memory_phase(variants))
    controls = sorted(c for v in variants for r in v.ok_runs
                      if (c := _num(dig(r.train.data, "control.tflops"))) is not None)
    if controls:
        mid = len(controls) // 2
        ctx.control_median = controls[mid] if len(controls) % 2 else (controls[mid - 1] + controls[mid]) / 2
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


def _cell(v: Variant, col: Column, ctx: Context) -> Cell:
    """A variant's cell: numeric values are the mean over its finished seeds, with an interval."""
    val, why, detail = col.get(v, ctx)
    if val is None and col.seeds and len(v.ok_runs) >= 2:  # the first finished seed lacks it: another's may not
        val, why, detail = next((g for g in (col.get(v.view(r), ctx) for r in v.ok_runs) if g[0] is not None),
                                (val, why, detail))
    if val is None:
        return Cell(None, reason=why or "not recorded")
    if not isinstance(val, (int, float)):
        by_value = _seeds_by_value(v, col, ctx)
        note = col.note(v, ctx) if col.note else None
        if len(by_value) > 1:  # e.g. an `auto` kernel that differs by seed: shown, never hidden
            text = "; ".join(f"{value} (seed {', '.join(seeds)})" for value, seeds in by_value.items())
            return Cell(val, text=text, detail=detail, note=", ".join(filter(None, ["differs by seed", note])))
        return Cell(val, text=str(val), detail=detail, note=note)
    if not col.seeds:
        return Cell(val, detail=detail)
    runs = v.ok_runs if len(v.ok_runs) >= 2 else []
    got = [col.get(v.view(r), ctx) for r in runs]
    values = [g[0] for g in got] or [val]
    details = [g[2] for g in got]
    if any(details) and len(set(details)) > 1:  # the mean's cell: each seed's own detail, named (not the first's)
        detail = "; ".join(f"seed {r.seed}: {d}" for r, d in zip(runs, details) if d)
    est = bootstrap_mean(values)
    per_seed = {r.seed: x for r, x in zip(runs, values) if r.seed is not None and isinstance(x, (int, float))}
    return Cell(est.mean, detail=detail, estimate=est, per_seed=per_seed or None)


def _by_seed(runs, value_of) -> dict[str, list[str]]:
    """``value_of(run)`` over ``runs`` grouped by value: {value: [seeds]} in seed order (None left out)."""
    out: dict[str, list[str]] = {}
    for r in sorted(runs, key=lambda r: (r.seed is None, r.seed or 0)):
        value = value_of(r)
        if value is not None:
            out.setdefault(str(value), []).append(str(r.seed) if r.seed is not None else "?")
    return out


def _seeds_by_value(v: Variant, col: Column, ctx: Context) -> dict[str, list[str]]:
    """A text column's value per finished seed, grouped: {value: [seeds]} in seed order."""
    return _by_seed(v.ok_runs, lambda r: col.get(v.view(r), ctx)[0])


def per_seed_values(variants: list[Variant], key: str) -> dict[str, dict]:
    """{variant: {seed: value}} of a column, for paired per-seed comparisons."""
    return {v.name: v.cells[key].per_seed for v in variants if v.cells.get(key) and v.cells[key].per_seed}


def fill_cells(variants: list[Variant], cols: list[Column], ctx: Context) -> None:
    for v in variants:
        for col in cols:
            v.cells[col.key] = _cell(v, col, ctx)
    for col in cols:
        cells = [v.cells[col.key] for v in variants]
        col.unit = pick_unit(col.kind, [c.value for c in cells if isinstance(c.value, (int, float))], col.per)
        for v, c in zip(variants, cells):
            if isinstance(c.value, (int, float)):
                c.unit = col.unit
                c.text = col.unit.num(c.value)
                c.note = col.note(v, ctx) if col.note else None
    base = next((v for v in variants if v.name == BASELINE and v.ok), None)
    for col in cols:
        if col.better is None:
            continue
        # "Best" only for a lead the intervals show: the best row's interval separates from every
        # other row's (one seed: no interval, no best).  Suspect rows (agreement.py) are never best.
        rows = [v for v in variants if v.ok and not v.suspect and v.cells[col.key].estimate is not None]
        ests = {v.name: v.cells[col.key].estimate for v in rows}
        leaders, _ = stats_order(ests, col.better, per_seed_values(rows, col.key), scale_of(col.kind))
        if len(leaders) == 1 and len(ests) >= 2 and ests[leaders[0]].has_interval:
            next(v for v in variants if v.name == leaders[0]).cells[col.key].best = True
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


def _statuses(v: Variant, stage: str) -> str | None:
    """A stage's status for results.csv: one word where every seed has it, else each status with its
    seeds (a failed seed is not hidden behind the first one's "ok")."""
    if len(v.runs) < 2:
        return getattr(v, stage).status
    by = _by_seed(v.runs, lambda r: getattr(r, stage).status)
    return next(iter(by)) if len(by) == 1 else "; ".join(f"{st} (seed {', '.join(seeds)})" for st, seeds in by.items())


def _failed(v: Variant):
    """The training document whose failure results.csv reports: the first seed's that did not finish
    (a variant whose first seeds finished and a later one failed), else the first one's."""
    return next((r.train for r in v.runs if not r.train.ok), v.train)


def _failure_message(v: Variant) -> str | None:
    doc = _failed(v)
    msg = dig(doc.data, "failure.message") or doc.missing
    seed = next((r.seed for r in v.runs if r.train is doc), None)
    return f"seed {seed}: {msg}" if msg and len(v.runs) > 1 and seed is not None else msg


CSV_EXTRA = [
    ("status", lambda v: _statuses(v, "train")),
    ("failure_kind", lambda v: dig(_failed(v).data, "failure.kind")),
    ("failure_step", lambda v: dig(_failed(v).data, "failure.step")),
    ("failure_message", _failure_message),
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
    ("cache_bytes_per_token", "model.cache_bytes_per_token"), ("cache_bytes_at_seq_len", "model.cache_bytes_at_seq_len"),
    ("tokens_trained", "training.tokens_trained"), ("steps", "training.steps"),
    ("batch_size", "training.batch_size"), ("seq_len", "training.seq_len"), ("dtype", "training.dtype"),
]


def _over_runs(v: Variant, path: str) -> Any:
    """A training figure for results.csv: the mean over the finished seeds where it is a number in
    each (as the table's cells are); otherwise the first finished seed's (a setting, the same in each)."""
    values = [dig(r.train.data, path) for r in v.ok_runs]
    numbers = [x for x in values if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]
    if len(v.ok_runs) >= 2 and numbers and len(numbers) == len([x for x in values if x is not None]):
        return sum(numbers) / len(numbers) if len(set(numbers)) > 1 else numbers[0]
    return dig(v.train.data, path)


def csv_rows(variants: list[Variant], cols: list[Column]) -> tuple[list[str], list[dict[str, Any]]]:
    names = ["variant"] + [k for k, _ in CSV_EXTRA] + [c.key for c in cols] + [k for k, _ in CSV_MORE] + \
        ["seeds_finished", "probe_status", "sweep_status", "exact_agreement", "exact_max_loss_diff",
         "exact_max_loss_diff_to_baseline"]
    rows = []
    for v in variants:
        row: dict[str, Any] = {"variant": v.name}
        row.update({k: f(v) for k, f in CSV_EXTRA})
        row.update({c.key: v.cells[c.key].value for c in cols})
        row.update({k: _over_runs(v, p) for k, p in CSV_MORE})
        row["seeds_finished"] = len(v.ok_runs)
        row["probe_status"], row["sweep_status"] = _statuses(v, "probe"), v.sweep.status
        row.update(agreement.summary(v))
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

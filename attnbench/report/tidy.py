"""Tidy results: ``runs.csv`` (one row per variant x seed x metric) and ``summary.csv`` (one row
per variant: mean, 95 % bootstrap interval and n of every metric, and the paired per-seed
difference to ``baseline`` with its interval).

``runs.csv`` carries the run's name, device, commit and seed on every row, so the files of
several runs (two GPUs, two commits) concatenate and compare (``python -m attnbench.compare``).
Metrics: every numeric column of the report's table, per seed, plus what the table does not
show: tokens/s at the 10th and 90th percentile of the job's timing windows (spread inside one
job), the control's TFLOP/s, MFU on the standard-attention count, energy above idle, and the
loss drop per kJ over the timed steps.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..stats import bootstrap_mean, paired_difference
from .format import _num, dig
from .load import Variant
from .table import Column, Context

EXTRA = {  # metric -> dotted path in the train document
    "control_tflops": "control.tflops",
    "mfu_standard": "flops.mfu_standard",
    "achieved_tflops": "flops.achieved_tflops",
    "gpu_j_per_token_above_idle": "energy.gpu_j_per_token_above_idle",
    "idle_w": "energy.idle_w",
    "gpu_mean_w": "energy.gpu_mean_w",
    "loss_drop_per_kj": "efficiency.loss_drop_per_kj",
    "warmup_s": "timing.warmup_s",
    # both memory phases under their own names: peak_allocated_bytes is the report column's one phase
    # for all rows (timed, or warm-up under CUDA graphs), these compare across runs of either kind
    "peak_allocated_timed_bytes": "memory.peak_allocated_bytes",
    "peak_allocated_warmup_bytes": "memory.peak_allocated_warmup_bytes",
}


def _window_rates(doc: Any) -> list[float]:
    rates = []
    for w in dig(doc, "timing.windows") or []:
        tokens, secs = _num(w.get("tokens")), _num(w.get("seconds"))
        if tokens is None:  # windows written before they carried tokens
            tokens = (_num(w.get("steps")) or 0) * (_num(dig(doc, "training.tokens_per_step")) or 0)
        if tokens and secs:
            rates.append(tokens / secs)
    return rates


def runs_frame(variants: list[Variant], cols: list[Column], ctx: Context, header: dict) -> pd.DataFrame:
    rows = []
    for v in variants:
        for r in v.runs:
            base = {"run": header.get("run_name"), "device": dig(r.train.data, "provenance.device"),
                    "commit": dig(r.train.data, "provenance.git_commit"), "variant": v.name, "seed": r.seed,
                    "status": "stale" if r.stale else r.train.status}
            if not r.train.ok or r.stale:
                rows.append({**base, "metric": "status", "value": None})
                continue
            view = v.view(r)
            values: dict[str, Any] = {}
            for c in cols:
                val = c.get(view, ctx)[0]
                if isinstance(val, (int, float)) and not isinstance(val, bool):
                    values[c.key] = val
            for key, path in EXTRA.items():
                values.setdefault(key, _num(dig(r.train.data, path)))
            rates = sorted(_window_rates(r.train.data))
            if rates:
                values["tokens_per_s_window_p10"] = rates[int(0.1 * (len(rates) - 1))]
                values["tokens_per_s_window_p90"] = rates[int(round(0.9 * (len(rates) - 1)))]
            rows.extend({**base, "metric": k, "value": x} for k, x in values.items() if x is not None)
    return pd.DataFrame(rows, columns=["run", "device", "commit", "variant", "seed", "status", "metric", "value"])


def summary_frame(runs: pd.DataFrame, order: list[str], reference: str = "baseline") -> pd.DataFrame:
    """Per variant (in ``order``): ``<metric>``, ``<metric>_ci95_low``, ``<metric>_ci95_high`` and
    ``n`` (finished seeds); and against ``reference`` over the seeds both finished,
    ``<metric>_vs_baseline`` (mean per-seed difference) with its 95 % t-interval
    (``..._ci95_low`` / ``..._ci95_high``; :func:`attnbench.stats.paired_difference`)."""
    ok = runs[runs["status"] == "ok"]
    ref = {m: dict(zip(g["seed"], g["value"])) for m, g in ok[ok["variant"] == reference].groupby("metric", sort=False)}
    out = []
    for name in order:
        mine = ok[ok["variant"] == name]
        row: dict[str, Any] = {"variant": name, "n": int(mine["seed"].nunique()) if len(mine) else 0}
        for metric, group in mine.groupby("metric", sort=False):
            est = bootstrap_mean(group["value"].tolist())
            row[metric] = est.mean
            row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"] = est.low, est.high
        if name != reference:
            for metric, group in mine.groupby("metric", sort=False):
                d = paired_difference(dict(zip(group["seed"], group["value"])), ref.get(metric, {}))
                if d.has_interval:
                    key = f"{metric}_vs_{reference}"
                    row[key], row[f"{key}_ci95_low"], row[f"{key}_ci95_high"] = d.mean, d.low, d.high
        out.append(row)
    return pd.DataFrame(out)

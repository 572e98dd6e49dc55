"""The scaling page over a model-size x training-length axis (config ``models``, ``train.seq_lens``).

Each shape has its own complete report (``results/report/<shape>/``: verdict, table with
intervals, findings and plots for that size and length).  This page puts them side by side:
per variant, tokens/s, GPU energy per token (total and above idle), peak memory and
validation loss at every shape (mean over seeds with the 95 % interval, from each shape's
``summary.csv``), plotted against model size at each length and against length at each size,
with the share of the training FLOPs that standard causal attention takes at each shape -- at
512 tokens it is a few per cent of GPT-2 124M's, so a ranking there mostly ranks everything
but attention.  It claims no order itself: the ranking of each shape is its own report's.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .charts import Series
from .format import Unit, _num, pick_unit
from .load import PALETTE
from .plots import line_plot

METRICS = (  # (summary.csv metric, label, unit kind, per)
    ("tokens_per_s", "Train tokens/s", "rate", ""),
    ("gpu_j_per_token", "GPU energy", "joule", "/token"),
    ("gpu_j_per_token_above_idle", "GPU energy above idle", "joule", "/token"),
    ("peak_allocated_bytes", "Peak GPU memory", "bytes", ""),
    ("val_loss", "Val loss", "loss", ""),
)


@dataclass
class Shape:
    name: str
    size: str          # model size label ('' without a size axis)
    seq_len: int
    params: float | None
    attention_share: float | None   # standard causal attention's share of the training FLOPs
    rows: dict[str, dict[str, str]]  # variant -> summary.csv row
    config: dict


def attention_flop_share(model: dict, seq_len: int) -> float:
    """Share of a GPT-2 forward's (and so training's) matmul FLOPs per token that standard
    causal attention's scores and weighted values take: 2*L*(T+1)*C against the projections
    and MLP (24*L*C^2) and the LM head (2*C*V).  The FlashAttention convention (T(T+1)/2 pairs)."""
    L, C, V = model["n_layer"], model["n_embd"], model["vocab_size"]
    core = 2 * L * (seq_len + 1) * C
    return core / (core + 24 * L * C * C + 2 * C * V)


def load_shapes(names: list[str], summaries: list[Path], results: list[Path]) -> list[Shape]:
    shapes = []
    for name, summary, result in zip(names, summaries, results):
        doc = json.loads(Path(result).read_text())
        cfg = doc.get("config") or {}
        with open(summary, newline="") as fh:
            rows = {r["variant"]: r for r in csv.DictReader(fh)}
        params = [_num(r.get("params_total")) for r in rows.values()]
        size = name.split("-T")[0] if not name.startswith("T") else ""
        T = cfg["train"]["seq_len"]
        shapes.append(Shape(name, size, T, max((p for p in params if p), default=None),
                            attention_flop_share(cfg["model"], T), rows, cfg))
    return shapes


def cell(row: dict | None, metric: str) -> tuple[float | None, tuple[float, float] | None]:
    if not row:
        return None, None
    lo, hi = _num(row.get(f"{metric}_ci95_low")), _num(row.get(f"{metric}_ci95_high"))
    return _num(row.get(metric)), ((lo, hi) if lo is not None and hi is not None else None)


def tidy_rows(shapes: list[Shape]) -> list[dict[str, Any]]:
    """One row per shape x variant x metric (scaling.csv)."""
    out = []
    for s in shapes:
        for variant, row in s.rows.items():
            for metric, *_ in METRICS:
                mean, ci = cell(row, metric)
                out.append({"shape": s.name, "size": s.size, "seq_len": s.seq_len, "params_total": s.params,
                            "attention_flop_share": s.attention_share, "variant": variant, "metric": metric,
                            "mean": mean, "ci95_low": ci[0] if ci else None, "ci95_high": ci[1] if ci else None,
                            "n": row.get("n")})
    return out


MILLIONS = Unit("M", 1e-6)  # model parameters on an axis: 100, 150, 200, 300 (millions)


def plots(shapes: list[Shape], variants: list[str]) -> list:
    """Each metric against model size (one plot per length with more than one size) and
    against length (one per size with more than one length)."""
    out = []
    lengths = sorted({s.seq_len for s in shapes})
    sizes = list(dict.fromkeys(s.size for s in shapes))
    for metric, label, kind, per in METRICS:
        values = [cell(s.rows.get(v), metric)[0] for s in shapes for v in variants]
        unit = pick_unit(kind, [x for x in values if x is not None], per)
        groups = [(f"T = {T}", [s for s in shapes if s.seq_len == T], "params", "model parameters (millions)")
                  for T in lengths] + [(f"{size or 'model'}", [s for s in shapes if s.size == size], "T",
                                        "training length (tokens)") for size in sizes]
        for title, group, xkey, xlabel in groups:
            if len(group) < 2 or (xkey == "params" and len({s.size for s in group}) < 2):
                continue
            series = []
            for i, v in enumerate(variants):
                pts, err = [], []
                for s in group:
                    mean, ci = cell(s.rows.get(v), metric)
                    x = s.params if xkey == "params" else s.seq_len
                    if mean is not None and x is not None:
                        pts.append((x, mean))
                        err.append(ci)
                series.append(Series(v, PALETTE[i % len(PALETTE)], sorted(pts), yerr=[e for _, e in
                                     sorted(zip(pts, err))], missing=None if pts else "not measured"))
            pid = f"scaling-{metric}-{xkey}-{title}".replace(" ", "").replace("=", "")
            # parameters in millions (full counts overlap on the axis); lengths on powers of two
            out.append(line_plot(pid, f"{label} vs {'model size' if xkey == 'params' else 'length'}, {title}",
                                 series, xlabel=xlabel, ylabel=f"{label} ({unit.name})" if unit.name else label,
                                 logx=True, yunit=unit, xunit=MILLIONS if xkey == "params" else None,
                                 seq_x=xkey == "T", caption="mean over seeds; bars: 95 % interval"))
    return out


def build_scaling(names: list[str], summaries: list[Path], results: list[Path], out_dir: Path) -> dict:
    """Write ``index.html`` and ``scaling.csv`` into ``out_dir``; returns the page's data."""
    from .build import _env

    shapes = load_shapes(names, summaries, results)
    variants = list(dict.fromkeys(v for s in shapes for v in s.rows))
    tables = []
    for metric, label, kind, per in METRICS:
        values = [cell(s.rows.get(v), metric)[0] for s in shapes for v in variants]
        unit = pick_unit(kind, [x for x in values if x is not None], per)
        rows = []
        for v in variants:
            cells = []
            for s in shapes:
                mean, ci = cell(s.rows.get(v), metric)
                # the interval in the cell, not only on hover (a touch screen has none)
                cells.append({"text": unit.num(mean) if mean is not None else "—",
                              "ci": (f"[{unit.num(ci[0])}, {unit.num(ci[1])}]" if ci
                                     else "one seed" if mean is not None else None),
                              "title": (f"95 % interval {unit.num(ci[0])}–{unit.num(ci[1])} {unit.name}".strip() if ci
                                        else "one seed: no interval" if mean is not None else "not measured")})
            rows.append({"variant": v, "cells": cells})
        tables.append({"metric": metric, "label": label, "unit": unit.name, "rows": rows})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tidy = tidy_rows(shapes)
    with open(out_dir / "scaling.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(tidy[0]) if tidy else ["shape"])
        w.writeheader()
        w.writerows(tidy)
    page = {"shapes": [{"name": s.name, "size": s.size, "seq_len": s.seq_len, "params": s.params,
                        "attention_share": s.attention_share, "href": f"{s.name}/index.html"} for s in shapes],
            "tables": tables, "plots": plots(shapes, variants)}
    html = _env().get_template("scaling.html.j2").render(**page)
    (out_dir / "index.html").write_text(html, encoding="utf-8")
    return page

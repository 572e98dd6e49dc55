"""Two runs side by side: ``python -m attnbench.compare RUN_A RUN_B [--out compare.csv]``.

RUN_A / RUN_B: a results folder (``results/``, ``reports/h200/...``: its ``report/runs.csv`` or
``runs.csv``) or a ``runs.csv`` file.  For every variant and metric both runs measured: the
mean and 95 % bootstrap interval over seeds of each, and the ratio B / A with an interval from
resampling both (``attnbench.stats.bootstrap_ratio``).  The table printed last covers the
headline metrics; ``--out`` writes every metric as CSV.  Typical uses: the same preset on two
GPUs, or at two commits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .stats import bootstrap_mean, bootstrap_ratio

HEADLINE = ["tokens_per_s", "tokens_per_s_normalized", "gpu_j_per_token", "gpu_j_per_token_above_idle",
            "val_loss", "peak_allocated_timed_bytes", "peak_allocated_warmup_bytes",  # each phase by name: the
            "decode_ms_per_token_p50"]  # timed peak is unavailable under CUDA graphs, the warm-up one in older runs


def find_runs(path: str) -> Path:
    p = Path(path)
    for cand in (p, p / "runs.csv", p / "report" / "runs.csv", p / "results" / "report" / "runs.csv"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no runs.csv at or under {path} (looked in ., report/, results/report/)")


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    a, b = (df[df["status"] == "ok"] for df in (a, b))
    rows = []
    for (variant, metric), ga in a.groupby(["variant", "metric"], sort=False):
        gb = b[(b["variant"] == variant) & (b["metric"] == metric)]
        if gb.empty:
            continue
        ea, eb = bootstrap_mean(ga["value"]), bootstrap_mean(gb["value"])
        r = bootstrap_ratio(gb["value"], ga["value"])
        rows.append({"variant": variant, "metric": metric, "a_mean": ea.mean, "a_low": ea.low, "a_high": ea.high,
                     "a_n": ea.n, "b_mean": eb.mean, "b_low": eb.low, "b_high": eb.high, "b_n": eb.n,
                     "ratio_b_over_a": r.mean, "ratio_low": r.low, "ratio_high": r.high,
                     "separated": ea.separated_from(eb)})
    return pd.DataFrame(rows)


def _fmt(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{x:.4g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attnbench.compare", description=__doc__.split("\n")[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--out", help="write every compared metric here (CSV)")
    args = ap.parse_args(argv)
    try:
        pa, pb = find_runs(args.run_a), find_runs(args.run_b)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    a, b = pd.read_csv(pa), pd.read_csv(pb)
    table = compare(a, b)
    if args.out:
        table.to_csv(args.out, index=False)
    label = {p: f"{df['run'].dropna().iloc[0] if df['run'].notna().any() else p.parent} "
                f"({df['device'].dropna().iloc[0] if df['device'].notna().any() else 'device unknown'})"
             for p, df in ((pa, a), (pb, b))}
    print(f"A = {label[pa]}: {pa}\nB = {label[pb]}: {pb}")
    print("| variant | metric | A mean [95 %] | B mean [95 %] | B / A [95 %] |")
    print("|---|---|---|---|---|")
    for _, r in table[table["metric"].isin(HEADLINE)].iterrows():
        iv = lambda m, lo, hi: f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and not pd.isna(lo) else _fmt(m)  # noqa: E731
        print(f"| {r['variant']} | {r['metric']} | {iv(r['a_mean'], r['a_low'], r['a_high'])} (n={r['a_n']}) | "
              f"{iv(r['b_mean'], r['b_low'], r['b_high'])} (n={r['b_n']}) | "
              f"{iv(r['ratio_b_over_a'], r['ratio_low'], r['ratio_high'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

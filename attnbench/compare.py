"""Two runs side by side: ``python -m attnbench.compare RUN_A RUN_B [--out compare.csv]``.

RUN_A / RUN_B: a results folder (``results/``, ``reports/h200/...``: its ``report/runs.csv`` or
``runs.csv``), a ``runs.csv`` file, or a committed run without one (``reports/h100``): its
documents under ``runs/<stage>/<variant>/[seed<k>/]`` read by the report's own code with the
run's settings (``report_config.json``, else ``config.yaml``).  For every variant and metric both runs measured: the
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
    """The ``runs.csv`` at or under ``path``, or the folder of a committed run's documents."""
    p = Path(path)
    for cand in (p, p / "runs.csv", p / "report" / "runs.csv", p / "results" / "report" / "runs.csv"):
        if cand.is_file():
            return cand
    if (p / "runs" / "train").is_dir():
        return p
    raise FileNotFoundError(f"no runs.csv at or under {path} (looked in ., report/, results/report/) and no "
                            "documents in runs/train/")


def runs_from_documents(folder: Path) -> pd.DataFrame:
    """The tidy rows (as ``runs.csv`` has them) of a run committed as documents only: the report's
    own reading (:func:`attnbench.report.build.assess`, :func:`attnbench.report.tidy.runs_frame`)
    with the run's report settings, or its preset validated (schema defaults), or as written if an
    older preset no longer validates."""
    import json

    import yaml

    from .report import tidy
    from .report.build import assess
    from .settings import validate

    def docs(stage: str, name: str) -> list[Path]:
        root = folder / "runs" / stage
        return sorted([*root.glob(f"*/{name}"), *root.glob(f"*/seed*/{name}")])

    if (folder / "report_config.json").is_file():
        config = json.loads((folder / "report_config.json").read_text(encoding="utf-8"))
    elif (folder / "config.yaml").is_file():
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        try:
            config = validate(config)
        except Exception:  # noqa: BLE001 -- an earlier preset: its own keys are what its run got
            pass
    else:
        config = {}
    order = list(config.get("variants") or {})
    train = docs("train", "metrics.json")
    if order:  # the report lists variants in the order of its train documents: the run's config order
        train.sort(key=lambda q: order.index(q.relative_to(folder / "runs" / "train").parts[0])
                   if q.relative_to(folder / "runs" / "train").parts[0] in order else len(order))
    stats = folder / "runs" / "tokens_stats.json"
    a = assess(train, docs("probe", "probe.json"), docs("sweep", "sweep.json"), stats if stats.is_file() else None,
               config)
    return tidy.runs_frame(a["variants"], a["columns"], a["ctx"], a["header"])


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
    a, b = (pd.read_csv(p) if p.is_file() else runs_from_documents(p) for p in (pa, pb))
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

"""Checks of a finished default-preset run on the GPU (the README's first command).

``ATTNBENCH_RUN_DIR`` names the run's ``results/`` folder; ``ATTNBENCH_PINNED_CONTROLS`` (optional)
a JSON of pinned-kernel trainings made in the same call (``benchmarks/auto_vs_pinned.py``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

RUN = os.environ.get("ATTNBENCH_RUN_DIR")
pytestmark = pytest.mark.skipif(not RUN, reason="ATTNBENCH_RUN_DIR not set: no finished default run to check")
NINE = ["baseline", "sdpa", "flash2", "gqa", "flex", "sliding_window", "linear", "lsh", "mla"]


def metrics(name: str, seed: int) -> dict:
    return json.loads((Path(RUN) / "train" / name / f"seed{seed}" / "metrics.json").read_text())


def seeds_run() -> list[int]:
    """The seeds the run trained (every seed folder under any variant)."""
    return sorted({int(p.name[4:]) for p in (Path(RUN) / "train").glob("*/seed*") if p.name[4:].isdigit()})


def test_all_nine_trained_with_definite_kernels_and_passing_self_checks(gpu_log):
    rows = {}
    assert seeds_run(), f"no train/<variant>/seed<N>/ under {RUN}"
    for seed in seeds_run():
        for name in NINE:
            m = metrics(name, seed)
            kc = m.get("kernel_check", {})
            rows[f"{name}/seed{seed}"] = {
                "status": m["status"], "kernel": m.get("kernel"),
                "start": kc.get("start", {}).get("pass"), "end": kc.get("end", {}).get("pass"),
                "tokens_per_s": (m.get("timing") or {}).get("tokens_per_s"),
                "val_loss": (m.get("training") or {}).get("val_loss")}
    gpu_log("default_run_rows", rows)
    for name, r in rows.items():
        assert r["status"] == "ok", (name, r)
        assert r["kernel"] and "?" not in r["kernel"], (name, r)
        assert r["start"] is True and r["end"] is True, (name, r)


def test_exact_variants_agree_with_baseline():
    summary = {r["variant"]: r for r in csv.DictReader(open(Path(RUN) / "report" / "results.csv"))}
    exact = {n: r for n, r in summary.items() if r.get("exact_agreement")}
    assert {"sdpa", "flash2", "flex"} <= set(exact), exact.keys()
    for name, r in exact.items():
        assert r["exact_agreement"] == "agrees", (name, r["exact_agreement"], r["exact_max_loss_diff"])


def test_auto_at_least_095_of_pinned_in_the_same_call(gpu_log):
    path = os.environ.get("ATTNBENCH_PINNED_CONTROLS")
    if not path or not Path(path).exists():
        pytest.skip("no pinned-kernel controls from this call")
    controls = json.loads(Path(path).read_text())
    ratios = {}
    for name, c in controls["runs"].items():
        auto = metrics(name, controls["seed"])["timing"]["tokens_per_s"]
        ratios[name] = auto / c["tokens_per_s"]
    gpu_log("auto_vs_pinned_training", ratios)
    assert all(r >= 0.95 for r in ratios.values()), ratios

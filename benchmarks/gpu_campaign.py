"""Run the pipeline's per-variant stages on a GPU machine without Snakemake, then the report.

The GPU machine used for the committed results has no Snakemake; this driver runs the same
thin CLIs the rules run (``scripts/train.py``, ``probe.py``, ``sweep.py``, ``report.py``)
with the same job settings (``attnbench.settings.stage_settings`` of the validated config),
one subprocess per stage with a time limit, and skips stages whose output exists — so a
campaign split over several calls keeps each call's finished variants.  Model weights are
deleted after the probe (they are 0.5 GB per variant and not needed for the report).

    python benchmarks/gpu_campaign.py --config config/paper.yaml --variants sdpa flash2 \
        --results results --budget-s 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnbench import settings as S  # noqa: E402


def run_stage(cmd: list[str], log: Path, timeout: float) -> tuple[int | str, float]:
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return rc, time.time() - t0


def record_killed_train(metrics: Path, variant: str, rc, seconds: float, log: Path) -> None:
    """A train job that this driver had to kill (time limit) or that died without writing
    its result: record it as a failed row, so the report lists it with the reason."""
    from attnbench.results import TRAIN_SCHEMA, atomic_write_json, provenance

    tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
    kind = "timeout" if rc == "timeout" else "error"
    message = (f"killed by benchmarks/gpu_campaign.py after its {seconds:.0f} s stage limit"
               if rc == "timeout" else f"train job exited with code {rc} without a result")
    atomic_write_json(metrics, {
        "schema": TRAIN_SCHEMA, "variant": variant, "status": "failed",
        "failure": {"kind": kind, "message": message, "step": None, "log_tail": tail},
        "recorded_by": "benchmarks/gpu_campaign.py", "provenance": provenance(),
        "unavailable": {"training": message}})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    ap.add_argument("--variants", nargs="*", help="default: every variant of the config")
    ap.add_argument("--stages", nargs="+", default=["train", "probe", "sweep"])
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--budget-s", type=float, default=500, help="start no stage after this many seconds")
    ap.add_argument("--stage-timeout-s", type=float, default=300)
    ap.add_argument("--report", action="store_true", help="render the report over every finished variant")
    args = ap.parse_args()
    cfg = S.validate(yaml.safe_load(args.config.read_text()))
    variants = args.variants or list(cfg["variants"])
    res, tokens = args.results, args.results / "tokens"
    if not (tokens / "stats.json").exists():
        raise SystemExit(f"{tokens}/stats.json missing: tokenize first (scripts/tokenize_dataset.py)")
    start = time.time()
    py = sys.executable
    status = {}
    for v in variants:
        settings_file = {}
        for stage in ("train", "probe", "sweep"):
            settings_file[stage] = res / "settings" / f"{v}.{stage}.json"
            settings_file[stage].parent.mkdir(parents=True, exist_ok=True)
            settings_file[stage].write_text(json.dumps(S.stage_settings(cfg, stage, v), sort_keys=True))
        metrics, weights = res / "train" / v / "metrics.json", res / "train" / v / "model.safetensors"
        if ("probe" in args.stages and not (res / "probe" / v / "probe.json").exists() and metrics.exists()
                and not weights.exists()):
            # the probe needs the weights, which an earlier call deleted or never brought back
            metrics.rename(metrics.with_name("metrics.previous.json"))
        for stage in args.stages:
            out = {"train": res / "train" / v / "metrics.json", "probe": res / "probe" / v / "probe.json",
                   "sweep": res / "sweep" / v / "sweep.json"}[stage]
            if out.exists():
                status[(v, stage)] = "exists"
                continue
            left = args.budget_s - (time.time() - start)
            if left < 30:
                status[(v, stage)] = "no time left"
                continue
            cmd = {"train": [py, "scripts/train.py", "--settings", f"@{settings_file['train']}", "--tokens-dir",
                             str(tokens), "--out-dir", str(res / "train" / v)],
                   "probe": [py, "scripts/probe.py", "--settings", f"@{settings_file['probe']}", "--train-dir",
                             str(res / "train" / v), "--tokens-dir", str(tokens), "--out", str(out)],
                   "sweep": [py, "scripts/sweep.py", "--settings", f"@{settings_file['sweep']}", "--out",
                             str(out)]}[stage]
            log = res / "logs" / stage / f"{v}.log"
            rc, dt = run_stage(cmd, log, min(args.stage_timeout_s, left))
            if stage == "train" and not out.exists():
                record_killed_train(out, v, rc, dt, log)
            status[(v, stage)] = f"rc={rc} {dt:.0f}s"
            print(f"{v:>16} {stage:>6}: rc={rc} in {dt:.0f} s", flush=True)
        if "probe" in args.stages and (res / "probe" / v / "probe.json").exists() and weights.exists():
            weights.unlink()
    if args.report:
        done = [v for v in cfg["variants"] if (res / "train" / v / "metrics.json").exists()]
        probes = [str(res / "probe" / v / "probe.json") for v in done if (res / "probe" / v / "probe.json").exists()]
        sweeps = [str(res / "sweep" / v / "sweep.json") for v in done if (res / "sweep" / v / "sweep.json").exists()]
        cmd = [py, "scripts/report.py", "--train", *[str(res / "train" / v / "metrics.json") for v in done],
               "--probe", *probes, "--sweep", *sweeps, "--stats", str(tokens / "stats.json"),
               "--config", json.dumps(cfg), "--out-dir", str(res / "report")]
        rc, dt = run_stage(cmd, res / "logs" / "report.log", 120)
        print(f"report: rc={rc} in {dt:.0f} s")
    print(json.dumps({f"{v}/{s}": st for (v, s), st in status.items()}, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Pinned-kernel controls for a finished run: train variants again with their SDPA backend
pinned (the paper preset's old pins), in the same call, and compare tokens/s with the run's
``impl: auto`` rows.

``auto`` measures the SDPA backends in each train job and pins the fastest correct one, so its
compiled graph is the pinned graph; these controls show it on the device (issue: auto at
least 0.95x the pinned kernel's throughput, measured in the same call).  Each control is a
normal train job (same settings as the run's, ``impl`` replaced, optionally fewer steps: the
timed windows are steady state either way), written under ``--out-dir``.

    python benchmarks/auto_vs_pinned.py --config config/config.yaml --run-dir results \\
        --variants sdpa gqa mla --impl cudnn --steps 150 --out-dir results/pinned
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import yaml

    from attnbench import settings as S
    from attnbench import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--run-dir", default="results", help="the run's results/ (tokens and train metrics)")
    ap.add_argument("--variants", nargs="+", default=["sdpa", "gqa", "mla"])
    ap.add_argument("--seed", type=int, default=None, help="the run's seed to compare with (default: the config's first)")
    ap.add_argument("--impl", default="cudnn")
    ap.add_argument("--steps", type=int, default=None, help="train steps (default: the config's)")
    ap.add_argument("--out-dir", default="results/pinned")
    ap.add_argument("--no-nvml", action="store_true", help="no energy readings (e.g. on another GPU than NVML index 0)")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(open(args.config))
    if args.steps:
        cfg.setdefault("train", {})["steps"] = args.steps
        cfg["train"]["eval_every"] = 0
    if args.no_nvml:
        cfg.setdefault("measure", {}).update(nvml=False, codecarbon=False)
    cfg = S.validate(cfg)
    run = Path(args.run_dir)
    seed = args.seed if args.seed is not None else int(cfg["seeds"][0])
    out = {"impl": args.impl, "steps": cfg["train"]["steps"], "seed": seed, "runs": {}}
    for name in args.variants:
        auto = json.loads((run / "train" / name / f"seed{seed}" / "metrics.json").read_text())
        s = copy.deepcopy(S.stage_settings(cfg, "train", name, seed=seed))
        s["entry"]["params"]["impl"] = args.impl
        m = train.run(s, run / "tokens", Path(args.out_dir) / name)
        out["runs"][name] = {"status": m["status"], "kernel": m.get("kernel"),
                             "tokens_per_s": (m.get("timing") or {}).get("tokens_per_s"),
                             "control": control_rate(m),
                             "auto_kernel": auto.get("kernel"), "auto_tokens_per_s": auto["timing"]["tokens_per_s"],
                             "auto_control": control_rate(auto)}
        r = out["runs"][name]
        ratio = (r["auto_tokens_per_s"] / r["tokens_per_s"]) if r["tokens_per_s"] else None
        r["auto_vs_pinned"] = ratio
        # each job's own same-process control (a fixed matmul): the ratio with drift between the
        # two jobs taken out
        r["auto_vs_pinned_control_normalised"] = (ratio * r["control"] / r["auto_control"]
                                                  if ratio and r["control"] and r["auto_control"] else None)
        print(f"{name:6s} auto {r['auto_kernel']} {r['auto_tokens_per_s']:.0f} tok/s | pinned {r['kernel']} "
              f"{r['tokens_per_s'] or float('nan'):.0f} tok/s | ratio {ratio} "
              f"(control-normalised {r['auto_vs_pinned_control_normalised']})", flush=True)
    path = Path(args.out_dir) / "pinned_controls.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


def control_rate(metrics: dict) -> float | None:
    """The job's same-process matmul control in TFLOP/s (None when it was not measured)."""
    c = metrics.get("control") or {}
    return c.get("tflops")


if __name__ == "__main__":
    sys.exit(main())

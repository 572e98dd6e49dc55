"""Exact variants must agree: a variant that computes baseline's function (``attention.exact``
in its training document: sdpa, flash2, flex without score_mod, a window as wide as the
sequence, any class that declares it) trained from the same data, seed and initial weights
follows baseline's validation-loss curve up to bf16 noise.  A curve that leaves it by more
than ``report.exact_tolerance`` at any eval point marks the row **suspect**: its kernel did not
compute what it claims (this is how the ``sdpa`` divergence of the H200 default run, 0.9 above
baseline from the first eval on, would have been caught).  Suspect rows stay in the table,
marked, and are left out of every ranking in the findings.
"""

from __future__ import annotations

from typing import Any

from .format import dig
from .load import BASELINE, Variant

DEFAULT_TOLERANCE = 0.05


def _curve(doc) -> dict[int, float]:
    hist = dig(doc.data, "training.val_history") or []
    return {int(h["step"]): float(h["val_loss"]) for h in hist if h.get("val_loss") is not None}


def check(variants: list[Variant], tolerance: float | None) -> None:
    """Set ``v.agreement`` on every exact variant: its curve against baseline's of the same seed,
    over every seed both finished: ``{tolerance, points: [{seed, step, diff}], max_abs_diff,
    at_step, at_seed, suspect}`` or ``{unavailable: reason}``."""
    tol = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    base = next((v for v in variants if v.name == BASELINE), None)
    for v in variants:
        if v.name == BASELINE or not v.ok or not dig(v.train.data, "attention.exact"):
            continue
        if base is None or not base.ok:
            v.agreement = {"unavailable": "no finished baseline run to compare with"}
            continue
        theirs = {r.seed: r.train for r in base.ok_runs}
        points = []
        for r in v.ok_runs:
            if r.seed not in theirs:
                continue
            mine, ref = _curve(r.train), _curve(theirs[r.seed])
            points += [{"seed": r.seed, "step": s, "diff": mine[s] - ref[s]} for s in sorted(set(mine) & set(ref))]
        if not points:
            v.agreement = {"unavailable": "no seed and eval step in common with baseline"}
            continue
        worst = max(points, key=lambda p: abs(p["diff"]))
        v.agreement = {"tolerance": tol, "points": points, "max_abs_diff": abs(worst["diff"]),
                       "at_step": worst["step"], "at_seed": worst["seed"], "diff": worst["diff"],
                       "suspect": abs(worst["diff"]) > tol}


def describe(v: Variant) -> str | None:
    """One sentence for a suspect row (None otherwise)."""
    a = v.agreement or {}
    if not a.get("suspect"):
        return None
    run = next((r for r in v.ok_runs if r.seed == a["at_seed"]), None)  # the seed that left baseline's curve
    kernel = dig((run.train if run else v.train).data, "kernel") or "unrecorded"
    return (f"{v.name} computes baseline's function (same data, seed and initial weights) but its validation "
            f"loss is {a['diff']:+.3f} from baseline's at step {a['at_step']} (seed {a['at_seed']}; tolerance "
            f"±{a['tolerance']:g}): its "
            f"kernel at that seed ({kernel}) did not compute what it claims, so its row is "
            "suspect and left out of every ranking below.")


def summary(v: Variant) -> dict[str, Any]:
    """CSV/JSON columns of the check."""
    a = v.agreement
    if not a:
        return {"exact_agreement": "", "exact_max_loss_diff": None}
    if "unavailable" in a:
        return {"exact_agreement": "unchecked: " + a["unavailable"], "exact_max_loss_diff": None}
    return {"exact_agreement": "suspect" if a["suspect"] else "agrees", "exact_max_loss_diff": a["max_abs_diff"]}

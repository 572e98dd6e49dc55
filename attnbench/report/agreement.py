"""Exact variants must agree: a variant that computes baseline's function (``attention.exact``
in its training document: sdpa, flash2, flex without score_mod, a window as wide as the
sequence, any class that declares it) trained from the same data, seed and initial weights
follows the same validation-loss curve up to bf16 noise.  A curve off the seed's reference by
more than ``report.exact_tolerance`` at an eval point marks the row **suspect**: its kernel did
not compute what it claims (this is how the ``sdpa`` divergence of the H200 default run, 0.9
above baseline from the first eval on, would have been caught).  Suspect rows stay in the
table, marked, and are left out of every ranking in the findings.

The reference is the seed's **exact median**: at each eval point, the median of baseline's loss
and every exact variant's at that seed (one run each), where three or more runs recorded it and
baseline's own loss stands within the tolerance of it; otherwise it is baseline's loss.
Baseline is one bf16 run and drifts from the function it computes as much as any other: on the
H200 campaign (350M, T = 512, seed 1338, step 250) ``sdpa`` +0.039, ``flash2`` +0.027 and
``flex`` +0.050 stood above baseline, all their kernel self-checks passing, while no run stood
more than 0.034 from the four's median.  One wrong kernel cannot move a median of three or more
far; a kernel that leaks or drops tokens stands off it by far more than the tolerance.  Two
wrong kernels could (``sdpa`` and ``flash2`` share PyTorch's SDPA entry point), and then the
median leaves baseline, the independent eager path: where it leaves it by more than the
tolerance, baseline's loss is the reference again, so a shared fault is caught as before.  A
fault shared by two kernels that moves the loss by less than the tolerance is left to the
kernel self-checks (``kernel_check`` in every training document, against a float32 reference).
The largest gap to baseline's own curve, and baseline's to the median, are reported beside it.

One point is let pass: a seed's first eval point, by at most twice the tolerance, when the
curve is back within the tolerance at the next one.  Early in training the loss falls fast, and
two correct bf16 runs that drift a few steps apart differ most there: on the H200 campaign
(124M, T = 2048, seed 1338) ``flash2`` stood +0.059 from baseline at the first eval, 0.000 at
the second and -0.010 at the end, its kernel self-checks passing.  Such an excursion is named
beside the agreeing rows, not hidden; anywhere later, or larger, it makes the row suspect.
"""
from __future__ import annotations

import statistics
from typing import Any

from .format import dig
from .load import BASELINE, Variant

DEFAULT_TOLERANCE = 0.05


def _curve(doc) -> dict[int, float]:
    hist = dig(doc.data, "training.val_history") or []
    return {int(h["step"]): float(h["val_loss"]) for h in hist if h.get("val_loss") is not None}


def check(variants: list[Variant], tolerance: float | None) -> None:
    """Set ``v.agreement`` on every exact variant: its curve against the seed's reference
    (:func:`_references`), over every seed it shares with baseline: ``{tolerance, points: [{seed,
    step, diff, reference, on_median, baseline_diff, baseline_off_median}], max_abs_diff,
    max_baseline_diff,
    at_step, at_seed, diff, suspect, off_steps, excursions, max_kept_diff}`` or
    ``{unavailable: reason}``."""
    tol = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    base = next((v for v in variants if v.name == BASELINE), None)
    exact = [v for v in variants if v.name != BASELINE and v.ok and dig(v.train.data, "attention.exact")]
    if base is None or not base.ok:
        for v in exact:
            v.agreement = {"unavailable": "no finished baseline run to compare with"}
        return
    references = _references(base, exact, tol)
    for v in exact:
        points = []
        for r in v.ok_runs:
            mine, ref = _curve(r.train), references.get(r.seed, {})
            points += [{"seed": r.seed, "step": s, "diff": mine[s] - ref[s]["loss"], "reference": ref[s]["what"],
                        "on_median": ref[s]["on_median"], "baseline_diff": mine[s] - ref[s]["baseline"],
                        "baseline_off_median": ref[s]["baseline_off_median"]} for s in sorted(set(mine) & set(ref))]
        if not points:
            v.agreement = {"unavailable": "no seed and eval step in common with baseline"}
            continue
        lone = _first_point_excursions(points, tol)
        kept = [p for p in points if p not in lone]
        off = [p for p in kept if abs(p["diff"]) > tol]
        worst = max(off or points, key=lambda p: abs(p["diff"]))
        v.agreement = {"tolerance": tol, "points": points, "max_abs_diff": max(abs(p["diff"]) for p in points),
                       "max_baseline_diff": max(abs(p["baseline_diff"]) for p in points),
                       "at_step": worst["step"], "at_seed": worst["seed"], "diff": worst["diff"],
                       "suspect": bool(off), "off_steps": [p["step"] for p in off if p["seed"] == worst["seed"]],
                       "excursions": lone, "max_kept_diff": max((abs(p["diff"]) for p in kept), default=0.0)}


MEDIAN_OF = 3  # runs at an eval point needed for the exact median (fewer: baseline's loss)


def _references(base: Variant, exact: list[Variant], tol: float) -> dict[int, dict[int, dict]]:
    """Per seed baseline finished, per eval step of baseline's: ``{loss, what, on_median,
    baseline, baseline_off_median}``.  The reference loss is the median of baseline's and the exact
    variants' losses (one run each per seed) where :data:`MEDIAN_OF` or more recorded the step
    and baseline's own loss is within ``tol`` of that median; else baseline's loss, ``what``
    saying why.  Baseline is the independent eager path: a median that leaves it by more than
    the tolerance is a majority of fast kernels off together (sdpa and flash2 share PyTorch's
    SDPA entry point), not drift to absorb."""
    firsts = [{r.seed: r for r in reversed(v.ok_runs)} for v in [base, *exact]]  # one vote per variant and seed
    out = {}
    for seed, b in firsts[0].items():
        curves = [_curve(f[seed].train) for f in firsts if seed in f]
        ref = {}
        for step, loss in curves[0].items():
            at = [c[step] for c in curves if step in c]
            median = statistics.median(at) if len(at) >= MEDIAN_OF else None
            on_median = median is not None and abs(loss - median) <= tol
            if on_median:
                what = f"median of {len(at)} exact runs"
            elif median is None:
                what = f"baseline: fewer than {MEDIAN_OF} exact runs"
            else:
                what = f"baseline: baseline stands {loss - median:+.3f} off the median of {len(at)} exact runs"
            ref[step] = {"loss": median if on_median else loss, "what": what, "on_median": on_median,
                         "baseline": loss, "baseline_off_median": None if median is None else loss - median}
        out[seed] = ref
    return out


def _first_point_excursions(points: list[dict], tol: float) -> list[dict]:
    """The points let pass: per seed its first eval point, when past ``tol`` by at most twice it
    and the curve is back within ``tol`` at the seed's next point (a seed's only point is its
    last: never let pass)."""
    out = []
    for seed in dict.fromkeys(p["seed"] for p in points):
        curve = sorted((p for p in points if p["seed"] == seed), key=lambda p: p["step"])
        if len(curve) > 1 and tol < abs(curve[0]["diff"]) <= 2 * tol and abs(curve[1]["diff"]) <= tol:
            out.append(curve[0])
    return out


def describe(v: Variant) -> str | None:
    """One sentence for a suspect row (None otherwise)."""
    a = v.agreement or {}
    if not a.get("suspect"):
        return None
    run = next((r for r in v.ok_runs if r.seed == a["at_seed"]), None)  # the seed that left the reference
    kernel = dig((run.train if run else v.train).data, "kernel") or "unrecorded"
    steps = a.get("off_steps") or [a["at_step"]]
    where = (f"at step {steps[0]}" if len(steps) == 1 else
             "at steps " + ", ".join(str(s) for s in steps[:-1]) + f" and {steps[-1]}")
    at = next(p for p in a["points"] if p["seed"] == a["at_seed"] and p["step"] == a["at_step"])
    against = (f"the seed's exact median ({at['reference']})" if at["on_median"]
               else "baseline's (the reference here: {})".format(at["reference"].removeprefix("baseline: ")))
    return (f"{v.name} computes baseline's function (same data, seed and initial weights) but its validation "
            f"loss is off {against} by more than ±{a['tolerance']:g} {where} (seed {a['at_seed']}; "
            f"{a['diff']:+.3f} at step {a['at_step']}): its "
            f"kernel at that seed ({kernel}) did not compute what it claims, so its row is "
            "suspect and left out of every ranking below.")


def excursions(v: Variant) -> str | None:
    """One clause for an agreeing row whose curve left the reference at a seed's first eval point
    and came back (let pass, :func:`_first_point_excursions`)."""
    a = v.agreement or {}
    if a.get("suspect") or not a.get("excursions"):
        return None
    return "; ".join(f"{v.name} {p['diff']:+.3f} at step {p['step']} (seed {p['seed']})" for p in a["excursions"])


def summary(v: Variant) -> dict[str, Any]:
    """CSV/JSON columns of the check."""
    a = v.agreement
    if not a or "unavailable" in a:
        return {"exact_agreement": "unchecked: " + a["unavailable"] if a else "",
                "exact_max_loss_diff": None, "exact_max_loss_diff_to_baseline": None}
    return {"exact_agreement": "suspect" if a["suspect"] else "agrees", "exact_max_loss_diff": a["max_abs_diff"],
            "exact_max_loss_diff_to_baseline": a["max_baseline_diff"]}

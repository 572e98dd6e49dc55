"""A report never mixes results of different data or settings without saying so.

Every train document records the hash of the tokens it trained on (``data.tokens_sha256``,
from the tokenize stage's ``stats.json``) and the settings it ran with (``settings``: its
rule's slice of the config).  A run whose tokens differ from this report's ``stats.json``, or
whose recorded settings differ from what this report's config gives that run
(``attnbench.settings.stage_settings``), is **stale**: it is listed with the reason and left
out of every figure, interval and ranking.  Keys a document does not record (written before
they existed) are not compared; documents without these fields are not judged.
"""

from __future__ import annotations

from typing import Any, Callable

from .format import dig

MAX_DIFFS = 3


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _expected_settings(config: dict, name: str, seed: int | None) -> dict | None:
    if not isinstance(config, dict) or name not in (config.get("variants") or {}):
        return None
    from ..settings import stage_settings

    try:
        # a report of one shape (its config has the size and length applied, settings.apply_shape)
        return stage_settings(config, "train", name, seed=seed, shape=None) | (
            {"shape": config["shape"]} if config.get("shape") else {})
    except (KeyError, TypeError, ValueError):  # a config this code cannot read: do not judge
        return None


def checker(stats: dict | None, config: dict | None) -> Callable[[str, Any], str | None]:
    """``reason(variant_name, run)``: why ``run`` does not belong in this report, or None."""
    tokens = (stats or {}).get("tokens_sha256")

    def reason(name: str, run) -> str | None:
        doc = run.train.data
        if not isinstance(doc, dict):
            return None
        why = []
        recorded = dig(doc, "data.tokens_sha256")
        if tokens and recorded and recorded != tokens:
            why.append(f"trained on other tokens (tokens_sha256 {recorded[:12]}…, this report's data {tokens[:12]}…)")
        settings, expected = doc.get("settings"), _expected_settings(config or {}, name, run.seed)
        if isinstance(settings, dict) and expected is not None:
            mine, want = _leaves(settings), _leaves(expected)
            diffs = [f"{k}: {mine[k]!r} (run) vs {want[k]!r} (report)" for k in sorted(set(mine) & set(want))
                     if mine[k] != want[k]]
            if diffs:
                why.append("settings differ from this report's config: " + "; ".join(diffs[:MAX_DIFFS])
                           + (f" (+{len(diffs) - MAX_DIFFS} more)" if len(diffs) > MAX_DIFFS else ""))
        return "; ".join(why) or None

    return reason


def describe(variants) -> list[str]:
    """One sentence per variant with stale runs (findings and verdict put them first)."""
    out = []
    for v in variants:
        bad = [r for r in v.runs if r.stale]
        if bad:
            seeds = ", ".join(str(r.seed) for r in bad)
            out.append(f"Stale results left out: {v.name} (seed{'s' if len(bad) > 1 else ''} {seeds}): {bad[0].stale}.")
    return out

"""Inference cache size at stated context lengths (512, 4k, 32k tokens), batch 1, all layers.

A cache is either growing (bytes per token x tokens: MHA, GQA, MLA), capped (a sliding
window's grows until it holds ``window`` tokens, then stays), or a fixed-size state (linear
attention's running sums, LSH's two position blocks).  Per-token bytes alone mislead: linear
and LSH report 0 bytes/token, yet their fixed state at a few hundred tokens is larger than a
sliding window's whole cache.

Where the figures come from, in order:
1. ``model.cache_bytes_at_lengths`` in the train document (``{"512": bytes, ...}`` from the
   model's own ``cache_bytes(1, L, bf16)``), when the train job records it;
2. otherwise derived from the two figures every train document carries,
   ``model.cache_bytes_per_token`` (b) and ``model.cache_bytes_at_seq_len`` (C, at the
   training length T): b = 0 -> a fixed state of C bytes; C = T x b -> growing, L x b;
   C = W x b with W < T -> capped at W tokens, min(L, W) x b.  Anything else fits none of
   these, and the length is "not recorded".
The probe's decode rows (``decode[].cache_bytes`` after prompt + new tokens, batch B) check
the derivation; a disagreement makes the derived figures "not recorded" rather than wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from .format import _num, dig
from .load import Variant

LENGTHS = (512, 4096, 32768)
RECORDED_FIELD = "model.cache_bytes_at_lengths"


@dataclass
class CacheSize:
    value: float | None
    reason: str | None = None   # why there is no value
    fixed: bool = False         # this length is past the point where the cache stops growing
    how: str = ""               # where the figure comes from (tooltip)


def _label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 and n >= 1024 else str(n)


def _train_len(v: Variant, config: dict) -> int | None:
    T = _num(dig(v.train.data, "training.seq_len"))
    if T is None:  # a failed job has no training section: the run's setting is the one it used
        T = _num(dig(config, "train.seq_len"))
    return int(T) if T else None


def _model_section(v: Variant):
    """The first train document of the variant that has a model section (a failed job
    writes it too: the cache is a property of the architecture, not of the training)."""
    for r in v.runs:
        if isinstance(dig(r.train.data, "model"), dict):
            return r.train
    return v.train


def profile(v: Variant, config: dict) -> tuple[dict[int, CacheSize], str]:
    """``({length: CacheSize}, one-line description of the cache's shape)``."""
    doc = _model_section(v)
    recorded = dig(doc.data, RECORDED_FIELD)
    if isinstance(recorded, dict) and recorded:
        sizes = {L: _num(recorded.get(str(L))) for L in LENGTHS}
        known = [x for x in sizes.values() if x is not None]
        fixed = len(known) > 1 and len(set(known)) == 1
        out = {L: CacheSize(x, None if x is not None else f"{RECORDED_FIELD} has no {L}-token entry", fixed,
                            f"{RECORDED_FIELD} (the model's cache_bytes at {_label(L)} tokens, batch 1)")
               for L, x in sizes.items()}
        return out, ("fixed-size state" if fixed else "recorded per length")
    b, why_b = doc.get("model.cache_bytes_per_token")
    C, why_c = doc.get("model.cache_bytes_at_seq_len")
    b, C, T = _num(b), _num(C), _train_len(v, config)
    if b is None or C is None or T is None:
        why = why_b if b is None else why_c if C is None else "the training length is not recorded"
        return {L: CacheSize(None, why) for L in LENGTHS}, "not recorded"
    if b == 0:
        size = lambda L: (C, True)  # noqa: E731
        shape, how = "fixed-size state", f"fixed state: {int(C):,} bytes at {T} tokens and 0 bytes per further token"
    elif C == T * b:
        size = lambda L: (L * b, False)  # noqa: E731
        shape, how = "grows with length", f"{int(b):,} bytes per token × length"
    elif C < T * b and float(C / b).is_integer():
        W = int(C // b)
        size = lambda L: (min(L, W) * b, L >= W)  # noqa: E731
        shape, how = f"capped at {W} tokens", f"{int(b):,} bytes per token up to {W} tokens, then fixed"
    else:
        why = (f"{int(C):,} bytes at {T} tokens and {int(b):,} bytes per token fit no growing, capped or "
               f"fixed cache; the train job does not record {RECORDED_FIELD}")
        return {L: CacheSize(None, why) for L in LENGTHS}, "not recorded"
    disagree = _probe_disagreement(v, size)
    if disagree:
        why = f"derived size disagrees with the probe ({disagree}); the train job does not record {RECORDED_FIELD}"
        return {L: CacheSize(None, why) for L in LENGTHS}, "not recorded"
    out = {}
    for L in LENGTHS:
        x, fixed = size(L)
        out[L] = CacheSize(x, None, fixed, f"derived from the train document: {how}")
    return out, shape


def _probe_disagreement(v: Variant, size) -> str | None:
    for row in dig(v.probe.data, "decode") or []:
        if not isinstance(row, dict):
            continue
        B, P, n, got = (_num(row.get(k)) for k in ("batch_size", "prompt_len", "new_tokens", "cache_bytes"))
        if None in (B, P, n, got):
            continue
        want = size(int(P + n))[0] * B
        if want != got:
            return f"{int(got):,} bytes at batch {int(B)}, {int(P + n)} tokens; derived {int(want):,}"
    return None

"""Where and when each document was made: one provenance row per train, probe and sweep
document (commit, start and end time, host, device, device UUID, GPU slot), the run-level
summary of the header (each distinct commit and device with its number of documents), and
the check that no two jobs ran on one GPU at the same time.

Two jobs on one GPU at once share its clocks, memory bandwidth and power counter: the
timings and energy of both are not trustworthy.  Every job records ``job.started_utc``,
``job.finished_utc`` and ``provenance.device_uuid``; documents written before that carry none
of them, and the check says it could not look at those."""

from __future__ import annotations

import datetime as _dt
from collections import OrderedDict
from typing import Any

from .format import dig, fmt_cudnn
from .load import Doc, Variant

NOT_RECORDED = "not recorded"


def _time(text: Any) -> _dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _show_time(t: _dt.datetime | None) -> str:
    return t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else NOT_RECORDED


def _docs(variants: list[Variant]) -> list[tuple[Variant, Any, Doc]]:
    """(variant, seed, document) for every document that was read, in table order."""
    out = []
    for v in variants:
        for r in v.runs:
            out += [(v, r.seed, d) for d in (r.train, r.probe) if d.data is not None]
        if v.sweep.data is not None:
            out.append((v, None, v.sweep))
    return out


def short_commit(commit: str | None) -> str:
    """A commit as git abbreviates it (7 hex digits), ``-dirty`` kept: a job given its commit in
    ``ATTNBENCH_GIT_COMMIT`` as ``1529080`` and one that read ``git rev-parse HEAD`` name one commit."""
    if not commit:
        return "unknown"
    commit = str(commit)
    dirty = commit.endswith("-dirty")
    return commit.removesuffix("-dirty")[:7] + ("-dirty" if dirty else "")


def rows(variants: list[Variant]) -> list[dict[str, Any]]:
    out = []
    for v, seed, doc in _docs(variants):
        p = doc.data.get("provenance") or {}
        start, end = _time(dig(doc.data, "job.started_utc")), _time(dig(doc.data, "job.finished_utc"))
        commit = p.get("git_commit")
        out.append({
            "variant": v.name, "stage": doc.kind, "seed": seed if seed is not None else "—",
            "commit": short_commit(commit), "commit_full": commit,
            "started": _show_time(start), "finished": _show_time(end), "start": start, "end": end,
            "host": p.get("host") or NOT_RECORDED, "device": p.get("device") or NOT_RECORDED,
            "device_uuid": p.get("device_uuid") or NOT_RECORDED,
            "gpu_slot": p.get("gpu_slot") if p.get("gpu_slot") is not None else NOT_RECORDED,
            "status": doc.status, "overlap": False,
        })
    return out


def overlaps(prov_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pairs of jobs that ran on the same device UUID at overlapping times (marks their rows)."""
    timed = [r for r in prov_rows if r["device_uuid"] != NOT_RECORDED and r["start"] and r["end"]]
    pairs = []
    for i, a in enumerate(timed):
        for b in timed[i + 1:]:
            if a["device_uuid"] == b["device_uuid"] and a["start"] < b["end"] and b["start"] < a["end"]:
                a["overlap"] = b["overlap"] = True
                pairs.append({"uuid": a["device_uuid"], "a": _job(a), "b": _job(b),
                              "seconds": (min(a["end"], b["end"]) - max(a["start"], b["start"])).total_seconds()})
    unchecked = len(prov_rows) - len(timed)
    if not timed:
        text = (f"not recorded: none of the {len(prov_rows)} documents carries a device UUID with job start and "
                "end times (written before jobs recorded them), so whether jobs shared a GPU cannot be checked")
    elif pairs:
        text = (f"{len(pairs)} pair{'s' if len(pairs) != 1 else ''} of jobs ran on the same GPU at the same time: "
                "their timings and energy are not trustworthy")
    else:
        text = f"no two of the {len(timed)} timed jobs overlapped on one GPU"
        if unchecked:
            text += f" ({unchecked} document{'s' if unchecked != 1 else ''} without device UUID or times: not checked)"
    return {"pairs": pairs, "checked": len(timed), "unchecked": unchecked, "text": text}


def concurrency(jobs: list[dict[str, Any]], gap_s: float = 600.0) -> list[dict[str, Any]]:
    """Which jobs ran alongside others on other GPUs, and how much the GPUs overlapped in time.

    ``jobs``: dicts with ``device_uuid``, ``start`` and ``end`` (datetimes); each gets
    ``concurrent`` (how many jobs on other GPUs overlapped it) and ``same_gpu`` (how many on its
    own: never, with one GPU per job).  Returns the sittings: runs of jobs without a gap of
    ``gap_s`` between them (a session of a run resumed across sessions), each with its job count,
    GPUs, wall time from first start to last end, and the sum of its jobs' durations."""
    timed = sorted((j for j in jobs if j.get("device_uuid") and j.get("start") and j.get("end")),
                   key=lambda j: j["start"])
    for j in timed:
        others = [o for o in timed if o is not j and o["start"] < j["end"] and j["start"] < o["end"]]
        j["concurrent"] = sum(o["device_uuid"] != j["device_uuid"] for o in others)
        j["same_gpu"] = sum(o["device_uuid"] == j["device_uuid"] for o in others)
    sittings: list[list[dict]] = []
    for j in timed:
        if sittings and (j["start"] - max(o["end"] for o in sittings[-1])).total_seconds() <= gap_s:
            sittings[-1].append(j)
        else:
            sittings.append([j])
    return [{"jobs": len(s), "gpus": len({j["device_uuid"] for j in s}),
             "wall_s": (max(j["end"] for j in s) - s[0]["start"]).total_seconds(),
             "job_s": sum((j["end"] - j["start"]).total_seconds() for j in s),
             "first": s[0]["start"], "last": max(j["end"] for j in s)} for s in sittings]


def _job(r: dict[str, Any]) -> str:
    seed = f" seed {r['seed']}" if r["seed"] != "—" else ""
    return f"{r['variant']} {r['stage']}{seed} ({r['started']} – {r['finished']} UTC)"


def _counted(values: list[str]) -> str | None:
    counts: "OrderedDict[str, int]" = OrderedDict()
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if not counts:
        return None
    if len(counts) == 1:
        return f"{next(iter(counts))} (all {len(values)} documents)"
    return "; ".join(f"{v} ({n} document{'s' if n != 1 else ''})" for v, n in counts.items())


def summary(variants: list[Variant], prov_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The header's provenance: each distinct value with how many documents carry it."""
    docs = [d for _, _, d in _docs(variants)]
    prov = [d.data.get("provenance") or {} for d in docs]

    def distinct(key, fmt=str):
        return _counted([fmt(p[key]) if p.get(key) is not None else NOT_RECORDED for p in prov])

    starts = [r["start"] for r in prov_rows if r["start"]]
    ends = [r["end"] for r in prov_rows if r["end"]]
    return {
        "commits": _counted([r["commit"] for r in prov_rows]),
        "devices": _counted([r["device"] for r in prov_rows]),
        "hosts": _counted([r["host"] for r in prov_rows]),
        "driver": distinct("driver"), "torch": distinct("torch"), "cuda": distinct("cuda"),
        "cudnn": distinct("cudnn", fmt_cudnn), "python": distinct("python"),
        "jobs_ran": (f"{_show_time(min(starts))} – {_show_time(max(ends or starts))} UTC "
                     f"({len(starts)} of {len(prov_rows)} documents record their times)") if starts else NOT_RECORDED,
    }

"""What was allocated at the peak of a CUDA allocator trace, by the source line that allocated it.

The input is ``torch.cuda.memory._snapshot()`` taken after
``torch.cuda.memory._record_memory_history(stacks="python")`` and written as JSON (optionally
gzipped; ``json.dump(snapshot, f, default=str)``; no pickles in this project).  The
trace's ``alloc`` / ``free_completed`` events are replayed from the start of the recording; the
peak is the largest sum of blocks allocated *during the recording* and still live (blocks live
before the recording began, such as weights and optimizer state, are not in the trace).  Blocks
live at that moment are grouped by the first project frame (``--own``) and the frame that
allocated them (for compiled graphs the generated file's line), largest first.

``--until NAME`` ends the replay at the first event whose stack holds a function ``NAME``
(e.g. ``evaluate``: the timed window of a training job ends there); ``--since NAME`` starts it
at the first such event (e.g. ``timed_loop`` in a trace recorded from the job's start).  ``--live-at NAME`` lists
instead what is live at that first event (e.g. ``timed_loop`` in a trace recorded from the job's
start: what the job keeps allocated when its timed steps begin).

    python benchmarks/alloc_peak.py project.json.gz --until evaluate --out alloc_peak_project.json
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

OWN = ("attnbench/", "attention/", "benchmarks/")


def load_trace(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        snapshot = json.load(f)
    traces = [t for t in snapshot["device_traces"] if t]
    if len(traces) != 1:
        raise ValueError(f"{path}: expected events on exactly one device, found {len(traces)}")
    return traces[0]


def _frame(f: dict) -> str:
    return f"{Path(f['filename']).name}:{f['line']}:{f['name']}"


def block_source(frames: list[dict], own: tuple[str, ...] = OWN) -> str:
    """The first project frame, and the allocating frame where that is another file."""
    mine = next((f for f in frames if any(o in f["filename"] for o in own)), None)
    first = frames[0] if frames else None
    parts = [_frame(mine)] if mine else []
    if first is not None and first is not mine:
        parts.append(f"allocated at {_frame(first)}")
    return ", ".join(parts) or "no stack"


def _before(events: list[dict], name: str) -> list[dict]:
    """The events before the first one whose stack holds a function ``name`` (all if none does)."""
    stop = next((i for i, e in enumerate(events) if any(f["name"] == name for f in e.get("frames", []))),
                len(events))
    return events[:stop]


def _grouped(blocks, own: tuple[str, ...], top: int) -> list[dict]:
    by_source: Counter = Counter()
    count: Counter = Counter()
    for e in blocks:
        key = block_source(e.get("frames", []), own)
        by_source[key] += e["size"]
        count[key] += 1
    return [{"source": k, "bytes": b, "blocks": count[k]} for k, b in by_source.most_common(top)]


def _live_blocks(events: list[dict]) -> dict[int, dict]:
    """The blocks allocated in ``events`` and not freed by their end, by address."""
    live: dict[int, dict] = {}
    for e in events:
        if e["action"] == "alloc":
            live[e["addr"]] = e
        elif e["action"] == "free_completed":
            live.pop(e["addr"], None)
    return live


def live_at(events: list[dict], name: str, own: tuple[str, ...] = OWN, top: int = 15) -> dict:
    """The blocks allocated during the trace and still live at the first event under ``name``."""
    before = _before(events, name)
    live = _live_blocks(before)
    return {"events": len(before), "live_at": name, "live_bytes": sum(e["size"] for e in live.values()),
            "blocks_live": len(live), "largest_live": _grouped(live.values(), own, top)}


def peak(events: list[dict], until: str | None = None, own: tuple[str, ...] = OWN, top: int = 15,
         since: str | None = None) -> dict:
    """The peak of the blocks allocated during the trace (from ``since``), and what was live at it."""
    if until is not None:
        events = _before(events, until)
    if since is not None:
        events = events[len(_before(events, since)):]
    sizes: dict[int, int] = {}
    current = best = best_at = 0
    for i, e in enumerate(events):   # first pass: where the peak is (sizes only: linear in events)
        if e["action"] == "alloc":
            sizes[e["addr"]] = e["size"]
            current += e["size"]
            if current > best:
                best, best_at = current, i + 1
        elif e["action"] == "free_completed" and e["addr"] in sizes:
            current -= sizes.pop(e["addr"])
    best_live = _live_blocks(events[:best_at])      # second pass: the blocks live at it
    return {"events": len(events), "since": since, "until": until, "peak_bytes_since_start": best, "blocks_at_peak": len(best_live),
            "largest_at_peak": _grouped(best_live.values(), own, top)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("snapshot", type=Path)
    ap.add_argument("--until", default=None, help="end the replay at the first event under this function")
    ap.add_argument("--since", default=None, help="start the replay at the first event under this function")
    ap.add_argument("--live-at", default=None, help="list what is live at the first event under this function")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    events = load_trace(args.snapshot)
    if args.live_at:
        res = {"snapshot": args.snapshot.name, **live_at(events, args.live_at, top=args.top)}
        head, rows = f"live at {args.live_at}: {res['live_bytes'] / 2**30:.2f} GiB in {res['blocks_live']} blocks", \
            res["largest_live"]
    else:
        res = {"snapshot": args.snapshot.name, **peak(events, args.until, top=args.top, since=args.since)}
        head, rows = (f"peak since start {res['peak_bytes_since_start'] / 2**30:.2f} GiB in {res['blocks_at_peak']} "
                      "blocks"), res["largest_at_peak"]
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(head)
    for row in rows[:8]:
        print(f"  {row['bytes'] / 2**20:9.1f} MiB  {row['blocks']:4d}  {row['source']}")


if __name__ == "__main__":
    main()

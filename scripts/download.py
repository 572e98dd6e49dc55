"""Download a conversation dataset into the Tulu messages schema (JSONL).

Writes --out and, next to it, <out>.download.json: the counts printed here (records read,
kept, dropped by reason, a truncated tail) with the JSONL's SHA-256; the tokenize stage copies
them into its stats.json."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench import cli, data  # noqa: E402


def summary(counts: dict, out: str) -> str:
    line = f"wrote {counts['conversations']} conversations to {out}"
    if "records_dropped" in counts:  # a ShareGPT JSON file
        dropped = ", ".join(f"{n} {why}" for why, n in counts["records_dropped"].items() if n) or "none"
        line += (f" (read {counts['records_read']} complete records; dropped: {dropped}; "
                 f"{counts['empty_turns_removed']} empty turns removed")
        tail = counts.get("truncated_tail")
        if tail:
            line += (f"; the file is truncated: it ends inside record {tail['after_elements'] + 1} at byte "
                     f"{tail['at_byte']}, {tail['bytes']} bytes of that partial record dropped ({tail['error']})")
        return line + ")"
    return line + f" (skipped {counts['skipped_rows']})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help=data.SOURCES_HELP.replace("'", ""))
    ap.add_argument("--on-bad-rows", default="error", choices=["error", "skip"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    counts = data.download(args.source, args.out, on_bad_rows=args.on_bad_rows)
    print(summary(counts, args.out))
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    cli.main(main)

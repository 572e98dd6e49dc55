"""Download a conversation dataset into the Tulu messages schema (JSONL)."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench import cli, data  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", required=True, help="chitchat | tulu-v2 | jsonl:<path>")
    ap.add_argument("--on-bad-rows", default="error", choices=["error", "skip"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    counts = data.download(args.source, args.out, on_bad_rows=args.on_bad_rows)
    print(f"wrote {counts['conversations']} conversations to {args.out} (skipped {counts['skipped_rows']})")


if __name__ == "__main__":
    cli.main(main)

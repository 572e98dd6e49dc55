"""Render the scaling page over a model-size x training-length axis from each shape's report."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench import cli  # noqa: E402
from attnbench.report.scaling import build_scaling  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", required=True, type=json.loads, help="JSON list of shape names, in order")
    ap.add_argument("--summaries", nargs="+", required=True, type=cli.existing_file, help="each shape's summary.csv")
    ap.add_argument("--results", nargs="+", required=True, type=cli.existing_file, help="each shape's results.json")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    if not len(args.shapes) == len(args.summaries) == len(args.results):
        raise SystemExit(f"error: {len(args.shapes)} shapes, {len(args.summaries)} summaries, "
                         f"{len(args.results)} results: one of each per shape")
    build_scaling(args.shapes, args.summaries, args.results, Path(args.out_dir))
    print(f"scaling page written to {args.out_dir}/index.html")


if __name__ == "__main__":
    cli.main(main)

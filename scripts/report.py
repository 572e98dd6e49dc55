"""Render the HTML report, results.csv and results.json from all result documents."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench import cli  # noqa: E402
from attnbench.report import build_report  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", nargs="+", required=True, type=cli.existing_file)
    ap.add_argument("--probe", nargs="*", default=[], type=cli.existing_file)
    ap.add_argument("--sweep", nargs="*", default=[], type=cli.existing_file)
    ap.add_argument("--stats", required=True, type=cli.existing_file)
    ap.add_argument("--config", required=True, type=cli.json_arg("--config"), help="the run's config (JSON)")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args()
    build_report(train=args.train, probe=args.probe, sweep=args.sweep, stats=args.stats,
                 config=args.config, out_dir=Path(args.out_dir))
    print(f"report written to {args.out_dir}/index.html")


if __name__ == "__main__":
    cli.main(main)

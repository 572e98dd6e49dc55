"""Sequence-length scaling sweep of one attention variant; write sweep.json."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench import gpuslots  # noqa: E402
from attnbench.interrupt import die_with_parent  # noqa: E402

die_with_parent()  # a job ends with its Snakemake shell: no result after its job was stopped
gpuslots.claim_from_env()  # before torch initialises CUDA: this job's own GPU (several-GPU machines)
from attnbench import cli, sweep  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--settings", required=True, type=cli.settings_arg("sweep"), help="sweep settings JSON or @file")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    result = sweep.run(args.settings, args.out)
    print(f"{result['variant']}: {len(result['points'])} points")


if __name__ == "__main__":
    cli.main(main)

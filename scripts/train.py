"""Train GPT-2 with one attention variant; write metrics.json, steps.csv, model.safetensors."""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench import gpuslots  # noqa: E402
from attnbench.interrupt import die_with_parent  # noqa: E402

die_with_parent()  # a job ends with its Snakemake shell: no result after its job was stopped
gpuslots.claim_from_env()  # before torch initialises CUDA: this job's own GPU (several-GPU machines)
from attnbench import cli, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--settings", required=True, type=cli.settings_arg("train"), help="train settings JSON or @file")
    ap.add_argument("--tokens-dir", required=True, type=cli.existing_dir)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--checkpoint-every", type=int, default=0,
                    help="checkpoint period in steps, 0 = off (train.checkpoint_every; not part of the settings)")
    ap.add_argument("--resume", choices=["on", "off"], default="on",
                    help="resume from a matching checkpoint (train.resume; not part of the settings)")
    args = ap.parse_args()
    result = train.run(args.settings, args.tokens_dir, args.out_dir, checkpoint_every=args.checkpoint_every,
                       resume=args.resume == "on")
    print(f"{result['variant']}: {result['status']}" + (f" ({result['failure']['message']})" if result["failure"] else ""))


if __name__ == "__main__":
    cli.main(main)

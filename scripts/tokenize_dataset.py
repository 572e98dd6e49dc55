"""Chat-format and tokenize a Tulu-schema JSONL into train/val token arrays."""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from attnbench import cli, data  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True, type=cli.existing_file)
    ap.add_argument("--data", required=True, type=cli.json_arg("--data"), help="the config's data section (JSON)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--threads", type=cli.positive_int("--threads"), default=None,
                    help="threads of the tokenizer's batch encoding (default: its own, every core)")
    args = ap.parse_args()
    if args.threads is not None:
        # read by the tokenizer's thread pool (Rayon) when it starts, at the first batch: before it
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    d = cli.require_keys("--data", args.data, ("max_len", "val_fraction", "mode", "tokenizer", "on_bad_rows"))
    stats = data.tokenize(args.raw, args.out_dir, max_len=d["max_len"], val_fraction=d["val_fraction"],
                          seed=args.seed, mode=d["mode"], tokenizer=d["tokenizer"],
                          on_bad_rows=d["on_bad_rows"], max_conversations=d.get("max_conversations"),
                          long_conversations=d.get("long_conversations", "truncate"), dataset=d.get("dataset"))
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    cli.main(main)

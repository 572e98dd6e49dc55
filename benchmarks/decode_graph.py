"""Greedy decode of every configured variant, eager and replayed as one CUDA graph, in one process.

The probe stage measures decode on each trained model, one job per variant and seed; this
measures the same thing (``attnbench.probe.decode_probe``: warm-up, energy windows of at least
``DECODE_WINDOW_S``, both modes checked against one full forward) on freshly initialised models
of the preset's shape, all variants in a few minutes -- to see what a change to a decode step
costs before a full run.  Timing does not depend on the weights (LSH, the only variant whose
work does, has no graph decode).  #20's targets for exact variants: <= 1.0 ms/token at batch 1
(prompt 512), >= 15k tokens/s at batch 16.

    python benchmarks/decode_graph.py --config config/config.yaml --out decode_graph.json
    python benchmarks/decode_graph.py --variants mla baseline --batch-sizes 1 16 --prompt-len 512
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnbench import measure  # noqa: E402
from attnbench import settings as S  # noqa: E402
from attnbench.model import build_model  # noqa: E402
from attnbench.probe import decode_probe, decode_prompt_len, oom_row  # noqa: E402

FIGURES = ("graph_ms_per_token_p50", "graph_ms_per_token_p90", "graph_tokens_per_s", "graph_kernel",
           "eager_ms_per_token_p50", "eager_tokens_per_s", "graph_unavailable", "cache_matches_full_forward")


def decode_rows(job: dict, batch_sizes: list[int], prompt_len: int, new_tokens: int, device, warmup: int,
                out_dir: Path) -> list[dict]:
    """decode_probe rows of one variant's model (random init, bf16 on CUDA), one per batch size."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(job, device).to(dtype).eval()
    P = decode_prompt_len(prompt_len, model.config.block_size, new_tokens)
    session = measure.session_from(job["measure"], device, out_dir, "decode", idle=False, codecarbon=False)
    session.start()
    rows = []
    try:
        for B in batch_sizes:
            g = torch.Generator().manual_seed(B)
            prompt = torch.randint(0, model.config.vocab_size, (B, P), generator=g).to(device)
            try:
                rows.append(decode_probe(model, prompt, new_tokens, device, dtype, session, warmup))
            except torch.OutOfMemoryError as err:
                rows.append(oom_row(B, P, err))
    finally:
        session.finish()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    ap.add_argument("--variants", nargs="*", help="default: every variant of the config")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("decode_graph.json"))
    args = ap.parse_args(argv)
    cfg = S.validate(yaml.safe_load(args.config.read_text()))
    names = args.variants or list(cfg["variants"])
    unknown = [n for n in names if n not in cfg["variants"]]
    if unknown:
        ap.error(f"--variants {unknown}: not in {args.config} (it has {list(cfg['variants'])})")
    device = S.resolve_device("auto")
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
           "config": str(args.config), "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
           "weights": "random init (timing does not depend on them)", "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            job = S.stage_settings(cfg, "probe", name)
            try:
                rows = decode_rows(job, args.batch_sizes, args.prompt_len, args.new_tokens, device, args.warmup,
                                   Path(tmp))
                out["variants"][name] = {"status": "ok", "rows": rows}
            except Exception as err:  # one variant that cannot run is a row, the others go on
                out["variants"][name] = {"status": "failed", "error": f"{type(err).__name__}: {str(err)[:300]}"}
            args.out.write_text(json.dumps(out, indent=1, default=str))
            for r in out["variants"][name].get("rows", []):
                print(f"{name:15s} B={r['batch_size']:3d} " + " ".join(
                    f"{k}={r.get(k):.4g}" if isinstance(r.get(k), float) else f"{k}={str(r.get(k))[:60]}"
                    for k in FIGURES if k in r), f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if out["variants"][name]["status"] != "ok":
                print(name, out["variants"][name]["error"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

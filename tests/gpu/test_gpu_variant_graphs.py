"""Every configured variant trains under ``train.compile_mode: reduce-overhead`` (forward and
backward replayed as CUDA graphs): the job ends ``ok``, the self-check of the graphed step model
against the float32 plain path passes at the start and the end, the loss falls, and no graph ran
without replay.  The gate for making reduce-overhead the GPU presets' mode (`default` left the
H200 idle for up to half of each step at batch 16 x 512; ``reports/h200/``).  Long (every variant
compiles its graphs): ``bash benchmarks/gpu_checks.sh OUT tests/gpu/test_gpu_variant_graphs.py``
runs it alone.
"""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attnbench import train  # noqa: E402
from test_gpu_training_graphs import learnable_tokens, settings, step_losses  # noqa: E402

VARIANTS = list(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["variants"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_and_checks_under_cuda_graphs(variant, tmp_path, gpu_log):
    tokens = learnable_tokens(tmp_path / "tokens")
    m = train.run(settings(variant, "reduce-overhead"), tokens, tmp_path / "run")
    losses = step_losses(tmp_path / "run") if m["status"] == "ok" else []
    gpu_log(f"variant_graphs_{variant}", {
        "status": m["status"], "failure": m["failure"], "kernel": m.get("kernel"),
        "kernel_fallback": m.get("kernel_fallback"), "kernel_check": m.get("kernel_check"),
        "cudagraph_skips": (m.get("training") or {}).get("cudagraph_skips"),
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "val_loss": (m.get("training") or {}).get("val_loss"),
        "tokens_per_s": (m.get("timing") or {}).get("tokens_per_s"),
        "gpu_busy": (m.get("energy") or {}).get("gpu_busy"),
        "peak_reserved_bytes": (m.get("memory") or {}).get("peak_reserved_bytes"),
        "peak_allocated_warmup_bytes": (m.get("memory") or {}).get("peak_allocated_warmup_bytes")})
    assert m["status"] == "ok", m["failure"]
    for phase in ("start", "end"):
        assert m["kernel_check"][phase]["pass"] is True, (phase, m["kernel_check"][phase])
    assert losses[-1] < losses[0] - 1.0, (losses[0], losses[-1])
    assert m["training"]["cudagraph_skips"] == 0, "some graph ran without replay"

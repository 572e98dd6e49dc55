"""The length sweep on the GPU: every point timed by CUDA events until p90/p50 < 1.2 or its budget
is spent, with its stability record, and energy per call over its own window of seconds.
The points are logged (sliding_window's fixed-repeat sweeps on the H200 had p90 up to 2.2x p50)."""
import pytest
import yaml

from attnbench import settings, sweep
from attnbench.settings import ROOT


@pytest.mark.parametrize("name", ["sdpa", "sliding_window"])
def test_sweep_points_are_timed_until_stable(name, tmp_path, gpu_log):
    cfg = settings.validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    cfg["sweep"].update(seq_lens=[512, 2048, 8192])
    res = sweep.run(settings.stage_settings(cfg, "sweep", name), tmp_path / "sweep.json")
    gpu_log(f"sweep_{name}", res)
    timed = [p[m] for p in res["points"] for m in ("forward", "forward_backward") if isinstance(p.get(m), dict)]
    assert timed and all(m["status"] == "ok" for m in timed), timed
    for m in timed:
        assert m["timing_method"] == "cuda-events" and m["timing_target"] == sweep.SWEEP_TARGET
        assert m["timing_stable"] == (m["p90_over_p50"] < sweep.SWEEP_TARGET and m["n"] >= cfg["sweep"]["repeats"])
        # energy over its own window of seconds (sweep.energy_seconds), not the timing's milliseconds
        assert m["energy_window_s"] >= cfg["sweep"]["energy_seconds"], m
        assert m["gpu_j_per_call"] is not None and 50 < m["gpu_w"] < 1500, m

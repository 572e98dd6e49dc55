"""The committed reports' READMEs carry no hand-typed figures: every table and number sits
between ``generated`` markers and equals what ``scripts/readme_tables.py`` renders from the
documents beside it; the prose around them holds no measured value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
from attnbench.report import readme as readme_tables  # noqa: E402
from attnbench.report.readme_sources import READMES as SOURCES  # noqa: E402

READMES = list(SOURCES)
# a measured value: a decimal, or a number with a unit of time, memory, energy, power or rate
MEASURED = re.compile(r"(?<![\w.-])\d+\.\d+(?![\w.])|\b\d+(?:\.\d+)?\s*(?:ms|GiB|MiB|KiB|mJ|kJ|W|tokens/s)\b")
NOT_MEASURED = {"2507.07247"}  # an arXiv id


@pytest.mark.parametrize("readme", READMES)
def test_every_fragment_is_what_the_documents_render(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    rendered, problems = readme_tables.rewrite(text, readme_tables.render(readme))
    assert problems == []
    if rendered != text:
        stale = [name for name, body in readme_tables.BLOCK.findall(text)
                 if body != readme_tables.render(readme)[name]]
        pytest.fail(f"{readme}: fragments {stale} differ from the documents; run python scripts/readme_tables.py")


@pytest.mark.parametrize("readme", [r for r in READMES if r.startswith("reports/")])
def test_prose_outside_the_fragments_holds_no_measured_figure(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    prose = readme_tables.BLOCK.sub("", text)
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)  # commands
    prose = re.sub(r"`[^`]*`", "", prose)  # names, commits, paths
    found = [m.group(0) for m in MEASURED.finditer(prose) if m.group(0) not in NOT_MEASURED]
    assert found == [], f"{readme}: hand-typed figures outside the generated fragments: {found}"


def test_a_changed_figure_is_caught_and_rewritten():
    readme = "reports/h100/README.md"
    text = (ROOT / readme).read_text(encoding="utf-8")
    fragments = readme_tables.render(readme)
    assert "| `mla` | 6.32 | 13.4 |" in fragments["inference-table"]  # the probe's 13.445 ms, not "13.5"
    tampered = text.replace("| `mla` | 6.32 | 13.4 |", "| `mla` | 6.32 | 13.5 |")
    assert tampered != text
    fixed, problems = readme_tables.rewrite(tampered, fragments)
    assert problems == [] and fixed == text


def test_h100_corrections_follow_from_the_documents():
    f = readme_tables.render("reports/h100/README.md")
    # the repeated gqa runs the committed files hold: the table's row and two controls
    assert "ended at 3.4894, 3.4973, 3.4937" in f["repeated-gqa"] and "3.4923" not in f["repeated-gqa"]
    # linear overtakes fused kernels at 16k; MLA sits between the fused kernels and the eager baseline
    assert "`flash2` from 16k" in f["crossovers"].split("\n")[2]
    assert "MLA uses more energy per token than `sdpa`, `flash2` and `flex` and less than `baseline`" in f["findings"]


def test_missing_or_unknown_markers_are_reported():
    text = "intro\n" + readme_tables.BEGIN.format(name="nope") + "\nx\n" + readme_tables.END.format(name="nope") + "\n"
    _, problems = readme_tables.rewrite(text, {"wanted": "y\n"})
    assert problems == ["no markers for fragment 'wanted'", "markers for unknown fragment 'nope'"]


def test_every_committed_report_readme_is_rendered():
    """A README added under reports/ without renderers would carry hand-typed figures unchecked
    (reports/h200/partial-e1a7e10 did): every one must be listed in readme_sources.READMES."""
    found = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "reports").rglob("README.md"))
    assert [r for r in found if r not in READMES] == []


def test_loop_folder_renders_pairs_profiles_and_probes(tmp_path):
    """The renderer of a GPU session's loop benchmarks (bare_vs_project, loop_profile, a probe at the
    folder's commit), on documents in the formats those scripts write."""
    import json
    import shutil

    from attnbench.report.readme_sources import LoopFolder

    rows = [{"pair": 0, "loop": "bare (cudnn, default)", "tokens_per_s": 460_000.0, "step_ms": 17.8,
             "warmup_s": 30.0, "peak_allocated_bytes": 5.5 * 2**30},
            {"pair": 0, "loop": "project (sdpa) default", "kernel": "sdpa:auto->flash", "tokens_per_s": 400_000.0,
             "step_ms": 20.5, "gpu_busy": 0.86, "peak_allocated_bytes": 8.85 * 2**30, "ratio_to_bare": 400 / 460},
            {"pair": 0, "loop": "project (sdpa) reduce-overhead", "kernel": "sdpa:auto->flash",
             "tokens_per_s": 430_000.0, "step_ms": 19.0, "gpu_busy": 1.0, "peak_allocated_bytes": None,
             "peak_reserved_bytes": 9.5 * 2**30, "allocated_at_start_bytes": 2.25 * 2**30, "ratio_to_bare": 430 / 460,
             "peak_allocated_warmup_bytes": 9.0 * 2**30,
             "mfu": 0.4219, "gpu_mj_per_token": 1.2973},
            {"pair": 1, "loop": "project (sdpa) default", "kernel": "sdpa:auto->flash", "tokens_per_s": 410_000.0,
             "step_ms": 20.0, "gpu_busy": 0.9, "mfu": float("nan"), "gpu_mj_per_token": float("nan"),
             "ratio_to_bare": 410 / 460},
            {"pair": 1, "loop": "project (sdpa) reduce-overhead", "status": "failed",
             "failure": {"kind": "error", "message": "RuntimeError: graph recording observed a deallocation"}}]
    (tmp_path / "bare_vs_project_b16.json").write_text(json.dumps({
        "device": "NVIDIA H200", "torch": "2.11.0", "batch_size": 16, "seq_len": 512, "compile_modes": ["default"],
        "pairs": 3, "pairs_done": 1, "rows": rows, "ratio_to_bare_per_pair": {"sdpa default": [400 / 460]},
        "ratio_to_bare_median": {"sdpa default": 400 / 460}}))
    (tmp_path / "profile_sdpa_b16_default.json").write_text(json.dumps({
        "variant": "sdpa", "kernel": "sdpa:auto->flash", "batch_size": 16, "seq_len": 512, "steps": 30,
        "device": "cuda", "compiled": True, "compile_mode": "default", "wall_ms_per_step": 21.0,
        "peak_allocated_bytes": 8 * 2**30, "gpu_device_ms_per_step": 18.0, "gpu_idle_share": 1 - 18 / 21,
        "top_cpu_ops": [{"name": "Optimizer.step#AdamW.step", "self_cpu_ms_per_step": 1.2, "calls_per_step": 1}],
        "cpu_ms_per_step_all_ops": 9.5}))
    probe = ROOT / "reports/h200/default-fb47336/runs/probe/mla/seed1339/probe.json"
    (tmp_path / "probe-head/mla/seed1339").mkdir(parents=True)
    shutil.copy(probe, tmp_path / "probe-head/mla/seed1339/probe.json")
    f = LoopFolder(tmp_path)
    pairs = f.pairs()
    assert "1 of 3 pairs finished" in pairs and "| 0 | project (sdpa) default | 400k |" in pairs, pairs
    assert "sdpa default: 0.870 (pairs 0.870)" in pairs
    assert "| 0 | project (sdpa) default | 400k | 20.5 | 86 % | not recorded | 8.85 | — | not recorded | — | not measured | 0.870 |" in pairs, pairs
    assert "| 0 | project (sdpa) reduce-overhead | 430k | 19.0 | 100 % | 2.25 | — | 9.00 | 9.50 | 42 % | 1.30 | 0.935 |" in pairs, pairs
    assert "| 1 | project (sdpa) default | 410k | 20.0 | 90 % | not recorded | — | — | not recorded | — | not measured | 0.891 |" \
        in pairs, pairs  # NaN (not measured) never reaches the formatter
    assert "GPU busy per mode over the pairs: default: 86 %–90 %; reduce-overhead: 100 %–100 %" in pairs, pairs
    assert "Failed rows: pair 1 `project (sdpa) reduce-overhead` failed: RuntimeError: graph recording" in pairs, pairs
    (tmp_path / "alloc").mkdir()
    (tmp_path / "alloc/alloc_peak_project.json").write_text(json.dumps({
        "snapshot": "project.pickle.gz", "events": 9, "until": "evaluate", "peak_bytes_since_start": 4.5 * 2**30,
        "blocks_at_peak": 219, "largest_at_peak": [
            {"source": "model.py:156:forward, allocated at cx.py:1784:call", "bytes": 786 * 2**20, "blocks": 1}]}))
    (tmp_path / "alloc/alloc_live_at_timed_loop_project.json").write_text(json.dumps({
        "snapshot": "project.json.gz", "events": 9, "live_at": "timed_loop", "live_bytes": 1.66 * 2**30,
        "blocks_live": 610, "largest_live": [
            {"source": "base.py:364:project_qkv, allocated at linear.py:134:forward", "bytes": 132 * 2**20, "blocks": 8}]}))
    alloc = f.alloc_peaks()
    assert ("`alloc_live_at_timed_loop_project.json` (trace `project.json.gz`): live at the first event under "
            "`timed_loop` 1.66 GiB in 610 blocks") in alloc, alloc
    assert "| 132 | 8 | `base.py:364:project_qkv, allocated at linear.py:134:forward` |" in alloc
    assert "`alloc_peak_project.json` (trace `project.pickle.gz`, replay ended at the first event under `evaluate`)" in alloc
    assert "4.50 GiB in 219 blocks" in alloc and "| 786 | 1 | `model.py:156:forward, allocated at cx.py:1784:call` |" in alloc
    prof = f.profiles()
    assert "| `sdpa` default | `sdpa:auto->flash` | 16 | 21.0 | 18.0 | 14 % |" in prof, prof
    assert "`Optimizer.step#AdamW.step` 1.20" in prof
    doc = json.loads(probe.read_text())
    b1 = next(r for r in doc["decode"] if r["batch_size"] == 1 and "status" not in r)
    assert "| `mla` | `fb47336` | ok |" in f.probes() and f"{b1['graph_ms_per_token_p50']:.3g}" in f.probes()


def test_suite_line_of_a_cuda_graph_training_without_an_allocated_peak(tmp_path):
    """Since CUDA-graph trainings record no allocated peak (null with the reason), the suite renderer
    says so instead of failing on the null; the fallback and the control figure are named."""
    import json
    import shutil

    from attnbench.report.readme_sources import SessionFolder

    src = ROOT / "reports/h200/head-5d7ee0a/gpu-suite"
    shutil.copytree(src, tmp_path / "gpu-suite")
    f = tmp_path / "gpu-suite/gpu_suite/training_graphs_sdpa.json"
    d = json.loads(f.read_text())
    d["runs"]["reduce-overhead"]["peak_allocated_bytes"] = None
    d["runs"]["reduce-overhead"]["peak_allocated_warmup_bytes"] = 7.5 * 2**30  # the warm-up steps record the graphs
    d["max_step_loss_gap_default_twice"] = 0.2
    f.write_text(json.dumps(d))
    line = SessionFolder(tmp_path).suite()
    assert "peak allocated not recorded (CUDA graphs: the allocator does not count their pool), warm-up peak " \
        "allocated 7.50 GiB" in line
    assert "(default against itself: 0.200)" in line
    assert "the start check rejected SDPAAttention cudnn: SDPAAttention input-gradient rel. error 1.38" in line


def test_suite_line_names_every_variant_under_cuda_graphs(tmp_path):
    """tests/gpu/test_gpu_variant_graphs.py runs in its own call; its documents and log, put beside the
    suite's, add one line: each variant's kernel, checks, loss, CUDA-graph skips, or its failure."""
    import json
    import shutil

    from attnbench.report.readme_sources import SessionFolder

    shutil.copytree(ROOT / "reports/h200/head-f983543/gpu-suite", tmp_path / "gpu-suite")
    sub = tmp_path / "gpu-suite/gpu_suite"
    assert "Every variant" not in SessionFolder(tmp_path).suite()
    ok = {"status": "ok", "failure": None, "kernel": "torch:position-blocks", "cudagraph_skips": 0,
          "kernel_check": {"start": {"pass": True}, "end": {"pass": True}}, "first_loss": 10.98, "last_loss": 0.91,
          "tokens_per_s": 391_000.0, "gpu_busy": 0.97}
    (sub / "variant_graphs_lsh.json").write_text(json.dumps(ok))
    (sub / "variant_graphs_mla.json").write_text(json.dumps(
        {"status": "failed", "failure": {"kind": "error", "message": "RuntimeError: graph replay broke"}}))
    (tmp_path / "gpu-suite/gpu_suite_variant_graphs.log").write_text(
        "===== 1 failed, 1 passed, 2 warnings in 250.00s (0:04:10) =====\n")
    line = SessionFolder(tmp_path).suite()
    assert ("Every variant under `compile_mode: reduce-overhead` (`gpu_suite_variant_graphs.log`: 1 failed, 1 passed, "
            "2 warnings): `lsh` `torch:position-blocks` checks True/True, loss 10.98 → 0.91, CUDA-graph skips 0, "
            "391k tokens/s, GPU busy 97 %; `mla` failed: RuntimeError: graph replay broke.") in line, line


def test_the_decode_benchmark_names_each_missed_target_and_each_disagreeing_decode(tmp_path):
    from attnbench.report.readme_sources import LoopFolder

    def row(b, graph_ms, rate, same=True):
        return {"batch_size": b, "graph_ms_per_token_p50": graph_ms, "graph_ms_per_token_p90": graph_ms,
                "graph_tokens_per_s": rate, "eager_ms_per_token_p50": 5.0, "eager_ms_per_token_p90": 6.0,
                "eager_tokens_per_s": 200.0, "graph_kernel": "static:x", "graph_unavailable": None,
                "graph_matches_full_forward": same, "eager_matches_full_forward": True,
                "graph_vs_full_forward_max_abs_diff": 0.5, "logit_scale": 3.0}
    doc = {"device": "GPU", "torch": "t", "prompt_len": 512, "new_tokens": 8, "weights": "random init",
           "variants": {"fast": {"status": "ok", "rows": [row(1, 0.7, 2000.0), row(16, 0.8, 20_000.0)]},
                        "slow": {"status": "ok", "rows": [row(1, 1.2, 800.0), row(16, 1.1, 14_000.0, same=False)]}}}
    (tmp_path / "decode_graph.json").write_text(__import__("json").dumps(doc))
    text = LoopFolder(tmp_path).decode_bench()
    assert "missed by `slow` 1.20 ms/token at batch 1; `slow` 14.0k tokens/s at batch 16" in text
    assert "| `slow` |" in text and "NO: 0.500 at logit scale 3.00" in text
    doc["variants"]["no16"] = {"status": "ok", "rows": [row(1, 0.7, 2000.0), {"batch_size": 16, "status": "oom"}]}
    (tmp_path / "decode_graph.json").write_text(__import__("json").dumps(doc))
    assert "`no16` out of memory at batch 16" in LoopFolder(tmp_path).decode_bench()
    # a capture that failed is a miss with its reason, not a variant without a graph decode by design
    failed = {**row(16, None, None), "graph_unavailable": "CUDA graph capture failed: RuntimeError: boom"}
    doc["variants"]["no16"] = {"status": "ok", "rows": [row(1, 0.7, 2000.0), failed]}
    (tmp_path / "decode_graph.json").write_text(__import__("json").dumps(doc))
    text = LoopFolder(tmp_path).decode_bench()
    assert "`no16` CUDA graph capture failed: RuntimeError: boom at batch 16" in text
    assert "No graph decode:" not in text and "| graph: CUDA graph capture failed: RuntimeError: boom |" in text
    doc["variants"].pop("no16")
    doc["variants"].pop("slow")
    (tmp_path / "decode_graph.json").write_text(__import__("json").dumps(doc))
    assert "met by all 1 variant that has one (`fast`)" in LoopFolder(tmp_path).decode_bench()
    doc["variants"]["fast"]["rows"][0]["graph_matches_full_forward"] = False
    (tmp_path / "decode_graph.json").write_text(__import__("json").dumps(doc))
    assert ("missed by `fast` a graph decode that differs from the full forward at batch 1"
            in LoopFolder(tmp_path).decode_bench())

    # a run's probes (trained models), same rows: one entry per variant and seed where seeds differ; a
    # variant without a graph decode is named with its reason, not counted as a miss
    from attnbench.report.readme_sources import RunFolder
    eager_only = {**row(1, None, None), "graph_unavailable": "LSHAttention: decode is data-dependent"}
    for v, seed, rows in (("sdpa", 1337, [row(1, 0.7, 2000.0), row(16, 0.8, 20_000.0)]),
                          ("sdpa", 1338, [row(1, 1.3, 800.0), row(16, 0.8, 20_000.0)]),
                          ("lsh", 1337, [eager_only, {**eager_only, "batch_size": 16}])):
        out = tmp_path / "run/runs/probe" / v / f"seed{seed}"
        out.mkdir(parents=True)
        (out / "probe.json").write_text(__import__("json").dumps({"status": "ok", "variant": v, "decode": rows}))
    text = RunFolder(tmp_path / "run").decode_targets()
    assert "missed by `sdpa` seed 1338 1.30 ms/token at batch 1." in text, text
    assert "No graph decode: `lsh` seed 1337 (decode is data-dependent)." in text, text
    (tmp_path / "run/runs/probe/sdpa/seed1338/probe.json").unlink()
    broken = tmp_path / "run/runs/probe/mla/seed1337"
    broken.mkdir(parents=True)
    (broken / "probe.json").write_text(__import__("json").dumps({"status": "failed", "variant": "mla"}))
    text = RunFolder(tmp_path / "run").decode_targets()
    assert "met by all 1 probe that has one (1 variant) (`sdpa`). No graph decode: `lsh` (" in text, text
    assert text.endswith("Not ok: `mla` seed 1337 (failed)."), text


def test_jobs_alongside_others_on_other_gpus_are_compared_with_jobs_alone(tmp_path):
    """Two sittings: one GPU, jobs one after another; two GPUs, jobs two at a time. Each variant's
    training alone against alongside, the GPUs of overlapping jobs, wall time per sitting."""
    import json

    from attnbench.report.readme_sources import RunFolder

    def write(variant, seed, uuid, start, seconds, rate, tflops=660.0):
        d = tmp_path / "runs" / "train" / variant / f"seed{seed}"
        d.mkdir(parents=True)
        end = f"2026-11-29T{start // 60:02d}:{start % 60:02d}:{seconds:02d}+00:00"
        doc = {"status": "ok", "provenance": {"device_uuid": uuid, "git_commit": "abc1234"},
               "job": {"started_utc": f"2026-11-29T{start // 60:02d}:{start % 60:02d}:00+00:00",
                       "finished_utc": end, "startup_s": 0},
               "timing": {"tokens_per_s": rate}, "control": {"tflops": tflops}, "energy": {"gpu_j_per_token": 0.0015}}
        (d / "metrics.json").write_text(json.dumps(doc))
    write("sdpa", 1, "GPU-a", 10 * 60 + 0, 50, 400_000)       # sitting 1: alone, one after another
    write("mla", 1, "GPU-a", 10 * 60 + 1, 50, 300_000)
    write("sdpa", 2, "GPU-b", 12 * 60 + 0, 50, 396_000)       # sitting 2: two at a time
    write("mla", 2, "GPU-c", 12 * 60 + 0, 50, 297_000)
    write("sdpa", 3, "GPU-b", 12 * 60 + 1, 50, 404_000)
    write("mla", 3, "GPU-c", 12 * 60 + 1, 50, 303_000)
    text = RunFolder(tmp_path).parallel()
    assert "6 jobs with GPU and times: 2 pairs overlapped on different GPUs, none on one GPU" in text
    assert "sitting 1: 2 jobs on 1 GPU" in text and "sitting 2: 4 jobs on 2 GPUs" in text
    assert "wall 1.8 min for 3.3 min of jobs (1.82 at a time)" in text  # 4 × 50 s within 110 s
    assert "| `sdpa` | 1: 400k | 2: 400k | 1.000 |" in text
    assert "mean over 2 variants: 1.000" in text
    # a serial reference from another run, in serial/: its jobs count as alone
    sdpa = tmp_path / "runs" / "train" / "sdpa" / "seed1"
    (tmp_path / "serial" / "train" / "sdpa").mkdir(parents=True)
    sdpa.rename(tmp_path / "serial" / "train" / "sdpa" / "seed1")
    assert "| `sdpa` | 1: 400k | 2: 400k | 1.000 |" in RunFolder(tmp_path).parallel()
    # a job that waited 55 s for GPU-b's slot and held it from 12:01:55, after sdpa seed 3 had ended
    write("gqa", 2, "GPU-b", 12 * 60 + 2, 40, 500_000)
    doc = tmp_path / "runs" / "train" / "gqa" / "seed2" / "metrics.json"
    d = json.loads(doc.read_text())
    d["job"].update(startup_s=60, startup_parts_s={"gpu_slot_claim": 55, "provenance": 1})
    doc.write_text(json.dumps(d))
    assert "none on one GPU" in RunFolder(tmp_path).parallel()
    write("lsh", 2, "GPU-c", 12 * 60 + 0, 10, 100_000)       # on GPU-c while mla seed 2 ran there
    assert "1 on one GPU (their figures are not trustworthy)" in RunFolder(tmp_path).parallel()


def test_a_sweep_point_that_never_settled_is_marked(tmp_path):
    """A sweep point timed until its budget ran out with p90/p50 still above the target carries "*",
    and the fragment says what it means; points of older sweeps (no stability record) carry none."""
    import json

    from attnbench.report.readme_sources import RunFolder

    def point(T, p50, stable):
        ratio = 1.5 if stable is False else 1.05
        mode = {"status": "ok", "ms_p50": p50, "ms_p90": p50 * ratio, "kernel": "torch:chunked",
                **({} if stable is None else {"timing_stable": stable, "p90_over_p50": ratio, "timing_target": 1.2})}
        return {"scope": "attention", "seq_len": T, "batch_size": 4096 // T, "forward_backward": mode}

    out = tmp_path / "runs/sweep/linear"
    out.mkdir(parents=True)
    doc = {"status": "ok", "dtype": "bfloat16", "tokens_per_call": 4096,
           "points": [point(512, 6.79, True), point(2048, 7.91, False), point(4096, 6.84, None)]}
    (out / "sweep.json").write_text(json.dumps(doc))
    text = RunFolder(tmp_path).sweeps()
    assert "| `linear` | 6.79 | 7.91* | 6.84 |" in text, text
    assert text.endswith("\\* the point's p90/p50 stayed at or above the timing's target within its budget."), text
    # too few samples within the budget, at a small spread: not marked
    doc["points"][1]["forward_backward"].update(timing_stable=False, p90_over_p50=1.01)
    (out / "sweep.json").write_text(json.dumps(doc))
    text = RunFolder(tmp_path).sweeps()
    assert "| 7.91 |" in text and "\\*" not in text, text


def test_seed_summary_gives_each_variant_its_mean_and_interval_over_seeds(tmp_path):
    """Three seeds per variant: the mean and a 95 % bootstrap interval that lies within the seeds'
    range; a figure no seed recorded is "—", never 0."""
    import json

    from attnbench.report.readme_sources import RunFolder

    for seed, rate, loss in ((1, 400_000, 5.30), (2, 410_000, 5.20), (3, 420_000, 5.25)):
        d = tmp_path / "runs" / "train" / "sdpa" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "status": "ok", "timing": {"tokens_per_s": rate}, "training": {"val_loss": loss},
            "energy": {"gpu_j_per_token": 0.0015, "gpu_j_per_token_above_idle": None},
            "memory": {"peak_allocated_warmup_bytes": 4 * 2**30}}))
    text = RunFolder(tmp_path).seed_summary()
    row = next(line for line in text.splitlines() if line.startswith("| `sdpa`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["`sdpa`", "3"]
    mean, low, high = (float(x) for x in re.findall(r"[\d.]+", cells[2].replace("k", "")))
    assert mean == 410 and 400 <= low < mean < high <= 420
    assert cells[3] == "1.50 [1.50, 1.50]" and cells[4] == "—" and cells[6] == "4.00 [4.00, 4.00]"
    assert cells[5].startswith("5.2500 [")
    # a figure one seed lacks: the cell says over how many seeds its mean is
    doc = tmp_path / "runs" / "train" / "sdpa" / "seed3" / "metrics.json"
    d = json.loads(doc.read_text())
    d["memory"]["peak_allocated_warmup_bytes"] = None
    doc.write_text(json.dumps(d))
    row = next(line for line in RunFolder(tmp_path).seed_summary().splitlines() if line.startswith("| `sdpa`"))
    assert row.rstrip(" |").endswith("4.00 [4.00, 4.00] (n = 2)"), row


def test_lists_over_seeds_name_each_variant_once():
    """A run of three seeds lists a variant once with its seeds (and an eager-only reason once)."""
    from attnbench.report.readme_sources import _by_seed_groups

    assert _by_seed_groups(["`sdpa` seed 1", "`sdpa` seed 2", "`mla` seed 1"]) == ["`sdpa` seeds 1, 2", "`mla` seed 1"]
    assert _by_seed_groups(["`lsh` seed 1 (why)", "`lsh` seed 2 (why)", "`lsh` seed 3 (other)"]) == \
        ["`lsh` seeds 1, 2 (why)", "`lsh` seed 3 (other)"]
    assert _by_seed_groups(["`sdpa`", "`mla`"]) == ["`sdpa`", "`mla`"]


def test_probe_table_names_eager_prefill_rows_that_did_not_settle(tmp_path):
    import json

    from attnbench.report.readme_sources import RunFolder

    def row(b, t, ratio, stable):
        return {"batch_size": b, "prompt_len": t, "eager_ms_p50": 5.0, "eager_ms_p90": 5.0 * ratio,
                "eager_p90_over_p50": ratio, "eager_timing_stable": stable, "eager_n": 385,
                "eager_timing": {"target_p90_over_p50": 1.2}, "graph_ms_p50": 0.7, "graph_ms_p90": 0.71}
    d = tmp_path / "runs" / "probe" / "flex" / "seed7"
    d.mkdir(parents=True)
    (d / "probe.json").write_text(json.dumps({"status": "ok", "decode": [], "prefill_flags": [],
                                              "prefill": [row(1, 128, 1.51, False), row(1, 512, 1.05, True)]}))
    text = RunFolder(tmp_path).probes()
    assert "Eager prefill: 1 of 2 rows settled (p90/p50 below 1.2); not within the budget: `flex` seed 7 batch 1 × 128 " \
           "(1.51, 385 calls)." in text, text


def test_one_seed_trained_twice_gives_the_validation_loss_floor(tmp_path):
    """A seed trained alone (serial/, another session) and again alongside another job: the |difference|
    of its validation losses, median and largest over the pairs; seeds trained once give no pair."""
    import json

    from attnbench.report.readme_sources import RunFolder

    def write(under, variant, seed, uuid, minute, loss, config_hash="f1db7854"):
        d = tmp_path / under / "train" / variant / f"seed{seed}"
        d.mkdir(parents=True)
        d.joinpath("metrics.json").write_text(json.dumps({
            "status": "ok", "data": {"tokens_sha256": "3c454b19"},
            "provenance": {"device_uuid": uuid, "git_commit": "abc1234", "seed": seed, "config_hash": config_hash},
            "job": {"started_utc": f"2026-11-29T10:{minute:02d}:00+00:00",
                    "finished_utc": f"2026-11-29T10:{minute:02d}:50+00:00", "startup_s": 0},
            "timing": {"tokens_per_s": 400_000}, "control": {"tflops": 660.0}, "energy": {"gpu_j_per_token": 0.0015},
            "training": {"val_loss": loss}}))
    write("serial", "sdpa", 1, "GPU-a", 1, 5.30)
    write("serial", "mla", 1, "GPU-a", 3, 5.26)
    write("runs", "sdpa", 1, "GPU-a", 10, 5.31)   # sdpa and mla again, side by side
    write("runs", "mla", 1, "GPU-b", 10, 5.23)
    write("runs", "mla", 2, "GPU-b", 20, 5.00)    # trained once: no pair
    write("serial", "sdpa", 3, "GPU-a", 30, 5.00)
    write("serial", "gqa", 4, "GPU-a", 40, 5.00)  # gqa seed 4 with other settings, then alongside: no pair
    write("runs", "gqa", 4, "GPU-a", 45, 5.40, config_hash="0badc0de")
    write("runs", "sdpa", 4, "GPU-b", 45, 5.40)
    text = RunFolder(tmp_path).parallel()
    assert ("Validation loss of one training run twice, alone and alongside (the same seed, settings hash and "
            "tokens): |difference| median 0.0200, largest 0.0300 (`mla`), over 2 pairs.") in text, text


def test_probes_alongside_another_job_are_compared_with_probes_alone(tmp_path):
    """The probes' graph decode and prefill, alone (one GPU, one after another) against two at a time on
    two GPUs: the ratio of the means per variant, then their mean."""
    import json

    from attnbench.report.readme_sources import RunFolder

    def write(kind, variant, seed, uuid, start, ms):
        d = tmp_path / "runs" / kind / variant / f"seed{seed}"
        d.mkdir(parents=True)
        doc = {"status": "ok", "provenance": {"device_uuid": uuid, "git_commit": "abc1234"},
               "job": {"started_utc": f"2026-11-29T{start // 60:02d}:{start % 60:02d}:00+00:00",
                       "finished_utc": f"2026-11-29T{start // 60:02d}:{start % 60:02d}:50+00:00", "startup_s": 0}}
        if kind == "train":
            doc.update(timing={"tokens_per_s": 400_000}, control={"tflops": 660.0}, energy={"gpu_j_per_token": 0.0015})
        else:
            doc.update(decode=[{"batch_size": 1, "prompt_len": 512, "graph_ms_per_token_p50": ms}],
                       prefill=[{"batch_size": 1, "prompt_len": 512, "graph_ms_p50": 2 * ms}])
        (d / ("metrics.json" if kind == "train" else "probe.json")).write_text(json.dumps(doc))
    for kind in ("train", "probe"):
        write(kind, "sdpa", 1, "GPU-a", 10 * 60 + (kind == "probe"), 0.70)      # alone
        write(kind, "sdpa", 2, "GPU-b", 12 * 60 + 2 * (kind == "probe"), 0.77)  # two at a time
        write(kind, "mla", 2, "GPU-c", 12 * 60 + 2 * (kind == "probe"), 0.90)
        write(kind, "mla", 1, "GPU-a", 10 * 60 + 2 + (kind == "probe"), 0.90)
    text = RunFolder(tmp_path).parallel()
    assert ("Probes alongside another job against alone (mean of the per-variant ratios): graph decode ms/token at "
            "batch 1, 1.050 [1.000, 1.100] over 2 variants; graph prefill ms at batch 1 x 512, 1.050 [1.000, 1.100] over 2 "
            "variants.") in text, text


def test_campaign_reads_each_shape_from_the_pipeline_layout(tmp_path):
    """A campaign folder (its config.yaml; results/ as the pipeline lays them) hands RunFolder one
    shape at a time: trainings and probes under results/<stage>/<shape>/, sweeps under the shape's
    model size, report settings of that shape; the status counts what is still missing."""
    import shutil

    from attnbench.report.readme_sources import Campaign, RunFolder

    src = ROOT / "reports/h200/campaign-c432349"
    shutil.copy(src / "config.yaml", tmp_path / "config.yaml")
    for stage in ("train", "probe"):
        for v in ("sdpa", "gqa"):
            part = f"results/{stage}/124M-T512/{v}/seed1337"
            shutil.copytree(src / part, tmp_path / part)
    (tmp_path / "results/tokens").mkdir(parents=True)
    shutil.copy(src / "results/tokens/stats.json", tmp_path / "results/tokens/stats.json")
    (tmp_path / "results/sweep/124M/gqa").mkdir(parents=True)
    (tmp_path / "results/sweep/124M/gqa/sweep.json").write_text("{}")

    c = Campaign(tmp_path)
    assert c.planned == ["124M-T512", "124M-T2048", "350M-T512"] and c.shapes == ["124M-T512"]
    status = c.status()
    assert "| 124M-T512 | 2 of 27 | 2 of 27 | 124M: 1 of 9 | not yet |" in status
    assert "| 124M-T2048 | 0 of 27 | 0 of 27 | 124M: 1 of 9 | not yet |" in status
    assert "| 350M-T512 | 0 of 27 | 0 of 27 | 350M: 0 of 9 | not yet |" in status
    shape = RunFolder(tmp_path, "124M-T512")
    assert list(shape.train) == list(shape.probe) == [("sdpa", 1337), ("gqa", 1337)]  # RunFolder.ORDER
    assert shape.stage_dir("sweep") == tmp_path / "results/sweep/124M"
    long = RunFolder(tmp_path, "124M-T2048").report_settings()["train"]
    assert (long["seq_len"], long["batch_size"]) == (2048, 4)
    assert c.checks().startswith("**124M-T512**: 2 of 2 trainings and 2 of 2 probes `ok`")
    # the jobs and sittings of the whole campaign once, then what is each shape's own
    parallel = c.parallel()
    assert parallel.startswith("Whole campaign (every shape and sweep): 4 jobs with GPU and times: ")
    assert parallel.count("Whole campaign") == 1 and "\n\n**124M-T512**: " in parallel, parallel
    # the verdict in a few lines, from the report's own assessment of the shape's documents
    (tmp_path / "results/sweep/124M/gqa/sweep.json").unlink()
    verdict = Campaign(tmp_path).verdict()
    assert verdict.startswith("**124M-T512**\n\n- Training speed: `")
    assert "- By sequence length (attention forward+backward): not measured (" in verdict
    # the published claim (flash2, lsh, mla most efficient): none of them in this copy
    assert "`flash2` has no finished run here; `lsh` has no finished run here; `mla` has no finished run here." in c.claim()
    # against the H100 run: the ratios attnbench.compare wrote here
    from attnbench import compare

    assert c.h100().startswith("Not compared yet")
    h100 = compare.runs_from_documents(ROOT / "reports/h100")
    compare.compare(h100, h100.assign(value=2 * h100["value"])).to_csv(tmp_path / "compare-h100-124M-T512.csv",
                                                                         index=False)
    text = c.h100()
    assert text.startswith("**124M-T512** against the H100 run (1 seed there, 1 here: ratios without an interval)")
    # each kernel there (with its commit) and here: a ratio may measure changed code, not the GPU
    assert "| `gqa` | sdpa:cudnn+gqa (`d9e6b80`) → sdpa:auto->cudnn+gqa | ×2.000 | ×2.000 | ×2.000 |" in text, text
    assert "| `mla` | naive:sdpa:cudnn (`d9e6b80`) → — |" in text  # no document of it in this copy


def test_campaign_data_states_records_tail_and_that_no_window_repeats(tmp_path):
    """The data fragment: records read and kept, the truncated tail, splits; per shape the epochs one
    training takes from the training split (windows of seq_len, one permutation per epoch), 'no'
    where a training draws past the first epoch, and a training that read other tokens named."""
    import json
    import shutil

    from attnbench.report.readme_sources import Campaign

    src = ROOT / "reports/h200/campaign-c432349"
    shutil.copy(src / "config.yaml", tmp_path / "config.yaml")
    for part in ("results/train/124M-T512/sdpa/seed1337", "results/train/124M-T2048/sdpa/seed1337", "results/tokens"):
        shutil.copytree(src / part, tmp_path / part)
    text = Campaign(tmp_path).data()
    assert "17,671 records read, 17,545 kept (dropped: 126 empty); the file stops mid-record" in text, text
    assert "| 124M-T512 | 550 × 16 × 512 = 4,505,600 | 56,456 | 550 of 3,528 (0.156 epoch) | yes |" in text
    assert "| 124M-T2048 | 550 × 4 × 2,048 = 4,505,600 | 14,114 | 550 of 3,528 (0.156 epoch) | yes |" in text
    assert "Every training document names this `tokens_sha256`" in text
    # a training of 4,000 steps at T = 2048 takes 1.13 epochs: its windows repeat; another hash is named
    doc = tmp_path / "results/train/124M-T2048/sdpa/seed1337/metrics.json"
    d = json.loads(doc.read_text())
    d["training"]["steps"], d["data"]["tokens_sha256"] = 4000, "0" * 64
    doc.write_text(json.dumps(d))
    text = Campaign(tmp_path).data()
    assert ("| 4,000 of 3,528 (1.134 epoch) | no: windows repeat after the first epoch; some training read other "
            "tokens (hash differs) |") in text
    assert "Some training documents name another `tokens_sha256`" in text
    # a stats file without the download's statistics says so, rather than naming None and 0 records
    stats = tmp_path / "results/tokens/stats.json"
    s = json.loads(stats.read_text())
    del s["download"]
    stats.write_text(json.dumps(s))
    assert Campaign(tmp_path).data().startswith("`sharegpt` (the data stage recorded no download statistics). 17,545 ")


def test_campaign_claim_and_verdict_on_the_committed_shape():
    """On the committed 124M T = 512 documents (three seeds): the claimed variants against the energy
    leader per seed, each 'in the leading tie' or 'behind' as the report's verdict has it, and every
    headline of the verdict with a 95 % interval."""
    import re

    from attnbench.report.readme_sources import Campaign

    c = Campaign(ROOT / "reports/h200/campaign-c432349")
    shape = c.folder("124M-T512")
    energy = next(x for x in shape.assessment()["verdict"]["constraints"] if x["what"] == "GPU energy per token")
    tied = {x["name"] for x in energy["best"]}
    claim = c.claim().split(". GPU energy per token above idle")[0]
    for v in ("flash2", "lsh", "mla"):
        m = re.search(rf"`{v}` ×(\d\.\d+) \[(\d\.\d+), (\d\.\d+)\] (in the leading tie|behind)", claim)
        assert m, (v, claim)
        low, high = float(m[2]), float(m[3])
        assert low <= float(m[1]) <= high
        assert (m[4] == "in the leading tie") == (v in tied), (v, tied, claim)
        if m[4] == "behind":
            assert low > 1, claim  # behind: the whole interval of the ratio to the leader above 1
    lines = c.verdict().splitlines()
    shapes = [line for line in lines if line.startswith("**")]  # one block per shape with documents
    assert shapes[0] == "**124M-T512**"
    assert sum(line.startswith("- ") for line in lines) == len(shapes) * (len(shape.HEADLINES) + 1)
    # every headline as its report's verdict has it: a settled order (or tie) with the interval of each
    # figure; where a variant has one seed (a shape part-way through the campaign), the verdict's words
    # that no order is established
    blocks = "\n".join(lines).split("**")[1:]
    for name, body in zip(blocks[::2], blocks[1::2]):
        heads = [line for line in body.splitlines() if line.startswith("- ") and "By sequence" not in line]
        status = {x["what"]: x for x in c.folder(name).assessment()["verdict"]["constraints"]}
        assert len(heads) == len(shape.HEADLINES), heads
        for line in heads:
            what = next(h for h in shape.HEADLINES if line.startswith(f"- {h}: "))
            x, rest = status[what], line.removeprefix(f"- {what}: ")
            assert (x["status_text"] in rest if x["status"] == "one-seed" else "–" in rest), (x, line)


def test_campaign_verdicts_side_by_side_as_each_report_gives_them():
    """The top README's campaign table: a row per headline and one for the sweeps, a column per shape
    with documents; each cell the report's own recommendation (a tie names its variants, a single
    leader its figure with the interval, a shape seeded once says no order)."""
    from attnbench.report.readme_sources import Campaign, RunFolder

    c = Campaign(ROOT / "reports/h200/campaign-c432349")
    lines = c.verdict_table().splitlines()
    assert lines[0] == "|  | " + " | ".join(c.shapes) + " |"
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("|").split(" | ")[1:] for line in lines[2:]}
    assert list(rows) == [*RunFolder.HEADLINES, "By length (attention fwd+bwd, sweep)"]
    for shape, column in zip(c.shapes, zip(*rows.values())):
        verdict = c.folder(shape).assessment()["verdict"]
        for what, text in zip(RunFolder.HEADLINES, column):
            x = next(x for x in verdict["constraints"] if x["what"] == what)
            if x["status"] == "tie":
                assert text.strip() == "tie: " + ", ".join(f"`{b['name']}`" for b in x["best"])
            else:
                assert text.startswith(f"`{x['best'][0]['name']}` {x['best'][0]['figure']}")
                # an order is claimed only where the report settles it; a one-seed row says it is not
                assert ("order not established" in text) == (x["status"] == "one-seed"), (x["status"], text)


def test_campaign_verdict_table_claims_no_order_the_report_does_not(tmp_path):
    """A shape part-way through its seeds: the leader may have two seeds (an interval) while another
    variant has one; the report establishes no order, and the table says so beside the interval."""
    import shutil

    from attnbench.report.readme_sources import Campaign

    src = ROOT / "reports/h200/campaign-c432349"
    shutil.copy(src / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(src / "results/tokens", tmp_path / "results/tokens")
    for stage, doc in (("train", "metrics.json"), ("probe", "probe.json")):
        for v in ("sdpa", "gqa"):
            for seed in (1337, 1338):
                part = f"results/{stage}/124M-T512/{v}/seed{seed}"
                shutil.copytree(src / part, tmp_path / part)
        shutil.rmtree(tmp_path / f"results/{stage}/124M-T512/sdpa/seed1338")  # sdpa: one seed, gqa: two
    shutil.copytree(src / "results/sweep/124M", tmp_path / "results/sweep/124M")
    c = Campaign(tmp_path)
    speed = next(line for line in c.verdict_table().splitlines() if line.startswith("| Training speed |"))
    assert speed.startswith("| Training speed | `gqa` ") and "[" in speed, speed
    assert speed.endswith("(order not established: a variant has one seed) |"), speed


def test_paired_table_names_an_exact_variants_starred_loss_as_drift_unless_suspect():
    """At 124M T = 2048 flash2's loss is 0.007 below baseline's per seed, the interval excluding 0 with
    three seeds: an exact variant (baseline's function), so the table marks it exact and says the star
    is bf16 drift -- but only while the exact-agreement check does not call it suspect."""
    from attnbench.report.readme_sources import Campaign

    shape = Campaign(ROOT / "reports/h200/campaign-c432349").folder("124M-T2048")
    text = shape.paired()
    assert "| flash2 (exact) | -0.007 [-0.014, -0.001] * |" in text and "| sliding_window | " in text, text
    assert "the `*` on `flash2` is that drift over 3 seeds" in text
    shape._assessment = {"verdict": {"suspect": ["flash2"]}}  # as if the agreement check had failed
    assert "| flash2 (exact) | -0.007 [-0.014, -0.001] * |" in shape.paired()
    assert "is that drift" not in shape.paired()


def test_campaign_render_rerenders_finished_shapes_with_the_pipelines_settings(tmp_path):
    """benchmarks/h200_campaign/render.py renders a shape's report from the committed documents
    only when every document its report rule reads is there, with the settings the pipeline's own
    render got (else it stops, naming the keys, and overwrites nothing); the report states the
    commit of its own code beside the jobs'."""
    import json
    import shutil
    import subprocess
    import sys

    src = ROOT / "reports/h200/campaign-c432349"
    shutil.copy(src / "config.yaml", tmp_path / "config.yaml")
    for part in ("results/tokens/stats.json", "results/report/124M-T512/results.json"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / part, tmp_path / part)
    for part in ("results/train/124M-T512", "results/probe/124M-T512", "results/sweep/124M"):
        shutil.copytree(src / part, tmp_path / part, ignore=shutil.ignore_patterns("*.png", "*.csv"))
    pipeline = json.loads((tmp_path / "results/report/124M-T512/results.json").read_text())

    def render():
        return subprocess.run([sys.executable, str(ROOT / "benchmarks/h200_campaign/render.py"), str(tmp_path)],
                              capture_output=True, text=True)

    bad = json.loads(json.dumps(pipeline))
    bad["config"]["report"]["exact_tolerance"] = 0.5
    (tmp_path / "results/report/124M-T512/results.json").write_text(json.dumps(bad))
    r = render()
    assert r.returncode == 1 and "rendered with other settings (report); nothing rendered" in r.stderr, r.stderr
    assert not (tmp_path / "results/report/124M-T512/index.html").exists()

    (tmp_path / "results/report/124M-T512/results.json").write_text(json.dumps(pipeline))
    r = render()
    assert r.returncode == 0, r.stderr
    assert "124M-T512: rendered" in r.stdout
    assert "124M-T2048: not rendered, 54 documents missing" in r.stdout
    assert "scaling page: not rendered" in r.stdout
    ours = json.loads((tmp_path / "results/report/124M-T512/results.json").read_text())
    assert ours["config"] == pipeline["config"] and ours["findings"] == pipeline["findings"]
    assert ours["header"]["git_commit"] == pipeline["header"]["git_commit"]  # the jobs' commit
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert ours["header"]["report_commit"].removesuffix("-dirty") == head  # this code's
    assert "Report code (commit)" in (tmp_path / "results/report/124M-T512/index.html").read_text()


def test_committed_results_name_no_machine_path():
    """What comes back from the GPU machine is committed without its folders (unpack.sh writes
    Snakemake's campaign and wheel folders as $CAMP and $SITE): no absolute path of a machine in
    any committed text file under reports/."""
    import subprocess

    files = subprocess.run(["git", "ls-files", "reports"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    machine_path = re.compile(r"(?:^|[^\w$.])/(?:tmp|root|home|work)/")
    found = [f"{name}:{i}" for name in files if not name.endswith((".png", ".pdf"))
             for i, line in enumerate((ROOT / name).read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if machine_path.search(line)]
    assert not found, found[:10]

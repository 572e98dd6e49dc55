"""The whole DAG through the snakemake CLI on the smoke preset, and its incremental reruns."""
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipeline_utils import ROOT, copy_repo, load_yaml, no_slurm_env, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

SMOKE = load_yaml(ROOT / "config" / "smoke.yaml")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("smoke"))
    t0 = time.time()
    proc = snakemake(work, "--cores", "2", "--resources", "gpu=1", "--configfile", "config/smoke.yaml",
                     timeout=900)
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, elapsed


def dry(work, configfile="config/smoke.yaml"):
    proc = snakemake(work, "-n", "--cores", "1", "--configfile", configfile, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted(set(planned_jobs(proc.stdout + proc.stderr)))


def test_tokenize_holds_the_cores_its_tokenizer_uses(tmp_path):
    """The tokenize job asks for threads and passes what Snakemake grants (at most --cores) to the
    tokenizer, so Snakemake starts no GPU job on cores the tokenizer fills."""
    work = copy_repo(tmp_path)
    for cores, granted in (("1", 1), ("3", 3), ("64", 8)):
        proc = snakemake(work, "results/tokens/stats.json", "-n", "-p", "--cores", cores,
                         "--configfile", "config/smoke.yaml", timeout=180)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert re.search(rf"scripts/tokenize_dataset\.py .*--threads {granted} ", out), (cores, out[-3000:])


def per_variant(variant):
    return [("all", None), ("probe", variant), ("report", None), ("sweep", variant), ("train", variant)]


def test_smoke_dag_produces_every_result(smoke_run):
    work, elapsed = smoke_run
    print(f"smoke DAG took {elapsed:.0f} s")
    for variant in SMOKE["variants"]:
        metrics = json.loads((work / f"results/train/{variant}/seed1337/metrics.json").read_text())
        assert metrics["status"] == "ok", metrics.get("failure")
        assert metrics["kernel"] and metrics["kernel"] != "not-run"
        assert metrics["training"]["val_loss"] < 11.0  # below log(50304): it learned something
        probe = json.loads((work / f"results/probe/{variant}/seed1337/probe.json").read_text())
        assert probe["status"] == "ok", probe.get("failure")
        assert probe["decode_matches_full_forward"], probe["decode"]
        # where the probe's wall time went, phase by phase, each phase once
        assert list(probe["job"]["phases_s"]) == ["load", "measure_start", "prefill", "decode", "measure_finish"]
        sweep = json.loads((work / f"results/sweep/{variant}/sweep.json").read_text())
        assert sweep["points"]
        assert (work / f"logs/train/{variant}-seed1337.log").exists()
    assert (work / "results/report/index.html").stat().st_size > 1000
    assert (work / "results/report/results.csv").exists()


def test_second_dry_run_schedules_nothing(smoke_run):
    work, _ = smoke_run
    assert dry(work) == []


def test_adding_a_variant_schedules_only_its_jobs(smoke_run):
    work, _ = smoke_run
    cfg = json.loads(json.dumps(SMOKE))
    cfg["variants"]["mqa"] = {"variant": "gqa", "n_kv_head": 1}
    write_config(work, "plus.yaml", cfg)
    assert dry(work, "config/plus.yaml") == per_variant("mqa")


def test_changing_one_variants_params_reruns_only_it(smoke_run):
    work, _ = smoke_run
    cfg = json.loads(json.dumps(SMOKE))
    cfg["variants"]["sliding_window"] = {"window": 16}
    write_config(work, "window.yaml", cfg)
    assert dry(work, "config/window.yaml") == per_variant("sliding_window")


class edited:
    """Append a comment to a source file (new content, newer mtime); restore on exit."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.text, st = self.path.read_text(), self.path.stat()
        self.times = (st.st_atime, st.st_mtime)
        self.path.write_text(self.text + "\n# edited by a test\n")
        os.utime(self.path, (self.times[0], time.time() + 5))

    def __exit__(self, *exc):
        self.path.write_text(self.text)
        os.utime(self.path, self.times)


def test_editing_one_variants_source_reruns_only_it(smoke_run):
    work, _ = smoke_run
    with edited(work / "attention" / "lsh.py"):
        assert dry(work) == per_variant("lsh")


def test_editing_shared_model_code_reruns_every_variant(smoke_run):
    work, _ = smoke_run
    with edited(work / "attnbench" / "model.py"):
        jobs = dry(work)
    trained = {v for rule, v in jobs if rule == "train"}
    assert trained == set(SMOKE["variants"])


def test_editing_a_report_template_reruns_only_the_report(smoke_run):
    work, _ = smoke_run
    template = sorted((work / "reports" / "templates").glob("*"))[0]
    with edited(template):
        assert dry(work) == [("all", None), ("report", None)]


def rules_of(jobs):
    return {rule for rule, _ in jobs}


@pytest.mark.parametrize("section,key,value,expected", [
    ("probe", "decode_tokens", 9, {"all", "probe", "report"}),
    ("sweep", "repeats", 3, {"all", "sweep", "report"}),
    ("train", "lr", 0.0005, {"all", "train", "probe", "report"}),
])
def test_each_stage_reruns_only_for_its_own_settings(smoke_run, section, key, value, expected):
    """Each rule's params are its own slice of the settings: a probe key reruns probes (and
    the report), a sweep key sweeps, a train key the trains and what reads their weights."""
    work, _ = smoke_run
    cfg = json.loads(json.dumps(SMOKE))
    cfg.setdefault(section, {})[key] = value
    write_config(work, f"{section}_{key}.yaml", cfg)
    jobs = dry(work, f"config/{section}_{key}.yaml")
    assert rules_of(jobs) == expected, jobs
    assert {v for rule, v in jobs if rule not in ("all", "report")} == set(SMOKE["variants"])


def test_editing_probe_code_reruns_no_train_or_sweep(smoke_run):
    work, _ = smoke_run
    with edited(work / "attnbench" / "probe.py"):
        assert rules_of(dry(work)) == {"all", "probe", "report"}
    with edited(work / "attnbench" / "checkpoint.py"):  # training code: not an input of probe or sweep
        assert rules_of(dry(work)) == {"all", "train", "probe", "report"}


def test_copied_run_folder_has_nothing_to_do(smoke_run, tmp_path):
    """Inputs are relative paths: a finished run copied (or moved) elsewhere is still up to date."""
    import shutil

    work, _ = smoke_run
    copy = tmp_path / "moved"
    shutil.copytree(work, copy, symlinks=True)
    assert dry(copy) == []


def test_the_same_environment_at_another_path_has_nothing_to_do(smoke_run, tmp_path):
    """The interpreter's path is not a setting: Snakemake run from the same environment reached
    by another path (as on a machine where it lives elsewhere) finds the finished run up to date."""
    import sys

    work, _ = smoke_run
    env_root = Path(sys.prefix)
    link = tmp_path / "env-elsewhere"
    link.symlink_to(env_root, target_is_directory=True)
    python = link / Path(sys.executable).relative_to(env_root) if Path(sys.executable).is_relative_to(env_root) \
        else None
    if python is None or sys.prefix == sys.base_prefix:
        pytest.skip("not running from a virtual environment")
    proc = subprocess.run([str(python), "-m", "snakemake", "-n", "--cores", "1", "--configfile", "config/smoke.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=180, env=no_slurm_env(work))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(set(planned_jobs(proc.stdout + proc.stderr))) == [], proc.stdout[-3000:]


def test_adding_seeds_runs_only_their_jobs(smoke_run):
    """Seeds are a DAG axis: an extra config with more seeds schedules their train and probe
    jobs and the report, nothing of the seed already run (sweeps do not depend on the seed)."""
    work, _ = smoke_run
    cfg = json.loads(json.dumps(SMOKE))
    cfg["seeds"] = [1337, 1, 2]
    write_config(work, "seeds.yaml", cfg)
    proc = snakemake(work, "-n", "--cores", "1", "--configfile", "config/seeds.yaml", timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert rules_of(planned_jobs(out)) == {"all", "train", "probe", "report"}
    seeds = {int(s) for s in re.findall(r"wildcards: variant=[\w-]+, seed=(\d+)", out)}
    assert seeds == {1, 2}
    assert len(re.findall(r"rule train:", out)) == 2 * len(SMOKE["variants"])


THREE_SEED_VARIANTS = ("baseline", "sdpa")  # two variants keep the run short on CI's two cores


@pytest.fixture(scope="module")
def three_seed_run(smoke_run):
    """The smoke run extended to three seeds for two of its variants (runs the new seeds' jobs)."""
    work, _ = smoke_run
    cfg = json.loads(json.dumps(SMOKE))
    cfg["seeds"] = [1337, 1, 2]
    cfg["variants"] = {v: SMOKE["variants"][v] for v in THREE_SEED_VARIANTS}
    write_config(work, "seeds3.yaml", cfg)
    proc = snakemake(work, "--cores", "2", "--resources", "gpu=1", "--configfile", "config/seeds3.yaml",
                     timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (work / "three_seed_run.log").write_text(proc.stdout + proc.stderr)
    return work


def test_jobs_start_seed_major(three_seed_run):
    """Each seed's trainings start before the next seed's (job priorities, rules/common.smk):
    the order jobs start in, as Snakemake logs them."""
    log = (three_seed_run / "three_seed_run.log").read_text()
    started = re.findall(r"rule (train|probe):\n(?:\s+\S.*\n)*?\s+wildcards: variant=([\w-]+), seed=(\d+)", log)
    trains = [int(seed) for rule, _, seed in started if rule == "train"]
    assert trains == [1] * len(THREE_SEED_VARIANTS) + [2] * len(THREE_SEED_VARIANTS), started
    first_seed2_train = next(i for i, (rule, _, seed) in enumerate(started) if rule == "train" and seed == "2")
    seed1_probes = [i for i, (rule, _, seed) in enumerate(started) if rule == "probe" and seed == "1"]
    assert len(seed1_probes) == len(THREE_SEED_VARIANTS) and max(seed1_probes) < first_seed2_train, started


def test_three_seeds_report_has_intervals(three_seed_run):
    import csv

    work = three_seed_run
    summary = {r["variant"]: r for r in csv.DictReader(open(work / "results/report/summary.csv"))}
    assert set(summary) == set(THREE_SEED_VARIANTS)
    for variant in THREE_SEED_VARIANTS:
        row = summary[variant]
        assert row["n"] == "3"
        assert float(row["val_loss_ci95_low"]) <= float(row["val_loss"]) <= float(row["val_loss_ci95_high"])
    runs = list(csv.DictReader(open(work / "results/report/runs.csv")))
    assert {r["seed"] for r in runs} == {"1337", "1", "2"}
    html = (work / "results/report/index.html").read_text()
    assert "mean of 3 seeds; 95 % interval" in html
    # the three seeds' runs differ: the data order and the init follow the seed
    losses = {r["seed"]: r["value"] for r in runs if r["variant"] == "baseline" and r["metric"] == "val_loss"}
    assert len(set(losses.values())) == 3

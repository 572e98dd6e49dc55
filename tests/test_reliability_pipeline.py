"""Faults through the snakemake CLI, in a copy of the repository, on a tiny 3-variant config.

* Injected faults (``ATTNBENCH_INJECT_FAULT``, read by the training process; Snakemake hands
  its environment to every job): a NaN loss in ``sdpa`` and an out-of-memory error in
  ``flash2``.  A failed variant is a *result*: its train job succeeds with
  ``status: failed`` and the reason, the others and the report finish, and snakemake exits
  0.  Only a job that cannot produce its document (a crash, a kill) fails the job; with
  ``--keep-going`` (the default profile) the other variants still finish.
* Rerun after the cause is gone: exactly the failed variants' train and probe jobs (and the
  report) are scheduled -- ``failures.log`` changes their params -- and end ``ok``.
* ``--resources gpu=1``: with ``device: auto`` the train/probe/sweep jobs each request one
  GPU; the lifetimes of their processes (logged by a ``sitecustomize`` hook) never overlap,
  although ``--cores 2`` would allow two jobs at once.  The control run (``gpu=2``) overlaps.
* Dataset rows skipped with ``on_bad_rows: skip`` are counted in stats.json and the report.
* ``train.checkpoint_every`` / ``train.resume`` stay out of the job params.
"""
from __future__ import annotations

import copy
import json
import os

import pytest
from pipeline_utils import copy_repo, planned_jobs, snakemake, write_config
from reliability_utils import write_conversations
from test_data import BAD_ROWS

pytestmark = pytest.mark.slow

VARIANTS = ("baseline", "sdpa", "flash2")
FAULTS = "sdpa:nan:4,flash2:oom:1"
CONFIG = {
    "run_name": "reliability",
    "device": "auto",  # the rules then request gpu=1 for train/probe/sweep (they run on the CPU here)
    "data": {"dataset": "jsonl:input/conversations.jsonl", "max_len": 64, "val_fraction": 0.1,
             "on_bad_rows": "skip"},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64},
    "train": {"batch_size": 4, "seq_len": 32, "steps": 10, "warmup_steps": 2, "timing_window": 4,
              "lr_warmup_steps": 3, "eval_every": 0, "eval_batches": 1},
    "probe": {"prompt_lens": [8], "batch_sizes": [1], "decode_tokens": 4, "repeats": 1, "warmup": 0},
    "sweep": {"seq_lens": [16], "tokens": 32, "repeats": 1, "warmup": 0, "scopes": ["attention"]},
    "measure": {"nvml": False, "codecarbon": False, "idle_seconds": 0, "count_flops": False},
    "variants": {v: {} for v in VARIANTS},
}

SITECUSTOMIZE = '''
import atexit, json, os, sys, time
_log = os.environ.get("ATTNBENCH_TEST_JOBLOG")
_script = os.path.basename(sys.argv[0]) if sys.argv else ""
if _log and _script in ("train.py", "probe.py", "sweep.py"):
    _t0 = time.time()

    def _done():
        with open(_log, "a") as fh:
            fh.write(json.dumps({"script": _script, "argv": sys.argv[1:], "start": _t0, "end": time.time()}) + "\\n")

    atexit.register(_done)
'''


def env_for(work, log_name, faults=None):
    hook = work / ".test-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    # Snakemake's SLURM plugin runs `scontrol show config` when it is imported; where a SLURM
    # client is installed without a reachable controller that waits ~10 s per invocation.
    (hook / "bin").mkdir(exist_ok=True)
    fake = hook / "bin" / "scontrol"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(hook), "ATTNBENCH_TEST_JOBLOG": str(work / log_name),
           "OMP_NUM_THREADS": "1", "PATH": f"{hook / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ATTNBENCH_INJECT_FAULT", None)
    if faults:
        env["ATTNBENCH_INJECT_FAULT"] = faults
    return env


def job_intervals(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def overlaps(jobs):
    jobs = sorted(jobs, key=lambda j: j["start"])
    return [(a["script"], b["script"]) for i, a in enumerate(jobs) for b in jobs[i + 1:] if b["start"] < a["end"]]


def dry(work, configfile="config/rel.yaml"):
    proc = snakemake(work, "-n", "--cores", "1", "--configfile", configfile, timeout=180, env=env_for(work, "dry.log"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted(set(planned_jobs(proc.stdout + proc.stderr)))


def doc(work, path):
    return json.loads((work / path).read_text())


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("faults"))
    write_conversations(work / "input" / "conversations.jsonl", 300, [bad.rstrip(b"\n") for bad, _ in BAD_ROWS])
    write_config(work, "rel.yaml", CONFIG)
    proc = snakemake(work, "--cores", "2", "--resources", "gpu=1", "--configfile", "config/rel.yaml",
                     timeout=600, env=env_for(work, "jobs1.log", FAULTS))
    return work, proc


def test_faulty_variants_are_recorded_and_the_rest_finishes(faulty_run):
    work, proc = faulty_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert doc(work, "results/train/baseline/seed1337/metrics.json")["status"] == "ok"
    nan = doc(work, "results/train/sdpa/seed1337/metrics.json")
    assert nan["status"] == "failed"
    assert nan["failure"]["kind"] == "nan" and nan["failure"]["step"] == 4 and nan["failure"]["loss"] == "nan"
    oom = doc(work, "results/train/flash2/seed1337/metrics.json")
    assert oom["status"] == "failed" and oom["failure"]["kind"] == "oom" and oom["failure"]["step"] == 1
    assert oom["failure"]["allocator"]["peak_rss_bytes"] > 0
    for v in ("sdpa", "flash2"):
        assert doc(work, f"results/probe/{v}/seed1337/probe.json")["status"] == "skipped"
        assert (work / f"results/train/{v}/seed1337/failures.log").exists()
    report = doc(work, "results/report/results.json")
    fails = {(f["variant"], f["stage"]): f for f in report["failures"]}
    assert fails[("sdpa", "train")]["kind"] == "nan" and fails[("sdpa", "train")]["step"] == 4
    assert fails[("flash2", "train")]["kind"] == "oom" and fails[("flash2", "train")]["step"] == 1
    html = (work / "results/report/index.html").read_text()
    assert "non-finite loss nan at step 4" in html and "injected out-of-memory fault" in html


def test_skipped_dataset_rows_are_counted_in_stats_and_report(faulty_run):
    work, _ = faulty_run
    assert doc(work, "results/tokens/stats.json")["skipped_rows"] == len(BAD_ROWS)
    assert doc(work, "results/report/results.json")["header"]["skipped_rows"] == len(BAD_ROWS)


def test_gpu_jobs_never_overlap_under_gpu_1(faulty_run):
    work, _ = faulty_run
    jobs = job_intervals(work / "jobs1.log")
    assert sorted(j["script"] for j in jobs) == sorted(["train.py", "probe.py", "sweep.py"] * len(VARIANTS))
    assert overlaps(jobs) == []


def test_rerun_after_the_fix_recomputes_exactly_the_failed_variants(faulty_run):
    work, _ = faulty_run
    failed = ("flash2", "sdpa")
    assert dry(work) == sorted([("all", None), ("report", None)] + [(r, v) for v in failed for r in ("train", "probe")])
    # the control: gpu=2 lets the two train jobs run side by side
    proc = snakemake(work, "--cores", "2", "--resources", "gpu=2", "--configfile", "config/rel.yaml",
                     timeout=600, env=env_for(work, "jobs2.log"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for v in VARIANTS:
        m = doc(work, f"results/train/{v}/seed1337/metrics.json")
        assert m["status"] == "ok", m["failure"]
        assert doc(work, f"results/probe/{v}/seed1337/probe.json")["status"] == "ok"
    assert doc(work, "results/report/results.json")["failures"] == []
    jobs = job_intervals(work / "jobs2.log")
    assert sorted(j["script"] for j in jobs) == sorted(["train.py", "probe.py"] * 2)
    assert ("train.py", "train.py") in overlaps(jobs), "control run: the overlap detector sees nothing"
    assert dry(work) == []


def test_checkpoint_settings_rerun_no_training(faulty_run):
    work, _ = faulty_run
    if dry(work):
        pytest.skip("needs the finished rerun of the previous test")
    cfg = copy.deepcopy(CONFIG)
    cfg["train"].update(checkpoint_every=3, resume=False)
    write_config(work, "ckpt.yaml", cfg)
    # runtime-only keys are in no rule's params, the report's included
    assert dry(work, "config/ckpt.yaml") == []


def train_pid(out_dir) -> int | None:
    """The pid of the scripts/train.py process writing into ``out_dir`` (started by this test's snakemake)."""
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            argv = open(f"/proc/{proc}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"scripts/train.py") for a in argv) and str(out_dir).encode() in argv:
            return int(proc)
    return None


def test_sigterm_of_a_train_job_under_snakemake_then_resume(faulty_run):
    """Kill the training process of a running workflow: the job fails, nothing counts as
    complete, and the next invocation reruns it, resuming from the checkpoint."""
    import signal
    import subprocess
    import sys
    import time

    work, _ = faulty_run
    cfg = copy.deepcopy(CONFIG)
    cfg["variants"] = {"baseline": {}}
    cfg["train"].update(steps=80, checkpoint_every=4)
    write_config(work, "kill.yaml", cfg)
    target = "results/train/baseline/seed1337/metrics.json"
    args = [target, "--cores", "1", "--configfile", "config/kill.yaml", "--forcerun", target]
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env_for(work, "kill.log"))
    ckpt = work / "results/train/baseline/seed1337/checkpoint.safetensors"
    t0 = time.monotonic()
    while not ckpt.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() - t0 < 300
        time.sleep(0.01)
    pid = train_pid("results/train/baseline/seed1337")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    assert not (work / target).exists()
    assert "interrupted by SIGTERM" in (work / "logs/train/baseline-seed1337.log").read_text()
    failures = work / "results/train/baseline/seed1337/failures.log"  # an interruption is not a variant failure
    assert not failures.exists() or "SIGTERM" not in failures.read_text()

    plan = dry(work, "config/kill.yaml")
    assert ("train", "baseline") in plan
    proc = snakemake(work, target, "--cores", "1", "--configfile", "config/kill.yaml", timeout=300,
                     env=env_for(work, "kill2.log"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = doc(work, target)
    assert m["status"] == "ok" and m["training"]["resumed_from_step"] > 0


def test_missing_dataset_after_a_finished_run_stops_before_any_job(faulty_run):
    """Issue 22, 1: a dataset file that is gone stops the workflow at once with one line, even
    though the earlier run's tokens are up to date; nothing reruns, no report is re-rendered."""
    work, _ = faulty_run
    report = work / "results/report/index.html"
    before = report.stat().st_mtime if report.exists() else None
    cfg = copy.deepcopy(CONFIG)
    cfg["data"]["dataset"] = "jsonl:userdata/missing.jsonl"
    write_config(work, "missing.yaml", cfg)
    proc = snakemake(work, "--cores", "1", "--configfile", "config/missing.yaml", timeout=180,
                     env=env_for(work, "missing.log"))
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0
    assert out[-1].startswith("invalid config: data.dataset: 'jsonl:userdata/missing.jsonl'"), out[-5:]
    assert "does not exist" in out[-1]
    assert (report.stat().st_mtime if report.exists() else None) == before


def test_a_bad_dataset_fails_before_any_gpu_job_runs(tmp_path):
    """Issue 22, 8: a bad user file stops the run at DAG construction, every bad line named,
    before any sweep or train job starts (tokenize also has priority over GPU jobs)."""
    work = copy_repo(tmp_path / "badrun")
    write_conversations(work / "input" / "conversations.jsonl", 100, [bad.rstrip(b"\n") for bad, _ in BAD_ROWS])
    cfg = copy.deepcopy(CONFIG)
    cfg["data"]["on_bad_rows"] = "error"
    write_config(work, "bad.yaml", cfg)
    proc = snakemake(work, "--cores", "1", "--configfile", "config/bad.yaml", timeout=300,
                     env=env_for(work, "bad.log"))
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0
    assert out[-1].startswith("invalid data: input/conversations.jsonl:") and "bad rows" in out[-1], out[-3:]
    ran = job_intervals(work / "bad.log") if (work / "bad.log").exists() else []
    assert ran == [], f"jobs ran before the data error: {ran}"


def test_interrupting_snakemake_stops_the_training_job(faulty_run):
    """Issue 22, 6: Ctrl-C (SIGINT) to Snakemake ends the train job's Python process with its
    shell; it writes no result, and the next plain run has nothing incomplete to complain about."""
    import signal
    import subprocess
    import sys
    import time

    work, _ = faulty_run
    cfg = copy.deepcopy(CONFIG)
    cfg["variants"] = {"baseline": {}}
    cfg["train"].update(steps=400)
    write_config(work, "sigint.yaml", cfg)
    target = "results/train/baseline/seed1337/metrics.json"
    args = [target, "--cores", "1", "--configfile", "config/sigint.yaml", "--forcerun", target]
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=work, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env_for(work, "sigint.log"))
    t0 = time.monotonic()
    pid = None
    while pid is None:
        assert proc.poll() is None and time.monotonic() - t0 < 120, proc.stdout.read()[-3000:]
        pid = train_pid("results/train/baseline/seed1337")
        time.sleep(0.05)
    time.sleep(2)  # training under way
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    for _ in range(100):  # the job's Python process must be gone within seconds
        if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"train process {pid} still running after Snakemake was interrupted")
    assert not (work / target).exists()
    rerun = snakemake(work, target, "--cores", "1", "--configfile", "config/sigint.yaml", "-n", timeout=180,
                      env=env_for(work, "sigint2.log"))
    assert rerun.returncode == 0 and "IncompleteFilesException" not in rerun.stdout + rerun.stderr

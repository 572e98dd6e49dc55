"""The GPU slot pool with fake GPU ids, in real processes: no two concurrent jobs share a
slot, jobs beyond the slots wait, a SIGKILLed job's slot is freed, SLURM is left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from attnbench import gpuslots

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
from attnbench import gpuslots
os.environ[gpuslots.ENV] = {spec!r}
t0 = time.time()
slot = gpuslots.claim_from_env()
t1 = time.time()
time.sleep({hold})
print(json.dumps({{"slot": slot, "visible": os.environ["CUDA_VISIBLE_DEVICES"], "asked": t0, "start": t1,
                  "end": time.time(), "claim_s": gpuslots.CLAIM_SECONDS}}), flush=True)
"""


def holder(tmp_path, spec="a,b", hold=0.6):
    code = HOLDER.format(root=str(ROOT), spec=spec, hold=hold)
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True, env=env)


def test_concurrent_jobs_never_share_a_slot_and_extra_jobs_wait(tmp_path):
    procs = [holder(tmp_path) for _ in range(5)]  # 5 jobs, 2 slots
    runs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert {r["slot"] for r in runs} == {"a", "b"}
    assert all(r["visible"] == r["slot"] for r in runs)
    for i, r in enumerate(runs):
        for s in runs[i + 1:]:
            if r["slot"] == s["slot"]:
                assert r["end"] <= s["start"] or s["end"] <= r["start"], (r, s)
    waited = sorted(r["start"] - r["asked"] for r in runs)
    assert waited[-1] >= 0.5, "five jobs on two slots: some must have waited"
    # each job records how long its claim took, waiting included (its start-up's share)
    assert all(abs(r["claim_s"] - (r["start"] - r["asked"])) < 0.1 for r in runs)
    assert (tmp_path / ".snakemake" / "gpu-slots" / "a.lock").exists()


def test_a_killed_job_frees_its_slot(tmp_path):
    victim = holder(tmp_path, spec="only", hold=60)
    lock = tmp_path / ".snakemake" / "gpu-slots" / "only.lock"
    for _ in range(100):
        if lock.exists() and lock.read_text().strip() == str(victim.pid):
            break
        time.sleep(0.05)
    waiter = holder(tmp_path, spec="only", hold=0.1)
    time.sleep(0.5)
    assert waiter.poll() is None, "the waiter got the slot while it was held"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    run = json.loads(waiter.communicate(timeout=30)[0])
    assert run["slot"] == "only"


def test_no_pool_under_slurm_or_when_unset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gpuslots.claim_from_env({}) is None
    assert gpuslots.claim_from_env({gpuslots.ENV: ""}) is None
    env = {gpuslots.ENV: "0,1", "SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "3"}
    assert gpuslots.claim_from_env(env) is None and env["CUDA_VISIBLE_DEVICES"] == "3"
    assert gpuslots.claim_from_env({gpuslots.ENV: "none"}) is None
    assert gpuslots.claim_from_env({gpuslots.ENV: "auto", "CUDA_VISIBLE_DEVICES": ""}) is None  # no GPU here
    env = {gpuslots.ENV: "x"}
    assert gpuslots.claim_from_env(env) == "x" and env["CUDA_VISIBLE_DEVICES"] == "x"
    assert "CUDA_DEVICE_ORDER" not in env  # a UUID or name: no numbering to agree on
    gpuslots.release("x")
    env = {gpuslots.ENV: "7"}  # nvidia-smi's index: CUDA must number GPUs as NVML does
    assert gpuslots.claim_from_env(env) == "7" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    gpuslots.release("7")


def test_auto_lists_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpuslots.parse_slots("auto") == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpuslots.parse_slots("auto") == []
    assert gpuslots.parse_slots(" 0, 1 ") == ["0", "1"]

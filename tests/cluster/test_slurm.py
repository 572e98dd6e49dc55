"""The workflow through a real SLURM (single node, with accounting) using profiles/slurm.

1. The smoke preset (CPU; its variants cut to two to stay within CI's time) runs end to end
   with ``snakemake --profile profiles/slurm``: every job of the workflow must have gone
   through sbatch (checked in ``sacct``: one COMPLETED allocation per job, its comment naming
   the rule) and the report must exist.
2. A GPU run: the same workflow with ``device=auto`` makes train carry ``gpu=1``; the
   generated sbatch call must request the GPU (``--gpus=1 --cpus-per-gpu=N``), and SLURM must
   allocate it (the test node advertises one *fake* GPU, gres type "fake", so the job is
   scheduled and accounted with gres/gpu=1 and then trains on CPU, as device=auto does
   without CUDA).
3. The profile's site settings (GPU model, GPU partition, account) as they reach the
   plugin's sbatch command builder, from a dry run's job resources (no submission).
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
PY_BIN = Path(sys.executable).parent
RUN_TIMEOUT = int(os.environ.get("ATTNBENCH_CLUSTER_TIMEOUT", "420"))
# Two variants keep every rule and the DAG's shape at a third of the smoke preset's time.
VARIANTS = [v for v in os.environ.get("ATTNBENCH_CLUSTER_VARIANTS", "baseline,gqa").split(",") if v]
TEST_ENV = {                        # what a user would export; sized for the 2-core test node
    "ATTNBENCH_SLURM_PARTITION": "debug",
    "ATTNBENCH_SLURM_ACCOUNT": "root",
    "ATTNBENCH_SLURM_GPU_MEM_MB": "3000",
    "ATTNBENCH_SLURM_CPUS_PER_GPU": "1",
}
PROFILE_ARGS = ["--profile", "profiles/slurm", "--workflow-profile", "none",
                # first status poll after 5 s instead of 40 s: same code path, faster test
                "--slurm-init-seconds-before-status-checks", "5", "--verbose"]


# ----------------------------------------------------------------------------- helpers ---

def copy_workflow(dest: Path) -> Path:
    """The files a fresh clone has (tracked + untracked-not-ignored), minus the tests."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        src = REPO / rel
        if not src.is_file() or rel.startswith(("tests/", "benchmarks/", ".ci/")):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    return dest


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "ATTNBENCH_SLURM_", "SNAKEMAKE_PROFILE"))}
    env["PATH"] = os.pathsep.join([str(PY_BIN), "/usr/sbin", "/usr/bin", "/sbin", "/bin", env.get("PATH", "")])
    env.update(TEST_ENV)
    env.update(extra)
    return env


def run_uuid(log: str) -> str | None:
    m = re.search(r"SLURM run ID: (\S+)", log)
    return m.group(1) if m else None


def run_snakemake(workdir: Path, args: list[str], log_name: str, timeout: int = RUN_TIMEOUT,
                  env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run snakemake in its own process group with a hard timeout.

    On timeout: SIGTERM then SIGKILL to that process group (by id), and scancel of the jobs
    this run submitted (they carry the run's UUID as job name).
    """
    log_path = workdir / log_name
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=workdir,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env or job_env(), start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
            text = log_path.read_text(errors="replace")
            uuid = run_uuid(text)
            if uuid:
                subprocess.run(["scancel", "--name", uuid], check=False, timeout=30)
            pytest.fail(f"snakemake {' '.join(args)} did not finish within {timeout}s "
                        f"(killed; SLURM jobs of run {uuid} cancelled). Log tail:\n{text[-5000:]}")
    return rc, log_path.read_text(errors="replace")


SACCT_FIELDS = ["JobIDRaw", "JobName", "Comment", "State", "ExitCode", "Partition", "Account",
                "AllocTRES", "Elapsed"]


def sacct_jobs(uuid: str, since: _dt.datetime) -> list[dict[str, str]]:
    """Allocations (-X) of one snakemake run: the plugin names every job after the run UUID."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "--name", uuid,
                          "-S", since.strftime("%Y-%m-%dT%H:%M:%S"), "-o", ",".join(SACCT_FIELDS)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [dict(zip(SACCT_FIELDS, line.split("|"))) for line in out.splitlines() if line.strip()]


def format_rows(rows: list[dict[str, str]]) -> str:
    keys = ["JobIDRaw", "Comment", "State", "ExitCode", "Partition", "Account", "AllocTRES", "Elapsed"]
    return "\n".join("|".join(r[k] for k in keys) for r in [dict(zip(keys, keys))] + rows)


def parse_run(log: str) -> dict:
    """What the controller log says: planned jobs per rule, local jobs, submissions, sbatch calls."""
    stats = {}
    m = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+\d+", log, re.S)
    if m:
        for line in m.group(1).splitlines():
            name, count = line.split()
            stats[name] = int(count)
    local_rules = set(re.findall(r"^localrule (\w+):", log, re.M))
    finished = dict(re.findall(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", log, re.M))
    submitted: dict[str, str] = {}          # snakemake jobid -> last SLURM job id
    for jobid, slurm_id in re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", log, re.M):
        submitted[jobid] = slurm_id
    calls = re.findall(r"^sbatch call: (sbatch .*?)(?: --wrap=.*)?$", log, re.M)
    return {"stats": stats, "local_rules": local_rules, "finished": finished,
            "submitted": submitted, "sbatch_calls": calls}


def comment_rule(comment: str, rules: set[str]) -> str | None:
    """rule_<rule> or rule_<rule>_wildcards_<values> -> <rule> (rule names may contain '_')."""
    for rule in sorted(rules, key=len, reverse=True):
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            return rule
    return None


def call_of(calls: list[str], comment: str) -> str:
    hits = [c for c in calls if f"--comment {comment} " in c or f"--comment '{comment}' " in c]
    assert hits, f"no sbatch call with --comment {comment} in:\n" + "\n".join(calls)
    return hits[-1]


# ---------------------------------------------------------------------------- fixtures ---

@pytest.fixture(scope="module")
def cluster_workdir(tmp_path_factory, slurm_cluster) -> Path:
    """A copy of the workflow with a 'cluster-smoke' preset: the smoke preset, fewer variants."""
    wd = copy_workflow(tmp_path_factory.mktemp("slurm-wf"))
    smoke = yaml.safe_load((wd / "config" / "smoke.yaml").read_text())
    missing = [v for v in VARIANTS if v not in smoke["variants"]]
    assert not missing, f"variants {missing} not in config/smoke.yaml"
    smoke["variants"] = {v: smoke["variants"][v] for v in VARIANTS}
    (wd / "config" / "cluster-smoke.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    return wd


@pytest.fixture(scope="module")
def smoke_run(cluster_workdir):
    since = _dt.datetime.now() - _dt.timedelta(minutes=2)
    t0 = time.monotonic()
    rc, log = run_snakemake(cluster_workdir, [*PROFILE_ARGS, "--configfile", "config/cluster-smoke.yaml"],
                            "smoke-slurm.log")
    return {"rc": rc, "log": log, "since": since, "seconds": time.monotonic() - t0}


# ------------------------------------------------------------------------------- tests ---

def test_smoke_workflow_every_job_through_sbatch(cluster_workdir, smoke_run):
    log = smoke_run["log"]
    assert smoke_run["rc"] == 0, f"snakemake failed (rc {smoke_run['rc']}). Log tail:\n{log[-6000:]}"
    report = cluster_workdir / "results" / "report" / "index.html"
    assert report.is_file() and report.stat().st_size > 1000, "results/report/index.html missing or empty"

    run = parse_run(log)
    stats = run["stats"]
    assert stats, "no 'Job stats' table in the log"
    rules = set(stats) - {"all"}
    assert {"download", "tokenize", "train", "probe", "report"} <= rules, stats
    assert stats["train"] == len(VARIANTS) and stats["probe"] == len(VARIANTS), stats
    # every planned job finished ...
    assert Counter(run["finished"].values()) == Counter(stats), (run["finished"], stats)
    # ... and only the aggregation target ran locally: everything else went through sbatch
    assert run["local_rules"] <= {"all"}, f"rules run on the submit host: {run['local_rules'] - {'all'}}"
    remote = {jid: rule for jid, rule in run["finished"].items() if rule not in run["local_rules"]}
    missing = {jid: rule for jid, rule in remote.items() if jid not in run["submitted"]}
    assert not missing, f"jobs that finished without an sbatch submission: {missing}"

    uuid = run_uuid(log)
    assert uuid, "no 'SLURM run ID' in the log"
    rows = sacct_jobs(uuid, smoke_run["since"])
    table = format_rows(rows)
    print(f"\nsacct for run {uuid} ({smoke_run['seconds']:.0f} s):\n{table}")
    (cluster_workdir / "sacct-smoke.txt").write_text(table + "\n")

    by_id = {r["JobIDRaw"]: r for r in rows}
    assert len(rows) == len(run["sbatch_calls"]), f"{len(run['sbatch_calls'])} sbatch calls, sacct:\n{table}"
    assert len(rows) == len(remote), f"{len(remote)} remote jobs, sacct rows:\n{table}"
    for jid, rule in remote.items():
        row = by_id.get(run["submitted"][jid])
        assert row, f"SLURM job {run['submitted'][jid]} ({rule}) not in sacct:\n{table}"
        assert row["State"] == "COMPLETED" and row["ExitCode"] == "0:0", f"{rule}: {row}"
        assert comment_rule(row["Comment"], rules) == rule, f"comment {row['Comment']!r} is not rule {rule}"
        assert row["Partition"] == "debug" and row["Account"] == "root", row
    assert Counter(comment_rule(r["Comment"], rules) for r in rows) == Counter(remote.values())
    # smoke preset = CPU: no GPU requested anywhere; CPU jobs ask --cpus-per-task
    for call in run["sbatch_calls"]:
        assert "--gpus" not in call and "--gres" not in call, call
        assert "--cpus-per-task=" in call, call
    for r in rows:
        assert "gres/gpu" not in r["AllocTRES"], r


def test_gpu_rule_requests_and_gets_a_gpu(cluster_workdir, smoke_run):
    """device=auto -> the real train rule carries gpu=1 -> --gpus=1 --cpus-per-gpu -> gres/gpu=1."""
    if not (cluster_workdir / "results" / "tokens" / "train.npy").exists():
        pytest.fail("the smoke run did not produce results/tokens (see the smoke test)")
    variant = VARIANTS[0]
    target = f"results/train/{variant}/seed1337/metrics.json"
    since = _dt.datetime.now() - _dt.timedelta(minutes=1)
    rc, log = run_snakemake(cluster_workdir,
                            [target, *PROFILE_ARGS, "--configfile", "config/cluster-smoke.yaml",
                             "--forcerun", "train", "--config", "device=auto"],
                            "gpu-slurm.log", timeout=240)
    assert rc == 0, f"GPU run failed (rc {rc}). Log tail:\n{log[-6000:]}"
    run = parse_run(log)
    assert run["stats"] == {"train": 1}, run["stats"]
    call = call_of(run["sbatch_calls"], f"rule_train_wildcards_{variant}_1337")
    print(f"\nsbatch call for gpu=1 rule train: {call}")
    (cluster_workdir / "sbatch-gpu.txt").write_text(call + "\n")
    argv = shlex.split(call)
    assert "--gpus=1" in argv, call
    assert "--cpus-per-gpu=1" in argv, call             # ATTNBENCH_SLURM_CPUS_PER_GPU
    assert not any(a.startswith("--cpus-per-task") for a in argv), call
    assert not any(a.startswith("--ntasks") for a in argv), call
    assert argv[argv.index("-p") + 1] == "debug" and argv[argv.index("-A") + 1] == "root", call
    assert argv[argv.index("--mem") + 1] == "3000" and argv[argv.index("-t") + 1] == "720", call

    rows = sacct_jobs(run_uuid(log), since)
    print(format_rows(rows))
    assert len(rows) == 1, format_rows(rows)
    row = rows[0]
    assert row["Comment"] == f"rule_train_wildcards_{variant}_1337", row
    assert row["State"] == "COMPLETED", row
    assert "gres/gpu=1" in row["AllocTRES"], f"SLURM did not allocate the GPU: {row}"


def _dry_run_resources(workdir: Path, env: dict[str, str]) -> dict[str, dict]:
    """rule -> resources of its first job, as a dry run with the SLURM profile computes them."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm",
                          "--workflow-profile", "none", "--configfile", "config/cluster-smoke.yaml",
                          "--config", "device=auto", "--forceall"],
                         cwd=workdir, capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    res: dict[str, dict] = {}
    for rule, line in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out.stdout, re.M):
        vals = {}
        for item in line.split(", "):
            k, _, v = item.partition("=")
            vals[k] = int(v) if v.isdigit() else v
        res.setdefault(rule, vals)
    return res


def test_profile_site_settings_reach_sbatch_command(cluster_workdir):
    """GPU model, GPU partition and account from the environment, through the plugin's own
    sbatch command builder (get_submit_command + set_gres_string), nothing submitted."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    env = job_env(ATTNBENCH_SLURM_GPU_MODEL="fake", ATTNBENCH_SLURM_GPU_PARTITION="gpu",
                  ATTNBENCH_SLURM_PARTITION="cpu", ATTNBENCH_SLURM_ACCOUNT="proj42",
                  ATTNBENCH_SLURM_CPUS_PER_GPU="8")
    env.pop("ATTNBENCH_SLURM_GPU_MEM_MB")                    # profile default
    resources = _dry_run_resources(cluster_workdir, env)

    class Res(dict):
        __getattr__ = dict.__getitem__

    def sbatch(rule: str) -> list[str]:
        r = Res(resources[rule])
        job = SimpleNamespace(resources=r, threads=1, name=rule, wildcards=None, is_group=lambda: False)
        params = {"run_uuid": "u", "slurm_logfile": "l", "comment_str": f"rule_{rule}",
                  "account": f" -A {r['slurm_account']}", "partition": f" -p {r['slurm_partition']}",
                  "workdir": "/w"}
        return shlex.split(get_submit_command(job, params) + set_gres_string(job))

    for rule in ("train", "probe", "sweep"):
        argv = sbatch(rule)
        assert "--gpus=fake:1" in argv and "--cpus-per-gpu=8" in argv, (rule, argv)
        assert argv[argv.index("-p") + 1] == "gpu" and argv[argv.index("-A") + 1] == "proj42", argv
        assert argv[argv.index("--mem") + 1] == "32000", argv
    for rule in ("download", "tokenize", "report"):
        argv = sbatch(rule)
        assert not any(a.startswith(("--gpus", "--gres", "--cpus-per-gpu")) for a in argv), (rule, argv)
        assert "--cpus-per-task=1" in argv and argv[argv.index("-p") + 1] == "cpu", (rule, argv)
    print("\n" + " ".join(sbatch("train")))

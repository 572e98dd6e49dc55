"""Helpers for tests that run the real workflow in a copy of the repository."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_repo(dest: Path) -> Path:
    """Copy the files a fresh clone would have (tracked + untracked-not-ignored)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.is_file() or rel.startswith(("tests/", "benchmarks/", "reports/h100")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def write_config(workdir: Path, name: str, cfg: dict) -> Path:
    path = workdir / "config" / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def no_slurm_env(workdir: Path, env=None) -> dict:
    """The environment for a local snakemake run, with a failing ``scontrol`` first on PATH.

    Snakemake's SLURM plugin runs ``scontrol show config`` when it is imported; where a SLURM
    client is installed without a reachable controller (CI, after the cluster test) each
    call waits about 10 s for it.
    """
    env = dict(os.environ if env is None else env)
    bin_dir = workdir / ".no-slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "scontrol"
    if not fake.exists():
        fake.write_text("#!/bin/sh\nexit 1\n")
        fake.chmod(0o755)
    if not env.get("PATH", "").startswith(str(bin_dir)):
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(workdir: Path, *args: str, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=no_slurm_env(workdir, env))


def planned_jobs(output: str) -> list[tuple[str, str | None]]:
    """(rule, variant) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", output):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m:
            continue
        w = re.search(r"wildcards: .*?variant=([\w-]+)", block)
        jobs.append((m.group(1), w.group(1) if w else None))
    return jobs


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())

"""Fixtures for the SLURM tests: a real single-node SLURM with accounting on this machine.

The session fixture ``slurm_cluster`` runs tests/cluster/slurm_up.sh (installs the Debian
packages if missing, starts munged, MariaDB, slurmdbd, slurmctld, slurmd) and, at the end
of the session -- also after failures -- stops exactly the daemons that this run started,
by their recorded PIDs (tests/cluster/slurm_down.sh NAME...).  Daemons that were already up
(e.g. from a manual ``bash tests/cluster/slurm_up.sh``) are used and left running.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
UP = HERE / "slurm_up.sh"
DOWN = HERE / "slurm_down.sh"
STATE = Path(os.environ.get("ATTNBENCH_SLURM_STATE", "/var/lib/attnbench-slurm"))
PIDS = STATE / "pids"
UP_TIMEOUT = int(os.environ.get("ATTNBENCH_SLURM_UP_TIMEOUT", "600"))  # includes apt-get


def loud(msg: str) -> None:
    """Say it past pytest's capture (terminal) and as a warning (summary)."""
    bar = "!" * 78
    sys.__stderr__.write(f"\n{bar}\n{msg}\n{bar}\n")
    sys.__stderr__.flush()
    warnings.warn(msg, stacklevel=2)


def read_pids() -> dict[str, str]:
    if not PIDS.exists():
        return {}
    out = {}
    for line in PIDS.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        loud("SLURM CLUSTER TESTS SKIPPED: they need root to start munged/slurmdbd/slurmctld/slurmd.")
        pytest.skip("SLURM cluster tests need root")
    if not shutil.which("apt-get") and not shutil.which("slurmctld") and not Path("/usr/sbin/slurmctld").exists():
        loud("SLURM CLUSTER TESTS SKIPPED: no SLURM installed and no apt-get to install it.")
        pytest.skip("no SLURM and no apt-get")

    before = read_pids()
    started: list[str] = []

    def stop_ours():
        if started:
            subprocess.run(["bash", str(DOWN), *started], timeout=180, check=False)

    try:
        up = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=UP_TIMEOUT,
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        started = [n for n, p in read_pids().items() if before.get(n) != p]
        stop_ours()
        pytest.fail(f"slurm_up.sh did not finish within {UP_TIMEOUT}s:\n{(err.stderr or b'')[-3000:]!r}")
    started = [n for n, p in read_pids().items() if before.get(n) != p]
    if up.returncode == 3:
        stop_ours()
        loud("SLURM CLUSTER TESTS SKIPPED: the Debian packages slurmctld slurmd slurm-client munge "
             "slurmdbd mariadb-server could not be installed (apt-get failed). The SLURM profile "
             "was NOT tested.\n" + up.stderr[-2000:])
        pytest.skip("SLURM Debian packages could not be installed")
    if up.returncode != 0:
        stop_ours()
        pytest.fail(f"slurm_up.sh failed (rc {up.returncode}):\n{up.stderr[-4000:]}")

    yield {"started": started, "up_log": up.stderr}

    stop_ours()

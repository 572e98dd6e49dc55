"""One GPU per job on a machine with several: a pool of GPU slots held by file locks.

``snakemake --cores 16 --resources gpu=4`` lets four GPU jobs run at once but does not say
which GPU each gets; without a pool all four would open device 0.  Each train/probe/sweep job
claims a slot before CUDA initialises in it: it takes an exclusive ``flock`` on
``.snakemake/gpu-slots/<gpu>.lock`` for one of the configured GPUs and sets
``CUDA_VISIBLE_DEVICES`` to that GPU, so the job's ``cuda`` device is that one physical GPU.
The lock belongs to the process: it is released when the job ends however it ends (exit, an
exception, SIGKILL), since the kernel closes the file.  A job that finds every slot taken
waits for one (more jobs than slots: they queue).  Under SLURM nothing happens: SLURM has
already given the job its GPU (``SLURM_JOB_ID`` set, ``CUDA_VISIBLE_DEVICES`` set by it).

The workflow passes the GPUs in ``ATTNBENCH_GPU_SLOTS`` (config ``gpus``: ids, or ``auto`` =
every GPU visible to Snakemake); the scripts call :func:`claim_from_env` first thing, before
importing torch.  Nothing here imports torch.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

ENV = "ATTNBENCH_GPU_SLOTS"
LOCK_DIR = Path(".snakemake") / "gpu-slots"

_held: dict[str, int] = {}  # slot -> open lock fd (kept open for the life of the process)
CLAIM_SECONDS: float | None = None  # how long claim_from_env took (listing the GPUs, waiting for a free one)


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU
    ``nvidia-smi -L`` lists (none on a machine without one)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def parse_slots(spec: str) -> list[str]:
    """``"0,1,3"`` -> ["0", "1", "3"]; ``"auto"`` -> :func:`visible_gpus`."""
    spec = spec.strip()
    if spec == "auto":
        return visible_gpus()
    return [s.strip() for s in spec.split(",") if s.strip()]


def claim(slots: list[str], lock_dir: Path = LOCK_DIR, *, poll_s: float = 0.2,
          timeout_s: float | None = None) -> str:
    """Hold one free slot of ``slots`` (waiting while all are held) and return it."""
    if not slots:
        raise RuntimeError("no GPU slots to claim (config gpus is empty and no GPU is visible)")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    waited = False
    while True:
        for slot in slots:
            if slot in _held:
                return slot
            fd = os.open(lock_dir / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held[slot] = fd
            if waited:
                print(f"gpu slot {slot} claimed after {time.monotonic() - start:.1f} s", file=sys.stderr)
            return slot
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no GPU slot of {slots} became free within {timeout_s} s")
        waited = True
        time.sleep(poll_s)


def release(slot: str) -> None:
    fd = _held.pop(slot, None)
    if fd is not None:
        os.close(fd)  # closing the file drops the lock


def claim_from_env(environ=os.environ) -> str | None:
    """The scripts' first step: claim a slot per ``ATTNBENCH_GPU_SLOTS`` and make it the job's
    only visible GPU.  Returns the slot, or None when there is no pool (unset, empty, under
    SLURM, ``none`` for CPU jobs)."""
    global CLAIM_SECONDS
    spec = environ.get(ENV, "").strip()
    if not spec or spec == "none" or environ.get("SLURM_JOB_ID"):
        return None
    t0 = time.monotonic()
    slots = parse_slots(spec)
    if not slots and spec == "auto":
        return None  # no GPU here (device: auto on a CPU machine): nothing to share
    slot = claim(slots)
    if slot.isdigit():  # nvidia-smi's (NVML's, PCI-bus) numbering; CUDA's default is fastest first
        environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    environ["CUDA_VISIBLE_DEVICES"] = slot
    environ["ATTNBENCH_GPU_SLOT"] = slot  # recorded in the job's provenance
    CLAIM_SECONDS = round(time.monotonic() - t0, 3)
    return slot

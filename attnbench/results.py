"""Result files: atomic writes, provenance, and the documented JSON schema.

Every job writes one JSON document.  A metric that could not be measured is ``null`` and its
dotted path appears in the document's ``unavailable`` mapping with the reason, never 0.

Schema ``attnbench.train/1`` (``results/train/<variant>/seed<seed>/metrics.json``)::

    schema, variant, status ("ok" | "failed"), failure (null | {kind, message, step, ...}),
    kernel                       implementation that ran (attention module's ``kernel``)
    attention: {name, params}    the variant's resolved parameters
    model: {n_layer, n_head, n_embd, vocab_size, block_size, params_total,
            params_attention, params_non_embedding, bytes_on_disk,
            cache_bytes_per_token (all layers, bf16)}
    training: {steps, warmup_steps, batch_size, seq_len, tokens_per_step, tokens_trained,
               final_train_loss, val_loss, val_history: [{step, val_loss}], lr, dtype}
    timing: {step_ms_p50, step_ms_p90, step_ms_min, step_ms_max, tokens_per_s,
             warmup_s, timed_s, windows: [{steps, seconds}], method}
    memory: {peak_allocated_bytes, peak_reserved_bytes, nvml_used_bytes, peak_rss_bytes,
             allocated_at_timed_start_bytes (the persistent part of the peak),
             peak_allocated_warmup_bytes (the warm-up steps: the figure CUDA graphs leave countable)}
    energy: {gpu_j_total, gpu_j_per_step, gpu_j_per_token, gpu_mean_w, idle_w,
             gpu_j_above_idle, sampled_vs_counter_ratio, window_seconds_min, flags: [...]}
    flops: {forward_per_step, train_per_step, convention, counted_train_per_step,
            counted_vs_analytic, uncounted_ops: [...], achieved_tflops, mfu, peak_tflops}
    emissions: {co2eq_kg, cpu_energy_kwh, ram_energy_kwh, gpu_energy_kwh, cpu_power_method,
                country_iso_code}
    provenance: see :func:`provenance`
    unavailable: {"energy.gpu_j_total": "no NVML: ...", ...}
    attention.exact              computes baseline's function (the report checks its loss curve)
    kernel_selection             what impl="auto" measured and chose (attention.selection)
    kernel_check: {method, start, end}   the job's self-checks (attnbench.selfcheck)
    kernel_fallback: [{rejected: {module: impl}, failed_check, selection}]   only where the start
                                 check failed an ``auto`` choice and ``auto`` chose again (selfcheck.fall_back)
    control: {kind, tflops, seconds, calls}   fixed matmul timed in the job's process (drift control)
    efficiency: {loss_drop_per_kj, loss_start, loss_end, energy_j, ...}   over the same timed steps
    energy.gpu_j_per_token_above_idle, flops.mfu_standard, job: {started_utc, finished_utc}
    job.startup_s                the process's age when the record began (interpreter, imports, slot claim)
    job.startup_parts_s          parts of it timed apart: gpu_slot_claim (None without a pool), provenance
                                 (train and probe; a sweep records its provenance at its end)
    job.phases_s                 wall seconds per phase after that (measure.PhaseClock)
    training: {..., checkpoints, resumed_from_step, resumes, compile_error,
               cudagraph_skips (compile modes that replay CUDA graphs: graphs that ran without)}
    timing.windows[].energy_error, failure.allocator (out of memory), emissions.resumed_part

Schema ``attnbench.probe/1`` (``results/probe/<variant>/seed<seed>/probe.json``): schema, variant,
status, kernel, prefill: [{batch_size, prompt_len, ms_p50, ms_p90, repeats, prefill_mode, timing_stable,
eager_*, graph_*, graph_unavailable, ...}], prefill_flags, prefill_stable, decode: [...],
memory, energy, provenance, unavailable.

Schema ``attnbench.sweep/1`` (``results/sweep/<variant>/sweep.json``): schema, variant,
status, dtype, tokens_per_call, flop_convention, points: [{scope ("attention" | "block"),
seq_len, batch_size, forward: {...}, forward_backward: {status ("ok" | "oom" | "error"),
ms_p50, ms_p90, ms_min, n, p90_over_p50, timing_stable, timing_target, timing_method, tflops,
peak_allocated_bytes, peak_rss_bytes, calls_in_energy_window, energy_window_s (the energy's own
window: sweep.energy_seconds of back-to-back calls after the timing), gpu_j_per_call, gpu_w (null
with energy_unavailable saying why: no counter, a window under 1 s, energy_seconds 0), kernel,
error}}], provenance, unavailable.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

TRAIN_SCHEMA = "attnbench.train/1"
_UMASK = os.umask(0)
os.umask(_UMASK)
PROBE_SCHEMA = "attnbench.probe/1"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A job killed mid-write leaves at most a ``.tmp`` file, never a truncated output that
    Snakemake would take as complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def jsonable(obj):
    """Replace non-finite floats by None (JSON has no NaN) -- non-finite values are failures."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def tokens_identity(tokens_dir) -> str | None:
    """The ``tokens_sha256`` of a tokenized folder (its stats.json), recorded by every result
    trained or probed on it, so a report can tell results of other data apart."""
    try:
        return json.loads((Path(tokens_dir) / "stats.json").read_text()).get("tokens_sha256")
    except (OSError, ValueError):
        return None


def utc_now() -> str:
    """Wall-clock time (UTC, ms) of a job's start or end: the report tells from these and the
    device UUIDs whether two jobs shared a GPU at the same time."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable config (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_commit(repo_dir: str | os.PathLike | None = None) -> str | None:
    """HEAD of the checkout (``-dirty`` when tracked files changed).

    A copy without ``.git`` (e.g. a working tree shipped to a GPU machine) can name its
    commit in ``ATTNBENCH_GIT_COMMIT`` or a ``.attnbench-commit`` file at the repo root.
    """
    if os.environ.get("ATTNBENCH_GIT_COMMIT"):
        return os.environ["ATTNBENCH_GIT_COMMIT"]
    marker = Path(__file__).resolve().parent.parent / ".attnbench-commit"
    if not (marker.parent / ".git").exists() and marker.is_file():
        return marker.read_text().strip() or None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           cwd=repo_dir or Path(__file__).parent, capture_output=True, text=True)
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def provenance_and_job(seed: int | None, config: Any, device) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job document's ``provenance`` and the start of its ``job`` record: when it began, the
    process's age then (``startup_s``: interpreter, imports, GPU slot, provenance) and the parts
    of that age measured apart (``startup_parts_s``), so that a slow start-up can be placed."""
    import time

    from . import gpuslots
    from .measure.timing import process_age_s

    t0 = time.perf_counter()
    info = provenance(seed, config, device)
    parts = {"gpu_slot_claim": gpuslots.CLAIM_SECONDS, "provenance": round(time.perf_counter() - t0, 3)}
    return info, {"started_utc": utc_now(), "startup_s": process_age_s(), "startup_parts_s": parts}


def provenance(seed: int | None = None, config: Any = None, device=None) -> dict[str, Any]:
    """Who/what/where produced a result: versions, device, seed, config hash, git commit."""
    import torch

    from .measure.readers import device_uuid

    info: dict[str, Any] = {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "host": platform.node(),
        "platform": platform.platform(),
        "seed": seed,
        "config_hash": config_hash(config) if config is not None else None,
    }
    for mod in ("triton", "transformers", "fla", "snakemake"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # not installed or no version: record absence, not a guess
            info[mod] = None
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        idx = device.index if getattr(device, "index", None) is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info["device"] = props.name
        info["device_memory_bytes"] = props.total_memory
        info["device_capability"] = f"{props.major}.{props.minor}"
        info["device_uuid"] = device_uuid(idx)
        info["gpu_slot"] = os.environ.get("ATTNBENCH_GPU_SLOT")  # the slot this job held (attnbench.gpuslots)
        try:
            import pynvml
            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as err:  # NVML missing: say so
            info["driver"] = None
            info["driver_unavailable"] = str(err)
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        info["driver"] = None
    return info

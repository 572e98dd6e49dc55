"""GPU energy per measured window, power timeline, idle baseline, CodeCarbon — one session.

Usage (what the training loop does)::

    ms = MeasurementSession(device, out_dir, label="train")
    ms.start()                         # idle baseline, power sampler, CodeCarbon
    for each block of N timed steps:
        w = ms.begin_window()          # synchronize, perf_counter, NVML energy counter
        ... N steps ...
        ws = ms.end_window(w, steps=N, tokens=N * B * T)
    summary = ms.finish()              # {"energy": {...}, "emissions": {...}, "unavailable": {...}, ...}

Method.  GPU energy of a window is the difference of NVML's cumulative energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ) read right after ``torch.cuda.synchronize()``
at both ends — the Zeus / CodeCarbon method.  The counter updates every ~20-100 ms, so
windows must last seconds; shorter ones are flagged.  A counter that goes backwards (driver
reload or wrap-around) or does not move makes that window's energy unavailable (flagged),
never 0.  A sampler thread records power, SM clock, utilisation, memory and temperature to
``power_<label>.csv``; integrating its power over the windows and dividing by the counter
energy gives ``sampled_vs_counter_ratio``, a consistency check of the two readings.
``idle_w`` comes from the counter over ``idle_seconds`` of sleep after ``start()`` with the
process's CUDA context alive (the floor the GPU draws while this job holds it).

Nothing here raises for a measurement fault (no NVML, NVML errors mid-run, CodeCarbon
failing): the affected metrics become ``None`` and their dotted keys go to ``unavailable``
with the reason.  Programming errors (bad arguments) still raise.

Injection for tests: ``reader=`` any :class:`~attnbench.measure.readers.EnergyReader`
(used whatever the device), ``carbon_factory=`` a callable taking CodeCarbon's keyword
arguments and returning an object with ``start()``, ``stop()``, ``final_emissions_data``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .carbon import CarbonTracker
from .readers import SAMPLE_FIELDS, EnergyReader, now, nvml_index, open_nvml_reader
from .sampler import PowerSampler
from .timing import synchronize

ENERGY_KEYS = ("gpu_j_total", "gpu_j_per_step", "gpu_j_per_token", "gpu_mean_w", "idle_w", "gpu_j_above_idle",
               "gpu_j_per_token_above_idle", "sampled_vs_counter_ratio", "window_seconds_min")

SHORT_WINDOW_S = 1.0
FLAG_SHORT = "window shorter than 1 s: counter update period 20-100 ms"


@dataclass
class Window:
    """Opened by :meth:`MeasurementSession.begin_window`; pass it back to ``end_window``."""

    index: int
    t0: float
    e0_mj: int | None
    error: str | None = None


@dataclass
class WindowStats:
    """One measured window.  ``energy_j`` is ``None`` when the counter could not give it
    (reason in ``flags``); ``sampled_j`` is filled in by ``finish()``."""

    index: int
    steps: int
    tokens: int
    seconds: float
    energy_j: float | None
    mean_w: float | None
    t_start_s: float
    t_end_s: float
    sampled_j: float | None = None
    n_samples: int = 0
    flags: list[str] = field(default_factory=list)
    error: str | None = None   # why energy_j is None (None when it was measured)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # dict-style access: ws["seconds"], ws.get("energy_j")
    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__dataclass_fields__ else default

    def keys(self):
        return list(self.__dataclass_fields__)


def session_from(measure: dict, device, out_dir: str | Path, label: str, *, idle: bool = True,
                 codecarbon: bool | None = None) -> "MeasurementSession":
    """The session a job's ``measure`` settings ask for (the one place that maps them).
    ``idle=False`` skips the idle baseline (probe, sweep); ``codecarbon`` overrides the setting."""
    return MeasurementSession(
        device, out_dir, nvml=measure["nvml"], sample_interval_s=measure["sample_interval_s"],
        codecarbon=measure["codecarbon"] if codecarbon is None else codecarbon,
        country_iso_code=measure.get("country_iso_code", "USA"),
        idle_seconds=measure.get("idle_seconds", 0.0) if idle else 0.0,
        peak_tflops=measure.get("peak_tflops"), label=label)


class MeasurementSession:
    def __init__(self, device, out_dir: str | Path, *, nvml: bool = True, sample_interval_s: float = 0.1,
                 codecarbon: bool = True, country_iso_code: str = "USA", idle_seconds: float = 3.0,
                 peak_tflops: float | None = None, label: str = "train",
                 reader: EnergyReader | None = None,
                 carbon_factory: Callable[..., Any] | None = None,
                 codecarbon_measure_power_secs: float = 10.0):
        import torch

        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.out_dir = Path(out_dir)
        self.nvml = nvml
        self.sample_interval_s = sample_interval_s
        self.idle_seconds = float(idle_seconds or 0.0)
        self.peak_tflops = peak_tflops
        self.label = label
        self.power_csv = self.out_dir / f"power_{label}.csv"
        self._injected_reader = reader
        self.reader: EnergyReader | None = None
        self.reader_reason: str | None = None
        self.sampler: PowerSampler | None = None
        self.sampler_reason: str | None = None
        gpu_ids = None
        if self.device.type == "cuda":  # CodeCarbon reads NVML: name the GPU by NVML's index
            # (not its UUID: codecarbon 3.3 strips "GPU-" with str.lstrip("MIG-"), which eats the G,
            # so no UUID ever matches and it tracks no GPU at all)
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            gpu_ids = [str(nvml_index(index))]
        self.carbon = CarbonTracker(self.out_dir, label, country_iso_code=country_iso_code,
                                    measure_power_secs=codecarbon_measure_power_secs, gpu_ids=gpu_ids,
                                    enabled=codecarbon, factory=carbon_factory)
        self.windows: list[WindowStats] = []
        self.flags: list[str] = []
        self.idle_w: float | None = None
        self.idle_reason: str | None = None
        self._idle_span: tuple[float, float] | None = None
        self.t0: float | None = None
        self.started = False
        self.summary: dict[str, Any] | None = None

    # --- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "MeasurementSession":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def start(self) -> "MeasurementSession":
        if self.started:
            raise RuntimeError("MeasurementSession.start() called twice")
        self.started = True
        self.t0 = now()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._open_reader()
        self._start_sampler()
        self._measure_idle()
        self.carbon.start()
        return self

    def _open_reader(self) -> None:
        if self._injected_reader is not None:
            self.reader = self._injected_reader
        elif not self.nvml:
            self.reader_reason = "NVML disabled by configuration"
        else:
            self.reader, self.reader_reason = open_nvml_reader(self.device)

    def _start_sampler(self) -> None:
        if self.reader is None:
            self.sampler_reason = self.reader_reason
        elif not self.sample_interval_s or self.sample_interval_s <= 0:
            self.sampler_reason = "power sampler disabled (sample_interval_s <= 0)"
        else:
            try:
                self.sampler = PowerSampler(self.reader, self.power_csv, self.sample_interval_s, t0=self.t0)
                self.sampler.start()
                return
            except Exception as err:
                self.sampler = None
                self.sampler_reason = f"power sampler failed to start: {type(err).__name__}: {err}"
        # no sampler: leave a header-only CSV so the file always exists
        try:
            self.power_csv.write_text(",".join(SAMPLE_FIELDS) + "\n")
        except OSError:
            pass

    def _measure_idle(self) -> None:
        if self.reader is None:
            self.idle_reason = self.reader_reason
            return
        if self.idle_seconds <= 0:
            self.idle_reason = "idle baseline skipped (idle_seconds = 0)"
            return
        try:
            synchronize(self.device)
            e0, t0 = self.reader.energy_mj(), now()
            time.sleep(self.idle_seconds)
            e1, t1 = self.reader.energy_mj(), now()
        except Exception as err:
            self.idle_reason = f"NVML read failed during idle baseline: {type(err).__name__}: {err}"
            return
        self._idle_span = (t0, t1)
        delta = e1 - e0
        if delta <= 0:
            self.idle_reason = (f"energy counter {'did not move' if delta == 0 else 'went backwards'} "
                                f"over the {t1 - t0:.2f} s idle baseline")
            return
        self.idle_w = delta / 1000.0 / (t1 - t0)
        if t1 - t0 < SHORT_WINDOW_S:
            self.flags.append(f"idle baseline {FLAG_SHORT}")

    @property
    def counts_energy(self) -> bool:
        """Whether windows can read energy (an NVML counter is open); ``reader_reason`` says why not."""
        return self.reader is not None

    # --- windows ------------------------------------------------------------------------
    def begin_window(self) -> Window:
        if not self.started:
            raise RuntimeError("begin_window() before start()")
        synchronize(self.device)
        t = now()
        e, err = None, None
        if self.reader is not None:
            try:
                e = int(self.reader.energy_mj())
            except Exception as exc:
                err = f"NVML read failed at window begin: {type(exc).__name__}: {exc}"
        else:
            err = self.reader_reason
        return Window(index=len(self.windows), t0=t, e0_mj=e, error=err)

    def end_window(self, window: Window, steps: int, tokens: int) -> WindowStats:
        synchronize(self.device)
        t1 = now()
        e1, err = None, window.error
        if self.reader is not None and err is None:
            try:
                e1 = int(self.reader.energy_mj())
            except Exception as exc:
                err = f"NVML read failed at window end: {type(exc).__name__}: {exc}"
        seconds = t1 - window.t0
        flags: list[str] = []
        energy = None
        if err is None:
            delta = e1 - window.e0_mj
            if delta < 0:
                err = (f"energy counter went backwards ({window.e0_mj} -> {e1} mJ): wrap-around or "
                       "driver reset; window energy unavailable")
            elif delta == 0:
                err = f"energy counter did not move over {seconds:.3f} s; window energy unavailable"
            else:
                energy = delta / 1000.0
        if err is not None and self.reader is not None:
            flags.append(err)
        if seconds < SHORT_WINDOW_S and self.reader is not None:
            flags.append(FLAG_SHORT)
        ws = WindowStats(index=window.index, steps=int(steps), tokens=int(tokens), seconds=seconds,
                         energy_j=energy, mean_w=(energy / seconds if energy is not None and seconds > 0 else None),
                         t_start_s=window.t0 - self.t0, t_end_s=t1 - self.t0, flags=flags, error=err)
        self.windows.append(ws)
        return ws

    # --- results ------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Stop everything and summarise.  Returns ``{"energy": {...}, "emissions": {...},
        "unavailable": {"energy.x" | "emissions.y": reason}, "power_csv": str,
        "emissions_csv": str | None}``; idempotent (a second call returns the same dict)."""
        if self.summary is not None:
            return self.summary
        if not self.started:
            raise RuntimeError("finish() before start()")
        if self.sampler is not None:
            self.sampler.stop()
        emissions, unavailable = self.carbon.stop()
        if self.reader is not None:
            try:
                self.reader.close()
            except Exception:
                pass
        energy, energy_unavailable = self._energy_summary()
        unavailable = {**energy_unavailable, **unavailable}
        self.summary = {
            "energy": energy,
            "emissions": emissions,
            "unavailable": unavailable,
            "power_csv": str(self.power_csv),
            "emissions_csv": str(self.carbon.csv_path) if self.carbon.csv_path.exists() else None,
        }
        return self.summary

    def _energy_summary(self) -> tuple[dict[str, Any], dict[str, str]]:
        flags = list(self.flags)
        sampler = self.sampler
        if sampler is not None:
            if sampler.error is not None:
                flags.append(f"power sampler stopped at t={sampler.error_t_s:.2f} s: {sampler.error}")
            for w in self.windows:
                w.sampled_j, w.n_samples = sampler.integrate(self.t0 + w.t_start_s, self.t0 + w.t_end_s)
        windows = self.windows
        valid = [w for w in windows if w.energy_j is not None]
        for w in windows:
            for f in w.flags:
                if f == FLAG_SHORT:
                    if FLAG_SHORT not in flags:
                        flags.append(FLAG_SHORT)
                else:
                    flags.append(f"window {w.index}: {f}")
        e, unavailable = energy_totals([w.as_dict() for w in windows], self.idle_w,
                                       no_counter=self.reader_reason)
        e["window_seconds_min"] = min((w.seconds for w in windows), default=None)
        if valid:
            both = [w for w in valid if w.sampled_j is not None]
            if both:
                e["sampled_vs_counter_ratio"] = sum(w.sampled_j for w in both) / sum(w.energy_j for w in both)
                if len(both) < len(valid):
                    flags.append(f"sampled_vs_counter_ratio covers {len(both)} of {len(valid)} windows "
                                 "(power samples do not bracket the others)")
        # extras (not in the schema's required keys, but useful in the report)
        e["flags"] = flags
        e["windows"] = [w.as_dict() for w in windows]
        e["method"] = ("NVML nvmlDeviceGetTotalEnergyConsumption delta per window, bracketed by "
                       "torch.cuda.synchronize(); idle = counter over idle_seconds of sleep")
        e["power_source"] = getattr(self.reader, "power_source", None)
        e["sample_interval_s"] = self.sample_interval_s if sampler is not None else None
        e["n_samples"] = len(sampler.times) if sampler is not None else 0
        # How much of the measured windows the GPU was running kernels (NVML utilisation): well
        # under 100 % means the host (launches, Python) sets the pace, not the attention kernel.
        busy, n_busy = (sampler.busy_pct([(self.t0 + w.t_start_s, self.t0 + w.t_end_s) for w in windows])
                        if sampler is not None else (None, 0))
        e["gpu_busy"] = busy / 100.0 if busy is not None else None  # a fraction, like MFU
        e["gpu_busy_samples"] = n_busy
        e["sampler_overruns"] = sampler.overruns if sampler is not None else 0
        e["idle_seconds"] = (self._idle_span[1] - self._idle_span[0]) if self._idle_span else None
        e["idle_w_sampled"] = None
        if sampler is not None and self._idle_span is not None:
            j, _ = sampler.integrate(*self._idle_span)
            if j is not None:
                e["idle_w_sampled"] = j / (self._idle_span[1] - self._idle_span[0])

        no_win = self.reader_reason or ("no measurement windows were recorded" if not windows else
                                         "no window had a usable energy-counter difference (see energy.flags)")
        if e["idle_w"] is None:
            unavailable["energy.idle_w"] = self.idle_reason or self.reader_reason or "idle baseline not measured"
            if e["gpu_j_total"] is not None:
                unavailable["energy.gpu_j_above_idle"] = unavailable["energy.idle_w"]
            if "energy.gpu_j_per_token_above_idle" in unavailable:
                unavailable["energy.gpu_j_per_token_above_idle"] = unavailable["energy.idle_w"]
        if e["sampled_vs_counter_ratio"] is None:
            if sampler is None:
                reason = self.sampler_reason or "no power sampler"
            elif not valid:
                reason = no_win
            else:
                reason = ("power samples do not bracket any window"
                          + (f" (sampler stopped: {sampler.error})" if sampler.error else ""))
            unavailable["energy.sampled_vs_counter_ratio"] = reason
        if e["window_seconds_min"] is None:
            unavailable["energy.window_seconds_min"] = "no measurement windows were recorded"
        if e["gpu_busy"] is None:
            unavailable["energy.gpu_busy"] = (self.sampler_reason or "no power sampler" if sampler is None else
                                                  "no NVML utilisation sample inside a window")
        return e, unavailable

    # --- FLOPs / MFU --------------------------------------------------------------------
    def flops_section(self, analytic: dict, counted: dict | None, seconds_per_step: float | None,
                      dtype=None) -> tuple[dict[str, Any], dict[str, str]]:
        """The ``flops`` section of the result (see :func:`attnbench.measure.flops.flops_section`)
        with this session's device and ``peak_tflops``."""
        from .flops import flops_section

        kw = {} if dtype is None else {"dtype": dtype}
        return flops_section(analytic, counted, seconds_per_step, self.device, peak_tflops=self.peak_tflops, **kw)


def energy_totals(windows: list[dict], idle_w: float | None, *, no_counter: str | None = None
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """Energy figures over timed windows (``{steps, tokens, seconds, energy_j, error}`` each):
    the one place that sums them (the session's summary, and a resumed training run over the
    windows of both processes).

    Rates (per step, per token, mean W) use the windows whose counter difference was measured;
    the totals (``gpu_j_total``, ``gpu_j_above_idle``) are unavailable when any window is
    missing -- never a silent undercount.  ``idle_w`` is the job's idle baseline (W).
    Returns ``({ENERGY_KEYS...}, {"energy.<key>": reason})``; ``no_counter`` is the reason for
    every None when the counter could not be read at all.
    """
    e: dict[str, Any] = {k: None for k in ENERGY_KEYS}
    e["idle_w"] = idle_w
    unavailable: dict[str, str] = {}
    valid = [w for w in windows if w.get("energy_j") is not None]
    missing = [w for w in windows if w.get("energy_j") is None]
    if not valid:
        reason = no_counter or ("no measurement windows were recorded" if not windows else
                                "no window had a usable energy-counter difference (see energy.flags)")
        for k in ("gpu_j_total", "gpu_j_per_step", "gpu_j_per_token", "gpu_mean_w", "gpu_j_above_idle",
                  "gpu_j_per_token_above_idle"):
            unavailable[f"energy.{k}"] = reason
        return e, unavailable
    total = sum(w["energy_j"] for w in valid)
    steps = sum(w["steps"] for w in valid)
    tokens = sum(w["tokens"] for w in valid)
    secs = sum(w["seconds"] for w in valid)
    e["gpu_j_per_step"] = total / steps if steps else None
    e["gpu_j_per_token"] = total / tokens if tokens else None
    e["gpu_mean_w"] = total / secs if secs > 0 else None
    # what the work itself drew: idle power is paid whatever runs (18-28 % of the total at T=512)
    if idle_w is not None and tokens:
        e["gpu_j_per_token_above_idle"] = (total - idle_w * secs) / tokens
    else:
        unavailable["energy.gpu_j_per_token_above_idle"] = "no idle baseline" if idle_w is None else "no tokens"
    if missing:
        first = missing[0]
        reason = (f"energy counter unavailable for {len(missing)} of {len(windows)} timed windows (first: "
                  f"{first.get('error') or 'no counter difference'}); rates use the {len(valid)} measured "
                  f"windows ({steps} of {sum(w['steps'] for w in windows)} steps)")
        unavailable["energy.gpu_j_total"] = unavailable["energy.gpu_j_above_idle"] = reason
    else:
        e["gpu_j_total"] = total
        if idle_w is not None:
            e["gpu_j_above_idle"] = total - idle_w * secs
        else:
            unavailable["energy.gpu_j_above_idle"] = "no idle baseline"
    return e, unavailable

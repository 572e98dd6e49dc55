"""CodeCarbon wrapper: CPU/RAM energy estimates and CO2eq for a whole session.

GPU energy in CodeCarbon 3.x is the same NVML counter :mod:`attnbench.measure.energy` reads
per window; CodeCarbon adds the CPU and RAM estimates and the grid-intensity conversion.
It runs offline (``OfflineEmissionsTracker``, fixed ``country_iso_code``, no network) and
covers everything between ``start()`` and ``stop()`` — warm-up, evaluation and idle gaps
included, not only the timed windows.

``cpu_power_method`` says how CodeCarbon got CPU power, read from the tracker's hardware
objects (``tracker._hardware`` -> ``codecarbon.external.hardware.CPU._mode`` in 3.3):
``intel_rapl`` (RAPL energy counters: a measurement), ``cpu_load`` (psutil system load x TDP:
an estimate), ``constant`` (TDP x 50 %: an estimate), ``intel_power_gadget``, ``windows_emi``,
``apple_powermetrics``.  The TDP is CodeCarbon's table value or, for CPUs it does not know,
a generic 4 W per thread.

Failures (codecarbon missing, init or start raising, stop returning nothing) never raise:
they become ``None`` values plus a reason in ``unavailable`` (keys ``emissions.<name>``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from .readers import now

EMISSION_KEYS = ("co2eq_kg", "cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh", "cpu_power_method",
                 "country_iso_code")

CPU_MODE_TEXT = {
    "intel_rapl": "RAPL energy counters (measured)",
    "cpu_load": "psutil CPU load x TDP (estimated)",
    "constant": "TDP x 50% constant (estimated)",
    "intel_power_gadget": "Intel Power Gadget (measured)",
    "windows_emi": "Windows EMI energy counters (measured)",
    "apple_powermetrics": "Apple powermetrics (measured)",
}


def default_tracker_factory(**kwargs):
    from codecarbon import OfflineEmissionsTracker

    return OfflineEmissionsTracker(**kwargs)


class CarbonTracker:
    """``start()`` / ``stop() -> (emissions, unavailable)``; both swallow failures."""

    def __init__(self, out_dir: str | Path, label: str = "train", *, country_iso_code: str = "USA",
                 measure_power_secs: float = 10.0, gpu_ids: list[str] | None = None,
                 enabled: bool = True, factory: Callable[..., Any] | None = None):
        self.out_dir = Path(out_dir)
        self.output_file = f"emissions_{label}.csv"
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self.gpu_ids = gpu_ids
        self.enabled = enabled
        self.factory = factory or default_tracker_factory
        self.tracker = None
        self.reason: str | None = None if enabled else "CodeCarbon disabled by configuration"
        self.started_at: float | None = None
        self.init_seconds: float | None = None

    @property
    def csv_path(self) -> Path:
        return self.out_dir / self.output_file

    def start(self) -> None:
        if not self.enabled:
            return
        t = now()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            kwargs: dict[str, Any] = dict(
                country_iso_code=self.country_iso_code,
                output_dir=str(self.out_dir),
                output_file=self.output_file,
                measure_power_secs=self.measure_power_secs,
                log_level="warning",
                tracking_mode="machine",
            )
            if self.gpu_ids is not None:
                kwargs["gpu_ids"] = self.gpu_ids
            self.tracker = self.factory(**kwargs)
            self.tracker.start()
            self.started_at = now()
        except ImportError as err:
            self.tracker = None
            self.reason = f"codecarbon not importable: {err}"
        except Exception as err:
            self._abandon()
            self.reason = f"CodeCarbon failed to start: {type(err).__name__}: {err}"
        finally:
            self.init_seconds = now() - t

    def _abandon(self) -> None:
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            try:  # stop its scheduler thread if it got that far
                tracker.stop()
            except Exception:
                pass

    def stop(self) -> tuple[dict[str, Any], dict[str, str]]:
        emissions: dict[str, Any] = {k: None for k in EMISSION_KEYS}
        emissions["country_iso_code"] = self.country_iso_code
        emissions["scope"] = "whole session, start() to finish(); machine-level CPU/RAM"
        unavailable: dict[str, str] = {}

        def missing(reason: str, keys=("co2eq_kg", "cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh",
                                       "cpu_power_method")):
            for k in keys:
                emissions[k] = None
                unavailable.setdefault(f"emissions.{k}", reason)

        if self.tracker is None:
            missing(self.reason or "CodeCarbon did not start")
            return emissions, unavailable
        tracker, self.tracker = self.tracker, None
        try:
            logging.getLogger("codecarbon").setLevel(logging.WARNING)
            tracker.stop()
            data = getattr(tracker, "final_emissions_data", None)
        except Exception as err:
            missing(f"CodeCarbon failed to stop: {type(err).__name__}: {err}")
            return emissions, unavailable
        if data is None:
            missing("CodeCarbon returned no emissions data")
            return emissions, unavailable
        emissions["co2eq_kg"] = _num(getattr(data, "emissions", None))
        emissions["cpu_energy_kwh"] = _num(getattr(data, "cpu_energy", None))
        emissions["ram_energy_kwh"] = _num(getattr(data, "ram_energy", None))
        emissions["gpu_energy_kwh"] = _num(getattr(data, "gpu_energy", None))
        emissions["duration_s"] = _num(getattr(data, "duration", None))
        emissions["country_iso_code"] = getattr(data, "country_iso_code", None) or self.country_iso_code
        emissions["cpu_model"] = getattr(data, "cpu_model", None)
        emissions["pue"] = _num(getattr(data, "pue", None))
        method, detail = describe_cpu_method(tracker)
        emissions["cpu_power_method"] = method
        emissions["cpu_power_detail"] = detail
        emissions["ram_power_method"] = describe_ram_method(tracker)
        gpu_count = getattr(data, "gpu_count", None)
        if not gpu_count:
            emissions["gpu_energy_kwh"] = None
            unavailable["emissions.gpu_energy_kwh"] = "CodeCarbon tracked no GPU (gpu_count 0)"
        if method is None:
            unavailable["emissions.cpu_power_method"] = detail or "CodeCarbon tracker exposes no CPU hardware object"
        for k in ("co2eq_kg", "cpu_energy_kwh", "ram_energy_kwh"):
            if emissions[k] is None:
                unavailable.setdefault(f"emissions.{k}", "CodeCarbon reported no value")
        return emissions, unavailable


def describe_cpu_method(tracker) -> tuple[str | None, str | None]:
    """``(mode, detail)`` from CodeCarbon's CPU hardware object (3.x internals)."""
    try:
        hardware = list(getattr(tracker, "_hardware", []) or [])
    except Exception as err:
        return None, f"cannot read tracker._hardware: {err}"
    for hw in hardware:
        if type(hw).__name__ == "CPU" and hasattr(hw, "_mode"):
            mode = str(hw._mode)
            parts = [CPU_MODE_TEXT.get(mode, mode)]
            if mode in ("cpu_load", "constant"):
                tdp = getattr(hw, "_tdp", None)
                generic = getattr(hw, "_is_generic_tdp", False)
                parts.append(f"TDP {tdp} W" + (" (generic default, CPU model unknown to CodeCarbon)" if generic else ""))
            model = getattr(hw, "_model", None)
            if model:
                parts.append(f"CPU model {model!r}")
            return mode, "; ".join(parts)
        if type(hw).__name__ in ("AppleSiliconChip", "Raspberry"):
            return type(hw).__name__, repr(hw)
    return None, "no CPU entry in CodeCarbon's hardware list"


def describe_ram_method(tracker) -> str | None:
    forced = getattr(tracker, "_force_ram_power", None)
    if forced is not None:
        return f"user-specified constant {forced} W"
    for hw in getattr(tracker, "_hardware", []) or []:
        if type(hw).__name__ == "RAM":
            return "CodeCarbon estimate (5 W per guessed DIMM), not measured"
    return None


def _num(x):
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None

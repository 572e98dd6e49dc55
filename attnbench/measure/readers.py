"""GPU readers: the NVML energy counter and power/clock/utilisation samples.

Everything that talks to NVML goes through an :class:`EnergyReader`, so tests (and machines
without NVML) can substitute a fake one.  The contract:

* ``energy_mj()`` — the cumulative energy counter in millijoules
  (``nvmlDeviceGetTotalEnergyConsumption``: energy since the driver was loaded; updates every
  ~20-100 ms, so only windows of seconds give meaningful differences).
* ``sample()`` — one :class:`Sample`.  ``power_w`` and ``energy_mj`` must be read (a failure
  raises); the other fields are ``None`` when the device does not report them.
* ``power_source`` — which NVML power reading ``sample()`` uses (recorded in the results).
* ``close()``.

Any exception from a reader is a *measurement fault*: callers catch it, record why, and go on.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

SAMPLE_FIELDS = ("t_s", "power_w", "energy_mj", "sm_clock_mhz", "util_pct", "mem_used_bytes", "temp_c")


def device_uuid(device_index: int) -> str | None:
    """NVML's name ("GPU-…") of this process's CUDA device ``device_index``, None where torch cannot
    say.  NVML numbers GPUs physically and ignores ``CUDA_VISIBLE_DEVICES``: a job given one GPU of
    several (attnbench.gpuslots) sees it as its device 0, which need not be NVML's index 0."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device_index).uuid or "")
    except Exception:
        return None
    return (uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}") if uuid else None


def nvml_index(device_index: int) -> int:
    """NVML's index of this process's CUDA device ``device_index``: looked up by its UUID where NVML
    and torch can say, else read from ``CUDA_VISIBLE_DEVICES`` where it lists indices (the slot
    pool sets one, with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that CUDA numbers as NVML does), else
    ``device_index`` itself."""
    uuid = device_uuid(device_index)
    if uuid:
        try:
            import pynvml

            pynvml.nvmlInit()
            return int(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(uuid)))
        except Exception:
            pass
    ids = [x.strip() for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    return int(ids[device_index]) if device_index < len(ids) and ids[device_index].isdigit() else device_index


@dataclass
class Sample:
    """One reading; ``t_s`` is filled in by the sampler (``time.perf_counter()`` based)."""

    power_w: float
    energy_mj: int | None = None
    sm_clock_mhz: int | None = None
    util_pct: int | None = None
    mem_used_bytes: int | None = None
    temp_c: int | None = None
    t_s: float = 0.0

    def row(self) -> list:
        return [getattr(self, f) for f in SAMPLE_FIELDS]


@runtime_checkable
class EnergyReader(Protocol):
    power_source: str

    def energy_mj(self) -> int: ...

    def sample(self) -> Sample: ...

    def close(self) -> None: ...


class NvmlReader:
    """NVML reader for one GPU.

    ``device_index`` is the *torch* CUDA index; the NVML handle is looked up by the device's
    UUID (``CUDA_VISIBLE_DEVICES`` renumbers torch devices but not NVML's), falling back to
    the same index.  Power comes from the ``NVML_FI_DEV_POWER_INSTANT`` field where the
    driver has it (``nvmlDeviceGetPowerUsage`` is a ~1 s moving average on GA100 and later),
    else from ``nvmlDeviceGetPowerUsage``.
    """

    def __init__(self, device_index: int = 0, *, prefer_instant: bool = True):
        import pynvml  # nvidia-ml-py

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._closed = False
        try:
            self.handle = self._find_handle(device_index)
            self.name = _str(pynvml.nvmlDeviceGetName(self.handle))
            # raises NVMLError_NotSupported on pre-Volta GPUs: no counter, no energy
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.power_source = "nvmlDeviceGetPowerUsage (driver-averaged)"
            self._instant = False
            if prefer_instant:
                try:
                    self._instant_power_mw()
                    self._instant = True
                    self.power_source = "NVML_FI_DEV_POWER_INSTANT"
                except Exception:
                    pass
            if not self._instant:
                pynvml.nvmlDeviceGetPowerUsage(self.handle)
        except BaseException:
            self.close()
            raise

    def _find_handle(self, device_index: int):
        pynvml = self._nvml
        uuid = device_uuid(device_index)
        if uuid:
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception:
                pass
        return pynvml.nvmlDeviceGetHandleByIndex(nvml_index(device_index))

    def _instant_power_mw(self) -> int:
        pynvml = self._nvml
        fv = pynvml.nvmlDeviceGetFieldValues(self.handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if fv.nvmlReturn != pynvml.NVML_SUCCESS:
            raise pynvml.NVMLError(fv.nvmlReturn)
        return int(fv.value.uiVal)

    def energy_mj(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def power_w(self) -> float:
        mw = self._instant_power_mw() if self._instant else self._nvml.nvmlDeviceGetPowerUsage(self.handle)
        return mw / 1000.0

    def sample(self) -> Sample:
        pynvml = self._nvml
        s = Sample(power_w=self.power_w(), energy_mj=self.energy_mj())
        h = self.handle
        for attr, fn in (
            ("sm_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
            ("util_pct", lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
            ("mem_used_bytes", lambda: pynvml.nvmlDeviceGetMemoryInfo(h).used),
            ("temp_c", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
        ):
            try:
                setattr(s, attr, int(fn()))
            except Exception:
                pass  # optional field: left None
        return s

    def mem_used_bytes(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass


def open_nvml_reader(device) -> tuple[NvmlReader | None, str | None]:
    """``(reader, None)`` for a CUDA device with a working NVML energy counter, else
    ``(None, reason)``.  Never raises."""
    dev_type = getattr(device, "type", str(device))
    if dev_type != "cuda":
        return None, f"device is {dev_type}: no GPU energy counter (NVML measures NVIDIA GPUs only)"
    try:
        import torch

        idx = device.index if getattr(device, "index", None) is not None else torch.cuda.current_device()
        return NvmlReader(idx), None
    except ImportError as err:
        return None, f"nvidia-ml-py (pynvml) not importable: {err}"
    except Exception as err:
        return None, f"NVML unavailable: {type(err).__name__}: {err}"


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def now() -> float:
    """The one clock used for samples and windows."""
    return time.perf_counter()

"""Background power sampler: a thread that polls an :class:`EnergyReader` every
``interval_s`` and writes one CSV row per sample.

CSV columns: ``t_s, power_w, energy_mj, sm_clock_mhz, util_pct, mem_used_bytes, temp_c``
(``t_s`` in seconds since the sampler's ``t0``, the same ``time.perf_counter`` clock the
measurement windows use; empty cell = not reported by the device).

When the reader raises, the thread records the error (``error``, ``error_t_s``), closes the
CSV (which stays a valid file with the rows written so far) and exits; ``stop()`` then
returns at once.  On a normal ``stop()`` the thread takes one last sample so that a window
ending just before ``stop()`` is bracketed by samples.
"""

from __future__ import annotations

import csv
import threading
from bisect import bisect_left, bisect_right
from pathlib import Path

from .readers import SAMPLE_FIELDS, EnergyReader, now


class PowerSampler:
    def __init__(self, reader: EnergyReader, csv_path: str | Path | None, interval_s: float = 0.1,
                 t0: float | None = None, flush_every_s: float = 2.0):
        if interval_s <= 0:
            raise ValueError(f"sample interval must be > 0 s, got {interval_s}")
        self.reader = reader
        self.csv_path = Path(csv_path) if csv_path is not None else None
        self.interval_s = float(interval_s)
        self.t0 = now() if t0 is None else t0
        self.flush_every_s = flush_every_s
        self.times: list[float] = []   # absolute perf_counter times
        self.powers: list[float] = []
        self.utils: list[tuple[float, float]] = []  # (time, NVML utilisation %) where the reader has it
        self.max_mem_used_bytes: int | None = None
        self.error: str | None = None
        self.error_t_s: float | None = None
        self.overruns = 0              # samples that took longer than the interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        fh = None
        if self.csv_path is not None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.csv_path, "w", newline="")
            csv.writer(fh).writerow(SAMPLE_FIELDS)
            fh.flush()
        self._thread = threading.Thread(target=self._run, args=(fh,), name="attnbench-power-sampler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _take(self, writer) -> bool:
        t_a = now()
        try:
            s = self.reader.sample()
        except Exception as err:  # measurement fault: stop sampling, keep the run going
            self.error = f"{type(err).__name__}: {err}"
            self.error_t_s = t_a - self.t0
            return False
        t = 0.5 * (t_a + now())  # midpoint of the read
        s.t_s = round(t - self.t0, 6)
        with self._lock:
            self.times.append(t)
            self.powers.append(float(s.power_w))
            if s.util_pct is not None:
                self.utils.append((t, float(s.util_pct)))
            if s.mem_used_bytes is not None:
                self.max_mem_used_bytes = max(self.max_mem_used_bytes or 0, int(s.mem_used_bytes))
        if writer is not None:
            writer.writerow(["" if v is None else v for v in s.row()])
        return True

    def _run(self, fh) -> None:
        writer = csv.writer(fh) if fh is not None else None
        try:
            next_t = now()
            last_flush = next_t
            while True:
                if not self._take(writer):
                    return
                t = now()
                if fh is not None and t - last_flush >= self.flush_every_s:
                    fh.flush()
                    last_flush = t
                next_t += self.interval_s
                if next_t < t:  # reading took longer than the interval: do not pile up
                    self.overruns += 1
                    next_t = t
                if self._stop.wait(max(0.0, next_t - t)):
                    self._take(writer)  # closing sample
                    return
        finally:
            if fh is not None:
                fh.close()

    # --- analysis -----------------------------------------------------------------------
    def snapshot(self) -> tuple[list[float], list[float]]:
        with self._lock:
            return list(self.times), list(self.powers)

    def busy_pct(self, spans: list[tuple[float, float]]) -> tuple[float | None, int]:
        """Mean NVML utilisation (% of time a kernel was running) over the samples inside
        ``spans`` (absolute perf_counter times), and their count; (None, 0) without samples."""
        with self._lock:
            inside = [u for t, u in self.utils if any(a <= t <= b for a, b in spans)]
        return (sum(inside) / len(inside), len(inside)) if inside else (None, 0)

    def integrate(self, t_start: float, t_end: float) -> tuple[float | None, int]:
        """Energy in J from the samples over ``[t_start, t_end]`` (absolute perf_counter
        times): trapezoids on the piecewise-linear power curve, interpolated at both ends.
        Returns ``(None, n)`` unless samples bracket the window; ``n`` = samples inside."""
        times, powers = self.snapshot()
        return integrate(times, powers, t_start, t_end)


def integrate(times: list[float], powers: list[float], t_start: float, t_end: float) -> tuple[float | None, int]:
    if t_end <= t_start or len(times) < 2:
        return None, 0
    lo = bisect_right(times, t_start)   # first sample after t_start
    hi = bisect_left(times, t_end)      # first sample at/after t_end
    n_inside = hi - lo
    if lo == 0 or hi >= len(times):     # not bracketed: sampler started late or died early
        return None, n_inside

    def interp(t: float, i: int) -> float:  # power at t, between samples i-1 and i
        t0, t1 = times[i - 1], times[i]
        p0, p1 = powers[i - 1], powers[i]
        return p0 if t1 == t0 else p0 + (p1 - p0) * (t - t0) / (t1 - t0)

    pts_t = [t_start] + times[lo:hi] + [t_end]
    pts_p = [interp(t_start, lo)] + powers[lo:hi] + [interp(t_end, hi)]
    energy = 0.0
    for i in range(1, len(pts_t)):
        energy += 0.5 * (pts_p[i] + pts_p[i - 1]) * (pts_t[i] - pts_t[i - 1])
    return energy, n_inside

"""attnbench.measure on CPU: simulated NVML readers, CodeCarbon failures, FLOP counting."""

from __future__ import annotations

import csv
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import attention
from attnbench import measure

ROOT = Path(__file__).resolve().parent.parent
from attnbench.measure import MeasurementSession, count_flops, model_flops, peak_memory, percentiles
from attnbench.measure.readers import SAMPLE_FIELDS, Sample, open_nvml_reader
from attnbench.measure.sampler import PowerSampler, integrate

ENERGY_KEYS = ("gpu_j_total", "gpu_j_per_step", "gpu_j_per_token", "gpu_mean_w", "idle_w", "gpu_j_above_idle",
               "sampled_vs_counter_ratio")


# --- fake readers ---------------------------------------------------------------------

class ConstantPowerReader:
    """A GPU drawing ``watts`` forever: counter = watts * elapsed, exact to the mJ."""

    power_source = "fake-constant"

    def __init__(self, watts: float = 100.0, start_mj: int = 5_000_000):
        self.watts = watts
        self.start_mj = start_mj
        self.t0 = time.perf_counter()
        self.closed = False

    def energy_mj(self) -> int:
        return int(self.start_mj + self.watts * (time.perf_counter() - self.t0) * 1000)

    def sample(self) -> Sample:
        return Sample(power_w=self.watts, energy_mj=self.energy_mj(), sm_clock_mhz=1980, util_pct=100,
                      mem_used_bytes=1 << 30, temp_c=50)

    def close(self) -> None:
        self.closed = True


class ScriptedCounterReader(ConstantPowerReader):
    """``energy_mj()`` returns the scripted values in order (an Exception instance raises);
    ``sample()`` keeps working from the constant-power model."""

    def __init__(self, script, **kw):
        super().__init__(**kw)
        self.script = list(script)
        self.lock = threading.Lock()

    def energy_mj(self) -> int:
        with self.lock:
            v = self.script.pop(0)
        if isinstance(v, BaseException):
            raise v
        return v

    def sample(self) -> Sample:
        return Sample(power_w=self.watts)


class FailingSampleReader(ConstantPowerReader):
    """``sample()`` raises after ``ok`` successful samples (an NVML error mid-run)."""

    def __init__(self, ok: int = 5, **kw):
        super().__init__(**kw)
        self.ok = ok
        self.calls = 0

    def sample(self) -> Sample:
        self.calls += 1
        if self.calls > self.ok:
            raise RuntimeError("NVMLError_GpuIsLost: simulated")
        return super().sample()


def session(tmp_path, reader=None, **kw) -> MeasurementSession:
    kw.setdefault("codecarbon", False)
    kw.setdefault("idle_seconds", 0.0)
    kw.setdefault("sample_interval_s", 0.01)
    return MeasurementSession(torch.device("cpu"), tmp_path, reader=reader, label="t", **kw)


def run_window(ms, seconds=0.25, steps=5, tokens=50):
    w = ms.begin_window()
    time.sleep(seconds)
    return ms.end_window(w, steps=steps, tokens=tokens)


def read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(SAMPLE_FIELDS)
    return rows[1:]


# --- energy windows ---------------------------------------------------------------------

def test_constant_power_ratio_is_one_and_csv_valid(tmp_path):
    ms = session(tmp_path, ConstantPowerReader(100.0), idle_seconds=0.2)
    ms.start()
    ws = [run_window(ms, 0.3), run_window(ms, 0.3)]
    assert ws[0]["seconds"] == pytest.approx(0.3, abs=0.1) and ws[0].get("energy_j") == pytest.approx(30, rel=0.1)
    s = ms.finish()
    e = s["energy"]
    assert e["sampled_vs_counter_ratio"] == pytest.approx(1.0, abs=0.01)
    assert e["gpu_mean_w"] == pytest.approx(100.0, rel=0.01)
    assert e["idle_w"] == pytest.approx(100.0, rel=0.02)
    assert e["idle_w_sampled"] == pytest.approx(100.0, rel=0.01)
    assert e["gpu_j_total"] == pytest.approx(sum(w.energy_j for w in ws))
    assert e["gpu_j_per_step"] == pytest.approx(e["gpu_j_total"] / 10)
    assert e["gpu_j_per_token"] == pytest.approx(e["gpu_j_total"] / 100)
    assert e["gpu_j_above_idle"] == pytest.approx(0.0, abs=1.0)
    assert "window shorter than 1 s: counter update period 20-100 ms" in e["flags"]
    assert not any(k.startswith("energy.") for k in s["unavailable"])
    rows = read_csv(tmp_path / "power_t.csv")
    assert len(rows) >= 20 and all(float(r[1]) == 100.0 for r in rows)
    times = [float(r[0]) for r in rows]
    assert times == sorted(times)
    assert ms.reader.closed
    assert ms.finish() is s  # idempotent


def test_counter_wrap_or_reset_makes_window_unavailable(tmp_path):
    # window 0: 1000 -> 31000 mJ (30 J); window 1: counter reset (goes backwards)
    ms = session(tmp_path, ScriptedCounterReader([1_000, 31_000, 2**40, 500]))
    ms.start()
    w0, w1 = run_window(ms, 0.05), run_window(ms, 0.05)
    assert w0.energy_j == pytest.approx(30.0)
    assert w1.energy_j is None and any("backwards" in f for f in w1.flags)
    s = ms.finish()
    e = s["energy"]
    # the total would miss a window: unavailable, never a silent undercount; rates use the measured one
    assert e["gpu_j_total"] is None and "1 of 2 timed windows" in s["unavailable"]["energy.gpu_j_total"]
    assert "backwards" in s["unavailable"]["energy.gpu_j_total"]
    assert e["gpu_j_per_step"] == pytest.approx(30.0 / 5)
    assert any("window 1" in f and "backwards" in f for f in e["flags"])


def test_all_windows_invalid_gives_none_with_reason_never_zero(tmp_path):
    ms = session(tmp_path, ScriptedCounterReader([5_000, 5_000, 9_000, 100]))  # no move, then reset
    ms.start()
    run_window(ms, 0.02)
    run_window(ms, 0.02)
    s = ms.finish()
    for k in ("gpu_j_total", "gpu_j_per_step", "gpu_j_per_token", "gpu_mean_w", "gpu_j_above_idle"):
        assert s["energy"][k] is None
        assert s["unavailable"][f"energy.{k}"]
    assert any("did not move" in f for f in s["energy"]["flags"])


def test_nvml_error_mid_run_is_recorded_and_run_continues(tmp_path):
    err = RuntimeError("NVMLError_Unknown: simulated")
    ms = session(tmp_path, ScriptedCounterReader([0, 10_000, 10_000, err, 20_000, 45_000]))
    ms.start()
    ws = [run_window(ms, 0.02) for _ in range(3)]
    assert [w.energy_j for w in ws] == [10.0, None, 25.0]
    assert "NVML read failed at window end" in ws[1].flags[0]
    s = ms.finish()
    assert s["energy"]["gpu_j_total"] is None
    assert "NVML read failed at window end" in s["unavailable"]["energy.gpu_j_total"]
    assert s["energy"]["gpu_j_per_step"] == pytest.approx(35.0 / sum(w.steps for w in ws if w.energy_j))


def test_missing_nvml_gives_none_with_reason(tmp_path):
    ms = MeasurementSession(torch.device("cpu"), tmp_path, codecarbon=False, idle_seconds=1.0, label="cpu")
    ms.start()
    ws = run_window(ms, 0.01)
    assert ws.energy_j is None
    s = ms.finish()
    for k in ENERGY_KEYS:
        assert s["energy"][k] is None, k
        assert "no GPU energy counter" in s["unavailable"][f"energy.{k}"]
    assert read_csv(tmp_path / "power_cpu.csv") == []  # header-only file still written
    # a CUDA device on a machine without the NVML library: a reason, not an exception
    reader, reason = open_nvml_reader(torch.device("cuda", 0))
    assert reader is None and reason
    # NVML switched off by configuration
    ms2 = MeasurementSession(torch.device("cpu"), tmp_path / "off", nvml=False, codecarbon=False, idle_seconds=0)
    ms2.start()
    s2 = ms2.finish()
    assert s2["unavailable"]["energy.gpu_j_total"] == "NVML disabled by configuration"


def test_sampler_stops_cleanly_when_reader_raises(tmp_path):
    reader = FailingSampleReader(ok=5)
    ms = session(tmp_path, reader)
    ms.start()
    time.sleep(0.2)
    assert not ms.sampler.alive  # died after the 6th sample
    ws = run_window(ms, 0.1)
    assert ws.energy_j is not None  # the counter still works
    s = ms.finish()
    rows = read_csv(tmp_path / "power_t.csv")
    assert len(rows) == 5
    for r in rows:
        assert len(r) == len(SAMPLE_FIELDS) and float(r[1]) == 100.0
    assert any("power sampler stopped" in f and "GpuIsLost" in f for f in s["energy"]["flags"])
    assert s["energy"]["sampled_vs_counter_ratio"] is None
    assert "do not bracket" in s["unavailable"]["energy.sampled_vs_counter_ratio"]


def test_sampler_standalone_stop_and_closing_sample(tmp_path):
    sp = PowerSampler(ConstantPowerReader(50.0), tmp_path / "p.csv", interval_s=0.05)
    sp.start()
    time.sleep(0.12)
    t_stop = time.perf_counter()
    sp.stop()
    assert not sp.alive and sp.error is None
    assert sp.times[-1] >= t_stop  # closing sample taken after stop()
    j, n = sp.integrate(sp.times[0], sp.times[-1])
    assert j == pytest.approx(50.0 * (sp.times[-1] - sp.times[0]))
    assert len(read_csv(tmp_path / "p.csv")) == len(sp.times)


def test_integrate_linear_ramp_and_bracketing():
    ts = [0.0, 1.0, 2.0, 3.0]
    ps = [0.0, 10.0, 20.0, 30.0]  # P = 10 t
    j, n = integrate(ts, ps, 0.5, 2.5)  # integral of 10t from 0.5 to 2.5 = 5*(6.25-0.25) = 30
    assert j == pytest.approx(30.0) and n == 2
    assert integrate(ts, ps, -1.0, 2.0) == (None, 2)  # not bracketed at the start
    assert integrate(ts, ps, 1.0, 3.5)[0] is None


# --- CodeCarbon -----------------------------------------------------------------------

class _RaisingStart:
    def __init__(self, **kw):
        self.kw = kw

    def start(self):
        raise RuntimeError("simulated CodeCarbon failure")

    def stop(self):
        return None


class CPU:  # named like codecarbon.external.hardware.CPU
    _mode = "intel_rapl"
    _model = "Fake Xeon"


class _FakeTracker:
    def __init__(self, **kw):
        self.kw = kw
        self._hardware = [CPU()]

    def start(self):
        pass

    def stop(self):
        self.final_emissions_data = SimpleNamespace(
            emissions=1e-6, cpu_energy=2e-6, ram_energy=3e-6, gpu_energy=4e-6, duration=1.0,
            country_iso_code=self.kw["country_iso_code"], cpu_model="Fake Xeon", pue=1.0, gpu_count=1)
        return 1e-6


def test_codecarbon_start_failure_is_unavailable(tmp_path):
    ms = session(tmp_path, codecarbon=True, carbon_factory=_RaisingStart)
    ms.start()
    s = ms.finish()
    for k in ("co2eq_kg", "cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh", "cpu_power_method"):
        assert s["emissions"][k] is None
        assert "simulated CodeCarbon failure" in s["unavailable"][f"emissions.{k}"]
    assert s["emissions"]["country_iso_code"] == "USA"

    def boom(**kw):
        raise OSError("no disk")

    ms = session(tmp_path / "b", codecarbon=True, carbon_factory=boom)
    ms.start()
    assert "no disk" in ms.finish()["unavailable"]["emissions.co2eq_kg"]


def test_codecarbon_values_and_cpu_method(tmp_path):
    seen = {}

    def factory(**kw):
        seen.update(kw)
        return _FakeTracker(**kw)

    ms = session(tmp_path, codecarbon=True, carbon_factory=factory, country_iso_code="FRA")
    ms.start()
    s = ms.finish()
    assert seen["output_file"] == "emissions_t.csv" and seen["output_dir"] == str(tmp_path)
    assert seen["country_iso_code"] == "FRA" and seen["log_level"] == "warning"
    em = s["emissions"]
    assert em["co2eq_kg"] == 1e-6 and em["gpu_energy_kwh"] == 4e-6 and em["cpu_power_method"] == "intel_rapl"
    assert em["country_iso_code"] == "FRA"
    assert not any(k.startswith("emissions.") for k in s["unavailable"])


def test_real_codecarbon_offline_records_cpu_method(tmp_path):
    pytest.importorskip("codecarbon")
    ms = session(tmp_path, codecarbon=True, codecarbon_measure_power_secs=1.0)
    ms.start()
    run_window(ms, 0.2)
    s = ms.finish()
    em = s["emissions"]
    if em["co2eq_kg"] is None:
        pytest.skip(f"CodeCarbon did not run here: {s['unavailable'].get('emissions.co2eq_kg')}")
    assert em["cpu_power_method"] in ("intel_rapl", "cpu_load", "constant", "intel_power_gadget", "windows_emi",
                                      "apple_powermetrics")
    assert em["gpu_energy_kwh"] is None and "emissions.gpu_energy_kwh" in s["unavailable"]  # CPU box
    assert (tmp_path / "emissions_t.csv").exists()


# --- percentiles, memory, peak ---------------------------------------------------------

def test_percentiles():
    p = percentiles(range(1, 11))
    assert p == {"p50": 5.5, "p90": pytest.approx(9.1), "min": 1.0, "max": 10.0, "n": 10}
    assert percentiles([3.0]) == {"p50": 3.0, "p90": 3.0, "min": 3.0, "max": 3.0, "n": 1}
    assert percentiles([]) == {"p50": None, "p90": None, "min": None, "max": None, "n": 0}
    assert percentiles([1.0, float("nan"), None, 3.0])["n"] == 2


# --- timed_until_stable: a deterministic fake clock --------------------------------------

class FakeClock:
    """A clock that only moves when a fake function "runs": ``fn()`` advances it by the next
    duration (seconds) of ``durations`` (cycled)."""

    def __init__(self, durations):
        self.now, self.durations, self.i, self.calls = 0.0, list(durations), 0, 0

    def __call__(self):
        return self.now

    def fn(self):
        self.now += self.durations[self.i % len(self.durations)]
        self.i += 1
        self.calls += 1


CPU_DEV = torch.device("cpu")


def test_timed_until_stable_converges_for_a_steady_function():
    clk = FakeClock([0.002])
    ms, rec = measure.timed_until_stable(clk.fn, CPU_DEV, warmup_min=3, repeats_min=10, max_seconds=5.0, clock=clk)
    assert rec["stable"] and rec["stop"] == "stable" and rec["method"] == "perf_counter"
    assert rec["n"] == len(ms) == 10 and rec["p50"] == pytest.approx(2.0) and rec["p90_over_p50"] == pytest.approx(1.0)
    # 3 untimed, then two agreeing batches of 5
    assert rec["warmup_calls"] == 13 and rec["warmup_converged"] and clk.calls == 23
    assert set(rec) >= {"p50", "p90", "min", "n", "warmup_calls", "p90_over_p50", "stable", "method"}


def test_timed_until_stable_warms_up_until_batches_agree():
    # first calls slow and speeding up (compilation, allocator, clocks): warm-up runs past them
    clk = FakeClock([0.002])
    k = iter(range(10**6))

    def fn():
        clk.now += max(0.002, 0.05 * 0.6 ** next(k))

    ms, rec = measure.timed_until_stable(fn, CPU_DEV, warmup_min=0, repeats_min=5, max_seconds=10.0, clock=clk)
    assert rec["warmup_converged"] and rec["warmup_calls"] >= 15 and max(ms) == pytest.approx(2.0)
    assert rec["stable"]


def test_timed_until_stable_reports_a_bimodal_function_unstable_within_the_budget():
    clk = FakeClock([0.001, 0.003])          # alternating 1 ms / 3 ms: p90/p50 = 1.5 for ever
    ms, rec = measure.timed_until_stable(clk.fn, CPU_DEV, warmup_min=2, repeats_min=10, max_seconds=0.5, clock=clk)
    assert not rec["stable"] and rec["stop"] == "budget"
    assert rec["p90_over_p50"] == pytest.approx(1.5, rel=0.05)      # the ratio is kept, not hidden
    assert rec["n"] == len(ms) > 10
    # the budget holds to one call: the clock stopped within one call past it
    assert 0.5 <= clk.now <= 0.5 + 0.003 + 1e-9 and rec["seconds"] == pytest.approx(clk.now)


def test_timed_until_stable_respects_the_budget_before_repeats_min():
    clk = FakeClock([0.1])                   # a slow call: 1 s buys 10 calls, not 1000 repeats
    ms, rec = measure.timed_until_stable(clk.fn, CPU_DEV, warmup_min=1, repeats_min=1000, max_seconds=1.0, clock=clk)
    assert clk.now <= 1.0 + 0.1 + 1e-9 and rec["stop"] == "budget"
    assert 1 <= rec["n"] < 1000 and not rec["stable"]        # fewer than repeats_min: not stable
    assert not rec["warmup_converged"] or rec["warmup_calls"] <= 11


def test_timed_interleaved_spreads_a_drift_over_every_series():
    """Two functions of equal cost while the machine slows down over time (clocks, host load):
    timed one after the other the first looks faster; taken in turn they agree, and a truly
    dearer function stays dearer."""
    clk = FakeClock([0.0])

    def cost(ms):
        def fn():
            clk.now += ms / 1000 * (1.0 if clk.now < 0.1 else 1.5)   # a drift a tenth of a second in
        return fn

    kw = dict(warmup_min=1, repeats_min=20, max_seconds=1.0, clock=clk, target_p90_over_p50=10.0)
    _, first = measure.timed_until_stable(cost(2.0), CPU_DEV, **kw)
    _, second = measure.timed_until_stable(cost(2.0), CPU_DEV, **kw)
    assert second["p50"] > 1.3 * first["p50"]                       # the same work, timed apart: 50 % apart
    both = measure.timed_interleaved({"a": cost(2.0), "b": cost(2.0), "dear": cost(3.0)}, CPU_DEV,
                                     **{**kw, "max_seconds": 3.0})
    a, b, dear = (both[k][1] for k in ("a", "b", "dear"))
    assert a["p50"] == pytest.approx(b["p50"]) and dear["p50"] == pytest.approx(1.5 * a["p50"])
    assert a["n"] == b["n"] == dear["n"] >= 20 and a["interleaved_with"] == 3 and a["warmup_calls"] >= 1


def test_timed_until_stable_real_clock_sleep():
    """The default timer (perf_counter on CPU) over a sleeping function, within its budget."""
    t0 = time.perf_counter()
    ms, rec = measure.timed_until_stable(lambda: time.sleep(0.002), CPU_DEV, warmup_min=1, repeats_min=5,
                                         max_seconds=0.5, target_p90_over_p50=10.0)
    assert time.perf_counter() - t0 < 1.5 and rec["n"] >= 1 and min(ms) >= 1.9
    assert rec["method"] == "perf_counter"


def test_peak_memory_cpu():
    measure.reset_peak_memory(torch.device("cpu"))
    m = peak_memory(torch.device("cpu"))
    assert m["peak_allocated_bytes"] is None and "cpu" in m["unavailable"]["peak_allocated_bytes"]
    assert m["peak_reserved_bytes"] is None and m["nvml_used_bytes"] is None
    assert m["peak_rss_bytes"] > 10 << 20


def test_peak_flops_table(monkeypatch):
    assert measure.peak_flops("cpu")["peak_tflops"] is None
    assert "cpu" in measure.peak_flops("cpu")["unavailable"]
    assert measure.peak_flops("cpu", peak_tflops=123.0)["peak_tflops"] == 123.0
    for name, want in [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
                       ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce RTX 4090", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None, n=name: n)
        assert measure.peak_flops(torch.device("cuda"))["peak_tflops"] == want, name
    assert measure.peak_flops(torch.device("cuda"), dtype=torch.float32)["peak_tflops"] is None


# --- FLOPs ------------------------------------------------------------------------------

def _variant_paths():
    for name in sorted(attention.VARIANTS):
        yield name


@pytest.mark.parametrize("name", list(_variant_paths()))
def test_attention_flops_match_flopcounter(name):
    """Each variant's ``flops_forward`` against FlopCounterMode on a module forward.

    Dense-mask paths must match ``causal_halved=False`` exactly.  Other countable paths must
    match one of the conventions within 2 % on at least one path; paths with uncounted ops
    (CPU flash SDPA, ...) are skipped with the reason."""
    B, T, C, H = 2, 48, 64, 4
    skipped, compared = [], []
    for impl in ("reference", "auto"):
        try:
            mod = attention.build(name, C, H, impl=impl)
        except ValueError as err:
            skipped.append(f"{impl}: {err}")
            continue
        r = count_flops(mod, B, T, "cpu", backward=False)
        f = r["flops"]
        if f["counted_forward_per_step"] is None:
            skipped.append(f"{impl}: {r['unavailable']}")
            continue
        dense, halved = mod.flops_forward(B, T, causal_halved=False), mod.flops_forward(B, T, causal_halved=True)
        real_uncounted = [u for u in f["uncounted_ops"] if not u.startswith("attention kernel")]
        if real_uncounted:
            skipped.append(f"{impl} ({mod.kernel}): uncounted ops {real_uncounted}")
            continue
        counted = f["counted_forward_per_step"]
        if "dense-mask" in mod.kernel:
            assert counted == dense, f"{name} {impl} ({mod.kernel}): counted {counted} != analytic dense {dense}"
        compared.append((impl, mod.kernel, counted, dense, halved))
    if not compared:
        pytest.skip(f"{name}: FlopCounterMode cannot count any CPU path: {skipped}")
    ok = [c for c in compared if min(abs(c[2] - c[3]) / c[3], abs(c[2] - c[4]) / c[4]) <= 0.02]
    assert ok, f"{name}: no path matches its flops_forward within 2 %: (impl, kernel, counted, dense, halved) = {compared}"


class _StandInBlock(nn.Module):
    def __init__(self, n_embd, n_head, attn):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = attention.build(attn, n_embd, n_head, impl="reference")
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(n_embd, 4 * n_embd), c_proj=nn.Linear(4 * n_embd, n_embd)))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(torch.nn.functional.gelu(self.mlp.c_fc(self.ln_2(x))))


class _StandInGPT(nn.Module):
    """nanoGPT-shaped stand-in, used only if attnbench.model is not importable."""

    def __init__(self, n_layer, n_head, n_embd, vocab_size, block_size, attn):
        super().__init__()
        self.config = SimpleNamespace(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                                      block_size=block_size)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd), wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([_StandInBlock(n_embd, n_head, attn) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx, targets=None):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.shape[1]))
        for b in self.transformer.h:
            x = b(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None if targets is None else nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def tiny_gpt(attn="sdpa", n_layer=2, n_head=4, n_embd=64, vocab_size=96, block_size=64):
    try:
        from attnbench.model import GPT, GPTConfig

        cfg = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                        block_size=block_size, attention=attn, attention_params={"impl": "reference"})
        return GPT(cfg)
    except ImportError:
        return _StandInGPT(n_layer, n_head, n_embd, vocab_size, block_size, attn)


def test_model_flops_analytic_and_counted_agree():
    B, T, L, H, C, V = 2, 32, 2, 4, 64, 96
    model = tiny_gpt(n_layer=L, n_head=H, n_embd=C, vocab_size=V)
    a = model_flops(model, B, T)
    attn = model.transformer.h[0].attn
    mlp = 2 * (2 * B * T * C * 4 * C)
    head = 2 * B * T * C * V
    assert a["forward_per_step"] == L * (attn.flops_forward(B, T, causal_halved=True) + mlp) + head
    assert a["forward_per_step_dense"] == L * (attn.flops_forward(B, T, causal_halved=False) + mlp) + head
    assert a["train_per_step"] == 3 * a["forward_per_step"] and a["n_attention_modules"] == L
    assert a["breakdown"]["lm_head"] == head and a["unavailable"] == {}
    grads_before = [p.grad for p in model.parameters()]
    rng = torch.random.get_rng_state()
    c = count_flops(model, B, T, "cpu", analytic=a)
    f = c["flops"]
    assert c["unavailable"] == {}
    assert f["counted_forward_per_step"] == a["forward_per_step_dense"]
    assert f["counted_train_per_step"] == a["train_per_step_dense"]
    assert f["counted_vs_analytic"] == pytest.approx(1.0)
    assert f["uncounted_ops"] == []
    assert f["counted_attention"]["counted_vs_analytic_dense"] == pytest.approx(1.0)
    assert [p.grad for p in model.parameters()] == grads_before  # grads restored (None)
    assert torch.equal(torch.random.get_rng_state(), rng)
    sec, un = measure.flops_section(a, c, 0.5, "cpu")
    assert sec["achieved_tflops"] == pytest.approx(a["train_per_step"] / 0.5 / 1e12)
    assert sec["mfu"] is None and "cpu" in un["flops.mfu"]
    assert sec["counted_train_per_step"] == f["counted_train_per_step"]


def test_count_flops_lists_cpu_flash_sdpa_as_uncounted():
    model = tiny_gpt()
    for blk in model.transformer.h:
        blk.attn.impl = "auto"  # SDPA's CPU flash kernel: no FlopCounterMode formula
    c = count_flops(model, 2, 32, "cpu")
    f = c["flops"]
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in f["uncounted_ops"]
    assert f["counted_vs_analytic"] < 1.0


def test_count_flops_never_raises():
    class Broken(nn.Module):
        config = SimpleNamespace(vocab_size=10)

        def forward(self, idx, targets=None):
            raise RuntimeError("kaboom")

    c = count_flops(Broken(), 2, 4, "cpu")
    assert c["flops"]["counted_train_per_step"] is None
    assert "kaboom" in c["unavailable"]["flops.counted_train_per_step"]


def test_model_flops_without_formula_is_unavailable():
    class NoFormula(attention.CausalSelfAttention):
        name = "noformula"

        def forward(self, x):
            return x

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = NoFormula(16, 2)
            self.fc = nn.Linear(16, 16)

    a = model_flops(M(), 2, 8)
    assert a["forward_per_step"] is None and "NotImplementedError" in a["unavailable"]["flops.forward_per_step"]
    assert not math.isnan(a["breakdown"]["mlp_and_other_linear"])


def test_window_steps_reach_the_seconds_at_the_measured_step_time():
    from attnbench.train import window_steps

    assert window_steps(25, 2.0, 0.025) == 80      # an H200 step of 25 ms: 2 s windows
    assert window_steps(25, 2.0, 0.5) == 25        # slow steps: the first window's length is the floor
    assert window_steps(25, 0.0, 0.025) == 25      # 0 = fixed windows
    assert window_steps(3, 1.0, 0.3) == 4          # rounded up: never shorter than asked


def test_phase_clock_records_each_phase_once_in_order_even_when_one_raises():
    record: dict = {}
    phase = measure.PhaseClock(record)
    with phase("setup"):
        time.sleep(0.01)
    with pytest.raises(RuntimeError), phase("check"):
        raise RuntimeError("kernel check failed")
    with phase("setup"):  # a phase entered twice adds up
        pass
    assert list(record["phases_s"]) == ["setup", "check"]
    assert record["phases_s"]["setup"] >= 0.01 and record["phases_s"]["check"] >= 0.0


def test_process_age_counts_from_the_process_start():
    """A job's start-up (interpreter, imports, slot claim) is the process's age when its record
    begins: a child that waits 1.5 s before asking reports at least that."""
    import subprocess
    import sys

    code = ("import time; time.sleep(1.5); import sys; sys.path.insert(0, %r); "
            "from attnbench.measure.timing import process_age_s; print(process_age_s())") % str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    age = float(out.stdout.strip())
    assert 1.5 <= age < 30, out
    assert measure.process_age_s() > age - 1.5   # this test process has lived longer than the child's wait


class HalfBusyReader(ConstantPowerReader):
    """Utilisation 40 % while ``busy`` is False, 100 % while True (set by the test)."""

    busy = False

    def sample(self) -> Sample:
        s = super().sample()
        s.util_pct = 100 if self.busy else 40
        return s


def test_gpu_busy_averages_utilisation_inside_windows_only(tmp_path):
    reader = HalfBusyReader(100.0)
    ms = session(tmp_path, reader, idle_seconds=0.3)  # idle samples (40 %) fall outside the windows
    ms.start()
    reader.busy = True
    run_window(ms, 0.4)
    reader.busy = False
    time.sleep(0.3)                                  # between windows: not counted
    reader.busy = True
    run_window(ms, 0.4)
    e = ms.finish()["energy"]
    assert e["gpu_busy_samples"] >= 4
    assert e["gpu_busy"] >= 0.85  # a sample straddling a window edge may read 40 %


def test_gpu_busy_without_sampler_is_unavailable_with_reason(tmp_path):
    ms = session(tmp_path, ConstantPowerReader(100.0), sample_interval_s=0)
    ms.start()
    run_window(ms, 0.05)
    s = ms.finish()
    assert s["energy"]["gpu_busy"] is None
    assert "sampler" in s["unavailable"]["energy.gpu_busy"]


@pytest.mark.parametrize("seconds,expect", [(0.004, None), (2.0, "2 J over the calls")])
def test_sweep_energy_per_call_only_from_windows_the_counter_resolves(seconds, expect):
    """The H200 sweeps recorded up to 8 J for a 0.4 ms call: windows of a few milliseconds under
    a counter that advances every 20-100 ms.  Below 1 s the figure is null with its reason."""
    from attnbench import sweep
    from attnbench.measure.energy import FLAG_SHORT, SHORT_WINDOW_S, WindowStats

    class FixedSession:
        counts_energy = True

        def begin_window(self):
            return SimpleNamespace(t0=time.perf_counter())

        def end_window(self, w, steps, tokens):
            return WindowStats(index=0, steps=steps, tokens=tokens, seconds=seconds, energy_j=2.0,
                               mean_w=2.0 / seconds, t_start_s=0.0, t_end_s=seconds,
                               flags=[FLAG_SHORT] if seconds < SHORT_WINDOW_S else [])   # as the session flags it

    attn = attention.build("sdpa", 32, 4).eval()
    point = sweep.sweep_point(attn, attn, "block", 2, 16, 32, torch.device("cpu"), torch.float32, repeats=2,
                              warmup=2, session=FixedSession(), fwd_flops=None, energy_seconds=0.05)
    for mode in ("forward", "forward_backward"):
        calls = point[mode]["calls_in_energy_window"]
        assert calls >= 1
        assert point[mode]["gpu_j_per_call"] == (None if expect is None else pytest.approx(2.0 / calls)), point[mode]
        assert point[mode]["gpu_w"] == (None if expect is None else pytest.approx(2.0 / seconds))
        assert ("energy_unavailable" in point[mode]) == (expect is None)
        if expect is None:
            assert "shorter than 1 s" in point[mode]["energy_unavailable"]


def test_sweep_energy_window_is_its_own_and_lasts_the_seconds_asked(tmp_path):
    """The energy window is not the timing's (20 calls, 0.03-0.08 s on the H200 at 3877728, most
    points without a figure): back-to-back calls for sweep.energy_seconds, all of them counted,
    under a counter that reads 100 W."""
    from attnbench import sweep

    ms = session(tmp_path, ConstantPowerReader(100.0), sample_interval_s=0)
    ms.start()
    calls = []
    out = sweep.energy_per_call(lambda: calls.append(time.sleep(0.002)), torch.device("cpu"), ms, seconds=1.05,
                                tokens_per_call=64)
    ms.finish()
    assert "energy_unavailable" not in out, out
    assert out["calls_in_energy_window"] == len(calls) > 1
    assert out["energy_window_s"] >= 1.05
    assert out["gpu_w"] == pytest.approx(100.0, rel=0.05)
    assert out["gpu_j_per_call"] == pytest.approx(100.0 * out["energy_window_s"] / len(calls), rel=0.05)


@pytest.mark.parametrize("reader,seconds,why", [(None, 2.0, "no energy counter"),
                                                ("counter", 0.0, "energy_seconds is 0")])
def test_sweep_energy_unavailable_says_why_and_runs_no_calls(tmp_path, reader, seconds, why):
    from attnbench import sweep

    ms = session(tmp_path, ConstantPowerReader(100.0) if reader else None, nvml=False, sample_interval_s=0)
    ms.start()
    out = sweep.energy_per_call(lambda: pytest.fail("no call without a window"), torch.device("cpu"), ms,
                                seconds=seconds, tokens_per_call=64)
    ms.finish()
    assert out["gpu_j_per_call"] is None and why in out["energy_unavailable"]


def test_a_cuda_graph_training_records_no_allocated_peak_and_says_why(tmp_path, monkeypatch):
    """Under a compile mode that replays CUDA graphs the allocator's allocated peak leaves out the
    graphs' pool (activations, gradients): the job records it as unavailable with the reason and
    keeps the reserved peak; without graphs the same figures are kept as measured."""
    from attnbench import train, train_result
    from tests.reliability_utils import synthetic_tokens, tiny_settings

    fake = {"peak_allocated_bytes": 1_400_000_000, "peak_reserved_bytes": 9_000_000_000, "nvml_used_bytes": None,
            "peak_rss_bytes": 1, "unavailable": {}}
    monkeypatch.setattr(train.measure, "peak_memory", lambda *a, **k: {**fake, "unavailable": {}})
    monkeypatch.setattr(train.measure, "peak_allocated", lambda device: 1_500_000_000)  # over the warm-up steps
    monkeypatch.setattr(train, "should_compile", lambda t, device: True)
    monkeypatch.setattr(train, "compile_model", lambda model, t, device: model)  # "compiled": the step model
    tokens = synthetic_tokens(tmp_path / "tokens")
    for graphs in (True, False):
        monkeypatch.setattr(train, "replays_graphs", lambda m, graphs=graphs: graphs)
        monkeypatch.setattr(train_result, "replays_graphs", lambda m, graphs=graphs: graphs)
        m = train.run(tiny_settings(steps=4, eval_every=2, compile_mode="reduce-overhead"), tokens, tmp_path / str(graphs))
        assert m["status"] == "ok", m["failure"]
        if graphs:
            assert m["memory"]["peak_allocated_bytes"] is None
            assert "CUDA graphs" in m["unavailable"]["memory.peak_allocated_bytes"]
        else:
            assert m["memory"]["peak_allocated_bytes"] == fake["peak_allocated_bytes"]
        assert m["memory"]["peak_reserved_bytes"] == fake["peak_reserved_bytes"]
        # the warm-up steps record the graphs: their peak stays, in both modes
        assert m["memory"]["peak_allocated_warmup_bytes"] == 1_500_000_000
        assert m["memory"]["allocated_at_timed_start_bytes"] is None  # CPU: no allocator, with the reason
        assert "allocator" in m["unavailable"]["memory.allocated_at_timed_start_bytes"]
    # one warm-up step: graph trees have not recorded yet, so no figure, and the reason names the setting
    m = train.run(tiny_settings(steps=4, eval_every=2, warmup_steps=1, compile_mode="reduce-overhead"), tokens,
                  tmp_path / "one-warm-up-step")
    assert m["memory"]["peak_allocated_warmup_bytes"] is None
    assert m["unavailable"]["memory.peak_allocated_warmup_bytes"].startswith("warmup_steps=1: fewer than two")


def test_a_cpu_training_records_the_persistent_memory_as_unavailable_with_the_reason(tmp_path):
    from attnbench import train
    from tests.reliability_utils import synthetic_tokens, tiny_settings

    m = train.run(tiny_settings(steps=4, eval_every=2), synthetic_tokens(tmp_path / "tokens"), tmp_path / "run")
    assert m["status"] == "ok", m["failure"]
    assert m["memory"]["allocated_at_timed_start_bytes"] is None
    assert m["unavailable"]["memory.allocated_at_timed_start_bytes"] == "device is cpu: no CUDA caching allocator"
    assert m["memory"]["peak_allocated_warmup_bytes"] is None
    assert m["unavailable"]["memory.peak_allocated_warmup_bytes"] == "device is cpu: no CUDA caching allocator"


def test_reset_peak_memory_returns_what_is_allocated_then(monkeypatch):
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 1234)
    assert measure.reset_peak_memory(torch.device("cuda")) == 1234
    assert measure.reset_peak_memory(torch.device("cpu")) is None


def test_codecarbon_and_nvml_name_the_jobs_own_gpu_not_nvml_index_of_its_cuda_device(tmp_path, monkeypatch):
    """A job given GPU 3 by the slot pool sees it as cuda:0; NVML (and CodeCarbon, which reads it)
    numbers it 3. CodeCarbon is given NVML's index: its UUID matching strips "GPU-" with
    ``lstrip("MIG-")`` and never matches."""
    from attnbench.measure import readers
    from attnbench.measure.energy import MeasurementSession

    monkeypatch.setattr(readers, "device_uuid", lambda index: None)  # no torch/NVML answer: the env decides
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert readers.nvml_index(0) == 3 and readers.nvml_index(1) == 1 and readers.nvml_index(2) == 2
    ms = MeasurementSession("cuda:0", tmp_path, nvml=False, codecarbon=True, idle_seconds=0)
    assert ms.carbon.gpu_ids == ["3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5a,GPU-6b")  # UUIDs listed: no index to read
    assert readers.nvml_index(1) == 1


def test_codecarbon_selects_a_gpu_by_nvml_index_and_not_by_uuid():
    """Why CodeCarbon gets an index: its GPU-id matching strips a UUID's "GPU-" with lstrip("MIG-"),
    which removes the "G" too, so a UUID matches no GPU and CodeCarbon tracks none. Checked on the
    installed CodeCarbon's own selection code with two fake GPUs."""
    from codecarbon.external.hardware import GPU

    class TwoGPUs:
        devices = []

        @staticmethod
        def get_gpu_static_info():
            return [{"uuid": "GPU-aaaa-0000", "gpu_index": 0}, {"uuid": "GPU-bbbb-1111", "gpu_index": 1}]

    def selected(ids):
        gpu = object.__new__(GPU)  # without __post_init__, which asks NVML for the machine's GPUs
        gpu.gpu_ids, gpu.devices, gpu.num_gpus, gpu._gpu_ids_resolved = ids, TwoGPUs(), 2, False
        return gpu._get_gpu_ids()

    assert selected(["1"]) == [1]
    assert selected(["GPU-bbbb-1111"]) == []  # if this starts to pass as [1], UUIDs would do too


def test_sweep_energy_window_ends_soon_after_its_seconds_however_long_a_call(tmp_path):
    """Calls of 1 ms and of 150 ms: the calls between two checks of the time follow the rate measured
    in the window (from one call, at most fourfold per check), so the window ends within a check's
    worth of calls after ``seconds``."""
    from attnbench import sweep

    for call_s, seconds in ((0.001, 0.2), (0.15, 0.3)):
        ms = session(tmp_path, ConstantPowerReader(100.0), sample_interval_s=0)
        ms.start()
        out = sweep.energy_per_call(lambda: time.sleep(call_s), torch.device("cpu"), ms, seconds=seconds,
                                    tokens_per_call=64)
        ms.finish()
        assert seconds <= out["energy_window_s"] < seconds + sweep.ENERGY_CHUNK_S + 2 * call_s + 0.1, out

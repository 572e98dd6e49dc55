"""Training faults on CPU: interruption (SIGTERM, SIGKILL), checkpoint/resume, injected
NaN/OOM, measurement faults.  No run may leave an output Snakemake would take as complete."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_utils import (
    ROOT,
    error_lines,
    losses,
    start_train,
    synthetic_tokens,
    tiny_settings,
)

from attnbench import measure, train
from attnbench.interrupt import Interrupted
from attnbench.settings import ConfigError

OUTPUTS = ("metrics.json", "steps.csv", "model.safetensors")
LONG = dict(steps=60, eval_every=20)  # long enough to be killed mid-run


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return synthetic_tokens(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def reference(tokens, tmp_path_factory):
    """An uninterrupted run without checkpoints (its own process, one thread)."""
    out = tmp_path_factory.mktemp("ref") / "baseline"
    proc = start_train(tiny_settings(**LONG), tokens, out, "--checkpoint-every", "0")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return out, json.loads((out / "metrics.json").read_text())


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {path.name} appeared: "
                                 + proc.stderr.read()[-2000:])
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.005)


def assert_no_outputs(out: Path) -> None:
    present = [n for n in OUTPUTS if (out / n).exists()]
    assert not present, f"interrupted run left {present}"
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def assert_same_result(out: Path, reference) -> dict:
    ref_out, ref = reference
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "ok", m["failure"]
    assert losses(out) == losses(ref_out)
    assert m["training"]["final_train_loss"] == ref["training"]["final_train_loss"]  # exact, not approx
    assert m["training"]["val_loss"] == ref["training"]["val_loss"]
    assert m["training"]["val_history"] == ref["training"]["val_history"]
    assert (out / "model.safetensors").read_bytes() == (ref_out / "model.safetensors").read_bytes()
    assert not (out / train.CHECKPOINT).exists(), "checkpoint kept after a finished run"
    return m


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_leaves_no_output_and_resumes_to_the_same_loss(tokens, reference, tmp_path, sig):
    out = tmp_path / "baseline"
    settings = tiny_settings(**LONG)
    proc = start_train(settings, tokens, out, "--checkpoint-every", "8")
    wait_for(out / train.CHECKPOINT, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        lines = error_lines(stderr)
        assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGTERM"), stderr[-2000:]
        assert "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    assert_no_outputs(out)
    from safetensors import safe_open

    with safe_open(str(out / train.CHECKPOINT), framework="pt") as fh:  # complete, not truncated
        state = json.loads(fh.metadata()["attnbench"])
    assert 0 < state["step"] < LONG["steps"]

    proc = start_train(settings, tokens, out, "--checkpoint-every", "8")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    m = assert_same_result(out, reference)
    assert m["training"]["resumed_from_step"] == state["step"], stdout
    assert m["timing"]["n_windows"] >= 1 and sum(w["steps"] for w in m["timing"]["windows"]) == 58


def test_sigterm_without_checkpoints_removes_a_stale_result(tokens, tmp_path):
    """A rerun that is interrupted must not leave the previous run's metrics.json in place."""
    out = tmp_path / "baseline"
    out.mkdir()
    for name in OUTPUTS:
        (out / name).write_text('{"status": "ok", "stale": true}')
    proc = start_train(tiny_settings(**LONG), tokens, out, "--checkpoint-every", "0")
    wait_for(out / "power_train.csv", proc)  # the measurement session has started: training is next
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    lines = error_lines(stderr)
    assert len(lines) == 1 and "no checkpoint" in lines[0] and "Traceback" not in stderr, stderr[-2000:]
    assert_no_outputs(out)
    assert not (out / train.CHECKPOINT).exists()
    assert not (out / "failures.log").exists(), "an interruption is not a variant failure"


def test_atomic_writes_survive_sigkill(tmp_path):
    """SIGKILL at random moments of a write loop: the file is absent or complete, never torn."""
    target = tmp_path / "metrics.json"
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from attnbench.results import atomic_write_json\n"
            "i = 0\nwhile True:\n"
            "    atomic_write_json(sys.argv[1], {'i': i, 'payload': 'x' * 2_000_000}); i += 1\n")
    for delay in (0.05, 0.11, 0.17, 0.23, 0.31, 0.43):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(ROOT)])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if target.exists():
            doc = json.loads(target.read_text())  # raises on a torn file
            assert len(doc["payload"]) == 2_000_000
    # leftovers are hidden temporaries only; train.run removes them when it starts
    assert all(p.name.startswith(".metrics.json.") and p.name.endswith(".tmp")
               for p in tmp_path.iterdir() if p != target)


# --- in-process runs ------------------------------------------------------------------------

def interrupt_at(monkeypatch, step: int):
    """Send SIGTERM to this process when training reaches ``step`` (once)."""
    orig = train.lr_at
    fired = []

    def lr_at(i, t):
        if i == step and not fired:
            fired.append(i)
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(i, t)

    monkeypatch.setattr(train, "lr_at", lr_at)
    return lambda: monkeypatch.setattr(train, "lr_at", orig)


def test_checkpoint_of_other_settings_or_corrupt_is_not_resumed(tokens, tmp_path, monkeypatch):
    out = tmp_path / "baseline"
    undo = interrupt_at(monkeypatch, 13)
    with pytest.raises(Interrupted, match="resumes from step 14"):
        train.run(tiny_settings(), tokens, out, checkpoint_every=5)
    undo()
    assert (out / train.CHECKPOINT).exists() and not (out / "metrics.json").exists()
    # other results settings (lr): the checkpoint is not theirs
    m = train.run(tiny_settings(lr=0.001), tokens, out, checkpoint_every=5)
    assert m["status"] == "ok" and m["training"]["resumed_from_step"] is None
    assert not (out / train.CHECKPOINT).exists()

    # a truncated checkpoint: ignored, run starts afresh
    undo = interrupt_at(monkeypatch, 13)
    with pytest.raises(Interrupted):
        train.run(tiny_settings(), tokens, out, checkpoint_every=5)
    undo()
    blob = (out / train.CHECKPOINT).read_bytes()
    (out / train.CHECKPOINT).write_bytes(blob[: len(blob) // 2])
    m = train.run(tiny_settings(), tokens, out, checkpoint_every=5)
    assert m["status"] == "ok" and m["training"]["resumed_from_step"] is None

    # resume off: an existing checkpoint is dropped
    undo = interrupt_at(monkeypatch, 13)
    with pytest.raises(Interrupted):
        train.run(tiny_settings(), tokens, out, checkpoint_every=5)
    undo()
    m = train.run(tiny_settings(), tokens, out, checkpoint_every=5, resume=False)
    assert m["training"]["resumed_from_step"] is None
    # and a resumed run of the same settings ends where an uninterrupted one does (lsh: its
    # rotation stream is part of the state)
    ref = train.run(tiny_settings("lsh"), tokens, tmp_path / "lsh_ref")
    undo = interrupt_at(monkeypatch, 21)
    # the warm-up peak (a CUDA figure; stood in for here) is the first process's: the checkpoint keeps it
    monkeypatch.setattr(train.measure, "peak_allocated", lambda device: 123_456)
    with pytest.raises(Interrupted):
        train.run(tiny_settings("lsh"), tokens, tmp_path / "lsh", checkpoint_every=4)
    undo()
    monkeypatch.setattr(train.measure, "peak_allocated", lambda device: pytest.fail("resumed: no warm-up"))
    m = train.run(tiny_settings("lsh"), tokens, tmp_path / "lsh", checkpoint_every=4)
    assert m["training"]["resumed_from_step"] == 22
    assert m["memory"]["peak_allocated_warmup_bytes"] == 123_456
    assert m["training"]["final_train_loss"] == ref["training"]["final_train_loss"]
    assert losses(tmp_path / "lsh") == losses(tmp_path / "lsh_ref")


@pytest.mark.parametrize("kind,step", [("nan", 5), ("oom", 1)])
def test_injected_fault_is_recorded_as_failed(tokens, tmp_path, monkeypatch, kind, step):
    monkeypatch.setenv(train.FAULT_ENV, f"lsh:nan:3,baseline:{kind}:{step}")
    out = tmp_path / "baseline"
    m = train.run(tiny_settings(), tokens, out)
    assert m["status"] == "failed"
    f = m["failure"]
    assert f["kind"] == kind and f["step"] == step
    if kind == "nan":
        assert f["loss"] == "nan" and f"at step {step}" in f["message"]
    else:
        assert f["allocator"]["device"] == "cpu" and f["allocator"]["peak_rss_bytes"] > 0
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["failure"]["step"] == step
    assert kind in (out / "failures.log").read_text()
    assert not (out / "steps.csv").exists() and not (out / "model.safetensors").exists()


def test_malformed_fault_spec_is_refused(tokens, tmp_path, monkeypatch):
    monkeypatch.setenv(train.FAULT_ENV, "baseline:nan")  # step missing
    with pytest.raises(ConfigError, match=train.FAULT_ENV):
        train.run(tiny_settings(), tokens, tmp_path / "b")
    assert not (tmp_path / "b" / "metrics.json").exists()


class FlakyReader:
    """An NVML-like reader whose counter and samples fail after ``ok`` energy reads."""

    power_source = "fake"

    def __init__(self, ok: int):
        self.ok, self.calls, self.t0 = ok, 0, time.perf_counter()

    def energy_mj(self) -> int:
        self.calls += 1
        if self.calls > self.ok:
            raise RuntimeError("NVMLError_GpuIsLost: simulated")
        return int(1e6 + 150_000 * (time.perf_counter() - self.t0))  # 150 W

    def sample(self):
        if self.calls > self.ok:
            raise RuntimeError("NVMLError_GpuIsLost: simulated")
        return measure.Sample(power_w=150.0)

    def close(self):
        pass


def failing_codecarbon(**kw):
    raise RuntimeError("simulated CodeCarbon start failure")


def test_measurement_faults_leave_training_ok(tokens, tmp_path, monkeypatch):
    session = functools.partial(measure.MeasurementSession, reader=FlakyReader(ok=4),
                                carbon_factory=failing_codecarbon, codecarbon_measure_power_secs=1.0)
    monkeypatch.setattr(measure.energy, "MeasurementSession", session)
    s = tiny_settings()
    s["measure"].update(codecarbon=True, sample_interval_s=0.01)
    m = train.run(s, tokens, tmp_path / "baseline")
    assert m["status"] == "ok", m["failure"]
    assert m["training"]["val_loss"] is not None and (tmp_path / "baseline" / "model.safetensors").exists()
    un = m["unavailable"]
    # NVML failed after 4 reads (2 windows): totals are unavailable with the reason, not undercounted
    assert m["energy"]["gpu_j_total"] is None and "NVMLError_GpuIsLost" in un["energy.gpu_j_total"]
    assert "windows" in un["energy.gpu_j_total"]
    assert m["energy"]["gpu_j_per_step"] == pytest.approx(m["energy"]["gpu_mean_w"] * sum(
        w["seconds"] for w in m["timing"]["windows"] if w["energy_j"] is not None) / sum(
        w["steps"] for w in m["timing"]["windows"] if w["energy_j"] is not None))
    assert any(w.get("energy_error") for w in m["timing"]["windows"])
    for k in ("co2eq_kg", "cpu_energy_kwh"):
        assert m["emissions"][k] is None and "simulated CodeCarbon start failure" in un[f"emissions.{k}"]


def test_windows_lengthen_to_window_seconds_and_phases_are_recorded(reference):
    """After the first full window, windows run at least ``window_seconds`` at the measured step
    time (or up to the next eval point / the end); the job records where its time went."""
    _, m = reference
    t = m["settings"]["train"]
    windows = m["timing"]["windows"]
    assert windows[0]["steps"] == t["timing_window"]
    cuts = set(range(t["eval_every"], t["steps"] + 1, t["eval_every"])) | {t["steps"]}
    step_s = windows[0]["seconds"] / windows[0]["steps"]
    for w in windows[1:]:
        assert w["first_step"] + w["steps"] in cuts or w["steps"] * step_s >= t["window_seconds"] * 0.999, w
    assert sum(w["steps"] for w in windows) == t["steps"] - t["warmup_steps"]
    phases = m["job"]["phases_s"]
    assert m["job"]["startup_s"] > 0          # the process's age when the record began
    parts = m["job"]["startup_parts_s"]       # parts of it measured apart: no slot pool in this process
    assert parts["gpu_slot_claim"] is None and 0 <= parts["provenance"] < m["job"]["startup_s"]
    assert list(phases) == ["setup", "kernel_check_start", "measure_start", "warm_up", "timed_loop",
                            "final_eval", "kernel_check_end", "assemble", "save"]
    assert all(v >= 0 for v in phases.values()) and phases["timed_loop"] >= sum(w["seconds"] for w in windows)


def test_a_cuda_graph_step_model_is_marked_at_every_iteration(tokens, tmp_path, monkeypatch):
    """With ``compile_mode: reduce-overhead`` the step model replays CUDA graphs: every training
    step, every evaluation batch and every kernel-check call must start a new CUDA-graph-tree
    iteration, or a forward-only call is taken for part of the last step (and a replay may
    overwrite an output still in use).  On CPU the graphed model is stood in for by the eager
    one, registered as graphed; the job records how many graphs ran without replay."""
    from attnbench import optim

    events = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))

    class Recorded(torch.nn.Module):  # the graphed step model's stand-in: records each call
        def __init__(self, model):
            super().__init__()
            self._orig_mod = model

        def forward(self, *args, **kwargs):
            events.append("call")
            return self._orig_mod(*args, **kwargs)

    def stand_in(model, t, device):
        graphed = Recorded(model)
        optim._GRAPHED.add(graphed)
        return graphed
    monkeypatch.setattr(train, "should_compile", lambda t, device: True)
    monkeypatch.setattr(train, "compile_model", stand_in)
    s = tiny_settings(steps=12, eval_every=4, warmup_steps=2, compile_mode="reduce-overhead")
    m = train.run(s, tokens, tmp_path / "graphed")
    assert m["status"] == "ok", m["failure"]
    calls = [i for i, e in enumerate(events) if e == "call"]
    # every call of the graphed model (steps, evaluation batches, kernel checks) right after a mark
    assert len(calls) >= s["train"]["steps"] + len(m["training"]["val_history"]), events
    assert all(i > 0 and events[i - 1] == "mark" for i in calls), events
    assert "cudagraph_skips" in m["training"]  # inductor's counter (the stand-in compiles nothing: 0)
    # an eager job marks nothing and records no figure
    events.clear()
    monkeypatch.undo()
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: events.append("mark"))
    m = train.run(tiny_settings(steps=6, eval_every=0), tokens, tmp_path / "eager")
    assert m["status"] == "ok" and not events and "cudagraph_skips" not in m["training"]


def test_loop_profile_names_where_a_step_goes(tokens, tmp_path, load_benchmark):
    """benchmarks/loop_profile.py (#20: where the loop's time goes) runs the job's own step under
    torch.profiler; on CPU it names the host operators per step (no GPU figures, said as null)."""
    import yaml

    from reliability_utils import TINY

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    bench = load_benchmark("loop_profile")
    assert bench.main(["--config", str(cfg), "--tokens-dir", str(tokens), "--variant", "baseline",
                       "--steps", "3", "--top", "500", "--out", str(tmp_path / "p.json")]) == 0
    out = json.loads((tmp_path / "p.json").read_text())
    assert out["steps"] == 3 and out["wall_ms_per_step"] > 0
    assert out["gpu_device_ms_per_step"] is None and out["gpu_idle_share"] is None
    names = [r["name"] for r in out["top_cpu_ops"]]
    assert "aten::mm" in names or "aten::addmm" in names, names
    assert any("AdamW" in n or "Optimizer" in n for n in names), names


def test_alloc_peak_replays_a_trace_and_names_what_was_live_at_its_peak(tmp_path, load_benchmark):
    """benchmarks/alloc_peak.py (#20's memory gap): the peak of the blocks allocated during an allocator
    trace, what was live at it grouped by source, and ``until`` ending the replay (the timed window)."""
    import gzip

    bench = load_benchmark("alloc_peak")

    def frames(*names):
        return [{"filename": f"/x/{'attnbench/model.py' if n == 'forward' else 'torch/inductor_out.py'}",
                 "line": i, "name": n} for i, n in enumerate(names)]

    def ev(action, addr, size, *names):
        return {"action": action, "addr": addr, "size": size, "frames": frames(*names)}

    events = [ev("alloc", 1, 100, "call", "forward"), ev("alloc", 2, 50, "call", "forward"),
              ev("free_requested", 1, 100, "call"), ev("free_completed", 1, 100, "call"),
              ev("alloc", 3, 30, "backward"),                          # peak 150 (1 and 2) not reached again: 80
              ev("alloc", 4, 500, "evaluate"), ev("free_completed", 4, 500, "evaluate")]
    res = bench.peak(events)
    assert res["peak_bytes_since_start"] == 500 + 50 + 30
    timed = bench.peak(events, until="evaluate")
    assert timed["events"] == 5 and timed["peak_bytes_since_start"] == 150 and timed["blocks_at_peak"] == 2
    top = timed["largest_at_peak"][0]
    assert top["bytes"] == 150 and top["blocks"] == 2
    assert top["source"].startswith("model.py:1:forward") and "allocated at inductor_out.py:0:call" in top["source"]
    from_backward = bench.peak(events, since="backward")
    assert from_backward["events"] == 3 and from_backward["peak_bytes_since_start"] == 530
    at_eval = bench.live_at(events, "evaluate")
    assert at_eval["live_bytes"] == 80 and at_eval["blocks_live"] == 2 and at_eval["live_at"] == "evaluate"
    assert sorted(r["bytes"] for r in at_eval["largest_live"]) == [30, 50]
    path = tmp_path / "trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"device_traces": [events, []], "segments": []}, f)
    assert bench.load_trace(path) == events

"""Kernel choice and self-checks on CPU: what ``impl="auto"`` measures and picks
(``attention.selection``), and the job-level check that fails a row for a wrong kernel
(``attnbench.selfcheck``).  The GPU behaviour is checked by tests/gpu on the device."""

from __future__ import annotations

import json

import pytest
import torch

import attention
from attention import selection
from attention.sdpa import SDPAAttention
from attention.selection import KernelCheckError, autotune, compare, prepare, tolerance
from attnbench import selfcheck, train
from attnbench.model import GPT, GPTConfig
from tests.fixtures.scale_bug import ScaleBugAttention
from tests.reliability_utils import synthetic_tokens, tiny_settings

C, H = 32, 4


class WrongFlash(SDPAAttention):
    """An SDPA variant whose pinned 'flash' backend returns a wrong result (scaled output):
    a broken candidate that autotune must not pick however fast it is."""

    def forward(self, x, cache=None):
        y = super().forward(x, cache)
        pin = self.auto_pin if self.impl == "auto" else self.impl
        return y * 1.5 if pin == "flash" else y


def x_input(B=2, T=24, seed=0):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(attention.BUILTIN))
def test_every_variant_passes_its_own_check(name):
    params = {"lsh": {"chunk_size": 8}, "linear": {"chunk_size": 8}, "sliding_window": {"window": 8},
              "gqa": {"n_kv_head": 2}}.get(name, {})
    torch.manual_seed(0)
    m = attention.build(name, C, H, **params).train()
    rec = compare(m, x_input(), torch.float32)
    assert rec["pass"] is True, rec
    assert rec["out_rel_err"] < 1e-4 and rec["dx_rel_err"] < 1e-4, rec


def test_wrong_kernel_fails_the_check_with_figures():
    torch.manual_seed(0)
    rec = compare(ScaleBugAttention(C, H).train(), x_input(), torch.float32)
    assert rec["pass"] is False and rec["kernel"] == "fast:wrong-scale"
    assert rec["out_rel_err"] > rec["tolerance"]["out"]


def test_check_changes_nothing_lsh_stream_and_rng():
    """Checking draws LSH rotations from a restored stream: the next training forward draws
    what it would have drawn without the check, and the global RNG is untouched."""
    torch.manual_seed(0)
    m = attention.build("lsh", C, H, chunk_size=8).train()
    twin = attention.build("lsh", C, H, chunk_size=8).train()
    twin.load_state_dict(m.state_dict())
    x = x_input()
    rng = torch.get_rng_state()
    compare(m, x, torch.float32)
    assert torch.equal(torch.get_rng_state(), rng)
    torch.testing.assert_close(m(x), twin(x), rtol=0, atol=0)


def test_shared_reference_outputs_give_the_same_verdict():
    """autotune computes the reference passes once and shares them between candidates: the
    figures equal a check that computes its own, and outputs for other arguments are refused."""
    torch.manual_seed(0)
    m = attention.build("lsh", C, H, chunk_size=8).train()
    x = x_input()
    expected = selection.reference_outputs(m, x, torch.float32)
    assert compare(m, x, torch.float32, expected=expected) == compare(m, x, torch.float32)
    with pytest.raises(ValueError, match="expected"):
        compare(m, x, torch.float32, seed=1, expected=expected)


def test_tolerance_follows_the_noise_of_the_plain_path():
    assert tolerance("out", torch.bfloat16, 1e-3) == 2e-2            # floor
    assert tolerance("out", torch.bfloat16, 1e-2) == pytest.approx(4e-2)  # 4 x noise
    assert tolerance("dx", torch.float32, None) == 5e-3


def test_autotune_picks_a_passing_candidate_pins_it_and_records_figures():
    torch.manual_seed(0)
    m = SDPAAttention(C, H).train()
    rec = autotune(m, x_input(B=4, T=32), torch.float32, candidates=("math", "flash"), repeats=3, warmup=1)
    assert rec["chosen"] in ("math", "flash") and m.auto_pin == rec["chosen"]
    assert [r["impl"] for r in rec["candidates"]] == ["math", "flash"]
    assert all(r["pass"] and r["ms"] > 0 for r in rec["candidates"])
    with torch.no_grad():
        m(x_input(B=4, T=32))
    assert m.kernel == f"sdpa:auto->{'cpu-flash' if rec['chosen'] == 'flash' else 'math'}"


def test_autotune_never_picks_a_wrong_candidate(monkeypatch):
    torch.manual_seed(0)
    m = WrongFlash(C, H).train()
    monkeypatch.setattr(selection, "median_ms", lambda fn, *a, **k: (fn(), 1.0 if m.auto_pin == "flash" else 9.0)[1])
    rec = autotune(m, x_input(), torch.float32, candidates=("flash", "math"))
    flash = next(r for r in rec["candidates"] if r["impl"] == "flash")
    assert flash["pass"] is False and rec["chosen"] == "math" == m.auto_pin


def test_autotune_raises_when_no_candidate_passes():
    torch.manual_seed(0)
    m = WrongFlash(C, H).train()
    with pytest.raises(KernelCheckError, match="no kernel passed") as err:
        autotune(m, x_input(), torch.float32, candidates=("flash",))
    assert err.value.record["candidates"][0]["pass"] is False


def test_autotune_keeps_the_preferred_candidate_within_the_margin(monkeypatch):
    """Candidates come in SDPA's priority order; the first within 2 % of the fastest wins, so
    the choice does not flip between runs on timing noise."""
    torch.manual_seed(0)
    m = SDPAAttention(C, H).train()
    times = {"math": 1.015, "flash": 1.00}
    monkeypatch.setattr(selection, "median_ms", lambda fn, *a, **k: times[m.auto_pin])
    assert autotune(m, x_input(), torch.float32, candidates=("math", "flash"))["chosen"] == "math"
    times["math"] = 1.03
    assert autotune(m, x_input(), torch.float32, candidates=("math", "flash"))["chosen"] == "flash"


def test_autotune_times_cuda_graph_replays_when_it_can_and_says_which(monkeypatch):
    """On CUDA each candidate is timed by replaying its captured forward+backward (GPU time: an
    eager call at a training shape times the host); the record says which timing ran.  Here the
    graph timers are stood in for (no CUDA on CI): the choice follows their figures, not eager
    timing, and the replays per round are recorded."""
    torch.manual_seed(0)
    m = SDPAAttention(C, H).train()

    class FakeTimer:
        def __init__(self, impl):
            self.impl, self.replays = impl, 40

        def ms(self):
            return {"math": 0.50, "flash": 0.30}[self.impl]

    def fake_timers(module, impls, call, device, reset):
        call()                      # the call is runnable as the graph would capture it
        reset()
        assert all(p.grad is None for p in module.parameters())
        return {i: FakeTimer(i) for i in impls}, "cuda-graph replays (GPU time)"

    monkeypatch.setattr(selection, "graph_timers", fake_timers)
    monkeypatch.setattr(selection, "median_ms", lambda *a, **k: pytest.fail("eager timing used"))
    rec = autotune(m, x_input(), torch.float32, candidates=("math", "flash"))
    assert rec["chosen"] == "flash" and rec["timing"] == "cuda-graph replays (GPU time)"
    assert "CUDA-graph replays" in rec["rule"]
    assert all(r["replays_per_round"] == 40 and r["ms_per_round"] == [r["ms"]] * 3 for r in rec["candidates"])
    assert all(p.grad is None for p in m.parameters())   # timing leaves no gradients behind


def test_autotune_on_cpu_or_after_a_failed_capture_times_eagerly_and_says_why(monkeypatch):
    torch.manual_seed(0)
    m = SDPAAttention(C, H).train()
    rec = autotune(m, x_input(B=2, T=16), torch.float32, candidates=("math", "flash"), repeats=2, warmup=1)
    assert rec["timing"] == "eager: no CUDA graphs on cpu" and "eager calls" in rec["rule"]
    assert not any("replays_per_round" in r for r in rec["candidates"])

    def capture_fails(*a, **k):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(selection, "GraphedCall", capture_fails)
    timers, why = selection.graph_timers(m, ["math"], lambda: None, torch.device("cuda"), lambda: None)
    assert timers is None and why.startswith("eager: CUDA graph capture failed (RuntimeError: operation not")


def test_prepare_resolves_every_layer_and_records_fixed_rules():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=H, n_embd=C, block_size=32, attention="sdpa"))
    idx = torch.randint(0, 50257, (2, 16))
    recs = prepare(model, idx, torch.randn(2, 16, C), torch.float32)
    assert recs == [{"module": "SDPAAttention", "layers": 2, "impl": "auto", "auto": "fixed rule"}]
    assert "?" not in model.kernel() and model.kernel().startswith("sdpa:auto->")


def test_model_check_passes_for_builtins_and_fails_for_a_wrong_kernel():
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    for attn in ("baseline", "lsh"):
        torch.manual_seed(0)
        params = {"chunk_size": 8} if attn == "lsh" else {}
        model = GPT(GPTConfig(n_layer=2, n_head=H, n_embd=C, block_size=32, attention=attn,
                              attention_params=params)).train()
        rec = selfcheck.check(model, model, idx, idx, torch.float32, phase="start")
        assert rec["pass"] is True, rec
    attention.VARIANTS["test:scale_bug"] = ScaleBugAttention
    try:
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_head=H, n_embd=C, block_size=32, attention="test:scale_bug")).train()
        rec = selfcheck.check(model, model, idx, idx, torch.float32, phase="start")
    finally:
        del attention.VARIANTS["test:scale_bug"]
    assert rec["pass"] is False and rec["model"]["pass"] is False and rec["modules"][0]["pass"] is False
    msg = selfcheck.failure_message(rec)
    assert "fast:wrong-scale" in msg and "FAILED" in msg and "tolerance" in msg


def test_the_model_check_calls_the_step_model_as_a_training_step_does():
    """The check runs the training graph itself -- ``return_logits=False``, as ``train.Job.train_step``
    calls it (another call would compile, and under CUDA graphs record, another graph) -- and takes
    the logits from the model's own forward, equal to the model's logits."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=H, n_embd=C, block_size=32, attention="sdpa")).train()
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    calls = []

    def step_model(x, y, **kw):
        calls.append(kw)
        out = model(x, y, **kw)
        model.transformer.h[0].attn.kernel = "compiled:path"   # as a compiled graph's kernel may differ
        return out

    logits, loss, grads, (step_kernel, logits_kernel) = selfcheck._run(model, step_model, idx, idx,
                                                                       torch.float32, True)
    assert calls == [{"return_logits": False}]
    assert step_kernel == "compiled:path" and logits_kernel == model.kernel() != step_kernel
    with torch.no_grad():
        assert torch.equal(logits, model(idx)[0])
        assert loss == pytest.approx(float(model(idx, idx)[1]), rel=1e-6)
    assert all(g is not None for g in grads)


def test_the_model_check_gates_the_training_graphs_loss():
    """The compiled training graph's only output is the loss: a step model whose loss is off fails
    the check on the loss itself, named in the message."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=H, n_embd=C, block_size=32, attention="sdpa")).train()
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    good = selfcheck.model_check(model, model, idx, idx, torch.float32)
    assert good["pass"] is True and good["loss_rel_err"] <= good["tolerance"]["loss"]

    def off_by_a_tenth(x, y, **kw):
        return None, model(x, y, **kw)[1] * 1.1

    bad = selfcheck.model_check(model, off_by_a_tenth, idx, idx, torch.float32)
    assert bad["pass"] is False and bad["loss_rel_err"] == pytest.approx(0.1, rel=1e-3)
    msg = selfcheck.failure_message({"phase": "start", "modules": [], "model": bad})
    assert "loss rel. error 0.1 (tolerance" in msg and "FAILED" in msg


def test_train_job_with_a_wrong_kernel_is_a_failed_row_and_trains_nothing(tmp_path):
    tokens = synthetic_tokens(tmp_path / "tokens")
    s = tiny_settings()
    s["name"] = "scale_bug"
    s["entry"] = {"variant": "scale_bug", "class": "tests.fixtures.scale_bug:ScaleBugAttention", "params": {}}
    m = train.run(s, tokens, tmp_path / "scale_bug")
    assert m["status"] == "failed" and m["failure"]["kind"] == "kernel-check", m["failure"]
    assert "rel. error" in m["failure"]["message"] and "before" not in m["failure"]["message"]
    assert m["kernel_check"]["start"]["pass"] is False
    assert not (tmp_path / "scale_bug" / "steps.csv").exists()
    assert not (tmp_path / "scale_bug" / "model.safetensors").exists()
    on_disk = json.loads((tmp_path / "scale_bug" / "metrics.json").read_text())
    assert on_disk["failure"]["kind"] == "kernel-check"


def test_a_choice_of_auto_that_fails_the_start_check_is_rejected_and_auto_chooses_again(tmp_path):
    """'flash' passes auto's check at the training batch (4) and fails the job's module check at
    batch 2: the job rejects it, auto chooses 'math', the check passes again and training runs;
    everything is recorded.  Pinned to 'flash' the same failure is the row's failure."""
    tokens = synthetic_tokens(tmp_path / "tokens")
    s = tiny_settings(steps=6, eval_every=3)
    s["name"] = "shape_bug"
    s["entry"] = {"variant": "shape_bug", "class": "tests.fixtures.shape_bug:ShapeBugSDPA", "params": {}}
    m = train.run(s, tokens, tmp_path / "auto")
    assert m["status"] == "ok", m["failure"]
    assert m["kernel_selection"][0]["chosen"] == "flash"          # what auto measured first
    (fb,) = m["kernel_fallback"]
    assert fb["rejected"] == {"ShapeBugSDPA": "flash"}
    assert fb["failed_check"]["pass"] is False and fb["failed_check"]["modules"][0]["kernel"].endswith("flash")
    assert fb["selection"][0]["chosen"] == "math" and "flash" in fb["selection"][0]["rejected"]
    assert "ShapeBugSDPA check: out rel. error" in fb["selection"][0]["rejected"]["flash"]
    assert m["kernel_check"]["start"]["pass"] is True and m["kernel_check"]["end"]["pass"] is True
    assert m["kernel"].endswith("math")

    s["entry"]["params"] = {"impl": "flash"}
    pinned = train.run(s, tokens, tmp_path / "pinned")
    assert pinned["status"] == "failed" and pinned["failure"]["kind"] == "kernel-check"
    assert "kernel_fallback" not in pinned


def test_auto_with_every_candidate_rejected_raises_naming_the_reasons():
    torch.manual_seed(0)
    m = SDPAAttention(C, H).train()
    m.auto_rejected = {"flash": "model check: dx rel. error 1.4", "math": "module check: out rel. error 0.5"}
    with pytest.raises(KernelCheckError, match="every candidate failed a check") as err:
        autotune(m, x_input(), torch.float32, candidates=("flash", "math"))
    assert "dx rel. error 1.4" in str(err.value) and err.value.record["rejected"] == m.auto_rejected


def test_the_report_shows_a_kernel_fallback_on_the_kernel_cell(tmp_path):
    """The kernel cell of a variant whose start check rejected auto's choice says so (note and
    detail); the other variants' cells say nothing of it."""
    from attnbench.report import load, table
    from attnbench.report.table import Context

    tokens = synthetic_tokens(tmp_path / "tokens")
    docs = []
    for name, entry in (("baseline", {"variant": "baseline", "class": None, "params": {}}),
                        ("shape_bug", {"variant": "shape_bug", "class": "tests.fixtures.shape_bug:ShapeBugSDPA",
                                       "params": {}})):
        s = tiny_settings(steps=6, eval_every=3)
        s["name"], s["entry"] = name, entry
        train.run(s, tokens, tmp_path / name)
        docs.append(tmp_path / name / "metrics.json")
    variants = load.load_variants(docs, [], [])
    ctx = Context()
    cells = {v.name: table._cell(v, next(c for c in table.columns(ctx) if c.key == "kernel"), ctx) for v in variants}
    assert cells["shape_bug"].note == "fallback" and "rejected auto's first choice" in cells["shape_bug"].detail
    assert "ShapeBugSDPA flash" in cells["shape_bug"].detail
    assert cells["baseline"].note is None


def test_a_fallback_that_runs_out_of_candidates_fails_the_row_and_says_so(tmp_path):
    tokens = synthetic_tokens(tmp_path / "tokens")
    s = tiny_settings(steps=6, eval_every=3)
    s["name"] = "shape_bug"
    s["entry"] = {"variant": "shape_bug", "class": "tests.fixtures.shape_bug:ShapeBugEverywhere", "params": {}}
    m = train.run(s, tokens, tmp_path / "run")
    assert m["status"] == "failed" and m["failure"]["kind"] == "kernel-check"
    assert [list(fb["rejected"].values()) for fb in m["kernel_fallback"]] == [["flash"], ["math"]]
    assert m["kernel_fallback"][-1]["exhausted"] and "auto fallback exhausted" in m["failure"]["message"]
    assert not (tmp_path / "run" / "steps.csv").exists()


def test_only_a_failed_module_check_of_a_measured_auto_choice_is_mended_by_another_kernel():
    """implicated(): a model check failing with every module check passing, or a module check
    failing on a pinned configuration, is the row's failure -- no kernel is rejected for it."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=H, n_embd=C, block_size=32, attention="sdpa"))
    for m in model.attention_modules:
        m.auto_pin = "flash"
    ok, bad = {"pass": True}, {"pass": False, "module": "SDPAAttention", "out_rel_err": 0.3, "dx_rel_err": 0.4,
                                "tolerance": {"out": 0.02, "dx": 0.05}}
    assert selfcheck.implicated(model, {"modules": [bad], "model": ok}) == {
        0: "SDPAAttention check: out rel. error 0.3 (tolerance 0.02, FAILED), dx rel. error 0.4 (tolerance 0.05, FAILED)"}
    assert selfcheck.implicated(model, {"modules": [ok], "model": {"pass": False}}) is None
    for m in model.attention_modules:
        m.impl = "flash"  # pinned: nothing to choose again
    assert selfcheck.implicated(model, {"modules": [bad], "model": ok}) is None


def test_the_fallback_recompiles_a_compiled_step_model(tmp_path, monkeypatch):
    """With training compiled, a rejected choice means new graphs: dynamo is reset and the step
    model compiled again (identity stand-ins for torch.compile on CPU)."""
    calls = {"compile": 0, "reset": 0}

    def compile_stub(model, t, device):
        calls["compile"] += 1
        return model

    monkeypatch.setattr(train, "should_compile", lambda t, device: True)
    monkeypatch.setattr(train, "compile_model", compile_stub)
    monkeypatch.setattr(selfcheck, "compile_model", compile_stub)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.__setitem__("reset", calls["reset"] + 1))
    tokens = synthetic_tokens(tmp_path / "tokens")
    s = tiny_settings(steps=6, eval_every=3)
    s["name"] = "shape_bug"
    s["entry"] = {"variant": "shape_bug", "class": "tests.fixtures.shape_bug:ShapeBugSDPA", "params": {}}
    m = train.run(s, tokens, tmp_path / "run")
    assert m["status"] == "ok", m["failure"]
    assert m["training"]["compiled"] is True and len(m["kernel_fallback"]) == 1
    assert calls == {"compile": 2, "reset": 1}  # setup's compile, then the fallback's


def test_one_capture_stream_per_device_however_it_is_named(monkeypatch):
    """cuBLAS keeps a workspace per stream for the life of the process: every CUDA graph here is
    captured on one side stream per device, so "cuda", cuda:<current> and torch.device("cuda")
    must be one stream (a new stream per capture left 65 MiB allocated each on an H200)."""
    from attention import selection

    made = []

    class FakeStream:
        def __init__(self, device):
            made.append(device)

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    selection._stream_of.cache_clear()
    try:
        first = selection.capture_stream("cuda")
        assert selection.capture_stream(torch.device("cuda")) is first
        assert selection.capture_stream(torch.device("cuda", 0)) is first
        assert selection.capture_stream("cuda:1") is not first
        assert made == [torch.device("cuda", 0), torch.device("cuda", 1)]
    finally:
        selection._stream_of.cache_clear()

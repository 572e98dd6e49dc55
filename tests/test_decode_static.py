"""The fixed-shape decode step (attnbench.decode) against the eager cached decode and the full
forward, on CPU (the CUDA-graph capture of the same step is tests/gpu/test_gpu_decode_graph.py)."""
from pathlib import Path

import pytest
import torch

from attention.base import StaticKVCache, static_visible
from attnbench import decode
from attnbench.model import GPT, GPTConfig

# every variant with a static step, with the parameters that change its cache or mask
CASES = [
    ("baseline", {}),
    ("sdpa", {}),
    ("sdpa", {"impl": "reference"}),
    ("flash2", {}),
    ("flex", {}),
    ("flex", {"score_mod": "alibi"}),
    ("sliding_window", {"window": 5}),
    ("gqa", {"n_kv_head": 2}),
    ("gqa", {"n_kv_head": 1}),
    ("mla", {"kv_lora_rank": 32}),
    ("mla", {"kv_lora_rank": 24, "qk_rope_head_dim": 4, "q_lora_rank": 16}),
    ("linear", {}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}" for n, p in CASES]
MAX_LEN = 20


def make_model(name, params, dtype=torch.float64, seed=0):
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=97, dropout=0.0,
                    attention=name, attention_params=dict(params))
    torch.manual_seed(seed)
    return GPT(cfg, seed=seed).to(dtype).eval()


def static_run(model, tokens, prompt_len):
    """Prefill ``prompt_len`` tokens (none: decode from an empty cache), then one static step
    per remaining token (teacher-forced); logits of the positions prompt_len-1 .. T-1."""
    B, T = tokens.shape
    static = decode.init_static_caches(model, B, MAX_LEN, tokens.device, next(model.parameters()).dtype)
    out = []
    if prompt_len:
        out.append(decode.prefill(model, tokens[:, :prompt_len], static)[:, -1])
    for t in range(prompt_len, T):
        out.append(decode.decode_step(model, tokens[:, t:t + 1], static))
    assert int(static.pos) == T
    return torch.stack(out, dim=1)


def eager_run(model, tokens, prompt_len):
    B, T = tokens.shape
    caches = model.init_caches(B, MAX_LEN, tokens.device, next(model.parameters()).dtype)
    out = [model(tokens[:, :prompt_len], caches=caches)[0][:, -1]]
    out += [model(tokens[:, t:t + 1], caches=caches)[0][:, -1] for t in range(prompt_len, T)]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@torch.no_grad()
def test_static_step_matches_eager_decode_and_full_forward(name, params):
    model = make_model(name, params)
    assert decode.unsupported_reason(model) is None
    tokens = torch.randint(0, 97, (2, MAX_LEN), generator=torch.Generator().manual_seed(1))
    full, _ = model(tokens)
    # P=1: the first decode step at position 1; P=7: past the window of 5; the run ends by
    # writing the cache's last slot (position MAX_LEN-1)
    for P in (1, 3, 7):
        got = static_run(model, tokens, P)
        torch.testing.assert_close(got, full[:, P - 1:], atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(got, eager_run(model, tokens, P), atol=1e-9, rtol=1e-9)
    # from an empty cache, position 0 first
    torch.testing.assert_close(static_run(model, tokens, 0), full, atol=1e-9, rtol=1e-9)
    assert model.kernel().startswith("static:")     # the step names its own kernel


@pytest.mark.parametrize("name,params", [c for c in CASES if c[0] in ("sdpa", "gqa", "mla", "linear")][:4])
@torch.no_grad()
def test_static_step_float32(name, params):
    model = make_model(name, params, dtype=torch.float32)
    tokens = torch.randint(0, 97, (1, MAX_LEN), generator=torch.Generator().manual_seed(2))
    full, _ = model(tokens)
    got = static_run(model, tokens, 4)
    assert (got - full[:, 3:]).abs().max().item() < 1e-4


def _fill_unwritten(cache, pos: int):
    """Garbage into the slots after ``pos`` (those the step must not see)."""
    g = torch.Generator().manual_seed(3)
    if isinstance(cache, StaticKVCache):
        seq = [(cache.k, 2), (cache.v, 2)]
        if cache.ring and pos + 1 >= cache.slots:
            return  # every ring slot is written
    elif hasattr(cache, "c_kv"):
        seq = [(cache.c_kv, 1), (cache.k_pe, 1)]
    else:
        return  # linear attention: a fixed state, no slots
    for t, dim in seq:
        tail = t.narrow(dim, pos + 1, t.shape[dim] - pos - 1)
        tail.copy_(1e3 * torch.randn(tail.shape, generator=g, dtype=t.dtype))


@pytest.mark.parametrize("name,params", CASES, ids=IDS)
@torch.no_grad()
def test_unwritten_slots_are_invisible(name, params):
    model = make_model(name, params)
    tokens = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(4))
    outs = []
    for garbage in (False, True):
        static = decode.init_static_caches(model, 1, MAX_LEN, tokens.device, torch.float64)
        decode.prefill(model, tokens[:, :3], static)
        if garbage:
            for cache in static.layers:
                _fill_unwritten(cache, 3)
        outs.append(torch.stack([decode.decode_step(model, tokens[:, t:t + 1], static) for t in (3, 4, 5)]))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-12, rtol=0)


def test_visible_mask():
    key_pos = torch.arange(10)
    pos = torch.tensor(6)
    assert static_visible(key_pos, pos).tolist() == [True] * 7 + [False] * 3
    assert static_visible(key_pos, pos, window=3).tolist() == [False] * 4 + [True] * 3 + [False] * 3
    # a ring early on: never-written slots hold negative positions, hidden though inside pos - window
    ring = StaticKVCache.empty(1, 1, 4, 2, "cpu", torch.float32, ring=True)
    pos = torch.tensor(1)
    assert ring.visible(pos, window=4).tolist() == [True, True, False, False]
    assert ring.visible(pos).tolist() == [True, True, False, False]  # no window
    pos = torch.tensor(6)  # every slot written: positions 4, 5, 6, 3; a window of 2 keeps 5 and 6
    assert ring.visible(pos, window=2).tolist() == [False, True, True, False]
    # a plain cache's slots are its positions: the same masks as from the positions
    plain = StaticKVCache.empty(1, 1, 10, 2, "cpu", torch.float32)
    assert plain.visible(pos, window=3).tolist() == static_visible(torch.arange(10), pos, window=3).tolist()


def test_ring_key_positions():
    cache = StaticKVCache.empty(1, 1, 4, 2, "cpu", torch.float32, ring=True)
    assert cache.key_positions(torch.tensor(1)).tolist() == [0, 1, -2, -1]       # slots 2, 3 unwritten
    assert cache.key_positions(torch.tensor(6)).tolist() == [4, 5, 6, 3]


@torch.no_grad()
def test_sliding_window_step_drops_keys_older_than_the_window():
    """On a full (non-ring) buffer the window mask alone must hide keys at positions <= pos - W."""
    model = make_model("sliding_window", {"window": 4})
    attn = model.attention_modules[0]
    g = torch.Generator().manual_seed(5)
    cache = StaticKVCache.empty(1, 4, 12, 16, "cpu", torch.float64)
    cache.k.copy_(torch.randn(cache.k.shape, generator=g, dtype=torch.float64))
    cache.v.copy_(torch.randn(cache.v.shape, generator=g, dtype=torch.float64))
    x = torch.randn(1, 1, 64, generator=g, dtype=torch.float64)
    pos = torch.tensor(9)
    ref = attn.decode_step_static(x, cache, pos)
    cache.k[:, :, :6] = 1e3            # positions 0..5 <= pos - W: outside the window
    cache.v[:, :, :6] = -1e3
    torch.testing.assert_close(attn.decode_step_static(x, cache, pos), ref, atol=1e-12, rtol=0)
    cache.v[:, :, 6] = 1e3              # position 6 = pos - W + 1: inside
    assert not torch.allclose(attn.decode_step_static(x, cache, pos), ref)


def test_lsh_has_no_static_step_and_graphs_need_cuda():
    lsh = make_model("lsh", {"chunk_size": 4, "n_buckets": 2})
    reason = decode.unsupported_reason(lsh)
    assert reason.startswith("LSHAttention:") and "data-dependent" in reason
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=decode.GRAPH_NEEDS_CUDA):
            decode.GraphDecoder(make_model("sdpa", {}), 1, MAX_LEN)


@pytest.mark.parametrize("name,params", [("sliding_window", {"window": 5}), ("mla", {"kv_lora_rank": 32}),
                                         ("linear", {})])
@torch.no_grad()
def test_graph_decoder_loop_matches_eager_greedy_decode(name, params):
    """The probe's graph loop (reset, prefill, self-fed greedy steps) with the step run
    uncaptured: the same tokens and logits as the eager greedy decode, run twice (reuse)."""
    from attnbench.probe import greedy_eager, greedy_graph

    model = make_model(name, params)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(6))
    dec = decode.GraphDecoder(model, 2, 6 + 9, capture=False)
    ref_tok, ref_logits = greedy_eager(model, prompt, 9, None)
    for _ in range(2):
        tok, logits = greedy_graph(dec, prompt, 9, [])
        assert torch.equal(tok, ref_tok)
        torch.testing.assert_close(logits, ref_logits, atol=1e-9, rtol=1e-9)
    dec.step()                                   # the last slot (the eager decode allocates it too)
    with pytest.raises(ValueError, match="static cache full"):
        dec.step()


@pytest.mark.parametrize("name,params", [("gqa", {"n_kv_head": 2}), ("lsh", {"chunk_size": 4, "n_buckets": 2})])
def test_decode_probe_on_cpu_records_eager_and_why_no_graph(tmp_path, name, params):
    from attnbench import measure
    from attnbench.probe import decode_probe

    model = make_model(name, params, dtype=torch.float32)
    session = measure.MeasurementSession(torch.device("cpu"), tmp_path, nvml=False, codecarbon=False,
                                         idle_seconds=0, label="probe")
    session.start()
    prompt = torch.randint(0, 97, (1, 8), generator=torch.Generator().manual_seed(7))
    row = decode_probe(model, prompt, 5, torch.device("cpu"), torch.float32, session, warmup=0)
    session.finish()
    assert row["decode_mode"] == "eager" and row["cache_matches_full_forward"]
    assert row["ms_per_token_p50"] == row["eager_ms_per_token_p50"] > 0 and row["eager_runs"] == 1
    # the decode steps are part of the energy window (the rest: each run's prefill and the loop)
    assert 0 < row["decode_share_of_window"] == row["eager_decode_share_of_window"] <= 1
    assert row["kernel"] == row["eager_kernel"] and not row["kernel"].startswith("static:")
    assert row["graph_ms_per_token_p50"] is None and row["graph_kernel"] is None     # no figure, not 0
    if name == "lsh":
        assert row["graph_unavailable"].startswith("LSHAttention:")
    else:
        assert row["graph_unavailable"] == decode.GRAPH_NEEDS_CUDA


# --- prefill probe: eager and graph figures, stability record, monotonicity flags ----------

def _prefill(model, L=8, B=1, **kw):
    from attnbench.probe import prefill_probe

    tokens = torch.randint(0, 97, (B, L), generator=torch.Generator().manual_seed(L))
    kw = {"repeats": 3, "warmup": 1, "max_seconds": 0.3, **kw}
    return prefill_probe(model, tokens, torch.device("cpu"), kw.pop("repeats"), kw.pop("warmup"), **kw)


@pytest.mark.parametrize("name,params", [("sdpa", {}), ("lsh", {"chunk_size": 4, "n_buckets": 2})])
def test_prefill_probe_on_cpu_records_eager_stability_and_why_no_graph(name, params):
    row = _prefill(make_model(name, params, dtype=torch.float32), L=8, B=2)
    assert row["prefill_mode"] == "eager" and row["batch_size"] == 2 and row["prompt_len"] == 8
    assert row["ms_p50"] == row["eager_ms_p50"] > 0 and row["ms_p90"] == row["eager_ms_p90"]
    assert row["ms_min"] == row["eager_ms_min"] and row["kernel"] == row["eager_kernel"]
    assert row["tokens_per_s"] == pytest.approx(16 / (row["ms_p50"] / 1000))
    assert row["kernel_check"]["pass"] is True
    rec = row["eager_timing"]
    assert rec["n"] >= 1 and rec["method"] == "perf_counter" and rec["warmup_calls"] >= 1
    assert rec["stable"] == row["timing_stable"] == row["eager_timing_stable"]
    assert row["p90_over_p50"] == rec["p90_over_p50"] and rec["target_p90_over_p50"] == 1.2
    assert rec["stable"] or rec["stop"] == "budget"       # unstable only when the budget ran out
    # no graph on CPU: null figures with the reason, never 0
    assert row["graph_unavailable"] == decode.GRAPH_NEEDS_CUDA
    assert all(row[f"graph_{k}"] is None for k in ("ms_p50", "ms_p90", "ms_min", "tokens_per_s", "kernel", "timing"))
    assert row["graph_matches_eager"] is None and row["graph_vs_eager_max_abs_diff"] is None


class _FakeGraph:
    """Stands in for GraphPrefill on CPU: the forward run uncaptured per "replay" (+ ``offset``
    on the logits, to fake a graph that computes something else), or a capture that fails."""

    def __init__(self, offset=0.0, fail=False):
        self.offset, self.fail = offset, fail

    def __call__(self, model, tokens):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.model, self.tokens, self.kernel, self.graph = model, tokens, "fake-graph", self
        return self

    def replay(self):
        return self.model(self.tokens)[0] + self.offset


@pytest.mark.parametrize("case", ["ok", "mismatch", "capture-fails"])
def test_prefill_probe_graph_path_check_and_failure(monkeypatch, case):
    from attnbench import probe

    monkeypatch.setattr(probe, "prefill_graph_reason", lambda model, device: None)
    monkeypatch.setattr(probe, "GraphPrefill", _FakeGraph(offset=5.0 if case == "mismatch" else 0.0,
                                                          fail=case == "capture-fails"))
    row = _prefill(make_model("sdpa", {}, dtype=torch.float32))
    assert row["eager_ms_p50"] > 0
    if case == "capture-fails":
        assert row["graph_unavailable"].startswith("CUDA graph capture failed: RuntimeError: operation not permitted")
        assert row["graph_ms_p50"] is None and row["prefill_mode"] == "eager"
        return
    assert row["graph_unavailable"] is None and row["graph_ms_p50"] > 0 and row["graph_kernel"] == "fake-graph"
    assert row["graph_timing"]["n"] >= 1
    if case == "ok":
        assert row["graph_matches_eager"] and row["graph_vs_eager_max_abs_diff"] == 0.0
        head = "graph" if row["graph_ms_p50"] < row["eager_ms_p50"] else "eager"
        assert row["prefill_mode"] == {"graph": "cuda-graph", "eager": "eager"}[head]
        assert row["ms_p50"] == row[f"{head}_ms_p50"]
    else:   # a graph that computes something else is never the reported figure
        assert row["graph_matches_eager"] is False and row["graph_vs_eager_max_abs_diff"] == pytest.approx(5.0)
        assert row["prefill_mode"] == "eager" and row["ms_p50"] == row["eager_ms_p50"]


def test_prefill_rows_time_one_batch_sizes_prompts_in_turn_each_under_its_own_kernels(monkeypatch):
    """The eager forwards of a batch size's prompt lengths are timed together, one call of each
    per round (drift between them falls on all alike), and each call runs the kernels ``auto``
    chose for its own shape, though the shapes were tuned one after another."""
    from attnbench import probe

    model = make_model("sdpa", {}, dtype=torch.float32)
    mods = [m for m in model.modules() if hasattr(m, "auto_pin")]
    pins_by_len = {8: "math", 16: "flash"}  # two SDPA backends that run on the CPU

    def fake_prepare(model, tokens, x, dtype, backward=True):  # "tunes" a pin per shape
        for m in mods:
            m.auto_pin = pins_by_len[tokens.shape[1]]
        return [{"auto": "fake", "chosen": pins_by_len[tokens.shape[1]]}]
    monkeypatch.setattr(probe, "prepare", fake_prepare)
    seen = []
    hook = mods[0].register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[1], m.auto_pin)))
    prompts = [torch.randint(0, 97, (1, L), generator=torch.Generator().manual_seed(L)) for L in (8, 16)]
    rows = probe.prefill_rows(model, prompts, torch.device("cpu"), 3, 1, kernel_check=False, max_seconds=0.2)
    hook.remove()
    assert [(r["batch_size"], r["prompt_len"]) for r in rows] == [(1, 8), (1, 16)]
    assert all(pin == pins_by_len[L] for L, pin in seen), set(seen)   # every call under its own shape's pin
    calls = ",".join(str(L) for L, _ in seen)
    assert ",".join(["8,16"] * 6) in calls, calls  # taken in turn, not one series then the other
    for r in rows:
        assert r["eager_timing"]["interleaved_with"] == 2 and r["eager_timing"]["n"] >= 3
        assert r["kernel_selection"] == [{"auto": "fake", "chosen": pins_by_len[r["prompt_len"]]}]
        assert r["ms_p50"] == r["eager_ms_p50"] > 0


def test_prefill_flags_a_longer_prompt_timed_faster(monkeypatch):
    """Fake timings where 16 tokens "take" less than 8 (as batch 1 x 512 vs 128 on the H200):
    the probe's flags name it; the right order, or overlapping spreads, give no flag."""
    from attnbench import measure, probe

    def fake_timing(p50_by_len):
        def timed(fns, device, **kw):
            for fn in fns.values():
                fn()
            p50 = p50_by_len[current["L"]]
            rec = {"p50": p50, "p90": p50 * 1.1, "min": p50 * 0.9, "max": p50 * 1.2, "n": 10,
                   "p90_over_p50": 1.1, "stable": True, "target_p90_over_p50": 1.2, "warmup_calls": 3,
                   "warmup_converged": True, "method": "fake", "seconds": 0.0, "stop": "stable"}
            return {k: ([p50] * 10, rec) for k in fns}
        return timed

    model = make_model("sdpa", {}, dtype=torch.float32)
    current = {}

    def rows(p50_by_len):
        monkeypatch.setattr(measure, "timed_interleaved", fake_timing(p50_by_len))
        out = []
        for B in (1, 2):
            for L in (8, 16):
                current["L"] = L
                out.append(_prefill(model, L=L, B=B))
        return out

    inverted = rows({8: 5.1, 16: 3.2})
    flags = probe.prefill_flags(inverted)
    assert any(f.startswith("batch 1 (reported): 16 tokens faster than 8 tokens (p50 3.2 vs 5.1 ms")
               and f.endswith("timing error") for f in flags), flags
    assert any(f.startswith("batch 2 (eager):") for f in flags)
    assert not any("cuda-graph" in f for f in flags)            # no graph figures on CPU: nothing to compare
    assert probe.prefill_flags(rows({8: 3.2, 16: 5.1})) == []
    assert probe.prefill_flags(rows({8: 3.2, 16: 3.0})) == []   # within the spread (p90 3.3 >= 3.2)
    assert probe.prefill_flags(inverted + [{"batch_size": 1, "prompt_len": 32, "status": "oom"}]) == flags


def test_decode_benchmark_measures_every_named_variant_and_checks_it(tmp_path):
    """benchmarks/decode_graph.py on CPU (eager only; graphs need CUDA, said per row): one row per
    variant and batch size, each decode checked against one full forward."""
    import json
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    import decode_graph

    out = tmp_path / "decode.json"
    assert decode_graph.main(["--config", str(root / "config/smoke.yaml"), "--variants", "sdpa", "lsh", "--batch-sizes", "1", "2",
                              "--prompt-len", "8", "--new-tokens", "3", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert list(doc["variants"]) == ["sdpa", "lsh"]
    for name, v in doc["variants"].items():
        assert v["status"] == "ok" and [r["batch_size"] for r in v["rows"]] == [1, 2], (name, v)
        assert all(r["cache_matches_full_forward"] and r["graph_unavailable"] for r in v["rows"])
    assert "data-dependent" in doc["variants"]["lsh"]["rows"][0]["graph_unavailable"]

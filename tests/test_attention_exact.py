"""Exact-attention variants (baseline, sdpa, flash2, gqa, flex, sliding_window) on CPU.

Every variant is checked against an explicit float64 computation written here from the
module's weights (not from the variant's own code), for causality, cached decoding, gradient
flow, the identities between variants, parameter validation and the analytic FLOPs.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import attention
from attention.base import causal_mask, causal_pairs, core_attention_flops, dense_attention
from attention.flex import alibi_slopes
from attention.ops.flash_attn import flash_attn_available
from attention.ops.sdpa import causal_sdpa, sdpa_choice
from attention.sliding_window import RollingKVCache

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast and does not stall on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


B, T, C, H = 2, 37, 32, 4
D = C // H

# id -> (variant name, params)
CONFIGS = {
    "baseline": ("baseline", {}),
    "sdpa": ("sdpa", {}),
    "flash2": ("flash2", {}),
    "gqa2": ("gqa", {"n_kv_head": 2}),
    "mqa": ("gqa", {"n_kv_head": 1}),
    "flex": ("flex", {}),
    "flex_alibi": ("flex", {"score_mod": "alibi"}),
    "swa5": ("sliding_window", {"window": 5}),
}
IDS = list(CONFIGS)

# kernels (impl values) that run on CPU, per variant, and the kernel name they record
CPU_KERNELS = {
    "sdpa": {"math": "sdpa:math", "flash": "sdpa:cpu-flash"},
    "flash2": {"sdpa_flash": "sdpa:cpu-flash"},
    "gqa": {"math": "sdpa:math", "flash": "sdpa:cpu-flash"},
    "flex": {"flex_eager": "flex:eager", "sdpa_mask": "sdpa:"},
    "sliding_window": {"flex_eager": "flex:eager", "sdpa_mask": "sdpa:"},
}
KERNEL_CASES = [(cid, k) for cid, (name, _) in CONFIGS.items() for k in CPU_KERNELS.get(name, {})]


def make(cid, dtype=torch.float32, seed=0, **extra):
    name, params = CONFIGS[cid]
    torch.manual_seed(seed)
    m = attention.build(name, C, H, **{**params, **extra}).to(dtype)
    # non-zero biases, so that a missing or misplaced bias shows
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1:
                p.normal_(0, 0.1)
    return m.eval()


def twin(module, cid, **extra):
    """A second module of config ``cid`` with ``extra`` params and the same weights."""
    other = make(cid, dtype=next(module.parameters()).dtype, seed=1, **extra)
    other.load_state_dict(module.state_dict())
    return other


def inputs(dtype=torch.float32, seed=1, t=T):
    return torch.randn(B, t, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# --- the independent reference ---------------------------------------------------------------

def visible(cid, t, s):
    name, params = CONFIGS[cid]
    if name == "sliding_window":
        return s <= t and t - s < params["window"]
    return s <= t


def explicit_attention(module, cid, x):
    """Loop-level float64 attention from the module's weights: (B, T, C) -> (B, T, C)."""
    x = x.double()
    sd = {k: v.double() for k, v in module.state_dict().items()}
    lin = lambda z, w: z @ sd[w + ".weight"].T + sd[w + ".bias"]  # noqa: E731
    name, params = CONFIGS[cid]
    if name == "gqa":
        n_kv = params["n_kv_head"]
        q = lin(x, "q_proj")
        k, v = lin(x, "kv_proj").split(n_kv * D, dim=-1)
        kv_head = lambda h: h // (H // n_kv)  # noqa: E731
    else:
        q, k, v = lin(x, "c_attn").split(C, dim=-1)
        kv_head = lambda h: h  # noqa: E731
    slopes = None
    if params.get("score_mod") == "alibi":
        n = H  # power of two here: slope_i = 2^(-8 i / n)
        slopes = [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
    out = torch.zeros_like(q)
    for h in range(H):
        g = kv_head(h)
        qh, kh, vh = q[..., h * D:(h + 1) * D], k[..., g * D:(g + 1) * D], v[..., g * D:(g + 1) * D]
        for t in range(x.shape[1]):
            keys = [s for s in range(x.shape[1]) if visible(cid, t, s)]
            scores = torch.einsum("bd,bsd->bs", qh[:, t], kh[:, keys]) / math.sqrt(D)
            if slopes is not None:
                scores = scores + slopes[h] * (torch.tensor(keys, dtype=torch.float64) - t)
            p = torch.softmax(scores, dim=-1)
            out[:, t, h * D:(h + 1) * D] = torch.einsum("bs,bsd->bd", p, vh[:, keys])
    return lin(out, "c_proj")


# --- registry and contract -------------------------------------------------------------------

def test_registry_has_exact_variants():
    for name in ("baseline", "sdpa", "flash2", "gqa", "flex", "sliding_window"):
        assert name in attention.VARIANTS
        assert name in attention.BUILTIN


@pytest.mark.parametrize("cid", IDS)
def test_check_api(cid):
    name, params = CONFIGS[cid]
    attention.check_api(name, attention.VARIANTS[name], **params)


# --- correctness -------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("cid", IDS)
def test_matches_explicit_float64_reference(cid, impl):
    m = make(cid, torch.float64, impl=impl)
    x = inputs(torch.float64)
    with torch.no_grad():
        y = m(x)
    assert m.kernel != "not-run"
    torch.testing.assert_close(y, explicit_attention(m, cid, x), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cid", IDS)
def test_causal(cid):
    m = make(cid, torch.float64)
    x = inputs(torch.float64)
    t = 17
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(B, T - t - 1, C, dtype=torch.float64)
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    torch.testing.assert_close(y2[:, :t + 1], y[:, :t + 1], rtol=0, atol=1e-12)
    assert (y2[:, t + 1:] - y[:, t + 1:]).abs().max() > 1e-3  # the future does matter for later rows


@pytest.mark.parametrize("cid", IDS)
def test_auto_equals_reference_fp32(cid):
    m = make(cid)
    ref = twin(m, cid, impl="reference")
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)
    assert ref.kernel.startswith(("reference:", "eager:")), ref.kernel


@pytest.mark.parametrize("cid,kernel", KERNEL_CASES)
def test_cpu_kernels_equal_reference(cid, kernel):
    m = make(cid, impl=kernel)
    ref = twin(m, cid, impl="reference")
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)
    name = CONFIGS[cid][0]
    assert m.kernel.startswith(CPU_KERNELS[name][kernel]), m.kernel


def test_flash2_kernel_names_on_cpu():
    m = make("flash2")
    with torch.no_grad():
        m(inputs())
    assert m.kernel == "reference:dense-mask"  # no FA2 on CPU, and the name says so
    if flash_attn_available():
        pytest.skip("flash_attn installed")
    for name in ("flash2", "sliding_window"):
        with pytest.raises(ValueError, match="flash_attn"):
            attention.build(name, C, H, impl="flash_attn")


# --- cached decoding ---------------------------------------------------------------------------

SCHEDULES = {
    "tokens": [1] * T,
    "chunks": [5] + [1] * 25 + [7],
    "big-chunks": [12, 13, 12],
}


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("cid", IDS)
def test_decode_matches_full_forward(cid, schedule, impl):
    m = make(cid, torch.float64, impl=impl)
    x = inputs(torch.float64)
    steps = SCHEDULES[schedule]
    assert sum(steps) == T
    with torch.no_grad():
        full = m(x)
        cache = m.init_cache(B, T, x.device, x.dtype)
        outs, pos = [], 0
        for n in steps:
            outs.append(m(x[:, pos:pos + n], cache=cache))
            pos += n
            assert cache.pos == pos
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cid", ["flex", "flex_alibi", "swa5"])
def test_decode_after_flex_prefill(cid):
    m = make(cid, torch.float64, impl="flex_eager")
    x = inputs(torch.float64)
    with torch.no_grad():
        full = m(x)
        cache = m.init_cache(B, T, x.device, x.dtype)
        y0 = m(x[:, :20], cache=cache)
        assert m.kernel.startswith("flex:eager")
        rest = [m(x[:, t:t + 1], cache=cache) for t in range(20, T)]
        assert "(decode)" in m.kernel
    torch.testing.assert_close(torch.cat([y0, *rest], dim=1), full, rtol=1e-9, atol=1e-10)


def test_cache_sizes():
    sdpa = make("sdpa")
    gqa2, mqa, swa = make("gqa2"), make("mqa"), make("swa5")
    for dt in (torch.float32, torch.bfloat16):
        assert gqa2.cache_bytes_per_token(dt) * 2 == sdpa.cache_bytes_per_token(dt)
        assert mqa.cache_bytes_per_token(dt) * H == sdpa.cache_bytes_per_token(dt)
        assert swa.cache_bytes(3, 4, dt) == sdpa.cache_bytes(3, 4, dt)
        assert swa.cache_bytes(3, 100, dt) == sdpa.cache_bytes(3, 5, dt)
    # the allocated caches hold what cache_bytes says
    x = inputs()
    for m in (gqa2, mqa, swa, sdpa):
        cache = m.init_cache(B, T, x.device, x.dtype)
        with torch.no_grad():
            m(x, cache=cache)
        held = (cache.k.numel() + cache.v.numel()) * cache.k.element_size()
        assert held == m.cache_bytes(B, T, torch.float32), type(m).__name__
    assert isinstance(swa.init_cache(B, T, "cpu", torch.float32), RollingKVCache)


def test_rolling_cache_overflow():
    m = make("swa5")
    cache = m.init_cache(B, 6, "cpu", torch.float32)
    with torch.no_grad():
        m(inputs(t=6), cache=cache)
        with pytest.raises(ValueError, match="max_len"):
            m(inputs(t=1), cache=cache)


# --- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", IDS)
def test_gradients_reach_every_parameter(cid):
    m = make(cid).train()
    x = inputs().requires_grad_(True)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("cid", IDS)
def test_gradients_equal_reference(cid):
    m = make(cid, torch.float64)
    ref = twin(m, cid, impl="reference")
    x = inputs(torch.float64)
    gy = torch.randn(B, T, C, dtype=torch.float64)
    grads = []
    for mod in (m, ref):
        xi = x.clone().requires_grad_(True)
        (mod(xi) * gy).sum().backward()
        grads.append([xi.grad] + [p.grad for p in mod.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# --- identities between variants ---------------------------------------------------------------

def test_mha_family_agrees_with_same_weights():
    base = make("sdpa")
    x = inputs()
    with torch.no_grad():
        want = base(x)
        for cid in ("baseline", "flash2", "flex"):
            other = make(cid)
            other.load_state_dict(base.state_dict())
            torch.testing.assert_close(other(x), want, rtol=1e-5, atol=1e-5)


def test_gqa_with_all_kv_heads_is_mha():
    mha = make("sdpa")
    gqa = attention.build("gqa", C, H, n_kv_head=H).eval()
    w, b = mha.c_attn.weight, mha.c_attn.bias
    with torch.no_grad():
        gqa.q_proj.weight.copy_(w[:C]); gqa.q_proj.bias.copy_(b[:C])
        gqa.kv_proj.weight.copy_(w[C:]); gqa.kv_proj.bias.copy_(b[C:])
        gqa.c_proj.load_state_dict(mha.c_proj.state_dict())
        x = inputs()
        torch.testing.assert_close(gqa(x), mha(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in gqa.parameters()) == sum(p.numel() for p in mha.parameters())


def test_mqa_equals_mha_with_repeated_kv_weights():
    """MQA = MHA whose K/V projections are the single KV head's, repeated for every head."""
    mqa = make("mqa")
    mha = attention.build("sdpa", C, H).eval()
    kw, vw = mqa.kv_proj.weight.split(D)
    kb, vb = mqa.kv_proj.bias.split(D)
    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([mqa.q_proj.weight, kw.repeat(H, 1), vw.repeat(H, 1)]))
        mha.c_attn.bias.copy_(torch.cat([mqa.q_proj.bias, kb.repeat(H), vb.repeat(H)]))
        mha.c_proj.load_state_dict(mqa.c_proj.state_dict())
        x = inputs()
        torch.testing.assert_close(mqa(x), mha(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", [T, T + 10, 1000])
def test_sliding_window_at_least_T_is_causal(window):
    base = make("sdpa")
    swa = attention.build("sliding_window", C, H, window=window).eval()
    swa.load_state_dict(base.state_dict())
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(swa(x), base(x), rtol=1e-5, atol=1e-5)


def test_sliding_window_1_attends_to_itself_only():
    m = attention.build("sliding_window", C, H, window=1).eval()
    x = inputs()
    with torch.no_grad():
        v = m.c_attn(x)[..., 2 * C:]
        torch.testing.assert_close(m(x), m.c_proj(v), rtol=1e-5, atol=1e-5)


def test_window_smaller_than_T_differs_from_causal():
    base = make("sdpa")
    swa = twin(base, "swa5")
    x = inputs()
    with torch.no_grad():
        a, b = swa(x), base(x)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-5)  # first W rows see all keys
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3


# --- ALiBi ----------------------------------------------------------------------------------------

def test_alibi_slopes():
    assert alibi_slopes(8) == pytest.approx([2.0 ** -i for i in range(1, 9)])
    assert alibi_slopes(4) == pytest.approx([2.0 ** (-2 * i) for i in range(1, 5)])
    # 12 heads (GPT-2): the 8 slopes of 8 heads, then every other slope of 16 heads
    want12 = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -(i / 2) for i in (1, 3, 5, 7)]
    assert alibi_slopes(12) == pytest.approx(want12)


def test_flex_alibi_changes_output_and_matches_explicit_bias():
    plain = make("flex", torch.float64)
    alibi = twin(plain, "flex_alibi")
    x = inputs(torch.float64)
    with torch.no_grad():
        assert (plain(x) - alibi(x)).abs().max() > 1e-3
        for impl in ("reference", "sdpa_mask", "flex_eager"):
            m = twin(plain, "flex_alibi", impl=impl)
            torch.testing.assert_close(m(x), explicit_attention(m, "flex_alibi", x), rtol=1e-9, atol=1e-10)
            assert m.kernel.endswith("+alibi"), m.kernel


# --- parameters ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["baseline", "sdpa", "flash2", "gqa", "flex", "sliding_window"])
def test_unknown_param_and_bad_impl(name):
    with pytest.raises(ValueError, match="bogus_key"):
        attention.build(name, C, H, bogus_key=1)
    with pytest.raises(ValueError, match="impl"):
        attention.build(name, C, H, impl="no-such-kernel")


@pytest.mark.parametrize("bad", [3, 0, -2, "2", 2.0, True])
def test_gqa_bad_n_kv_head(bad):
    with pytest.raises(ValueError, match="n_kv_head"):
        attention.build("gqa", C, H, n_kv_head=bad)


def test_gqa_non_divisor_names_allowed_values():
    with pytest.raises(ValueError, match=r"n_kv_head.*\[1, 2, 4\]"):
        attention.build("gqa", C, H, n_kv_head=3)
    with pytest.raises(ValueError, match=r"\[1, 2, 3, 4, 6, 12\]"):
        attention.build("gqa", 768, 12, n_kv_head=5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "128", None, False])
def test_sliding_window_bad_window(bad):
    with pytest.raises(ValueError, match="window"):
        attention.build("sliding_window", C, H, window=bad)


def test_flex_bad_score_mod():
    with pytest.raises(ValueError, match="score_mod"):
        attention.build("flex", C, H, score_mod="relu")


# --- analytic FLOPs ---------------------------------------------------------------------------------

def test_flops():
    Bf, n, h = 4, 768, 12
    sdpa = attention.build("sdpa", n, h)
    for t in (7, 128, 1024):
        want = sdpa.flops_forward(Bf, t)
        for name, params in [("baseline", {}), ("flash2", {}), ("flex", {}), ("flex", {"score_mod": "alibi"}),
                             ("gqa", {"n_kv_head": h}), ("sliding_window", {"window": t}),
                             ("sliding_window", {"window": 10 * t})]:
            m = attention.build(name, n, h, **params)
            assert m.flops_forward(Bf, t) == want, (name, params)
            assert m.flops_forward(Bf, t, causal_halved=False) == sdpa.flops_forward(Bf, t, causal_halved=False)
        assert sdpa.flops_forward(Bf, t, causal_halved=False) > want
    # sliding window < T: only the window's pairs
    swa = attention.build("sliding_window", n, h, window=128)
    t = 1024
    core_full = core_attention_flops(Bf, h, t, 64, 64, causal_pairs(t))
    core_win = core_attention_flops(Bf, h, t, 64, 64, 128 * 129 // 2 + (t - 128) * 128)
    assert sdpa.flops_forward(Bf, t) - swa.flops_forward(Bf, t) == core_full - core_win
    # GQA: only the K/V projections shrink
    g4 = attention.build("gqa", n, h, n_kv_head=4)
    tokens = Bf * t
    assert sdpa.flops_forward(Bf, t) - g4.flops_forward(Bf, t) == 2 * tokens * n * 2 * (n - 4 * 64)


# --- shared SDPA helpers -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", [None, "math", "flash"])
def test_causal_sdpa_chunk_decode_is_bottom_right(backend):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, generator=g)
    k = torch.randn(2, 4, 11, 8, generator=g)
    v = torch.randn(2, 4, 11, 8, generator=g)
    mask = torch.ones(5, 11, dtype=torch.bool).tril(diagonal=6)
    want = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask, -math.inf), -1) @ v
    torch.testing.assert_close(causal_sdpa(q, k, v, backend=backend), want, rtol=1e-5, atol=1e-5)
    # grouped query heads too
    torch.testing.assert_close(causal_sdpa(q, k[:, :2], v[:, :2], backend=backend, enable_gqa=True),
                               torch.softmax((q @ k[:, :2].repeat_interleave(2, 1).transpose(-1, -2)
                                              / math.sqrt(8)).masked_fill(~mask, -math.inf), -1)
                               @ v[:, :2].repeat_interleave(2, 1), rtol=1e-5, atol=1e-5)


def test_sdpa_choice_names_the_dispatch():
    q = torch.randn(1, 2, 4, 8)
    assert sdpa_choice(q, q, q, causal=True) == "cpu-flash"
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_choice(q, q, q, causal=True) == "math"


# --- the GPU benchmark script's CPU path ------------------------------------------------------------

def test_attention_kernels_benchmark_cpu_smoke(tmp_path, load_benchmark):
    import json

    bench = load_benchmark("attention_kernels")
    assert bench.main(["--device", "cpu", "--tiny", "--variants", "sdpa", "sliding_window", "--no-extra",
                       "--repeats", "1", "--seq-lens", "32", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "attention_kernels.json").read_text())
    for name in ("sdpa", "sliding_window"):
        v = res["variants"][name]
        assert v["check"]["paths"]["auto"]["pass"] is True
        assert v["decode"]["pass"] is True
        assert v["throughput"][0]["fwd_bwd_ms"] > 0
    assert any(r["kernel"] == "sdpa_math" and "fwd_ms" in r for r in res["raw_kernels"])


@pytest.mark.parametrize("name, params", [("flex", {}), ("flex", {"score_mod": "alibi"}),
                                          ("sliding_window", {"window": 16})])
def test_flex_block_mask_is_built_once_under_torch_compile(name, params):
    """Inside a compiled model the shared block mask is found from the second call on: one
    graph that builds it, one that only runs flex, and no recompiles after that.  (An
    lru_cache'd mask_mod looked up in forward made sliding_window recompile every step.)"""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.manual_seed(0)
    m = attention.build(name, C, H, impl="flex", **params)
    compiled = torch.compile(m, backend=counting_backend)
    x = torch.randn(B, 48, C)
    with torch.no_grad():
        for _ in range(4):
            compiled(x)
    torch._dynamo.reset()
    assert len(graphs) <= 2, f"{len(graphs)} graphs for 4 identical calls"
    last = [str(n.target) for n in graphs[-1].graph.nodes if n.op == "call_function"]
    assert "flex_attention" in last
    assert not any("vmap" in t or "batch_dim" in t for t in last), "block mask rebuilt in the steady-state graph"


@pytest.mark.parametrize("cid", ["sdpa", "gqa2"])
def test_auto_names_are_definite_under_compile_once_prepared(cid):
    """A compiled module never records a guess: unprepared, a compiled call of impl='auto'
    refuses (UnresolvedAuto); after one eager call of the same case it records the
    dispatcher's own choice, the same string as the eager call."""
    from attention.ops.sdpa import UnresolvedAuto

    m = make(cid).train()
    x = inputs().requires_grad_(True)
    torch._dynamo.reset()
    with pytest.raises(Exception) as err:
        torch.compile(m, backend="eager", fullgraph=True)(x)
    assert "UnresolvedAuto" in repr(err.value) or isinstance(err.value, UnresolvedAuto)
    torch._dynamo.reset()
    m(x)  # eager: asks the dispatcher once
    eager_name = m.kernel
    m.kernel = "not-run"
    torch.compile(m, backend="eager")(x)
    torch._dynamo.reset()
    assert m.kernel == eager_name and "?" not in eager_name and "auto->" in eager_name


def test_auto_pin_is_what_runs_and_is_named():
    """With ``auto_pin`` set (what autotune measured), auto runs that backend for full causal
    calls and names it; decode steps (queries < keys) still let SDPA choose."""
    m = make("sdpa").eval()
    x = inputs()
    m.auto_pin = "math"
    with torch.no_grad():
        y = m(x)
    assert m.kernel == "sdpa:auto->math"
    torch.testing.assert_close(y, twin(m, "sdpa", impl="reference")(x), rtol=1e-5, atol=1e-5)
    cache = m.init_cache(B, T, x.device, x.dtype)
    with torch.no_grad():
        m(x[:, :5], cache=cache)
        m(x[:, 5:6], cache=cache)
    assert m.kernel.startswith("sdpa:auto->") and m.kernel != "sdpa:auto->math"


def test_sdpa_under_compile_benchmark_cpu_smoke(tmp_path, load_benchmark):
    import json

    bench = load_benchmark("sdpa_under_compile")
    # kernel names as the H100 profiler printed them (reports/h100/kernels/sdpa_under_compile.json)
    assert bench.kernel_family("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_26_64") == "cudnn"
    assert bench.kernel_family("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash") == "flash"
    assert bench.kernel_family("fmha_cutlassF_bf16_aligned_64x64_rb_sm80") == "efficient"
    assert bench.kernel_family("triton_poi_fused__unsafe_view_add_cat_clone_transpose_0") is None
    out = tmp_path / "suc.json"
    assert bench.main(["--device", "cpu", "--tiny", "--cases", "sdpa:auto", "mla:math", "--out", str(out)]) == 0
    cases = json.loads(out.read_text())["cases"]
    assert [(c["variant"], c["impl"], c["compiled"]) for c in cases] == [("sdpa", "auto", True), ("mla", "math", True)]
    assert all("error" not in c and c["fwd_bwd_ms"] > 0 and c["top_kernels"] for c in cases)


def test_cudnn_packed_layout_cases_compute_the_same_attention(load_benchmark):
    """The benchmark's cases differ only in which of the packed q/k/v views are copied: on the
    CPU (MATH backend) every case gives the same output and input gradient."""
    from torch.nn.attention import SDPBackend

    bench = load_benchmark("cudnn_packed_layout")
    torch.manual_seed(0)
    c_attn = torch.nn.Linear(C, 3 * C)
    x = torch.randn(2, 9, C, requires_grad=True)
    ref = None
    for copy in bench.COPIES.values():
        y = bench.attend(x, c_attn, H, copy, SDPBackend.MATH)
        dx, = torch.autograd.grad(y.square().sum(), x)
        if ref is None:
            ref = (y.detach(), dx)
            expected = dense_attention(*(t.view(2, 9, H, C // H).transpose(1, 2) for t in c_attn(x).split(C, 2)),
                                       causal_mask(9, 9, "cpu")).transpose(1, 2).reshape(2, 9, C)
            torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y.detach(), ref[0])
        torch.testing.assert_close(dx, ref[1])


def test_lsh_bucket_flips_script_runs(capsys, load_benchmark):
    bench = load_benchmark("lsh_bucket_flips")
    assert bench.main(["--batch", "2", "--seq-len", "16", "--n-embd", "64", "--n-head", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fp32 = next(line for line in lines if line.startswith("torch.float32"))
    assert "bucket flips: 0 of" in fp32        # float32: whole and stepwise projections hash alike


def test_mla_half_rms_norm_in_one_call_equals_the_float32_path():
    """MLA's norms run F.rms_norm on half inputs directly when autocast is off (the probe's bf16
    model): one kernel instead of casts around it, and bit for bit the float32 computation."""
    import torch.nn.functional as F

    from attention.mla import rms_norm_fp32

    norm = torch.nn.RMSNorm(256, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(256, generator=torch.Generator().manual_seed(1)) + 0.5)
    for dtype in (torch.bfloat16, torch.float16):
        half = copy.deepcopy(norm).to(dtype)
        x = (3 * torch.randn(4, 7, 256, generator=torch.Generator().manual_seed(2))).to(dtype)
        fp32 = F.rms_norm(x.float(), (256,), half.weight.float(), 1e-6).to(dtype)
        assert torch.equal(rms_norm_fp32(half, x), fp32), dtype

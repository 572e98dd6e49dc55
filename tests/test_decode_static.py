"""The fixed-shape decode step (attnbench.decode) against the eager cached decode and the full
forward, on CPU (the CUDA-graph capture of the same step is tests/gpu/test_gpu_decode_graph.py)."""
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
    assert row["kernel"] == row["eager_kernel"] and not row["kernel"].startswith("static:")
    assert row["graph_ms_per_token_p50"] is None and row["graph_kernel"] is None     # no figure, not 0
    if name == "lsh":
        assert row["graph_unavailable"].startswith("LSHAttention:")
    else:
        assert row["graph_unavailable"] == decode.GRAPH_NEEDS_CUDA

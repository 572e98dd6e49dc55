"""Correctness of the sub-quadratic / compressed variants: linear, lsh, mla (CPU, fast).

Each variant: causality by perturbation, agreement with a float64 explicit reference of the
same algorithm, cache decoding (token by token and in chunks) equal to the full forward,
gradients reaching every parameter, identities, parameter checks.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import attention
from attention import linear as lin
from attention import lsh
from attention.base import causal_mask, dense_attention
from attention.linear import (chunked_linear_attention, feature_map, quadratic_linear_attention,
                              recurrent_linear_attention)
from attention.mla import MultiHeadLatentAttention

C, H = 32, 4          # n_embd, n_head of the small modules


def build(name, dtype=torch.float64, train=False, **params):
    torch.manual_seed(0)
    m = attention.build(name, C, H, **params).to(dtype)
    return m.train(train)


def rand_x(B=2, T=29, dtype=torch.float64, seed=1):
    return torch.randn(B, T, C, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def assert_causal(m, T=29, ts=(0, 5, 13, 28)):
    x = rand_x(T=T)
    with torch.no_grad():
        y = m(x)
        for t in ts:
            x2 = x.clone()
            x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:]) * 3
            y2 = m(x2)
            torch.testing.assert_close(y2[:, :t + 1], y[:, :t + 1], atol=1e-12, rtol=0)
            if t + 1 < T:
                assert not torch.allclose(y2[:, t + 1:], y[:, t + 1:])


def assert_decode_matches(m, T=29, splits=((1,) * 29, (3, 1, 7, 1, 5, 12), (29,)), atol=1e-10):
    x = rand_x(T=T)
    with torch.no_grad():
        y = m(x)
        for split in splits:
            assert sum(split) == T
            cache = m.init_cache(x.shape[0], T, x.device, x.dtype)
            outs, i = [], 0
            for n in split:
                outs.append(m(x[:, i:i + n], cache=cache))
                i += n
            assert cache.pos == T
            torch.testing.assert_close(torch.cat(outs, dim=1), y, atol=atol, rtol=0)


def assert_grads_everywhere(m, T=29):
    x = rand_x(T=T, seed=3).requires_grad_(True)
    m.zero_grad()
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
    assert x.grad.abs().sum() > 0


def test_registered_and_contract():
    for name, cls in [("linear", lin.LinearAttention), ("lsh", lsh.LSHAttention),
                      ("mla", MultiHeadLatentAttention)]:
        assert attention.VARIANTS[name] is cls
        attention.check_api(name, cls)


# ==================================== linear ===================================================

def _qkv(B=2, Hh=3, T=37, D=8, Dv=6, fmap="elu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (feature_map(torch.randn(B, Hh, T, D, dtype=torch.float64, generator=g), fmap) for _ in range(2))
    v = torch.randn(B, Hh, T, Dv, dtype=torch.float64, generator=g)
    return q, k, v


@pytest.mark.parametrize("fmap", ["elu", "relu"])
def test_linear_chunked_recurrent_quadratic_agree(fmap):
    q, k, v = _qkv(fmap=fmap)
    ref = quadratic_linear_attention(q, k, v, 1e-6)
    rec, (S, z) = recurrent_linear_attention(q, k, v, 1e-6)
    torch.testing.assert_close(rec, ref, atol=1e-12, rtol=0)
    for cs in (1, 3, 8, 16, 36, 37, 64):                   # 37 = T; most do not divide T
        out, (S2, z2) = chunked_linear_attention(q, k, v, cs, 1e-6)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(S2, S, atol=1e-10, rtol=0)
        torch.testing.assert_close(z2, z, atol=1e-10, rtol=0)
    # the formula itself, straight from the definition for one position
    t = 20
    num = (q[:, :, t, :, None] * (k[:, :, :t + 1, :, None] * v[:, :, :t + 1, None, :]).sum(2)).sum(-2)
    den = (q[:, :, t] * k[:, :, :t + 1].sum(2)).sum(-1, keepdim=True) + 1e-6
    torch.testing.assert_close(ref[:, :, t], num / den, atol=1e-12, rtol=0)


def test_linear_chunked_with_state_chains():
    q, k, v = _qkv(T=40)
    full, _ = chunked_linear_attention(q, k, v, 8, 1e-6)
    a, st = chunked_linear_attention(q[:, :, :13], k[:, :, :13], v[:, :, :13], 8, 1e-6)
    b, _ = chunked_linear_attention(q[:, :, 13:], k[:, :, 13:], v[:, :, 13:], 8, 1e-6, state=st)
    torch.testing.assert_close(torch.cat([a, b], 2), full, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", ["chunked", "reference", "auto"])
def test_linear_causal(impl):
    m = build("linear", impl=impl, chunk_size=4)
    assert_causal(m)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_linear_module_matches_reference(chunk_size):
    m = build("linear", chunk_size=chunk_size)
    x = rand_x()
    with torch.no_grad():
        y = m(x)
        assert m.kernel == "torch:chunked"
        m.impl = "reference"
        y_ref = m(x)
        assert m.kernel == "reference:quadratic"
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_linear_decode(impl):
    assert_decode_matches(build("linear", impl=impl, chunk_size=4))


def test_linear_grads():
    assert_grads_everywhere(build("linear", train=True, chunk_size=4))


def test_linear_float32_state_under_low_precision():
    m = build("linear", dtype=torch.bfloat16)
    cache = m.init_cache(2, 8, "cpu", torch.bfloat16)
    assert cache.S.dtype == torch.float32 and cache.z.dtype == torch.float32
    y = m(rand_x(T=8, dtype=torch.bfloat16), cache=cache)
    assert y.dtype == torch.bfloat16 and cache.S.dtype == torch.float32


def _fla_standin(q, k, v, scale=None, initial_state=None, output_final_state=False, normalize=True, **kw):
    """fla's API on [B, T, H, D] (fla/ops/linear_attn/naive.py::naive_recurrent_linear_attn)."""
    assert q.shape[1] == k.shape[1] and q.dim() == 4
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    B, T, Hh, K = q.shape
    S = torch.zeros(B, Hh, K, v.shape[-1], dtype=torch.float32)
    if initial_state is not None:
        S = S + initial_state
    o = torch.empty(B, T, Hh, v.shape[-1], dtype=torch.float32)
    for t in range(T):
        S = S + torch.einsum("bhk,bhv->bhkv", k[:, t].float(), v[:, t].float())
        o[:, t] = torch.einsum("bhkv,bhk->bhv", S, q[:, t].float() * scale)
    if normalize:
        o = o / ((q.float() * scale * k.float().cumsum(1)).sum(-1, keepdim=True) + 1e-10)
    return o.to(v.dtype), (S if output_final_state else None)


def test_linear_fla_glue_with_standin(monkeypatch):
    """Layout [B,T,H,D], scale=1, normalize=False + our fp32 denominator == our function."""
    monkeypatch.setattr(lin, "_FLA", (_fla_standin, _fla_standin))
    m = build("linear", dtype=torch.float32, impl="fla")
    x = rand_x(dtype=torch.float32)
    with torch.no_grad():
        y = m(x)
        assert m.kernel == "fla:chunk"
        m.impl = "reference"
        y_ref = m(x)
        m.impl = "fla"
        torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-5)
        cache = m.init_cache(2, 29, "cpu", torch.float32)
        outs = [m(x[:, :10], cache=cache)]
        assert m.kernel == "fla:chunk"
        outs += [m(x[:, t:t + 1], cache=cache) for t in range(10, 29)]
        assert m.kernel == "fla:fused_recurrent"
        torch.testing.assert_close(torch.cat(outs, 1), y_ref, atol=2e-5, rtol=1e-5)


def test_linear_fla_fallback_is_recorded(monkeypatch):
    monkeypatch.setattr(lin, "_FLA", "ModuleNotFoundError: No module named 'fla'")
    m = build("linear", impl="fla")
    with pytest.warns(UserWarning, match="fla failed"):
        m(rand_x(T=5))
    assert m.kernel == "torch:chunked(fla-fallback)" and "fla" in m.fla_error
    m2 = build("linear", impl="auto")            # CPU: auto never tries fla
    m2(rand_x(T=5))
    assert m2.kernel == "torch:chunked"


def test_linear_cache_size_and_flops():
    m = attention.build("linear", 768, 12)
    assert m.cache_bytes_per_token() == 0
    assert m.cache_bytes(3, 10) == m.cache_bytes(3, 100_000) == 3 * 12 * (64 * 64 + 64) * 4
    # chunked executed matmuls == FlopCounterMode + the (uncounted elementwise) q.z product
    from torch.utils.flop_counter import FlopCounterMode
    m = build("linear", dtype=torch.float32, chunk_size=8)
    x = rand_x(T=32, dtype=torch.float32)
    with FlopCounterMode(display=False) as fc:
        m(x)
    assert m.flops_forward(2, 32, causal_halved=False) == fc.get_total_flops() + 2 * 2 * H * 32 * (C // H)
    f = [attention.build("linear", 768, 12).flops_forward(1, T) for T in (4096, 8192)]
    assert f[1] == 2 * f[0]                                  # linear in T


@pytest.mark.parametrize("bad", [dict(feature_map="softmax"), dict(chunk_size=0), dict(eps=0.0),
                                 dict(eps=-1e-6), dict(chunk_size=2.5), dict(window=3),
                                 dict(impl="recurrent"), dict(fla_max_len=-1), dict(fla_max_len=1.5)])
def test_linear_bad_params(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        attention.build("linear", C, H, **bad)


def test_linear_auto_rule_follows_the_h100_crossover():
    """impl='auto': chunked under torch.compile at every length, fla for eager calls of at most
    fla_max_len new tokens (one-token decode steps included), chunked beyond; never fla off CUDA,
    in float16 or when fla does not import."""
    def pick(n_new, compiling=False, on_cuda=True, float16=False, fla_importable=True, fla_max_len=2048):
        return lin.auto_uses_fla(on_cuda=on_cuda, float16=float16, fla_importable=fla_importable,
                                 compiling=compiling, n_new=n_new, fla_max_len=fla_max_len)

    assert [pick(T) for T in (1, 512, 2048, 2049, 4096, 16384)] == [True, True, True, False, False, False]
    assert not any(pick(T, compiling=True) for T in (1, 512, 2048, 16384))
    assert not pick(512, on_cuda=False) and not pick(512, float16=True) and not pick(512, fla_importable=False)
    assert not pick(1, fla_max_len=0) and pick(8192, fla_max_len=8192)
    assert attention.build("linear", C, H).fla_max_len == 2048


# ===================================== lsh =====================================================

def _lsh_inputs(B=2, Hh=3, T=37, D=8, R=2, nb=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(B, Hh, T, D, dtype=torch.float64, generator=g)
    v = torch.randn(B, Hh, T, D, dtype=torch.float64, generator=g)
    rot = torch.randn(Hh, R, D, nb // 2, generator=g)
    return qk, v, lsh.hash_buckets(qk, rot, nb)


def _lsh_bruteforce(qk, v, buckets, c, partition):
    """The docstring rule literally: per round visible sets, per-round softmax, logsumexp mix."""
    B, Hh, T, D = qk.shape
    R = buckets.shape[2]
    khat = F.normalize(qk, dim=-1)
    out = torch.zeros_like(v)
    for b in range(B):
        for h in range(Hh):
            bk = buckets[b, h].tolist()
            if partition == "position":
                g = [[t // c for t in range(T)] for _ in range(R)]
            else:
                g = [[sum(bk[r][s] == bk[r][t] for s in range(t)) // c for t in range(T)] for r in range(R)]
            for t in range(T):
                vis = [[s for s in range(t) if bk[r][s] == bk[r][t] and g[r][t] - g[r][s] in (0, 1)]
                       for r in range(R)]
                if not any(vis):
                    vis = [[t] for _ in range(R)]
                outs, lses = [], []
                for r in range(R):
                    if not vis[r]:
                        continue
                    sc = torch.stack([qk[b, h, t] @ khat[b, h, s] for s in vis[r]]) / math.sqrt(D)
                    p = torch.softmax(sc, 0)
                    outs.append((p[:, None] * v[b, h, vis[r]]).sum(0))
                    lses.append(torch.logsumexp(sc, 0))
                w = torch.softmax(torch.stack(lses), 0)
                out[b, h, t] = (w[:, None] * torch.stack(outs)).sum(0)
    return out


@pytest.mark.parametrize("partition", ["position", "bucket"])
def test_lsh_dense_reference_is_the_rule(partition):
    qk, v, b = _lsh_inputs(B=1, Hh=2, T=23, nb=4, R=2)
    ref = lsh.lsh_dense(qk, v, b, 4, 3, partition)
    torch.testing.assert_close(ref, _lsh_bruteforce(qk, v, b, 3, partition), atol=1e-12, rtol=0)


@pytest.mark.parametrize("partition", ["position", "bucket"])
@pytest.mark.parametrize("T,c,nb,R", [(37, 8, 4, 2), (50, 7, 2, 3), (64, 16, 8, 2), (33, 4, 8, 1),
                                      (20, 64, 1, 2), (96, 8, 2, 2)])
def test_lsh_fast_matches_dense_reference(partition, T, c, nb, R):
    qk, v, b = _lsh_inputs(T=T, nb=nb, R=R)
    ref = lsh.lsh_dense(qk, v, b, nb, c, partition)
    fast = (lsh.lsh_position_blocks(qk, v, b, c) if partition == "position"
            else lsh.lsh_bucket_sorted(qk, v, b, nb, c))
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("partition", ["position", "bucket"])
def test_lsh_module_matches_reference_and_is_causal(partition):
    m = build("lsh", partition=partition, chunk_size=4, n_buckets=4, seed=7)
    x = rand_x()
    with torch.no_grad():
        y = m(x)
        assert m.kernel == {"position": "torch:position-blocks", "bucket": "torch:bucket-sorted"}[partition]
        m.impl = "reference"
        torch.testing.assert_close(m(x), y, atol=1e-12, rtol=0)
        assert m.kernel == "reference:dense"
        m.impl = "auto"
    assert_causal(m, T=40, ts=(0, 3, 4, 11, 21, 30, 39))


def test_lsh_bucket_partition_does_not_leak_through_future_buckets():
    """Future tokens that fill a lower bucket would shift Reformer's sorted chunks; not here."""
    m = build("lsh", partition="bucket", chunk_size=2, n_buckets=2, n_hashes=1, seed=3)
    x = rand_x(B=1, T=24)
    with torch.no_grad():
        y = m(x)
        qk = m.c_attn(x).split(C, dim=2)[0]
        for t in (5, 9, 15):
            x2 = x.clone()
            x2[:, t + 1:] = -x[:, t + 1:]                  # flips every future token's bucket
            qk2 = m.c_attn(x2).split(C, dim=2)[0]
            b1 = lsh.hash_buckets(qk.view(1, 24, H, -1).transpose(1, 2), m.rotations, 2)
            b2 = lsh.hash_buckets(qk2.view(1, 24, H, -1).transpose(1, 2), m.rotations, 2)
            assert (b1[..., t + 1:] != b2[..., t + 1:]).any()
            torch.testing.assert_close(m(x2)[:, :t + 1], y[:, :t + 1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("partition", ["position", "bucket"])
def test_lsh_decode(partition):
    m = build("lsh", partition=partition, chunk_size=4, n_buckets=4)
    assert_decode_matches(m, T=29, splits=((1,) * 29, (3, 1, 7, 1, 5, 12), (2, 27), (29,)))


@pytest.mark.parametrize("partition", ["position", "bucket"])
def test_lsh_grads(partition):
    m = build("lsh", train=True, partition=partition, chunk_size=4, n_buckets=4)
    assert_grads_everywhere(m)


@pytest.mark.parametrize("partition", ["position", "bucket"])
@pytest.mark.parametrize("n_hashes", [1, 3])
def test_lsh_one_bucket_one_chunk_is_causal_shared_qk_attention(partition, n_hashes):
    m = build("lsh", partition=partition, n_buckets=1, n_hashes=n_hashes, chunk_size=64)
    T = 29
    x = rand_x(T=T)
    with torch.no_grad():
        qk, v = (t.view(2, T, H, -1).transpose(1, 2) for t in m.c_attn(x).split(C, dim=2))
        mask = causal_mask(T, T, "cpu") & ~torch.eye(T, dtype=torch.bool)   # s < t ...
        mask[0, 0] = True                                                   # ... self only at t = 0
        y = dense_attention(qk, F.normalize(qk, dim=-1), v, mask)
        y = m.c_proj(y.transpose(1, 2).reshape(2, T, C))
        torch.testing.assert_close(m(x), y, atol=1e-12, rtol=0)


@pytest.mark.parametrize("partition", ["position", "bucket"])
@pytest.mark.parametrize("train", [False, True])
def test_lsh_batch_independence(partition, train):
    m = build("lsh", train=train, partition=partition, chunk_size=4, n_buckets=4, seed=5)
    x = rand_x(T=33)
    x2 = x.clone()
    x2[1] = torch.randn_like(x2[1]) * 5
    m2 = copy.deepcopy(m)                                   # same rotation stream in train mode
    y = m(x)
    y2 = m2(x2)
    torch.testing.assert_close(y2[0], y[0], atol=1e-12, rtol=0)
    assert not torch.allclose(y2[1], y[1])


def training_step(m, x):
    """A training forward as the training loop runs it: the step's rotations first."""
    m.begin_training_step()
    return m(x)


def test_lsh_rotations_reproducible():
    x = rand_x(T=20)
    a = build("lsh", train=True, seed=11)
    b = build("lsh", train=True, seed=11)
    ya = [training_step(a, x) for _ in range(3)]
    yb = [training_step(b, x) for _ in range(3)]
    for p, q in zip(ya, yb):
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    assert not torch.allclose(ya[0], ya[1])                 # fresh rotations per training step
    torch.testing.assert_close(a(x), ya[2], atol=0, rtol=0)  # a forward alone draws nothing
    a.eval()
    torch.testing.assert_close(a(x), a(x), atol=0, rtol=0)  # eval: the fixed buffer
    torch.manual_seed(3)
    s1 = attention.build("lsh", C, H).seed
    torch.manual_seed(3)
    assert attention.build("lsh", C, H).seed == s1


def test_lsh_training_rotations_are_drawn_on_the_models_device(monkeypatch):
    """Fresh rotations come from a generator on the buffer's device: drawn on the CPU and copied
    to a GPU they cost a synchronous copy in every layer of every step (the H200's LSH jobs kept
    the GPU busy about two thirds of the time)."""
    m = build("lsh", train=True, seed=5)
    seen = []
    draw = lsh.LSHAttention._draw_rotations

    def spy(self, step, device="cpu", out=None):
        seen.append(torch.device(device))
        return draw(self, step, device, out=out)

    monkeypatch.setattr(lsh.LSHAttention, "_draw_rotations", spy)
    m.begin_training_step()
    assert seen == [m.rotations.device]
    m(rand_x(T=20))                                         # the forward only reads the buffer
    assert seen == [m.rotations.device]


def test_lsh_rotation_stream_travels_with_state_dict():
    """Train mode: a module loaded from another's state_dict draws the same rotations."""
    x = rand_x(T=20)
    a = build("lsh", train=True)
    b = build("lsh", train=True, impl="reference")
    torch.manual_seed(123)
    c = attention.build("lsh", C, H).to(torch.float64).train()
    assert c.seed != a.seed
    state = a.state_dict()                                  # not cloned: must stay as taken
    ya = training_step(a, x)
    b.load_state_dict(state)
    c.load_state_dict(state)
    torch.testing.assert_close(training_step(b, x), ya, atol=1e-12, rtol=0)   # reference path, same rotations
    torch.testing.assert_close(training_step(c, x), ya, atol=1e-12, rtol=0)
    assert a.state_dict()["hash_state"].tolist() == [a.seed, 1]
    ya2 = training_step(a, x)
    c.load_state_dict(a.state_dict())                         # resume: same next rotations
    assert not torch.allclose(ya2, ya)
    torch.testing.assert_close(c(x), ya2, atol=1e-12, rtol=0)  # the step's rotations travel too
    torch.testing.assert_close(training_step(a, x), training_step(c, x), atol=1e-12, rtol=0)
    assert "train_rotations" not in a.state_dict()           # derived from hash_state on load


def test_lsh_cache_sizes_and_flops():
    m = attention.build("lsh", 768, 12)                     # position partition, chunk 64
    per = 12 * (2 * 64 * 2 + 2 * 8)
    assert m.cache_bytes_per_token() == 0
    assert m.cache_bytes(1, 10) == m.cache_bytes(1, 10_000) == 2 * 64 * per
    mb = attention.build("lsh", 768, 12, partition="bucket")
    assert mb.cache_bytes_per_token(torch.bfloat16) == per
    cache = mb.init_cache(1, 16, "cpu", torch.bfloat16)
    stored = sum(t.numel() * t.element_size() for t in (cache.qk, cache.v, cache.buckets))
    assert stored == mb.cache_bytes(1, 16)
    for mod in (m, mb):
        f = [mod.flops_forward(1, T) for T in (4096, 8192)]
        assert 1.9 < f[1] / f[0] < 2.1                      # linear in T
        assert mod.flops_forward(1, 8192, causal_halved=False) > f[1]
    # executed matmuls vs FlopCounterMode (position: no padding when c divides T)
    from torch.utils.flop_counter import FlopCounterMode
    sm = build("lsh", dtype=torch.float32, chunk_size=8, n_buckets=4, n_hashes=2)
    x = rand_x(T=32, dtype=torch.float32)
    with FlopCounterMode(display=False) as fc:
        sm(x)
    assert sm.flops_forward(2, 32, causal_halved=False) == fc.get_total_flops()
    sb = build("lsh", dtype=torch.float32, chunk_size=8, n_buckets=4, n_hashes=2, partition="bucket")
    with FlopCounterMode(display=False) as fc:
        sb(x)
    assert sb.flops_forward(2, 32, causal_halved=False) == fc.get_total_flops()


@pytest.mark.parametrize("bad", [dict(n_buckets=3), dict(n_buckets=0), dict(n_hashes=0),
                                 dict(chunk_size=0), dict(partition="global"), dict(seed=-1),
                                 dict(resample="yes"), dict(n_buckets=4.0)])
def test_lsh_bad_params(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        attention.build("lsh", C, H, **bad)


# ===================================== mla =====================================================

MLA_CONFIGS = [
    {},
    dict(qk_rope_head_dim=4),
    dict(qk_rope_head_dim=4, q_lora_rank=16, kv_lora_rank=20, v_head_dim=12),
    dict(qk_nope_head_dim=6, v_head_dim=4, kv_lora_rank=8, bias=False),
]


@pytest.mark.parametrize("cfg", MLA_CONFIGS)
def test_mla_naive_equals_absorbed_and_reference(cfg):
    m = build("mla", **cfg)
    x = rand_x()
    with torch.no_grad():
        y = m(x)
        assert m.kernel.startswith("naive:sdpa:")
        cache = m.init_cache(2, 29, "cpu", torch.float64)
        y_abs = m(x, cache=cache)
        assert m.kernel == "absorbed:matmul"
        m.impl = "reference"
        y_ref = m(x)
    torch.testing.assert_close(y_abs, y, atol=1e-12, rtol=0)
    torch.testing.assert_close(y_ref, y, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cfg", MLA_CONFIGS[:3])
def test_mla_causal_and_decode(cfg):
    m = build("mla", **cfg)
    assert_causal(m)
    assert_decode_matches(m)


@pytest.mark.parametrize("cfg", MLA_CONFIGS)
def test_mla_grads(cfg):
    assert_grads_everywhere(build("mla", train=True, **cfg))


def test_mla_param_count_and_cache_formulas():
    for cfg in MLA_CONFIGS:
        m = attention.build("mla", C, H, **cfg)
        assert sum(p.numel() for p in m.parameters()) == m.param_count_formula()
    g = attention.build("mla", 768, 12)                     # GPT-2 defaults: d_c 256, no rope
    assert (g.kv_lora_rank, g.qk_rope_head_dim, g.qk_nope_head_dim, g.v_head_dim) == (256, 0, 64, 64)
    # 768*768+768 (wq) + 768*256+256 (wkv_a) + 256 (kv_norm) + 256*12*128 (wkv_b) + 768*768+768 (wo)
    expect = 768 * 768 + 768 + 768 * 256 + 256 + 256 + 256 * 12 * 128 + 768 * 768 + 768
    assert sum(p.numel() for p in g.parameters()) == g.param_count_formula() == expect
    assert g.cache_bytes_per_token(torch.bfloat16) == 256 * 2
    r = attention.build("mla", 768, 12, qk_rope_head_dim=32)
    assert r.cache_bytes_per_token(torch.float32) == (256 + 32) * 4
    cache = r.init_cache(2, 10, "cpu", torch.float32)
    assert cache.c_kv.numel() * 4 + cache.k_pe.numel() * 4 == r.cache_bytes(2, 10, torch.float32)
    from torch.utils.flop_counter import FlopCounterMode
    m = build("mla", dtype=torch.float32, impl="reference")  # CPU SDPA is not seen by the counter
    x = rand_x(T=16, dtype=torch.float32)
    with FlopCounterMode(display=False) as fc:
        m(x)
    assert m.flops_forward(2, 16, causal_halved=False) == fc.get_total_flops()


@pytest.mark.parametrize("bad", [dict(kv_lora_rank=64), dict(kv_lora_rank=0), dict(q_lora_rank=-1),
                                 dict(qk_rope_head_dim=3), dict(v_head_dim=0),
                                 dict(qk_nope_head_dim=1.5), dict(rope_theta=0)])
def test_mla_bad_params(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key):
        attention.build("mla", C, H, **bad)


def test_lsh_training_steps_do_not_recompile_under_torch_compile():
    """Fresh rotations per training step must not make dynamo recompile every step (seen on
    the H100: the recompile limit was hit and LSH ran partly eager)."""
    import torch._dynamo

    torch._dynamo.reset()
    m = attention.build("lsh", 32, 4, chunk_size=8).train()
    cm = torch.compile(m, backend="eager")
    x = torch.randn(2, 16, 32, requires_grad=True)
    outs = []
    for _ in range(2):
        m.begin_training_step()
        outs.append(cm(x))
        outs[-1].sum().backward()
    old = torch._dynamo.config.error_on_recompile
    torch._dynamo.config.error_on_recompile = True
    try:
        for _ in range(4):
            m.begin_training_step()
            cm(x).sum().backward()
    finally:
        torch._dynamo.config.error_on_recompile = old
        torch._dynamo.reset()
    assert m._step == 6
    assert not torch.allclose(outs[0], outs[1])      # the compiled forward sees each step's rotations


def test_an_lsh_model_compiles_into_one_graph():
    """The training forward of a GPT with LSH layers has no graph break: the step's rotations are
    drawn before it (``begin_training_step``), not inside it.  A disabled function in every layer
    left the GPU waiting on the host for about half of each LSH step on an H200 (12 layers: 13
    graphs); one graph is also what CUDA graphs can replay."""
    import torch._dynamo

    from attnbench.model import GPT, GPTConfig
    from attnbench.optim import begin_step

    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=32, attention="lsh",
                          attention_params={"chunk_size": 8})).train()
    idx = torch.randint(0, 50257, (2, 16))
    begin_step(model)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(idx, idx, return_logits=False)
    torch._dynamo.reset()
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
    steps = [m._step for m in model.modules() if hasattr(m, "begin_training_step")]
    assert steps == [1, 1]


def test_linear_fla_is_opaque_to_torch_compile(monkeypatch):
    """Under torch.compile the fla call is a graph break that runs eagerly on every call (dynamo
    does not trace into fla's Triton wrappers), and the compiled module equals the eager one."""
    calls = []

    def counting_standin(*args, **kw):
        calls.append(1)
        return _fla_standin(*args, **kw)

    monkeypatch.setattr(lin, "_FLA", (counting_standin, counting_standin))
    torch._dynamo.reset()
    m = build("linear", dtype=torch.float32, impl="fla")
    compiled = torch.compile(m, backend="aot_eager")
    x = rand_x(dtype=torch.float32).requires_grad_(True)
    y_eager = m(x)
    g_eager, = torch.autograd.grad(y_eager.square().sum(), x)
    before = len(calls)
    for _ in range(3):
        y = compiled(x)
    assert len(calls) - before == 3           # a traced call would not run the Python again
    assert m.kernel == "fla:chunk"
    g, = torch.autograd.grad(y.square().sum(), x)
    torch.testing.assert_close(y, y_eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g, g_eager, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


# --- benchmarks/linear_crossover.py: the per-length decision and its CPU path ----------------------

def test_linear_crossover_summary_picks_the_faster_path_per_mode_and_length(load_benchmark):
    bench = load_benchmark("linear_crossover")
    ms = {("fla", 512): 4.8, ("chunked", 512): 7.2, ("fla", 4096): 7.5, ("chunked", 4096): 7.3,
          ("fla", 16384): 16.8, ("chunked", 16384): 7.5,
          ("fla+compile", 512): 4.4, ("chunked+compile", 512): 3.0,
          ("fla+compile", 4096): 2.0, ("chunked+compile", 4096): 3.0,
          ("fla+compile", 16384): 1.9, ("chunked+compile", 16384): 3.1}
    rows = [{"path": p, "T": T, "fwd_bwd_ms": v} for (p, T), v in ms.items()]
    rows.append({"path": "fla", "T": 8192, "error": "OOM"})          # unmeasured points are ignored
    s = bench.crossover(rows)
    assert [s["eager"]["per_length"][T]["faster"] for T in (512, 4096, 16384)] == ["fla", "chunked", "chunked"]
    assert s["eager"]["fla_min_len"] is None                         # fla does not win up to the longest T
    assert s["eager"]["fla_max_len"] == 512                          # fla wins up to 512
    assert s["compiled"]["fla_min_len"] == 4096                      # fla wins from 4096 on
    assert s["compiled"]["fla_max_len"] is None                      # ... but not at the shortest T
    assert s["compiled"]["per_length"][512]["ratio_chunked_over_fla"] == pytest.approx(3.0 / 4.4)


def test_linear_crossover_benchmark_cpu_smoke(tmp_path, load_benchmark):
    import json

    bench = load_benchmark("linear_crossover")
    out = tmp_path / "lc.json"
    assert bench.main(["--device", "cpu", "--tiny", "--paths", "chunked", "--seq-lens", "32", "64",
                       "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["meta"]["paths"] == ["chunked"]                       # no fla off CUDA
    assert [(r["T"], r["kernel"]) for r in doc["training"]] == [(32, "torch:chunked"), (64, "torch:chunked")]
    assert all(r["out_rel_err"] == 0.0 and r["fwd_bwd_ms"] > 0 for r in doc["training"])
    assert doc["decode"][0]["kernel"] == "torch:chunked" and doc["decode"][0]["step_ms"] > 0


def test_linear_auto_default_is_what_the_committed_h100_crossover_gives(load_benchmark, repo_root):
    """``fla_max_len``'s default and the compiled rule (never fla) come from the recorded rows."""
    import json

    bench = load_benchmark("linear_crossover")
    doc = json.loads((repo_root / "reports/h100/kernels/linear_crossover.json").read_text())
    summary = bench.crossover(doc["training"])
    assert attention.build("linear", C, H).fla_max_len == summary["eager"]["fla_max_len"] == 2048
    assert summary["compiled"]["fla_max_len"] is None
    assert all(p["faster"] == "chunked" for p in summary["compiled"]["per_length"].values())


def test_a_module_that_is_its_own_step_hook_is_not_kept_alive_by_the_hook_cache():
    """The sweep begins steps on a bare LSH module: the per-model hook cache must not hold it."""
    import gc
    import weakref

    from attnbench.optim import begin_step, step_hooks

    m = build("lsh", train=True, seed=5)
    begin_step(m)
    assert len(step_hooks(m)) == 1
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None

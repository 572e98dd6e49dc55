"""Strictly causal LSH attention after Reformer (Kitaev, Kaiser, Levskaya 2020, arXiv 2001.04451).

Shared QK (one projection ``qk``; keys are the L2-normalised queries ``k^ = qk / |qk|``),
score ``qk_t . k^_s * head_dim**-0.5``, angular LSH by random rotations, several hash rounds
combined by their log-sum-exp weights -- as trax ``LSHSelfAttention`` / lucidrains
``reformer-pytorch``.  Projections: ``c_attn`` n_embd -> 2 n_embd (qk, v), ``c_proj``.

Why not the original sort-and-chunk: Reformer sorts the whole sequence by (bucket, position)
and cuts the *sorted* order into equal chunks.  A token's sorted index counts every token in
a lower bucket, future ones included, so future tokens move the chunk boundaries and change
which past keys a query sees: the causal-by-position mask alone still leaks the future.  Here
the chunk a token belongs to depends only on tokens at or before it.

Hashing.  Per head h and round r a rotation ``R[h, r]`` (D x n_buckets/2);
``bucket_r(t) = argmax([qk_t R ; -qk_t R])`` (Andoni et al. 2015).  ``n_buckets = 1`` puts every
token in one bucket (no hashing; an identity case for tests).  Rotations: a buffer drawn at
construction (stream element 0 of ``seed``) is used in eval mode and whenever a cache is
given (decode must hash like the forward it continues).  In training mode with
``resample=True`` (default, as Reformer) every training step hashes with fresh rotations:
:meth:`LSHAttention.begin_training_step`, which the training loop calls before each training
forward (``attnbench.optim.begin_step``), draws rotations number n of the stream
``torch.Generator().manual_seed((seed << 32) + n)`` into the buffer ``train_rotations``, which
training forwards read.  The forward itself only reads buffers, so torch.compile traces it into
one graph with its neighbours (a Python step counter in the forward was a graph break in every
layer: the GPU waited on the host for about half of each LSH step on an H200) and CUDA graphs
can replay it.  (seed, n) is the buffer ``hash_state`` (``train_rotations`` is derived from it,
redrawn on load), so runs are reproducible, a module loaded from another's ``state_dict``
hashes with the same rotations and a resumed run continues the stream.
``seed=None`` draws the seed from torch's global RNG at construction (reproducible under
``torch.manual_seed``; differs per layer).

Visibility rule (exact).  Let ``c = chunk_size`` and, per round r, a chunk index g_r(t):

* ``partition="position"`` (default): ``g(t) = t // c`` -- fixed position blocks;
* ``partition="bucket"``: ``g_r(t) = rank_r(t) // c`` with ``rank_r(t) = #{s < t : bucket_r(s) =
  bucket_r(t)}`` -- chunks of c consecutive members of the same bucket (the causal version of
  Reformer's sorted chunks; keys can lie arbitrarily far back).

Key s is visible to query t in round r iff ``s < t`` and ``bucket_r(s) == bucket_r(t)`` and
``g_r(s) in {g_r(t), g_r(t) - 1}``.  A token attends to itself iff no other key is visible to it
in any round (the first token; a token alone in its bucket window in every round).  All rounds
together give one softmax over the multiset of visible (round, key) pairs:

    y_t = sum_s m(t,s) exp(score(t,s)) v_s / sum_s m(t,s) exp(score(t,s)),
    m(t,s) = #{r : s visible to t in round r}  (s != t),  m(t,t) = [no other key visible],

which equals combining per-round softmax outputs with weights softmax_r(logsumexp_r) (keys
seen in several rounds count several times, as Reformer without the duplicate correction).
It also equals trax's finite self-penalty (-1e5) up to exp(-1e5) = 0 in float32.  Everything
depends only on tokens <= t of the same batch element (rotations are data-independent).

Implementations (``self.kernel``):

* ``torch:position-blocks`` (``partition="position"``): queries of block j against the 2c keys
  of blocks j-1 and j, one (c x 2c) score matrix per block shared by all rounds, rounds folded
  into the multiplicity ``log m(t,s)`` added to the scores.  A sort inside a block would only
  permute these 2c keys, so none is done.  Memory O(T * 2c * (1 + n_hashes)) per head.
* ``torch:bucket-sorted`` (``partition="bucket"``): per round, stable sort by (bucket,
  position), each bucket's run padded to a multiple of c (static length <= T + n_buckets*c),
  chunks of c attend to themselves and the chunk before (masked to the same bucket and s < t),
  per-round outputs combined by their logsumexp, then un-sorted.  Memory O(n_hashes * T * 2c).
* ``reference:dense`` (``impl="reference"``): the rule above on dense T x T masks -- tests only.

Decoding.  ``partition="position"``: :class:`LSHWindowCache` keeps qk, v and bucket ids of the
previous and the current block only (< 2c tokens; fixed size, so ``cache_bytes_per_token() ==
0`` and ``cache_bytes`` is the fixed buffer).  ``partition="bucket"``: a visible key can be
anywhere in the past, so :class:`LSHHistoryCache` keeps qk, v and bucket ids of every token:
``cache_bytes_per_token = n_head * (2 * D * dtype_bytes + n_hashes * 8)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import CausalSelfAttention, dtype_bytes, merge_heads, split_heads

PARTITIONS = ("position", "bucket")
BUCKET_BYTES = 8     # bucket ids are int64


# --- hashing ------------------------------------------------------------------------------

def hash_buckets(qk: torch.Tensor, rotations: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Angular LSH.  qk: (B, H, T, D); rotations: (H, R, D, n_buckets // 2) -> (B, H, R, T) int64."""
    B, H, T, _ = qk.shape
    R = rotations.shape[1]
    if n_buckets == 1:
        return torch.zeros(B, H, R, T, dtype=torch.long, device=qk.device)
    with torch.autocast(device_type=qk.device.type, enabled=False):
        rot = torch.einsum("bhtd,hrdk->bhrtk", qk.detach().float(), rotations.to(qk.device).float())
    return torch.cat([rot, -rot], dim=-1).argmax(dim=-1)


def bucket_ranks(buckets: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """rank_r(t) = #{s < t : bucket_r(s) = bucket_r(t)}; (B, H, R, T) -> same shape."""
    onehot = F.one_hot(buckets, n_buckets)                                 # (B, H, R, T, nb)
    return (onehot.cumsum(-2) - onehot).gather(-1, buckets[..., None]).squeeze(-1)


# --- explicit reference: dense masks over all pairs ----------------------------------------

def lsh_dense(qk, v, buckets, n_buckets: int, chunk_size: int, partition: str,
              q_start: int = 0) -> torch.Tensor:
    """The visibility rule on dense masks, for queries ``q_start..T-1`` against keys ``0..T-1``.

    qk: (B, H, T, D); v: (B, H, T, Dv); buckets: (B, H, R, T).  Returns (B, H, T - q_start, Dv).
    O(T^2) memory: used as the test reference and for single decode steps.
    """
    B, H, T, D = qk.shape
    c = chunk_size
    pos = torch.arange(T, device=qk.device)
    khat = F.normalize(qk, dim=-1)
    scores = (qk[:, :, q_start:] @ khat.transpose(-2, -1)) * D ** -0.5     # (B, H, n, T)
    if partition == "position":
        g = (pos // c).expand(B, H, buckets.shape[2], T)
    else:
        g = bucket_ranks(buckets, n_buckets) // c
    qb, qg, qpos = buckets[..., q_start:, None], g[..., q_start:, None], pos[q_start:, None]
    dg = qg - g[..., None, :]
    vis = (buckets[..., None, :] == qb) & ((dg == 0) | (dg == 1)) & (pos[None, :] < qpos)
    acc = torch.promote_types(scores.dtype, torch.float32)                 # float32, or float64
    m = vis.sum(2, dtype=acc)                                              # (B, H, n, T)
    none = m.sum(-1) == 0
    is_self = pos[None, :] == qpos                                         # (n, T)
    m = m + (is_self & none[..., None]).to(acc)
    p = torch.softmax(scores.to(acc) + m.log(), dim=-1).to(v.dtype)
    return p @ v


# --- fast path 1: fixed position blocks ----------------------------------------------------

def lsh_position_blocks(qk, v, buckets, chunk_size: int, dropout_p: float = 0.0,
                        training: bool = False) -> torch.Tensor:
    """Position-block rule in O(T * 2c) memory.  Position 0 of ``qk`` must start a block.

    qk: (B, H, T, D), v: (B, H, T, Dv), buckets: (B, H, R, T) -> (B, H, T, Dv).
    """
    B, H, T, D = qk.shape
    Dv, R, c = v.shape[-1], buckets.shape[2], chunk_size
    nblk = math.ceil(T / c)
    pad = nblk * c - T
    if pad:
        qk, v = F.pad(qk, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
        buckets = F.pad(buckets, (0, pad), value=-1)                       # pads see only pads

    def with_prev(x, fill):                                                # (..., nblk, c, *) -> (..., nblk, 2c, *)
        prev = torch.cat([torch.full_like(x[..., :1, :, :], fill), x[..., :-1, :, :]], dim=-3)
        return torch.cat([prev, x], dim=-2)

    q = qk.reshape(B, H, nblk, c, D)
    k = with_prev(F.normalize(qk, dim=-1).reshape(B, H, nblk, c, D), 0.0)  # (B, H, nblk, 2c, D)
    vv = with_prev(v.reshape(B, H, nblk, c, Dv), 0.0)
    bq = buckets.reshape(B, H, R, nblk, c)
    bk = with_prev(bq[..., None], -2).squeeze(-1)                          # (B, H, R, nblk, 2c)
    i = torch.arange(c, device=qk.device)
    j = torch.arange(2 * c, device=qk.device)
    earlier = (j[None, :] - c) < i[:, None]                                # key pos < query pos, (c, 2c)
    is_self = (j[None, :] - c) == i[:, None]
    vis = (bq[..., :, None] == bk[..., None, :]) & earlier                 # (B, H, R, nblk, c, 2c)
    scores = (q @ k.transpose(-2, -1)) * D ** -0.5
    acc = torch.promote_types(scores.dtype, torch.float32)
    scores = scores.to(acc)
    m = vis.sum(2, dtype=acc)                                              # (B, H, nblk, c, 2c)
    none = m.sum(-1, keepdim=True) == 0
    m = m + (is_self & none).to(acc)
    p = torch.softmax(scores + m.log(), dim=-1)
    if dropout_p > 0.0 and training:
        p = F.dropout(p, p=dropout_p)
    y = p.to(vv.dtype) @ vv                                                # (B, H, nblk, c, Dv)
    return y.reshape(B, H, nblk * c, Dv)[:, :, :T]


# --- fast path 2: chunks of same-bucket ranks (sorted) ------------------------------------

def lsh_bucket_sorted(qk, v, buckets, n_buckets: int, chunk_size: int, dropout_p: float = 0.0,
                      training: bool = False) -> torch.Tensor:
    """Bucket-rank rule in O(R * (T + n_buckets*c) * 2c) memory.

    qk: (B, H, T, D), v: (B, H, T, Dv), buckets: (B, H, R, T) -> (B, H, T, Dv).
    """
    B, H, T, D = qk.shape
    Dv, R, c, nb = v.shape[-1], buckets.shape[2], chunk_size, n_buckets
    dev = qk.device
    t_idx = torch.arange(T, device=dev)
    # sort by (bucket, position); rank inside the bucket; padded slot of every token
    order = (buckets * T + t_idx).argsort(dim=-1)                          # sorted i -> token
    b_sorted = buckets.gather(-1, order)
    counts = torch.zeros(B, H, R, nb, dtype=torch.long, device=dev).scatter_add_(
        -1, buckets, torch.ones_like(buckets))
    starts = counts.cumsum(-1) - counts
    padded = (counts + c - 1) // c * c
    pstarts = padded.cumsum(-1) - padded
    slot_sorted = pstarts.gather(-1, b_sorted) + t_idx - starts.gather(-1, b_sorted)
    dest = torch.empty_like(order).scatter_(-1, order, slot_sorted)        # token -> slot, (B, H, R, T)
    Lp = math.ceil((T + nb * (c - 1)) / c) * c                             # static bound on the slots
    nch = Lp // c
    src = torch.full((B, H, R, Lp), T, dtype=torch.long, device=dev).scatter_(
        -1, dest, t_idx.expand(B, H, R, T))                                # slot -> token (T = empty)
    bi = torch.arange(B, device=dev).view(B, 1, 1, 1)
    hi = torch.arange(H, device=dev).view(1, H, 1, 1)
    ri = torch.arange(R, device=dev).view(1, 1, R, 1)

    def to_slots(x):                                                       # (B, H, T, *) -> (B, H, R, Lp, *)
        return torch.cat([x, x.new_zeros(B, H, 1, *x.shape[3:])], dim=2)[bi, hi, src]

    def with_prev(x, fill):                                                # (..., nch, c, *) -> (..., nch, 2c, *)
        prev = torch.cat([torch.full_like(x[..., :1, :, :], fill), x[..., :-1, :, :]], dim=-3)
        return torch.cat([prev, x], dim=-2)

    q = to_slots(qk).reshape(B, H, R, nch, c, D)
    k = with_prev(F.normalize(q, dim=-1), 0.0)                             # (B, H, R, nch, 2c, D)
    vv = with_prev(to_slots(v).reshape(B, H, R, nch, c, Dv), 0.0)
    b_slots = torch.cat([buckets, buckets.new_full((B, H, R, 1), -1)], dim=-1).gather(-1, src)
    bq = b_slots.reshape(B, H, R, nch, c)
    bk = with_prev(bq[..., None], -2).squeeze(-1)
    pq = src.reshape(B, H, R, nch, c)                                      # original positions
    pk = with_prev(pq[..., None], T + 1).squeeze(-1)
    vis = (bq[..., :, None] == bk[..., None, :]) & (pk[..., None, :] < pq[..., :, None])
    # self only if no other key in any round
    n_other = vis.sum(-1).reshape(B, H, R, Lp)[bi, hi, ri, dest].sum(2)    # (B, H, T)
    none = torch.cat([n_other == 0, n_other.new_ones(B, H, 1, dtype=torch.bool)], dim=2)[bi, hi, src]
    i = torch.arange(c, device=dev)
    is_self = (torch.arange(2 * c, device=dev)[None, :] - c) == i[:, None]
    mask = vis | (is_self & none.reshape(B, H, R, nch, c)[..., None])
    scores = (q @ k.transpose(-2, -1)) * D ** -0.5
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    has = mask.any(-1, keepdim=True)
    s = scores.masked_fill(~mask, float("-inf")).where(has, 0.0)
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    p = torch.exp(s - lse)
    if dropout_p > 0.0 and training:
        p = F.dropout(p, p=dropout_p)
    o = (p.to(vv.dtype) @ vv).reshape(B, H, R, Lp, Dv)
    lse = lse.masked_fill(~has, float("-inf")).reshape(B, H, R, Lp)
    o_tok = o[bi, hi, ri, dest]                                            # (B, H, R, T, Dv)
    w = torch.softmax(lse[bi, hi, ri, dest], dim=2)                        # (B, H, R, T)
    return (w[..., None].to(o_tok.dtype) * o_tok).sum(2)


# --- caches ---------------------------------------------------------------------------------

@dataclass
class LSHWindowCache:
    """Position partition: qk, v (B, H, 2c, D) and buckets (B, H, R, 2c) of the tokens from the
    start of the previous block up to ``pos`` (``n`` of them, < 2c)."""

    qk: torch.Tensor
    v: torch.Tensor
    buckets: torch.Tensor
    n: int = 0
    pos: int = 0


@dataclass
class LSHHistoryCache:
    """Bucket partition: qk, v (B, H, max_len, D) and buckets (B, H, R, max_len) of every token."""

    qk: torch.Tensor
    v: torch.Tensor
    buckets: torch.Tensor
    pos: int = 0


# --- module ---------------------------------------------------------------------------------

class LSHAttention(CausalSelfAttention):
    name = "lsh"
    param_defaults = {"n_buckets": 8, "n_hashes": 2, "chunk_size": 64, "partition": "position",
                      "seed": None, "resample": True}
    kernels = ("blocked",)
    # attnbench.decode reads this: no fixed-shape (CUDA-graph) decode step, decode stays eager.
    graph_unsupported = (
        "LSH decode is data-dependent: which keys a query sees depends on hash buckets (and, with "
        "partition='bucket', on per-bucket ranks over the whole history), and the position-partition "
        "cache shifts by a block at block boundaries; no fixed-shape decode step is implemented")

    @classmethod
    def check_params(cls, params):
        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        nb = params["n_buckets"]
        if not is_int(nb) or not (nb == 1 or (nb >= 2 and nb % 2 == 0)):
            raise ValueError(f"lsh: n_buckets={nb!r} must be 1 or an even integer >= 2")
        if not is_int(params["n_hashes"]) or params["n_hashes"] < 1:
            raise ValueError(f"lsh: n_hashes={params['n_hashes']!r} must be an integer >= 1")
        if not is_int(params["chunk_size"]) or params["chunk_size"] < 1:
            raise ValueError(f"lsh: chunk_size={params['chunk_size']!r} must be an integer >= 1")
        if params["partition"] not in PARTITIONS:
            raise ValueError(f"lsh: partition={params['partition']!r} must be one of {list(PARTITIONS)}")
        seed = params["seed"]
        if seed is not None and (not is_int(seed) or seed < 0):
            raise ValueError(f"lsh: seed={seed!r} must be None or an integer >= 0")
        if not isinstance(params["resample"], bool):
            raise ValueError(f"lsh: resample={params['resample']!r} must be true or false")

    def __init__(self, n_embd: int, n_head: int, **params):
        super().__init__(n_embd, n_head, **params)
        bias = self.params["bias"]
        self.n_buckets = self.params["n_buckets"]
        self.n_hashes = self.params["n_hashes"]
        self.chunk_size = self.params["chunk_size"]
        self.partition = self.params["partition"]
        self.resample = self.params["resample"]
        seed = self.params["seed"]
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else seed
        self._step = 0                     # training steps that drew fresh rotations
        self.c_attn = nn.Linear(n_embd, 2 * n_embd, bias=bias)             # shared qk, v
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)
        self.register_buffer("rotations", self._draw_rotations(0))
        # this training step's: rotations number hash_state[1] of the stream, so not in state_dict
        self.register_buffer("train_rotations", self._draw_rotations(0), persistent=False)
        # (seed, step) travel with state_dict, so a copy or a resumed run draws the same stream
        self.register_buffer("hash_state", torch.tensor([self.seed, 0], dtype=torch.long))

    def _draw_rotations(self, step: int, device: torch.device | str = "cpu",
                        out: torch.Tensor | None = None) -> torch.Tensor:
        """Rotations number ``step`` of this seed's stream (0 = the fixed eval/decode ones), drawn
        on ``device``: a training step draws fresh ones on the model's device, because drawing on
        the CPU and copying them over (from pageable memory: a synchronous copy) made the host
        wait for the GPU in every layer of every step.  The stream is per device (a CUDA and a
        CPU generator give different numbers for one seed); checks and resumed runs compare on
        one device.  ``out``: drawn into it (one kernel, no temporary)."""
        device = torch.device(device)
        gen = torch.Generator(device=device).manual_seed((self.seed << 32) + step)
        shape = (self.n_head, self.n_hashes, self.head_dim, self.n_buckets // 2)
        if out is not None:
            return torch.randn(shape, generator=gen, out=out)
        return torch.randn(shape, generator=gen, device=device)

    def _fill_train_rotations(self) -> None:
        """``train_rotations`` := rotations number ``self._step``, in place (a CUDA graph that
        reads the buffer sees them)."""
        with torch.no_grad():
            self._draw_rotations(self._step, self.train_rotations.device, out=self.train_rotations)

    def begin_training_step(self) -> None:
        """Draw this training step's rotations into ``train_rotations`` (in place: a CUDA graph
        that reads the buffer sees them).  Called outside the compiled forward, so the Python
        step counter never reaches dynamo (traced, it made every step recompile until the
        recompile limit on the H100).  Nothing to do in eval mode, without resampling or with
        one bucket."""
        if self.training and self.resample and self.n_buckets > 1:
            self._step += 1
            self._fill_train_rotations()

    def current_rotations(self, cached: bool) -> torch.Tensor:
        if self.training and self.resample and not cached and self.n_buckets > 1:
            return self.train_rotations
        return self.rotations

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # a fresh CPU snapshot: no device sync per forward, and earlier state_dicts stay as taken
        destination[prefix + "hash_state"] = torch.tensor([self.seed, self._step], dtype=torch.long)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "hash_state"
        if key in state_dict:                           # keep the Python mirror in step
            self.seed, self._step = (int(v) for v in state_dict[key].tolist())
            self._fill_train_rotations()                  # the loaded step's rotations
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _core(self, qk, v, buckets, dropout_p):
        if self.impl == "reference":
            self.kernel = "reference:dense"
            return lsh_dense(qk, v, buckets, self.n_buckets, self.chunk_size, self.partition)
        if self.partition == "position":
            self.kernel = "torch:position-blocks"
            return lsh_position_blocks(qk, v, buckets, self.chunk_size, dropout_p, self.training)
        self.kernel = "torch:bucket-sorted"
        return lsh_bucket_sorted(qk, v, buckets, self.n_buckets, self.chunk_size, dropout_p, self.training)

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        qk, v = self.c_attn(x).split(self.n_embd, dim=2)
        qk, v = split_heads(qk, self.n_head), split_heads(v, self.n_head)  # (B, H, T, D)
        buckets = hash_buckets(qk, self.current_rotations(cache is not None), self.n_buckets)
        p = self.dropout if self.training else 0.0
        if cache is None:
            y = self._core(qk, v, buckets, p)
        elif isinstance(cache, LSHWindowCache):
            y = self._decode_window(qk, v, buckets, cache, p)
        else:
            y = self._decode_history(qk, v, buckets, cache, p)
        return self.resid_dropout(self.c_proj(merge_heads(y)))

    def _decode_window(self, qk, v, buckets, cache: LSHWindowCache, p):
        c, n_new, m = self.chunk_size, qk.shape[2], cache.n
        run_qk = torch.cat([cache.qk[:, :, :m].to(qk.dtype), qk], dim=2)   # starts at a block boundary
        run_v = torch.cat([cache.v[:, :, :m].to(v.dtype), v], dim=2)
        run_b = torch.cat([cache.buckets[..., :m], buckets], dim=-1)
        y = self._core(run_qk, run_v, run_b, p)[:, :, m:]
        end = cache.pos + n_new
        keep = end - c * max(end // c - 1, 0)
        cache.qk[:, :, :keep] = run_qk[:, :, -keep:]
        cache.v[:, :, :keep] = run_v[:, :, -keep:]
        cache.buckets[..., :keep] = run_b[..., -keep:]
        cache.n, cache.pos = keep, end
        return y

    def _decode_history(self, qk, v, buckets, cache: LSHHistoryCache, p):
        start, end = cache.pos, cache.pos + qk.shape[2]
        if end > cache.qk.shape[2]:
            raise ValueError(f"LSH cache overflow: {end} tokens > max_len={cache.qk.shape[2]}")
        cache.qk[:, :, start:end] = qk
        cache.v[:, :, start:end] = v
        cache.buckets[..., start:end] = buckets
        cache.pos = end
        all_qk, all_v, all_b = cache.qk[:, :, :end], cache.v[:, :, :end], cache.buckets[..., :end]
        if self.impl == "reference" or end - start <= 2 * self.chunk_size:
            self.kernel = "reference:dense-rows" if self.impl == "reference" else "torch:dense-rows"
            return lsh_dense(all_qk, all_v, all_b, self.n_buckets, self.chunk_size, self.partition,
                             q_start=start)
        return self._core(all_qk, all_v, all_b, p)[:, :, start:]

    # --- cache / cost -------------------------------------------------------------------
    def init_cache(self, batch_size, max_len, device, dtype):
        H, D, R = self.n_head, self.head_dim, self.n_hashes
        L = 2 * self.chunk_size if self.partition == "position" else max_len
        kw = dict(device=device, dtype=dtype)
        cls = LSHWindowCache if self.partition == "position" else LSHHistoryCache
        return cls(qk=torch.zeros(batch_size, H, L, D, **kw), v=torch.zeros(batch_size, H, L, D, **kw),
                   buckets=torch.zeros(batch_size, H, R, L, dtype=torch.long, device=device))

    def _bytes_per_cached_token(self, dtype) -> int:
        return self.n_head * (2 * self.head_dim * dtype_bytes(dtype) + self.n_hashes * BUCKET_BYTES)

    def cache_bytes_per_token(self, dtype=torch.bfloat16):
        return 0 if self.partition == "position" else self._bytes_per_cached_token(dtype)

    def cache_bytes(self, batch_size, seq_len, dtype=torch.bfloat16):
        if self.partition == "position":      # fixed buffer of 2 * chunk_size tokens
            return batch_size * 2 * self.chunk_size * self._bytes_per_cached_token(dtype)
        return batch_size * seq_len * self._bytes_per_cached_token(dtype)

    def flops_forward(self, batch_size, seq_len, causal_halved=True):
        """Projections (qk+v: 2*n_embd outputs, c_proj) + hashing + the blocked core.

        Hashing: 2*T*D*n_hashes*(n_buckets/2) per head.  Core per head, scores and values
        ``2 * pairs * 2D``:
        * position: one score matrix for all rounds.  Executed pairs ceil(T/c)*c*2c; with
          ``causal_halved`` the pairs with s <= t in the query's block or the previous one.
        * bucket: per round, Lp/c chunks of c x 2c with Lp = c*ceil((T + n_buckets*(c-1))/c)
          slots (executed); ``causal_halved`` counts ceil(T/c) chunks of c*c + c(c+1)/2 pairs
          per round (a bound: every chunk with a full chunk before it).
        """
        T, D, c, R, nb = seq_len, self.head_dim, self.chunk_size, self.n_hashes, self.n_buckets
        nblk = math.ceil(T / c)
        if self.partition == "position":
            if causal_halved:     # block j has L_j queries; query i sees i+1 (+ c if j >= 1) keys
                lens = [min(c, T - j * c) for j in range(nblk)]
                pairs = sum(L * (L + 1) // 2 + (c * L if j else 0) for j, L in enumerate(lens))
            else:
                pairs = nblk * c * 2 * c
        else:
            Lp = math.ceil((T + nb * (c - 1)) / c) * c
            pairs = R * (nblk * (c * c + c * (c + 1) // 2) if causal_halved else Lp * 2 * c)
        hashing = 2 * T * D * R * (nb // 2) if nb > 1 else 0
        per_head = 2 * pairs * (D + D) + hashing
        tokens = batch_size * seq_len
        proj = 2 * tokens * self.n_embd * (2 * self.n_embd) + 2 * tokens * self.n_embd * self.n_embd
        return proj + batch_size * self.n_head * per_head

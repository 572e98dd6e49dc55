"""Config errors through the Snakemake CLI, where users meet them (issue 22, items 2, 3, 7, 9):
YAML 1.1 numbers are accepted, and a bad config or user class ends Snakemake's output with one
``invalid config: <key>: <problem>`` line -- no schema dump, no traceback -- before any job."""
from __future__ import annotations

import pytest

from pipeline_utils import copy_repo, snakemake

pytestmark = pytest.mark.slow   # ~15 s: each dry run imports torch and builds the smoke DAG

# User classes in the run folder (the Snakefile's folder is on sys.path): causal only up to 16
# tokens (the example), and one whose forward takes no cache.
USER_ATTENTION = '''
import torch.nn as nn
from attention.base import KVCache, causal_mask, dense_attention, merge_heads, split_heads


class Causal(nn.Module):
    causal_up_to = None

    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_embd, self.n_head, self.kernel = n_embd, n_head, "not-run"
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)

    def forward(self, x, cache=None):
        q, k, v = (split_heads(t, self.n_head) for t in self.c_attn(x).split(self.n_embd, dim=2))
        if cache is not None:
            k, v = cache.append(k, v)
        is_causal = self.causal_up_to is None or x.shape[1] <= self.causal_up_to
        self.kernel = "user:dense"
        mask = causal_mask(q.shape[2], k.shape[2], x.device) if is_causal else None
        return self.c_proj(merge_heads(dense_attention(q, k, v, mask)))

    def init_cache(self, batch_size, max_len, device, dtype):
        return KVCache.empty(batch_size, self.n_head, max_len, self.n_embd // self.n_head, device, dtype)

    cache_bytes_per_token = 0

    def cache_bytes(self, batch_size, seq_len, dtype=None):
        return 0


class ShortCausal(Causal):
    causal_up_to = 16


class NoCache(Causal):
    def forward(self, x):
        return super().forward(x)
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("repo"))
    (work / "user_attention.py").write_text(USER_ATTENTION)
    return work


def dry_run(work, name: str, text: str):
    """``snakemake -n -p`` with the smoke preset plus ``text`` (YAML, as a user writes it)."""
    (work / "config" / name).write_text(text)
    proc = snakemake(work, "-n", "-p", "--cores", "1", "--configfile", "config/smoke.yaml", f"config/{name}",
                     timeout=180)
    return proc, proc.stdout + proc.stderr


def test_yaml_exponent_numbers_reach_the_jobs_as_numbers(work):
    proc, out = dry_run(work, "numbers.yaml", "train: {lr: 1e-3, min_lr: 6e-5, grad_clip: 1.0e6}\n"
                                               "variants: {linear: {eps: 1e-6, chunk_size: 32}}\n")
    assert proc.returncode == 0, out[-3000:]
    assert '"lr": 0.001' in out and '"min_lr": 6e-05' in out and '"grad_clip": 1000000.0' in out
    assert '"eps": 1e-06' in out


@pytest.mark.parametrize("text,last_line", [
    ("train: {steps: many}\n",
     "invalid config: train.steps: 'many' is not of type 'integer' (schema: config/schema.yaml)"),
    ("train: {lr: -2e-5}\n",
     "invalid config: train.lr: -2e-05 is less than or equal to the minimum of 0 (schema: config/schema.yaml)"),
    ("variants: {mine: {class: 'user_attention:ShortCausal'}}\n",
     "invalid config: variants.mine.class: attention variant 'mine' (user_attention.ShortCausal): leaks the "
     "future at T=64 in eval mode: output position 0 changed by"),
    ("variants: {mine: {class: 'user_attention:NoCache'}}\n",
     "invalid config: variants.mine.class: attention variant 'mine' (user_attention.NoCache): forward(x, "
     "cache=cache) with x of shape (2, 5, 32) raised TypeError: NoCache.forward() got an unexpected keyword "
     "argument 'cache'; the contract: module(x_new, cache=cache)"),
])
def test_a_bad_config_ends_in_one_line(work, text, last_line):
    proc, out = dry_run(work, "bad.yaml", text)
    lines = out.strip().splitlines()
    assert proc.returncode == 1
    assert lines[-1].startswith(last_line), out[-3000:]
    assert len(lines) <= 3 and "Traceback" not in out and "description" not in out, out[-3000:]
    for folder in ("results", "data", "logs"):
        assert not (work / folder).exists(), f"{folder}/ written by a refused run"

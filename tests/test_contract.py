"""The attention contract as the config check enforces it (issue 22, items 2-4) and YAML
numbers (item 7) at the settings level.  Through the Snakemake CLI: tests/test_config_cli.py.

The user classes below are importable as ``test_contract:<Name>`` (tests/ is on sys.path), so
they also go through ``settings.validate`` exactly as a config's ``class:`` entry does.
"""
from __future__ import annotations

import copy
import time
import warnings

import pytest
import torch
import torch.nn as nn
import yaml

import attention
from attention.base import (CausalSelfAttention, FusedQKVAttention, KVCache, causal_mask, dense_attention,
                            flops_forward_of, merge_heads, split_heads)
from attention.contract import LENGTHS, TINY, check_class
from attnbench import settings, sweep
from pipeline_utils import ROOT, load_yaml

SMOKE = load_yaml(ROOT / "config" / "smoke.yaml")


class Minimal(nn.Module):
    """What a user class needs and no more: a plain ``nn.Module``, ``cache_bytes_per_token`` as
    a property, no ``flops_forward``.  The params plant the bugs the check must catch."""

    def __init__(self, n_embd, n_head, causal_up_to=None, leak_in_training=False, p_drop=0.0):
        super().__init__()
        self.n_embd, self.n_head = n_embd, n_head
        self.causal_up_to, self.leak_in_training, self.p_drop = causal_up_to, leak_in_training, p_drop
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.kernel = "not-run"

    def forward(self, x, cache=None):
        T = x.shape[1]
        q, k, v = (split_heads(t, self.n_head) for t in self.c_attn(x).split(self.n_embd, dim=2))
        if cache is not None:
            k, v = cache.append(k, v)
        leak = (self.causal_up_to is not None and T > self.causal_up_to) or (self.leak_in_training and self.training)
        mask = None if leak else causal_mask(T, k.shape[2], x.device)
        self.kernel = "test:dense"
        return self.c_proj(merge_heads(dense_attention(q, k, v, mask, dropout_p=self.p_drop, training=self.training)))

    def init_cache(self, batch_size, max_len, device, dtype):
        return KVCache.empty(batch_size, self.n_head, max_len, self.n_embd // self.n_head, device, dtype)

    @property
    def cache_bytes_per_token(self):
        return 2 * self.n_embd * 4

    def cache_bytes(self, batch_size, seq_len, dtype=torch.bfloat16):
        return batch_size * seq_len * self.cache_bytes_per_token


class NoCacheKwarg(Minimal):
    def forward(self, x):
        return super().forward(x)


class NoInitCache(FusedQKVAttention):
    """A registry-style class that forgot ``init_cache``: the base's raises NotImplementedError."""

    name = "no_init_cache"
    init_cache = CausalSelfAttention.init_cache

    def forward(self, x, cache=None):
        q, k, v = self.project_qkv(x, cache)
        self.kernel = "test:dense"
        return self.project_out(dense_attention(q, k, v, causal_mask(q.shape[2], k.shape[2], x.device)))


class NoFlops(NoInitCache):
    """Registry-style, everything but ``flops_forward`` (the base's raises NotImplementedError)."""

    name = "no_flops"
    init_cache = FusedQKVAttention.init_cache
    flops_forward = CausalSelfAttention.flops_forward


class BrokenFlops(Minimal):
    def flops_forward(self, batch_size, seq_len):  # no causal_halved
        return 0


class WrongShape(Minimal):
    def forward(self, x, cache=None):
        return super().forward(x, cache)[..., : self.n_embd // 2]


class OneArgInit(Minimal):
    def __init__(self, n_embd):
        super().__init__(n_embd, 4)


class IgnoresCache(Minimal):
    def forward(self, x, cache=None):
        return super().forward(x)


class NegativeCache(Minimal):
    cache_bytes_per_token = -1


class NoCacheAtAll(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.kernel = "identity"

    def forward(self, x, cache=None):
        return x


def config_with(**variants):
    cfg = copy.deepcopy(SMOKE)
    cfg["variants"] = variants
    return cfg


def config_error(spec: str, **params) -> str:
    with pytest.raises(settings.ConfigError) as err:
        settings.validate(config_with(mine={"class": spec, **params}))
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# --- item 2: causality by perturbation ------------------------------------------------------

def test_builtins_pass_the_check_quickly():
    """All nine built-ins with the smoke preset's params, as a config would check them."""
    t0 = time.perf_counter()
    model = SMOKE["model"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(attention.BUILTIN):
            check_class(name, attention.VARIANTS[name], dict(SMOKE["variants"].get(name) or {}),
                        shapes=(TINY, (model["n_embd"], model["n_head"])))
    assert time.perf_counter() - t0 < 10, "the class check should take seconds at most for all built-ins"


def test_user_class_with_property_and_without_flops_is_accepted():
    cfg = settings.validate(config_with(mine={"class": "test_contract:Minimal"}))
    assert cfg["variants"]["mine"]["class"] == "test_contract:Minimal"
    check_class("dropout", Minimal, {"p_drop": 0.5})  # random masks: the same stream for both inputs


@pytest.mark.parametrize("params,fragment", [
    ({"causal_up_to": 16}, "leaks the future at T=64 in eval mode"),    # the issue's `is_causal = T <= 16`
    ({"causal_up_to": 128}, "leaks the future at T=300 in eval mode"),   # past any chunk of 128
    ({"leak_in_training": True}, "leaks the future at T=7 in training mode"),
])
def test_a_class_leaking_the_future_is_refused(params, fragment):
    with pytest.raises(ValueError, match=fragment) as err:
        check_class("mine", Minimal, params)
    assert "output position t depends only on inputs at positions <= t" in str(err.value)


def test_lengths_stop_at_the_longest_input_of_the_run():
    """A class is tried no longer than the run will use it (model context, sweep lengths)."""
    assert max(LENGTHS) == 300
    check_class("mine", Minimal, {"causal_up_to": 256}, max_len=256)
    with pytest.raises(ValueError, match="T=300"):
        check_class("mine", Minimal, {"causal_up_to": 256})
    cfg = config_with(mine={"class": "test_contract:Minimal", "causal_up_to": 256})
    settings.validate(cfg)  # smoke: block_size 256, longest sweep length 256
    cfg["sweep"]["seq_lens"] = [256, 512]
    with pytest.raises(settings.ConfigError, match=r"variants\.mine\.class: .*leaks the future at T=300"):
        settings.validate(cfg)


# --- item 3: violations are one-line config errors -----------------------------------------

@pytest.mark.parametrize("spec,fragments", [
    ("NoCacheKwarg", ["forward(x, cache=cache) with x of shape (2, 5, 32) raised TypeError",
                      "the contract: module(x_new, cache=cache) returns the outputs for the new positions"]),
    ("NoInitCache", ["init_cache(2, 64, cpu, torch.float32) raised NotImplementedError; the contract: "
                     "init_cache(batch_size, max_len, device, dtype) returns the cache"]),
    ("WrongShape", ["forward(x) with x of shape (2, 7, 32) returned (2, 7, 16)",
                    "the contract: module(x) maps x of shape (B, T, n_embd) to a tensor of the same shape"]),
    ("OneArgInit", ["cls(n_embd=128, n_head=4, **{}) raised TypeError",  # the model's shape, tried last
                    "the contract: cls(n_embd, n_head, **params) builds the module"]),
    ("IgnoresCache", ["token-by-token decoding with init_cache() differs from the full forward"]),
    ("NegativeCache", ["cache_bytes_per_token gave -1; the contract: cache_bytes_per_token(dtype) returns"]),
    ("NoCacheAtAll", ["has no init_cache; the contract: init_cache(batch_size, max_len, device, dtype)"]),
    ("BrokenFlops", ["flops_forward(2, 7, causal_halved=True) raised TypeError",
                     "or is left out (optional; so is raising NotImplementedError)"]),
])
def test_contract_violations_are_one_line_config_errors(spec, fragments):
    msg = config_error(f"test_contract:{spec}")
    assert msg.startswith(f"variants.mine.class: attention variant 'mine' (test_contract.{spec}): "), msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_not_a_module_class_is_a_config_error():
    assert config_error("test_contract:SMOKE") == ("variants.mine.class: attention variant 'mine': "
                                                   "a dict object is not a torch.nn.Module subclass")


def test_a_module_failing_on_import_is_a_config_error(tmp_path, monkeypatch):
    (tmp_path / "broken_attn.py").write_text("import torch\nSCALE = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    msg = config_error("broken_attn:Attention")
    assert msg == "variants.mine.class: importing 'broken_attn:Attention' raised ZeroDivisionError: division by zero"


def test_params_that_fit_only_the_model_shape_are_checked_at_it():
    """gqa's n_kv_head=3 cannot divide the check's 4 heads; the config's 12 heads it does."""
    cfg = config_with(mine={"class": "attention.gqa:GroupedQueryAttention", "n_kv_head": 3})
    cfg["model"].update(n_head=12, n_embd=96)
    settings.validate(cfg)
    cfg["variants"]["mine"]["n_kv_head"] = 5
    with pytest.raises(settings.ConfigError, match="n_kv_head=5"):
        settings.validate(cfg)


# --- item 4: the documented contract and the check agree ------------------------------------

def test_flops_forward_is_optional_everywhere(tmp_path):
    check_class("mine", NoFlops, {})
    flops, why = flops_forward_of(NoFlops(32, 4), 2, 8)
    assert flops is None and "flops_forward is not implemented" in why
    flops, why = flops_forward_of(Minimal(32, 4), 2, 8)
    assert flops is None and "defines no flops_forward" in why
    # the sweep records TFLOP/s as unavailable instead of crashing
    cfg = settings.validate(config_with(mine={"class": "test_contract:NoFlops"}))
    cfg["sweep"].update(seq_lens=[16, 32], tokens=64, repeats=1, warmup=0)
    cfg["measure"].update(nvml=False)
    res = sweep.run(settings.stage_settings(cfg, "sweep", "mine"), tmp_path / "sweep.json")
    assert "NoFlops.flops_forward is not implemented" in res["unavailable"]["points.tflops"]
    timed = [p[mode] for p in res["points"] for mode in ("forward", "forward_backward") if mode in p]
    assert timed and all(m["status"] == "ok" and m["tflops"] is None for m in timed)


def test_cache_bytes_per_token_may_be_a_method_or_a_number():
    assert attention.base.cache_bytes_per_token_of(Minimal(32, 4), torch.float32) == 256
    gqa = attention.build("gqa", 32, 4, n_kv_head=2)
    assert attention.base.cache_bytes_per_token_of(gqa, torch.float32) == gqa.cache_bytes_per_token(torch.float32)

    class PropertyOnBase(NoFlops):
        cache_bytes_per_token = 7

    assert PropertyOnBase(32, 4).cache_bytes(2, 3) == 42  # the base's cache_bytes reads either form


# --- item 7: YAML 1.1 numbers ----------------------------------------------------------------

def test_numbers_yaml_reads_as_strings_are_numbers_where_the_schema_says_so():
    raw = yaml.safe_load("train: {lr: 1e-3, min_lr: 6e-5, grad_clip: 1.0e6, steps: 1e2, warmup_steps: 1.0e+1}\n"
                         "run_name: 1e3\nmeasure: {peak_tflops: 9.89E2}\n"
                         "variants: {linear: {eps: 1e-6, chunk_size: 32}}\n")
    assert raw["train"]["lr"] == "1e-3" and raw["run_name"] == "1e3"   # what YAML 1.1 gives
    cfg = copy.deepcopy(SMOKE)
    for section in ("train", "measure"):
        cfg[section].update(raw[section])
    cfg["variants"] = raw["variants"]
    cfg["run_name"] = raw["run_name"]
    out = settings.validate(cfg)
    t = out["train"]
    assert (t["lr"], t["min_lr"], t["grad_clip"]) == (1e-3, 6e-5, 1e6) and isinstance(t["lr"], float)
    assert (t["steps"], t["warmup_steps"]) == (100, 10) and all(type(t[k]) is int for k in ("steps", "warmup_steps"))
    assert out["measure"]["peak_tflops"] == 989.0
    assert out["variants"]["linear"] == {"eps": 1e-6, "chunk_size": 32}
    assert out["run_name"] == "1e3"   # a string key stays a string
    assert cfg["train"]["lr"] == "1e-3"   # the caller's config is left as it was


@pytest.mark.parametrize("key,value,message", [
    ("lr", "-2e-5", "train.lr: -2e-05 is less than or equal to the minimum of 0"),
    ("steps", "1.5e0", "train.steps: 1.5 is not of type 'integer'"),
    ("lr", "1e-3x", "train.lr: '1e-3x' is not of type 'number'"),
])
def test_numbers_are_then_validated(key, value, message):
    cfg = copy.deepcopy(SMOKE)
    cfg["train"][key] = value
    with pytest.raises(settings.ConfigError) as err:
        settings.validate(cfg)
    assert str(err.value) == f"{message} (schema: config/schema.yaml)"


def test_schema_errors_are_one_line_naming_key_allowed_keys_and_others():
    cfg = copy.deepcopy(SMOKE)
    cfg["train"].update(stepz=3, steps="many")
    cfg["device"] = "tpu"
    with pytest.raises(settings.ConfigError) as err:
        settings.validate(cfg)
    assert str(err.value) == ("device: 'tpu' is not one of ['auto', 'cpu', 'cuda']; also invalid: train, train.steps "
                              "(schema: config/schema.yaml)")
    del cfg["device"]
    cfg["train"]["steps"] = 5
    with pytest.raises(settings.ConfigError, match=r"^train: Additional properties are not allowed "
                                                   r"\('stepz' was unexpected\); allowed: batch_size, beta1, "
                                                   r".*weight_decay, window_seconds \(schema"):
        settings.validate(cfg)

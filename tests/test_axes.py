"""Model size and training length as DAG axes (config ``models``, ``train.seq_lens``)."""
import copy
import csv
import json
import re

import pytest

from attnbench import settings
from attnbench.report.scaling import attention_flop_share, build_scaling
from pipeline_utils import ROOT, copy_repo, load_yaml, snakemake, write_config

SMOKE = load_yaml(ROOT / "config" / "smoke.yaml")
SIZES = {"tiny": {"n_layer": 2, "n_head": 4, "n_embd": 128}, "wide": {"n_layer": 2, "n_head": 4, "n_embd": 192,
                                                                  "batch_size": 3}}


def axes_config(**train) -> dict:
    cfg = copy.deepcopy(SMOKE)
    cfg["models"] = copy.deepcopy(SIZES)
    cfg["train"].update(seq_lens=[32, 64], **train)
    cfg["variants"] = {"baseline": {}, "gqa": {"n_kv_head": 2}}
    return cfg


def test_shapes_are_size_by_length_and_each_keeps_tokens_per_step():
    cfg = settings.validate(axes_config())
    assert settings.shapes(cfg) == ["tiny-T32", "tiny-T64", "wide-T32", "wide-T64"]
    tokens = SMOKE["train"]["batch_size"] * SMOKE["train"]["seq_len"]
    t64 = settings.apply_shape(cfg, "tiny-T64")
    assert (t64["model"]["n_embd"], t64["train"]["seq_len"], t64["train"]["batch_size"]) == (128, 64, tokens // 64)
    wide = settings.apply_shape(cfg, "wide-T32")
    assert (wide["model"]["n_embd"], wide["train"]["batch_size"]) == (192, 3)  # the size's own batch
    # only one axis configured: the other is left out of the name
    only_len = copy.deepcopy(SMOKE)
    only_len["train"]["seq_lens"] = [32, 64]
    assert settings.shapes(settings.validate(only_len)) == ["T32", "T64"]
    assert settings.shapes(settings.validate(copy.deepcopy(SMOKE))) == [None]


def test_each_job_gets_its_shape_and_runs_without_axes_keep_their_settings():
    cfg = settings.validate(axes_config())
    s = settings.stage_settings(cfg, "train", "gqa", seed=1337, shape="wide-T64")
    assert s["shape"] == "wide-T64" and s["model"]["n_embd"] == 192 and s["train"]["seq_len"] == 64
    plain = settings.validate(copy.deepcopy(SMOKE))
    assert "shape" not in settings.stage_settings(plain, "train", "sdpa")  # no axis: results stay current
    with pytest.raises(settings.ConfigError, match="not one of the config's shapes"):
        settings.apply_shape(cfg, "huge-T32")


def test_a_shape_that_does_not_fit_is_named_in_the_error():
    cfg = axes_config()
    cfg["train"]["seq_lens"] = [32, 4096]
    with pytest.raises(settings.ConfigError, match=r"^shape tiny-T4096: train.seq_len=4096 exceeds data.max_len"):
        settings.validate(cfg)
    cfg = axes_config()
    cfg["models"]["odd"] = {"n_layer": 1, "n_head": 5, "n_embd": 128}
    with pytest.raises(settings.ConfigError, match=r"shape odd-T32: model.n_head=5 must divide"):
        settings.validate(cfg)


def test_attention_share_of_gpt2_flops_grows_with_length():
    """GPT-2 124M: about 4 % at 512 tokens, 13 % at 2k, nearly 40 % at 8k (the issue's figures)."""
    m = {"n_layer": 12, "n_embd": 768, "vocab_size": 50304}
    assert [round(attention_flop_share(m, T), 2) for T in (512, 2048, 8192)] == [0.04, 0.13, 0.38]


def test_dag_runs_every_variant_at_every_shape_and_one_scaling_page(tmp_path):
    work = copy_repo(tmp_path)
    write_config(work, "axes.yaml", axes_config())
    proc = snakemake(work, "-n", "--cores", "1", "--configfile", "config/axes.yaml", timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    trains = set(re.findall(r"output: results/train/([\w.-]+)/(\w+)/seed(\d+)/metrics.json", out))
    assert {(s, v) for s, v, _ in trains} == {(s, v) for s in ("tiny-T32", "tiny-T64", "wide-T32", "wide-T64")
                                              for v in ("baseline", "gqa")}
    assert len(re.findall(r"output: results/report/[\w.-]+/index.html", out)) == 4
    # the sweep times the module alone: once per size, whatever the training lengths
    sweeps = set(re.findall(r"output: results/sweep/([\w.-]+)/(\w+)/sweep.json", out))
    assert sweeps == {(z, v) for z in ("tiny", "wide") for v in ("baseline", "gqa")}
    assert len(re.findall(r"rule scaling:", out)) == 1


def _shape_files(tmp_path, name, seq_len, model, rows):
    d = tmp_path / name
    d.mkdir()
    cols = ["variant", "n", "params_total"] + [f"{m}{s}" for m in ("tokens_per_s", "gpu_j_per_token", "val_loss")
                                                for s in ("", "_ci95_low", "_ci95_high")]
    with open(d / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    cfg = {"model": {**model, "vocab_size": 50304}, "train": {"seq_len": seq_len}}
    (d / "results.json").write_text(json.dumps({"config": cfg}))
    return d / "summary.csv", d / "results.json"


def test_scaling_page_sets_shapes_side_by_side_with_intervals(tmp_path):
    small = {"n_layer": 12, "n_head": 12, "n_embd": 768}
    medium = {"n_layer": 24, "n_head": 16, "n_embd": 1024}
    row = lambda v, p, tps, lo, hi: {"variant": v, "n": 3, "params_total": p, "tokens_per_s": tps,  # noqa: E731
                                     "tokens_per_s_ci95_low": lo, "tokens_per_s_ci95_high": hi,
                                     "gpu_j_per_token": 0.0017, "val_loss": 5.3}
    files = [_shape_files(tmp_path, "124M-T512", 512, small, [row("sdpa", 124e6, 330e3, 320e3, 340e3),
                                                                  row("lsh", 124e6, 165e3, 160e3, 170e3)]),
             _shape_files(tmp_path, "350M-T512", 512, medium, [row("sdpa", 354e6, 120e3, 118e3, 122e3),
                                                                   row("lsh", 354e6, 70e3, 68e3, 72e3)])]
    out = tmp_path / "out"
    page = build_scaling(["124M-T512", "350M-T512"], [f[0] for f in files], [f[1] for f in files], out)
    html = (out / "index.html").read_text()
    assert 'href="124M-T512/index.html"' in html and "3.7 %" in html      # attention share at 124M, T=512
    assert "95 % interval 320,000–340,000 tok/s" in html
    assert '320,000–340,000 tok/s">330,000 <span class="ci">[320,000, 340,000]</span></td>' in html  # shown, not hover only
    size_plot = next(p for p in page["plots"] if p.svg and p.title == "Train tokens/s vs model size, T = 512")
    ticks = re.findall(r"<text[^>]*>([\d,.]+)</text>", size_plot.svg)  # tick labels (SVG text, fonttype none)
    assert "model parameters (millions)" in size_plot.svg and "100" in ticks and "300" in ticks, ticks
    assert not any("," in t and len(t) > 7 for t in ticks), ticks  # no 100,000,000 labels running together
    loss_plot = next(p for p in page["plots"] if p.svg and p.title.startswith("Val loss vs model size"))
    assert "Val loss ()" not in loss_plot.svg and "Val loss" in loss_plot.svg
    assert any(p.svg and "vs model size" in p.title for p in page["plots"])
    assert "object at 0x" not in html
    rows = list(csv.DictReader(open(out / "scaling.csv")))
    assert {(r["shape"], r["variant"]) for r in rows if r["metric"] == "tokens_per_s"} == {
        ("124M-T512", "sdpa"), ("124M-T512", "lsh"), ("350M-T512", "sdpa"), ("350M-T512", "lsh")}


def test_every_variant_is_checked_at_every_size():
    cfg = axes_config()
    cfg["models"]["six"] = {"n_layer": 1, "n_head": 6, "n_embd": 192}   # 2 KV heads divide 4 and 6 heads
    settings.validate(copy.deepcopy(cfg))
    cfg["variants"]["gqa"] = {"n_kv_head": 4}                           # 4 does not divide 6
    with pytest.raises(settings.ConfigError, match=r"^shape six-T32: variants.gqa"):
        settings.validate(cfg)


def test_a_size_may_train_at_its_own_lengths():
    """The campaign's shapes: 124M at 512 and 2048, 350M at 512 only (not the full product)."""
    cfg = axes_config()
    cfg["models"]["wide"]["seq_lens"] = [32]
    cfg = settings.validate(cfg)
    assert settings.shapes(cfg) == ["tiny-T32", "tiny-T64", "wide-T32"]
    assert settings.apply_shape(cfg, "wide-T32")["model"].get("seq_lens") is None  # not a model key


def test_a_sweep_records_its_size_only():
    """The module-alone sweep does not depend on the training length: both lengths of one size
    give the same sweep settings (one job, no rerun when a length is added)."""
    cfg = settings.validate(axes_config())
    short, long = (settings.stage_settings(cfg, "sweep", "gqa", shape=s) for s in ("tiny-T32", "tiny-T64"))
    assert short == long and short["shape"] == "tiny"

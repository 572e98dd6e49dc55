"""Bad configs fail before any job runs, naming the key; nothing is written."""
import copy

import pytest

from attnbench import settings
from pipeline_utils import ROOT, copy_repo, load_yaml, snakemake, write_config

SMOKE = load_yaml(ROOT / "config" / "smoke.yaml")


def bad(mutate):
    cfg = copy.deepcopy(SMOKE)
    mutate(cfg)
    return cfg


CASES = {
    "unknown top-level key": (lambda c: c.update(learning_rate=1), "learning_rate"),
    "unknown nested key": (lambda c: c["train"].update(stepz=3), "stepz"),
    "wrong type": (lambda c: c["train"].update(steps="many"), "steps"),
    "zero steps": (lambda c: c["train"].update(steps=0), "steps"),
    "zero batch": (lambda c: c["train"].update(batch_size=0), "batch_size"),
    "unknown variant": (lambda c: c["variants"].update(nystrom={}), "nystrom"),
    "n_kv_head not dividing": (lambda c: c["variants"].update(gqa={"n_kv_head": 3}), "n_kv_head"),
    "window < 1": (lambda c: c["variants"].update(sliding_window={"window": 0}), "window"),
    "unknown variant param": (lambda c: c["variants"].update(sdpa={"flavour": 1}), "flavour"),
    "max_len above context": (lambda c: c["data"].update(max_len=100000), "max_len"),
    "n_head not dividing n_embd": (lambda c: c["model"].update(n_head=5), "n_head"),
    "bad class spec": (lambda c: c["variants"].update(mine={"class": "nopkg.nomod:Nope"}), "nopkg"),
    "bad device": (lambda c: c.update(device="tpu"), "device"),
    "min_lr above lr": (lambda c: c["train"].update(lr=1e-4, min_lr=1e-3), "min_lr"),
    # an energy window under 1 s never gives a figure: the error names the allowed values
    "sweep energy window under 1 s": (lambda c: c["sweep"].update(energy_seconds=0.5),
                                      "sweep.energy_seconds: 0.5 is not allowed; allowed: 0 or 1 to 600"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_names_the_key(case):
    mutate, key = CASES[case]
    with pytest.raises(settings.ConfigError) as err:
        settings.validate(bad(mutate))
    assert key in str(err.value)


def test_smoke_and_presets_are_valid():
    for name in ("config.yaml", "smoke.yaml", "paper.yaml", "campaign.yaml", "throughput.yaml"):
        cfg = settings.validate(load_yaml(ROOT / "config" / name))
        assert cfg["train"]["steps"] > cfg["train"]["warmup_steps"]


def test_schema_documents_every_key():
    schema = settings.load_schema()

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{key} has no description"
            assert "type" in sub, f"{path}{key} has no type"
            walk(sub, f"{path}{key}.")

    walk(schema, "")


@pytest.mark.parametrize("case", ["unknown top-level key", "wrong type", "unknown variant", "n_kv_head not dividing"])
def test_snakemake_refuses_bad_config_before_any_job(tmp_path, case):
    work = copy_repo(tmp_path)
    mutate, key = CASES[case]
    path = write_config(work, "bad.yaml", bad(mutate))
    proc = snakemake(work, "--cores", "1", "--configfile", str(path), timeout=120)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
    for out in ("results", "data", "logs"):
        assert not (work / out).exists(), f"{out}/ written by a refused run"


def test_snakemake_lint_is_clean(tmp_path):
    work = copy_repo(tmp_path)
    proc = snakemake(work, "--lint", "--configfile", "config/smoke.yaml", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations" in out, out[-3000:]

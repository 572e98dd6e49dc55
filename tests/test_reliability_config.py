"""Every config key has a type, a range (or a closed set of values) and a description; the
checkpoint keys are validated like the others.  (Key-naming errors and impossible
combinations: tests/test_config.py.)"""
from __future__ import annotations

import copy

import pytest
from pipeline_utils import ROOT, load_yaml

from attnbench import settings

SMOKE = load_yaml(ROOT / "config" / "smoke.yaml")


def leaves(node, path=""):
    for key, sub in node.get("properties", {}).items():
        yield f"{path}{key}", sub
        yield from leaves(sub, f"{path}{key}.")


def bounded(spec: dict) -> list[str]:
    """What ``spec`` (one key, or an array's items) lacks to be a closed range."""
    types = spec.get("type") if isinstance(spec.get("type"), list) else [spec.get("type")]
    missing = []
    if "integer" in types or "number" in types:
        if not {"minimum", "exclusiveMinimum"} & spec.keys():
            missing.append("a lower bound")
        if not {"maximum", "exclusiveMaximum"} & spec.keys():
            missing.append("an upper bound")
    if "string" in types and not {"enum", "pattern"} & spec.keys():
        missing.append("an enum or pattern")
    if "array" in types:
        if "maxItems" not in spec:
            missing.append("maxItems")
        missing += [f"items: {m}" for m in bounded(spec.get("items", {}))]
    return missing


def test_every_key_has_type_range_and_description():
    problems = []
    for key, spec in leaves(settings.load_schema()):
        if "type" not in spec:
            problems.append(f"{key}: no type")
        if not str(spec.get("description", "")).strip():
            problems.append(f"{key}: no description")
        problems += [f"{key}: no {m}" for m in bounded(spec)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("key,value", [("checkpoint_every", -1), ("checkpoint_every", 2.5), ("resume", "yes")])
def test_checkpoint_keys_are_validated(key, value):
    cfg = copy.deepcopy(SMOKE)
    cfg["train"][key] = value
    with pytest.raises(settings.ConfigError, match=f"train.{key}"):
        settings.validate(cfg)


def test_checkpoint_keys_default_off_and_on():
    cfg = settings.validate(copy.deepcopy(SMOKE))
    assert cfg["train"]["checkpoint_every"] == 0 and cfg["train"]["resume"] is True

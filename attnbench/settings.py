"""Run settings: the validated config sections a job needs, as plain dicts, plus device choice.

The pipeline validates ``config/*.yaml`` against ``config/schema.yaml`` (which fills the
defaults); :func:`stage_settings` then cuts out what one variant's job of one stage depends
on, so that the rule's ``params`` change exactly when that job's results would.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "config" / "schema.yaml"


class ConfigError(ValueError):
    """Invalid configuration; the message names the key."""


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def variant_entry(config: dict, name: str) -> dict:
    """Resolved entry of one variant: {'variant': registry name, 'class': spec|None, 'params': {...}}."""
    raw = dict(config["variants"][name] or {})
    entry = {"variant": raw.pop("variant", name), "class": raw.pop("class", None), "params": raw}
    return entry


def longest_input(config: dict) -> int:
    """The longest sequence any job gives an attention module: the model's context (train,
    probe) or the longest sweep length (the sweep runs the module alone, past the context)."""
    return max(config["model"]["block_size"], *config["sweep"]["seq_lens"])


def check_variants(config: dict) -> None:
    """Check every variant entry against the registry (unknown names, bad params, user classes)."""
    import attention
    from attention.contract import TINY, check_class, describe

    if not config.get("variants"):
        raise ConfigError("config key 'variants' must name at least one attention variant")
    model = config["model"]
    for name in config["variants"]:
        entry = variant_entry(config, name)
        where = f"variants.{name}"
        if entry["class"] is not None:
            try:
                cls = attention.load_class(entry["class"])
            except ValueError as err:
                raise ConfigError(f"{where}.class: {err}") from None
            except Exception as err:  # the module itself fails on import (SyntaxError, NameError, ...)
                raise ConfigError(f"{where}.class: importing {entry['class']!r} raised {describe(err)}") from None
            try:
                # tiny first (fast); the run's own shape for params that only fit it
                check_class(name, cls, entry["params"], shapes=(TINY, (model["n_embd"], model["n_head"])),
                            max_len=longest_input(config))
            except ValueError as err:
                raise ConfigError(f"{where}.class: {err}") from None
            continue
        if entry["variant"] not in attention.VARIANTS:
            raise ConfigError(
                f"{where}: unknown attention variant {entry['variant']!r}; known: {sorted(attention.VARIANTS)} "
                "(or give 'class: package.module:ClassName' for your own)"
            )
        cls = attention.VARIANTS[entry["variant"]]
        try:
            cls(model["n_embd"], model["n_head"], **entry["params"])
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None


def shapes(config: dict) -> list[str | None]:
    """The model-size x training-length axis: one name per (``models`` entry, ``train.seq_lens``
    entry), e.g. ``124M-T512``; the part of an axis that is not configured is left out of the
    name (``124M``, ``T2048``).  ``[None]`` when neither is configured: the one ``model`` at
    ``train.seq_len``, with the results where they always were."""
    sizes, lengths = config.get("models") or {}, list(config["train"].get("seq_lens") or [])
    if not sizes and not lengths:
        return [None]
    out = []
    for size in list(sizes) or [None]:
        own = (sizes.get(size) or {}).get("seq_lens") if size else None  # a size may train at its own lengths
        for T in own or lengths or [None]:
            out.append("-".join(p for p in (size, f"T{T}" if T is not None else None) if p))
    return out


def shape_size(config: dict, shape: str | None) -> str | None:
    """The model-size part of a shape name (None without a size axis, or for None)."""
    if shape is None:
        return None
    return next((n for n in config.get("models") or {} if shape == n or shape.startswith(f"{n}-T")), None)


def apply_shape(config: dict, shape: str | None) -> dict:
    """``config`` as one shape of :func:`shapes` trains: the size's model keys over ``model``,
    ``train.seq_len`` its length, ``train.batch_size`` the size's own or the one that keeps
    ``train.batch_size x train.seq_len`` tokens per step.  ``None``: ``config`` itself."""
    if shape is None:
        return config
    known = shapes(config)
    if shape not in known:
        raise ConfigError(f"shape {shape!r} is not one of the config's shapes: {', '.join(map(str, known))}")
    sizes = config.get("models") or {}
    size = shape_size(config, shape)
    T = int(shape.rsplit("T", 1)[1]) if (size is None or shape != size) else config["train"]["seq_len"]
    out = copy.deepcopy(config)
    tokens_per_step = config["train"]["batch_size"] * config["train"]["seq_len"]
    spec = dict(sizes.get(size) or {})
    batch = spec.pop("batch_size", None)
    spec.pop("seq_lens", None)
    out["model"].update(spec)
    out["train"]["seq_len"] = T
    out["train"]["batch_size"] = batch or max(1, tokens_per_step // T)
    out["train"]["seq_lens"] = []
    out["models"] = {}
    out["shape"] = shape
    out["run_name"] = f"{config.get('run_name') or 'run'} {shape}"  # each shape's report names its shape
    return out


def check_combinations(config: dict) -> None:
    """Cross-key rules a JSON schema cannot express; each error names the key.  Also fills the
    one default that depends on another key: ``seeds`` = [``seed``].  With a size or length
    axis every shape is checked (:func:`apply_shape`), its name in the error."""
    if not config.get("seeds"):
        config["seeds"] = [config["seed"]]
    if shapes(config) != [None]:
        for shape in shapes(config):
            try:
                check_combinations(apply_shape(config, shape))
            except ConfigError as err:
                raise ConfigError(f"shape {shape}: {err}") from None
        return
    m, t, d = config["model"], config["train"], config["data"]
    if m["n_embd"] % m["n_head"]:
        raise ConfigError(f"model.n_head={m['n_head']} must divide model.n_embd={m['n_embd']}")
    if d["max_len"] > m["block_size"]:
        raise ConfigError(f"data.max_len={d['max_len']} exceeds model.block_size={m['block_size']} (the model's context)")
    if t["seq_len"] > d["max_len"]:
        raise ConfigError(f"train.seq_len={t['seq_len']} exceeds data.max_len={d['max_len']}")
    if m["vocab_size"] < 50257:
        raise ConfigError(f"model.vocab_size={m['vocab_size']} is smaller than the GPT-2 vocabulary (50257)")
    if t["min_lr"] > t["lr"]:
        raise ConfigError(f"train.min_lr={t['min_lr']} exceeds train.lr={t['lr']} (the cosine decays from lr to min_lr)")
    if t["warmup_steps"] >= t["steps"]:
        raise ConfigError(f"train.warmup_steps={t['warmup_steps']} must be smaller than train.steps={t['steps']}")
    probe = config["probe"]
    for length in probe["prompt_lens"]:
        if length + probe["decode_tokens"] > m["block_size"]:
            raise ConfigError(f"probe.prompt_lens entry {length} + probe.decode_tokens={probe['decode_tokens']} "
                              f"exceeds model.block_size={m['block_size']}")


# YAML 1.1 (PyYAML, and so Snakemake's --configfile) reads a float only with a dot and a signed
# exponent: 1e-3, 6e-4, 1.0e6 arrive as strings.  Where the schema wants a number, a string
# that reads as one is that number; where it says nothing (a variant's own params), only the
# exponent forms YAML 1.1 misses are, and where it wants a string nothing changes.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def coerce_numbers(value, schema: dict):
    """A copy of ``value`` with the numbers YAML 1.1 leaves as strings made numbers, following
    ``schema``: float where it says number; int where it says integer and the value is integral
    (``steps: 1e4``, ``steps: 1.0e+4``); float for an exponent form where it gives no type."""
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", {})
        return {k: coerce_numbers(v, props.get(k, extra if isinstance(extra, dict) else {}))
                for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce_numbers(v, items if isinstance(items, dict) else {}) for v in value]
    types = schema.get("type", [])
    types = {types} if isinstance(types, str) else set(types)
    pattern = _NUMBER if types & {"number", "integer"} else None if types else _EXPONENT
    if isinstance(value, str) and pattern is not None and pattern.fullmatch(value.strip()):
        value = float(value)
    if "integer" in types and "number" not in types and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _allowed(sub: dict) -> str:
    """One alternative of an anyOf/oneOf in words: 0, "1 to 600", "a string", "one of: a, b"."""
    if "const" in sub:
        return repr(sub["const"])
    if "enum" in sub:
        return "one of: " + ", ".join(map(repr, sub["enum"]))
    lo = sub.get("minimum", sub.get("exclusiveMinimum"))
    hi = sub.get("maximum", sub.get("exclusiveMaximum"))
    if lo is not None or hi is not None:
        return (f"{lo:g} to {hi:g}" if lo is not None and hi is not None
                else f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
    return f"a {sub['type']}" if isinstance(sub.get("type"), str) else str(sub)


def schema_error(errors: list) -> str:
    """One line for the schema violations (jsonschema errors, sorted by key): the first one
    in full, naming the allowed keys for an unknown one, and the other keys that fail."""
    err = errors[0]
    key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    problem = err.message
    if err.validator == "additionalProperties":
        problem += f"; allowed: {', '.join(sorted(err.schema.get('properties', {})))}"
    elif err.validator in ("anyOf", "oneOf"):  # "is not valid under any of the given schemas": say which values are
        bounds = {k: err.schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
                  if k in err.schema}  # the key's own range holds for every alternative
        problem = f"{err.instance!r} is not allowed; allowed: " + " or ".join(
            _allowed({**bounds, **s}) for s in err.validator_value)
    others = sorted({".".join(str(p) for p in e.absolute_path) or "(top level)" for e in errors[1:]} - {key})
    also = f"; also invalid: {', '.join(others)}" if others else ""
    return f"{key}: {problem}{also} (schema: {SCHEMA_PATH.relative_to(ROOT)})"


def validate(config: dict) -> dict:
    """Numbers coerced (:func:`coerce_numbers`), schema-validated (filling defaults), then the
    cross-key and registry checks.  Returns a new config; errors name the key."""
    import jsonschema

    schema = load_schema()
    config = coerce_numbers(config, schema)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = _extend_with_default(validator_cls)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(schema_error(errors))
    check_combinations(config)
    for shape in shapes(config):  # every size: e.g. gqa's n_kv_head must divide each size's n_head
        try:
            check_variants(apply_shape(config, shape))
        except ConfigError as err:
            raise ConfigError(f"shape {shape}: {err}" if shape else str(err)) from None
    return config


def _extend_with_default(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    import jsonschema

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


# train keys that do not change results: they reach the job on its command line, not in its params
RUNTIME_TRAIN_KEYS = ("checkpoint_every", "resume")
# measure keys each stage reads
_MEASURE_KEYS = {
    "train": None,  # all of them
    "probe": ("nvml", "sample_interval_s", "codecarbon", "country_iso_code", "kernel_check"),
    "sweep": ("nvml", "sample_interval_s", "kernel_check"),
}


def stage_settings(config: dict, stage: str, name: str, seed: int | None = None, shape: str | None = None) -> dict:
    """The settings slice one variant's ``stage`` job (train, probe, sweep) depends on: its
    rule params, so that a job reruns exactly when its own results would change.

    All stages: the variant's resolved entry, seed (``seed``: one of ``config["seeds"]``, the
    run's seed; default the first), device and model shape.  train: the data
    layout, the train section without :data:`RUNTIME_TRAIN_KEYS`, all measure keys.  probe /
    sweep: their own section and the measure keys they read (the trained weights reach the
    probe as a file, not through settings).
    """
    if stage not in _MEASURE_KEYS:
        raise ValueError(f"stage {stage!r}; allowed: {sorted(_MEASURE_KEYS)}")
    # only on the axis: settings of a run without one stay as they were.  A sweep times the
    # module alone: it depends on the model size, not the training length, so it records the size.
    label = shape_size(config, shape) if stage == "sweep" else shape
    config = apply_shape(config, shape)
    keys = _MEASURE_KEYS[stage]
    seed = config["seeds"][0] if seed is None else int(seed)
    out = {"name": name, "entry": variant_entry(config, name), "seed": seed,
           "device": config["device"], "model": config["model"],
           "measure": dict(config["measure"]) if keys is None else {k: config["measure"][k] for k in keys}}
    if label is not None:
        out["shape"] = label
    if stage == "train":
        out["train"] = {k: v for k, v in config["train"].items() if k not in RUNTIME_TRAIN_KEYS}
        out["data"] = {k: config["data"][k] for k in ("mode", "max_len")}
    else:
        out[stage] = config[stage]
    return out


def report_settings(config: dict, shape: str | None = None) -> dict:
    """What the report renders and checks: the run's config (of one shape, :func:`apply_shape`)
    without the runtime-only keys."""
    out = copy.deepcopy(apply_shape(config, shape))
    out["train"] = {k: v for k, v in out["train"].items() if k not in RUNTIME_TRAIN_KEYS}
    return out


STAGE_KEYS = {"train": ("name", "entry", "seed", "device", "model", "measure", "train", "data"),
              "probe": ("name", "entry", "seed", "device", "model", "measure", "probe"),
              "sweep": ("name", "entry", "seed", "device", "model", "measure", "sweep")}


def check_stage_settings(settings, stage: str) -> None:
    """A job's settings must be :func:`stage_settings` of ``stage``: a JSON object with its keys
    and, for train, no runtime-only key (those come as arguments)."""
    if not isinstance(settings, dict):
        raise ConfigError(f"settings must be a JSON object (the {stage} settings of one variant)")
    missing = [k for k in STAGE_KEYS[stage] if k not in settings]
    if missing:
        raise ConfigError(f"settings lack key(s) {', '.join(missing)} (expected attnbench.settings.stage_settings)")
    extra = [k for k in RUNTIME_TRAIN_KEYS if k in settings.get("train", {})]
    if extra:
        raise ConfigError(f"train settings hold runtime-only key(s) {', '.join(extra)}: pass them as arguments")


def resolve_device(requested: str):
    import torch

    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is available (use device: auto or cpu)")
        return torch.device("cuda")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ConfigError(f"device={requested!r}; allowed: auto, cpu, cuda")

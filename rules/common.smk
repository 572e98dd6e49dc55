# Config validation, shared input functions and helpers for all rules.
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the attention/ and attnbench/ packages

from attnbench import settings as _settings  # noqa: E402

# The same validation as attnbench.settings.validate in Python: numbers YAML 1.1 leaves as
# strings (lr: 1e-3) coerced, schema defaults filled, cross-key rules, user classes checked.
# An error exits through SystemExit, which prints only its message: the one-line error is the
# last thing shown (a WorkflowError appends a traceback; snakemake.utils.validate, the schema).
try:
    config.update(_settings.validate(config))
except _settings.ConfigError as err:
    raise SystemExit(f"invalid config: {err}")

VARIANTS = list(config["variants"])
SEEDS = [int(s) for s in config["seeds"]]
# Model size x training length (config `models`, `train.seq_lens`): [None] without either, and
# the results stay where they always were; otherwise every path has a {shape} level.
SHAPES = _settings.shapes(config)
SHAPED = SHAPES != [None]
_S = "{shape}/" if SHAPED else ""
TRAIN_METRICS = f"results/train/{_S}{{variant}}/seed{{seed}}/metrics.json"
PROBE_OUT = f"results/probe/{_S}{{variant}}/seed{{seed}}/probe.json"
# The sweep times the attention module alone: it depends on the model size, not the training
# length, so it runs once per size (results/sweep/<size>/), not once per shape.
SIZES = list(config.get("models") or {})
_Z = "{size}/" if SIZES else ""
SWEEP_OUT = f"results/sweep/{_Z}{{variant}}/sweep.json"
LOG = {"train": f"logs/train/{_S}{{variant}}-seed{{seed}}.log", "probe": f"logs/probe/{_S}{{variant}}-seed{{seed}}.log",
       "sweep": f"logs/sweep/{_Z}{{variant}}.log"}


ROOT = Path(workflow.basedir)
# Jobs run with this interpreter unless a conda env provides its own python.  Rules take it as
# a string resource (attnbench_python), never as a param: the interpreter's path is not a
# setting, and as a param it made every job stale on a machine whose environment lives
# elsewhere (a run folder copied from the GPU box to re-render its report wanted to retrain
# everything).  Resources trigger no reruns, pass lint, and are evaluated again inside a SLURM
# job (only integer resources travel on its command line), so a node uses its own interpreter.
PYTHON = "python" if "conda" in str(workflow.deployment_settings.deployment_method) else sys.executable


def rel(path):
    """``path`` relative to the working directory: a moved or copied run folder keeps the same
    inputs, so Snakemake does not see them as changed."""
    return os.path.relpath(path)


def dataset_tag():
    from attnbench.data import dataset_tag as tag

    return tag(config["data"]["dataset"])


def package_sources(*names):
    """Source files of attnbench modules, declared as inputs so that editing them reruns the job."""
    return [rel(ROOT / "attnbench" / n) for n in names]


def sources_under(folder):
    return sorted(rel(p) for p in (ROOT / folder).glob("*.py"))


MEASURE_SOURCES = sources_under("attnbench/measure")
ATTENTION_CORE = [rel(ROOT / "attention" / n) for n in ("__init__.py", "base.py", "contract.py", "selection.py")]
# what every train/probe/sweep job imports besides its variant's own files
MODEL_SOURCES = package_sources("model.py", "settings.py", "results.py") + MEASURE_SOURCES + ATTENTION_CORE
TRAIN_SOURCES = MODEL_SOURCES + package_sources("train.py", "train_result.py", "optim.py", "batches.py",
                                                "checkpoint.py", "selfcheck.py", "interrupt.py")
PROBE_SOURCES = MODEL_SOURCES + package_sources("probe.py", "selfcheck.py")
SWEEP_SOURCES = MODEL_SOURCES + package_sources("sweep.py")


def _relative_imports(path):
    """attention/ files a variant file imports (``from .x import``, ``from .ops.x import``), transitively."""
    import ast

    seen, todo = set(), [Path(path)]
    while todo:
        p = todo.pop()
        if p in seen or not p.is_file():
            continue
        seen.add(p)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 1 and node.module:
                base = p.parent
                for _ in range(node.level - 1):
                    base = base.parent
                todo.append(base.joinpath(*node.module.split(".")).with_suffix(".py"))
    return seen


def variant_sources(wildcards):
    """The code one variant's results depend on: its own file and the kernels it imports."""
    import importlib.util

    entry = _settings.variant_entry(config, wildcards.variant)
    if entry["class"]:
        spec = importlib.util.find_spec(entry["class"].split(":")[0])
        files = {Path(spec.origin)} if spec and spec.origin else set()
    else:
        import attention

        files = _relative_imports(sys.modules[attention.VARIANTS[entry["variant"]].__module__].__file__)
    return sorted(rel(f) for f in files)


# train.checkpoint_every and train.resume do not change results: they reach the train job
# through its (string) resources, not its params, so setting them reruns no job.
TRAIN_CHECKPOINT_EVERY = str(config["train"]["checkpoint_every"])
TRAIN_RESUME = "on" if config["train"]["resume"] else "off"


def stage_params(stage):
    """Rule params of one variant's ``stage`` job (and seed, for train and probe): exactly the
    settings it reads."""

    def params(wildcards):
        seed = int(wildcards.seed) if "seed" in wildcards.keys() else None
        shape = wildcards.shape if "shape" in wildcards.keys() else None
        if stage == "sweep" and SHAPED:  # any shape of the size: the sweep reads its model keys only
            shape = next(x for x in SHAPES if _settings.shape_size(config, x) == (wildcards.size if SIZES else None))
        return json.dumps(_settings.stage_settings(config, stage, wildcards.variant, seed=seed, shape=shape),
                          sort_keys=True)

    return params


def retry_token(wildcards):
    """Changes after a recorded training failure, so the next invocation retries that run."""
    log = Path(train_dir(wildcards)) / "failures.log"
    return hashlib.sha256(log.read_bytes()).hexdigest()[:16] if log.exists() else ""


def train_dir(wildcards):
    """The train job's folder (metrics, weights, logs of failures): the probe reads the weights there."""
    return str(Path(TRAIN_METRICS.format(**dict(wildcards.items()))).parent)


REPORT_DIR = "results/report/{shape}" if SHAPED else "results/report"


def shape_docs(kind):
    """The documents one report reads: every variant (and seed) of its shape, in config order."""

    def files(wildcards):
        w = {"shape": wildcards.shape} if SHAPED else {}
        if kind == "train":
            return [TRAIN_METRICS.format(variant=v, seed=s, **w) for s in SEEDS for v in VARIANTS]
        if kind == "probe":
            return [PROBE_OUT.format(variant=v, seed=s, **w) for s in SEEDS for v in VARIANTS]
        return [SWEEP_OUT.format(variant=v, size=_settings.shape_size(config, w.get("shape"))) for v in VARIANTS]

    return files


def report_config(wildcards):
    """The report's config: the run's, with its shape's size and length applied."""
    return json.dumps(_settings.report_settings(config, wildcards.shape if SHAPED else None), sort_keys=True)


def job_priority(stage):
    """Priority of a train/probe/sweep job: Snakemake starts the highest first among the jobs
    that are ready (the order of the report's inputs does not decide it).  Shape by shape, and
    within one seed-major: each
    seed's trainings back to back in config order, then that seed's probes, then the next
    seed, so drift of the machine during a campaign falls on whole seeds, not on one variant;
    sweeps (seed-independent) last.  Values stay between 1 and 99, below the data rules' 100."""
    n, per_seed = len(VARIANTS), 2 * len(VARIANTS)
    per_shape = per_seed * (len(SEEDS) + 1)
    ranks = per_shape * len(SHAPES)

    def priority(wildcards):
        if stage == "sweep":
            return 1
        seed = int(wildcards.seed)
        s = SEEDS.index(seed) if seed in SEEDS else len(SEEDS)  # a seed asked for by target path
        v = VARIANTS.index(wildcards.variant) if wildcards.variant in VARIANTS else n - 1
        shape = wildcards.shape if "shape" in wildcards.keys() else None
        rank = SHAPES.index(shape) * per_shape + s * per_seed + (n if stage == "probe" else 0) + v
        return 2 + 97 * (ranks - rank) / ranks

    return priority


def gpu_count():
    return 0 if config["device"] == "cpu" else 1


# The GPUs a job may claim (attnbench.gpuslots): each GPU job takes one free slot before CUDA
# starts, so jobs running at once under --resources gpu=N each get their own GPU.
GPU_SLOTS = "none" if config["device"] == "cpu" else (
    ",".join(str(g) for g in config["gpus"]) if config.get("gpus") else "auto")


def final_outputs():
    return ["results/report/index.html"]


def report_templates():
    return sorted(rel(p) for p in (ROOT / "reports" / "templates").glob("*"))


def _check_dataset_file():
    """A user's dataset file must exist before any job runs: otherwise an earlier run's tokens
    would stay up to date and a report would name data it was not made from.  A user's JSONL
    is validated here too (once per version of the file)."""
    source = config["data"]["dataset"]
    for prefix in ("jsonl:", "sharegpt:", "tulu-v2:"):
        if source.startswith(prefix):
            path = Path(source[len(prefix):])
            if not path.exists():
                raise SystemExit(f"invalid config: data.dataset: {source!r}: {path} does not exist "
                                 f"(schema: config/schema.yaml)")
            if prefix == "jsonl:" and path.is_file():  # every bad line named now, not after other jobs ran
                from attnbench.data import DataError, validate_file

                try:
                    validate_file(path, config["data"]["on_bad_rows"], cache=".snakemake/attnbench-valid-data.json")
                except DataError as err:
                    raise SystemExit(f"invalid data: {err}")


_check_dataset_file()

from attnbench.interrupt import stop_jobs_on_interrupt  # noqa: E402

stop_jobs_on_interrupt()  # Ctrl-C (or SIGINT) stops the running jobs instead of waiting for them


def raw_dataset(wildcards):
    """The JSONL that tokenize reads.  A user's ``jsonl:<path>`` is read in place: tokenize
    validates it (errors name that file and its line numbers), counts the rows that
    ``data.on_bad_rows: skip`` drops (tokenize stats, report), and editing the file reruns
    tokenize.  A missing file stops the workflow before any job runs, naming the path."""
    source = config["data"]["dataset"]
    if source.startswith("jsonl:"):
        return source[len("jsonl:"):]
    return f"data/raw/{dataset_tag()}.jsonl"

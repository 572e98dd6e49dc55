# attnbench: train GPT-2 once per attention variant and measure what each costs.
#
#   snakemake --cores 1 --resources gpu=1                          # config/config.yaml
#   snakemake --cores 1 --resources gpu=1 --configfile config/smoke.yaml
#   snakemake --profile profiles/slurm --workflow-profile none --configfile config/paper.yaml
#
# DAG: download -> tokenize -> train (per variant x seed) -> probe (per variant x seed) + sweep
# (per variant) -> report; with `models` / `train.seq_lens` all of it per shape (size x length),
# one report per shape and a scaling page over them.
import re

from snakemake.utils import min_version

min_version("9.0")


# The default preset applies only when no --configfile is given: Snakemake would otherwise
# merge a preset into it key by key (and keep the default's variants).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    variant="|".join(VARIANTS),
    seed=r"\d+",
    shape="|".join(re.escape(s) for s in SHAPES if s) or "-",
    size="|".join(re.escape(s) for s in SIZES) or "-",


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/probe.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),

# Inference probes (per variant and seed: they load that run's weights) and the sequence-length
# sweep (per variant: the attention module alone, its weights untrained).


rule probe:
    output:
        PROBE_OUT,
    input:
        metrics=rules.train.output.metrics,
        tokens=rules.tokenize.output.val,
        code=PROBE_SOURCES,
        variant_code=variant_sources,
    params:
        settings=stage_params("probe"),
        train_dir=train_dir,
    priority: job_priority("probe")
    resources:
        attnbench_python=PYTHON,  # the interpreter: not a param (see rules/common.smk)
        gpu=gpu_count(),
        attnbench_gpu_slots=GPU_SLOTS,  # which GPUs: not a param (it changes no result)
    log:
        LOG["probe"],
    conda:
        "../envs/train.yaml"
    shell:
        "ATTNBENCH_GPU_SLOTS={resources.attnbench_gpu_slots:q} {resources.attnbench_python:q} scripts/probe.py --settings {params.settings:q} "
        "--train-dir {params.train_dir:q} --tokens-dir results/tokens "
        "--out {output:q} > {log:q} 2>&1"


rule sweep:
    output:
        SWEEP_OUT,
    input:
        code=SWEEP_SOURCES,
        variant_code=variant_sources,
    params:
        settings=stage_params("sweep"),
    priority: job_priority("sweep")
    resources:
        attnbench_python=PYTHON,  # the interpreter: not a param (see rules/common.smk)
        gpu=gpu_count(),
        attnbench_gpu_slots=GPU_SLOTS,  # which GPUs: not a param (it changes no result)
    log:
        LOG["sweep"],
    conda:
        "../envs/train.yaml"
    shell:
        "ATTNBENCH_GPU_SLOTS={resources.attnbench_gpu_slots:q} {resources.attnbench_python:q} scripts/sweep.py --settings {params.settings:q} --out {output:q} > {log:q} 2>&1"

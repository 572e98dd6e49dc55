# Training, one job per attention variant and seed.


rule train:
    output:
        metrics=TRAIN_METRICS,
    input:
        tokens=rules.tokenize.output.train,
        val=rules.tokenize.output.val,
        code=TRAIN_SOURCES,
        variant_code=variant_sources,
    params:
        settings=stage_params("train"),
        retry=retry_token,
        out_dir=train_dir,
    priority: job_priority("train")
    resources:
        attnbench_python=PYTHON,  # the interpreter: not a param (see rules/common.smk)
        gpu=gpu_count(),
        attnbench_gpu_slots=GPU_SLOTS,  # which GPUs: not a param (it changes no result)
        # Not params: they do not change results, so they must not trigger reruns (strings:
        # the scheduler does not count them).
        attnbench_checkpoint_every=TRAIN_CHECKPOINT_EVERY,
        attnbench_resume=TRAIN_RESUME,
    log:
        LOG["train"],
    conda:
        "../envs/train.yaml"
    shell:
        "ATTNBENCH_GPU_SLOTS={resources.attnbench_gpu_slots:q} {resources.attnbench_python:q} scripts/train.py --settings {params.settings:q} "
        "--checkpoint-every {resources.attnbench_checkpoint_every:q} --resume {resources.attnbench_resume:q} "
        "--tokens-dir results/tokens --out-dir {params.out_dir:q} > {log:q} 2>&1"

# Training, one job per attention variant.


rule train:
    output:
        metrics="results/train/{variant}/metrics.json",
    input:
        tokens=rules.tokenize.output.train,
        val=rules.tokenize.output.val,
        code=MODEL_SOURCES + package_sources("train.py"),
        variant_code=variant_sources,
    params:
        settings=job_settings,
        retry=retry_token,
        python=PYTHON,
    resources:
        gpu=gpu_count(),
    log:
        "logs/train/{variant}.log",
    conda:
        "../envs/train.yaml"
    shell:
        "{params.python:q} scripts/train.py --settings {params.settings:q} "
        "--tokens-dir results/tokens --out-dir results/train/{wildcards.variant} > {log:q} 2>&1"

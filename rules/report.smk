# The HTML report over every variant's results (CPU).


rule report:
    output:
        html="results/report/index.html",
        csv="results/report/results.csv",
        json="results/report/results.json",
        runs="results/report/runs.csv",
        summary="results/report/summary.csv",
    input:
        # (the order jobs run in is set by their priority: rules/common.smk, job_priority)
        train=[f"results/train/{v}/seed{s}/metrics.json" for s in SEEDS for v in VARIANTS],
        probe=[f"results/probe/{v}/seed{s}/probe.json" for s in SEEDS for v in VARIANTS],
        sweep=expand("results/sweep/{variant}/sweep.json", variant=VARIANTS),
        stats=rules.tokenize.output.stats,
        templates=report_templates(),
        code=sources_under("attnbench/report") + package_sources("results.py"),
    params:
        config=json.dumps(_settings.report_settings(config), sort_keys=True),
        python=PYTHON,
    log:
        "logs/report/report.log",
    conda:
        "../envs/report.yaml"
    shell:
        "{params.python:q} scripts/report.py --train {input.train:q} --probe {input.probe:q} "
        "--sweep {input.sweep:q} --stats {input.stats:q} --config {params.config:q} "
        "--out-dir results/report > {log:q} 2>&1"

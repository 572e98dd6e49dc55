# The HTML report over every variant's results (CPU): one per shape on a size/length axis,
# with a scaling page over the shapes at results/report/index.html.


rule report:
    output:
        html=f"{REPORT_DIR}/index.html",
        csv=f"{REPORT_DIR}/results.csv",
        json=f"{REPORT_DIR}/results.json",
        runs=f"{REPORT_DIR}/runs.csv",
        summary=f"{REPORT_DIR}/summary.csv",
    input:
        # (the order jobs run in is set by their priority: rules/common.smk, job_priority)
        train=shape_docs("train"),
        probe=shape_docs("probe"),
        sweep=shape_docs("sweep"),
        stats=rules.tokenize.output.stats,
        templates=report_templates(),
        code=sources_under("attnbench/report") + package_sources("results.py"),
    params:
        config=report_config,
        out_dir=lambda wildcards, output: str(Path(output.html).parent),
    resources:
        attnbench_python=PYTHON,  # the interpreter: not a param (see rules/common.smk)
    log:
        "logs/report/report" + ("-{shape}" if SHAPED else "") + ".log",
    conda:
        "../envs/report.yaml"
    shell:
        "{resources.attnbench_python:q} scripts/report.py --train {input.train:q} --probe {input.probe:q} "
        "--sweep {input.sweep:q} --stats {input.stats:q} --config {params.config:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


if SHAPED:

    rule scaling:
        output:
            html="results/report/index.html",
            csv="results/report/scaling.csv",
        input:
            summaries=expand("results/report/{shape}/summary.csv", shape=SHAPES),
            results=expand("results/report/{shape}/results.json", shape=SHAPES),
            code=sources_under("attnbench/report"),
        params:
            shapes=json.dumps(SHAPES),
        resources:
            attnbench_python=PYTHON,  # the interpreter: not a param (see rules/common.smk)
        log:
            "logs/report/scaling.log",
        conda:
            "../envs/report.yaml"
        shell:
            "{resources.attnbench_python:q} scripts/scaling.py --shapes {params.shapes:q} --summaries {input.summaries:q} "
            "--results {input.results:q} --out-dir results/report > {log:q} 2>&1"

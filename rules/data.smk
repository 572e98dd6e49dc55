# Dataset download and tokenization (CPU).


rule download:
    output:
        jsonl="data/raw/{dataset}.jsonl",
        # counts (records read, kept, dropped and why); tokenize copies them into its stats
        counts="data/raw/{dataset}.jsonl.download.json",
    input:
        package_sources("data.py", "results.py"),
    params:
        source=config["data"]["dataset"],
        on_bad_rows=config["data"]["on_bad_rows"],
    # Before anything else: a bad dataset is an error in seconds, not after the sweeps ran.
    priority: 100
    resources:
        attnbench_python=PYTHON,  # the interpreter: not a param (see rules/common.smk)
    log:
        "logs/download/{dataset}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{resources.attnbench_python:q} scripts/download.py --source {params.source:q} "
        "--on-bad-rows {params.on_bad_rows:q} --out {output.jsonl:q} > {log:q} 2>&1"


rule tokenize:
    output:
        train="results/tokens/train.npy",
        val="results/tokens/val.npy",
        stats="results/tokens/stats.json",
    input:
        raw=raw_dataset,
        code=package_sources("data.py", "results.py"),
    params:
        data=json.dumps(config["data"], sort_keys=True),
        seed=config["seed"],
    priority: 100
    # The tokenizer's batch encoding would otherwise take every core of the host, under a GPU job
    # that Snakemake started beside it on the cores it thought free (the sweep of session 12's H200
    # run, timed while tokenization ran, spread many times wider than alone). Snakemake lowers this
    # to --cores; the script passes it to the tokenizer.
    threads: 8
    resources:
        attnbench_python=PYTHON,  # the interpreter: not a param (see rules/common.smk)
    log:
        "logs/tokenize/tokenize.log",
    conda:
        "../envs/data.yaml"
    shell:
        "{resources.attnbench_python:q} scripts/tokenize_dataset.py --raw {input.raw:q} --data {params.data:q} "
        "--seed {params.seed} --threads {threads:q} --out-dir results/tokens > {log:q} 2>&1"

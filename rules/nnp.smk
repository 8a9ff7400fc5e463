rule train_baseline:
    input:
        d0=get_d0(),
    output:
        model="results/models/baseline.pt",
        metrics="results/models/baseline.metrics.csv",
    log:
        "logs/train/baseline.log",
    benchmark:
        "benchmarks/train/baseline.tsv"
    priority: 10  # the round chain is the critical path; oracle optimisations fill the gaps
    conda:
        "../envs/nnp.yaml"
    threads: 2
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(120),
        gpu=nnp_gpus(),
    params:
        model=model_params(),
        train=train_params(),
        max_displacement=config["golf"]["max_displacement"],
    script:
        "../workflow/scripts/train_baseline.py"

# The baseline (f_baseline, golf-0): trained from scratch on D0, or, with nnp.baseline_model set,
# an existing checkpoint (e.g. the authors' through `golf import-model`) that every GOLF round,
# trajectory baseline and control then starts from.
if config["nnp"]["baseline_model"]:

    rule import_baseline:
        input:
            model=config["nnp"]["baseline_model"],
        output:
            model=f"{RUN}/models/baseline.pt",
        log:
            f"{LOGS}/train/baseline.log",
        benchmark:
            f"{BENCH}/train/baseline.tsv"
        conda:
            "../envs/nnp.yaml"
        threads: 1
        resources:
            mem_mb=scaled(2000),
            runtime=scaled(10),
        params:
            elements=config["elements"],
            max_displacement=config["golf"]["max_displacement"],
        script:
            "../workflow/scripts/import_baseline.py"

else:

    rule train_baseline:
        input:
            d0=get_d0(),
        output:
            model=f"{RUN}/models/baseline.pt",
            metrics=f"{RUN}/models/baseline.metrics.csv",
        log:
            f"{LOGS}/train/baseline.log",
        benchmark:
            f"{BENCH}/train/baseline.tsv"
        priority: 10  # the round chain is the critical path; oracle optimisations fill the gaps
        conda:
            "../envs/nnp.yaml"
        threads: 1
        resources:
            mem_mb=scaled(4000),
            runtime=scaled(120),
            gpu=nnp_gpus(),
        params:
            model=model_params,
            train=train_params,
            max_displacement=config["golf"]["max_displacement"],
            # Not an output: Snakemake deletes a failed job's outputs, and a rerun resumes here.
            checkpoint=f"{RUN}/checkpoints/baseline.ckpt",
        script:
            "../workflow/scripts/train_baseline.py"

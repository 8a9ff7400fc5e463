# Evaluation of every model against the oracle's minima, and the study's report (paper §6).


rule eval_optimize:
    input:
        model=get_model_for_eval,
        reference=get_reference(),
    output:
        frames="results/eval/{model}/frames.h5",
    log:
        "logs/eval/{model}/optimize.log",
    benchmark:
        "benchmarks/eval/{model}/optimize.tsv"
    conda:
        "../envs/nnp.yaml"
    threads: 2
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(60),
        gpu=get_eval_gpus,
    params:
        evaluation=config["evaluation"],
        device=config["nnp"]["device"],
        model=evaluation_model,
        # None: the paper's protocol (no cap), whatever the model was trained with.
        max_displacement=evaluation_cap,
    script:
        "../workflow/scripts/eval_optimize.py"


rule eval_table:
    input:
        labels="results/labels/eval-{model}.h5",
        reference=get_reference(),
    output:
        per_step="results/eval/{model}/per_step.csv",
    log:
        "logs/eval/{model}/table.log",
    benchmark:
        "benchmarks/eval/{model}/table.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(10),
    params:
        model=evaluation_model,
    script:
        "../workflow/scripts/eval_table.py"


rule report:
    input:
        per_step=expand("results/eval/{model}/per_step.csv", model=evaluated_names()),
        labels=expand("results/labels/eval-{model}.h5", model=evaluated_names()),
        round_labels=expand("results/labels/round-{round}.h5", round=ROUNDS),
        traj=get_traj_trajectories(),
        reference=get_reference(),
    output:
        summary=report(
            "results/report/summary.md",
            caption="report/summary.rst",
            category="Summary",
        ),
        table="results/report/summary.csv",
        steps="results/report/steps.csv",
        paired="results/report/paired.csv",
        unconverged="results/report/unconverged_references.csv",
        plots=report(
            expand(
                "results/report/{plot}.{ext}", plot=REPORT_PLOTS, ext=["png", "svg"]
            ),
            caption="report/plots.rst",
            category="Plots",
        ),
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(20),
    params:
        evaluation=config["evaluation"],
        settings=report_settings(),
    script:
        "../workflow/scripts/report.py"

# Evaluation of every model against the oracle's minima, and the study's report (paper §6).


rule test_set:
    input:
        source=get_test_set_source(),
    output:
        test_set="results/test_set.h5",
    log:
        "logs/test_set.log",
    benchmark:
        "benchmarks/test_set.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(10),
    params:
        known_minima=KNOWN_MINIMA,
    script:
        "../workflow/scripts/test_set.py"


rule eval_optimize:
    input:
        model=get_model_for_eval,
        test_set="results/test_set.h5",
    output:
        frames="results/{seeddir}eval/{model}/frames.h5",
    log:
        "logs/{seeddir}eval/{model}/optimize.log",
    benchmark:
        "benchmarks/{seeddir}eval/{model}/optimize.tsv"
    conda:
        "../envs/nnp.yaml"
    threads: 1
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
        seed=evaluation_seed,
    script:
        "../workflow/scripts/eval_optimize.py"


rule eval_table:
    input:
        labels="results/{seeddir}labels/eval-{model}.h5",
        test_set="results/test_set.h5",
    output:
        per_step="results/{seeddir}eval/{model}/per_step.csv",
    log:
        "logs/{seeddir}eval/{model}/table.log",
    benchmark:
        "benchmarks/{seeddir}eval/{model}/table.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(10),
    params:
        model=evaluation_model,
        seed=evaluation_seed,
    script:
        "../workflow/scripts/eval_table.py"


rule report:
    input:
        per_step=get_evaluation_files("per_step"),
        labels=get_evaluation_files("labels"),
        # Every arm's label files of every seed and every seed's D0: extra oracle calls and each
        # arm's coverage (molecules and starts whose data it added).
        round_labels=get_report_round_labels(),
        random_labels=get_report_random_labels(),
        traj=get_traj_trajectories(),
        d0=get_report_d0(),
        test_set="results/test_set.h5",
        model_metrics=get_model_metrics(),
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
        budget="results/report/budget.csv",
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

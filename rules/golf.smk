# GOLF rounds (paper Alg. 1, batched): round r optimises with model r-1, picks the conformation
# before the first MMFF energy rise of each trajectory, labels it, and fine-tunes model r on D0 and
# the labels of rounds 1..r. Round r reads only files of rounds < r and writes only its own.


rule golf_optimize:
    input:
        model=get_previous_model,
        d0=get_d0(),
    output:
        trajectories=f"{RUN}/rounds/{{round}}/trajectories.h5",
    log:
        f"{LOGS}/golf/{{round}}/optimize.log",
    benchmark:
        f"{BENCH}/golf/{{round}}/optimize.tsv"
    priority: 10  # the round chain is the critical path; oracle optimisations fill the gaps
    conda:
        "../envs/nnp.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(60),
        gpu=nnp_gpus(),
    params:
        golf=golf_params,
        device=config["nnp"]["device"],
    script:
        "../workflow/scripts/golf_optimize.py"


rule golf_select:
    input:
        trajectories=f"{RUN}/rounds/{{round}}/trajectories.h5",
    output:
        selected=f"{RUN}/rounds/{{round}}/selected.h5",
    log:
        f"{LOGS}/golf/{{round}}/select.log",
    benchmark:
        f"{BENCH}/golf/{{round}}/select.tsv"
    priority: 10  # the round chain is the critical path; oracle optimisations fill the gaps
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(10),
    params:
        mmff_threshold=config["golf"]["mmff_threshold"],
    script:
        "../workflow/scripts/golf_select.py"


rule golf_train:
    input:
        model=get_previous_model,
        d0=get_d0(),
        labels=get_round_labels,
    output:
        model=f"{RUN}/models/golf-{{round}}.pt",
        metrics=f"{RUN}/models/golf-{{round}}.metrics.csv",
    log:
        f"{LOGS}/golf/{{round}}/train.log",
    benchmark:
        f"{BENCH}/golf/{{round}}/train.tsv"
    priority: 10  # the round chain is the critical path; oracle optimisations fill the gaps
    conda:
        "../envs/nnp.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(120),
        gpu=nnp_gpus(),
    params:
        train=train_params,
        utd_ratio=config["golf"]["utd_ratio"],
        budget=golf_budget(config),
        allow_mixed=config["oracle"]["allow_mixed_provenance"],
        max_displacement=config["golf"]["max_displacement"],
        # Not an output: Snakemake deletes a failed job's outputs, and a rerun resumes here.
        checkpoint=f"{RUN}/checkpoints/golf-{{round}}.ckpt",
    script:
        "../workflow/scripts/golf_train.py"


# The random-selection control (issue 13.8, not in the paper): round r labels a random frame of
# the same NNP trajectories GOLF round r produced (rounds/{r}/trajectories.h5, explored by
# golf-(r-1)), so the two differ only in which frame goes to the oracle, at the same budget;
# random-r is then trained exactly as golf-r (same U, same schedule), from random-(r-1).
# The frames are drawn from whole trajectories: the ones GOLF selects are continued past their
# first MMFF rise with golf-(r-1) (model), never the start frame nor a conformation of the
# control's training data: D0 (d0) and its own labels of rounds before r (known).
rule random_select:
    input:
        trajectories=f"{RUN}/rounds/{{round}}/trajectories.h5",
        model=get_previous_model,
        d0=get_d0(),
        known=lambda wildcards: get_random_labels(wildcards)[:-1],
    output:
        selected=f"{RUN}/rounds/{{round}}/random.h5",
    log:
        f"{LOGS}/random/{{round}}/select.log",
    benchmark:
        f"{BENCH}/random/{{round}}/select.tsv"
    conda:
        "../envs/nnp.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(30),
        gpu=nnp_gpus(),
    params:
        mmff_threshold=config["golf"]["mmff_threshold"],
        timelimit=config["golf"]["timelimit"],
        parallel=config["golf"]["parallel"],
        max_displacement=config["golf"]["max_displacement"],
        device=config["nnp"]["device"],
        seed=get_random_seed,
    script:
        "../workflow/scripts/random_select.py"


use rule golf_train as random_train with:
    input:
        model=get_previous_random,
        d0=get_d0(),
        labels=get_random_labels,
    output:
        model=f"{RUN}/models/random-{{round}}.pt",
        metrics=f"{RUN}/models/random-{{round}}.metrics.csv",
    log:
        f"{LOGS}/random/{{round}}/train.log",
    benchmark:
        f"{BENCH}/random/{{round}}/train.tsv"
    priority: 0
    params:
        checkpoint=f"{RUN}/checkpoints/random-{{round}}.ckpt",


rule golf_round_stats:
    input:
        trajectories=f"{RUN}/rounds/{{round}}/trajectories.h5",
        selected=f"{RUN}/rounds/{{round}}/selected.h5",
        labels=f"{RUN}/labels/round-{{round}}.h5",
        model=f"{RUN}/models/golf-{{round}}.pt",
    output:
        stats=f"{RUN}/rounds/{{round}}/stats.csv",
    log:
        f"{LOGS}/golf/{{round}}/stats.log",
    benchmark:
        f"{BENCH}/golf/{{round}}/stats.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(1000),
        runtime=scaled(10),
    params:
        benchmarks=get_round_benchmarks,
    script:
        "../workflow/scripts/golf_round_stats.py"

# Oracle geometry optimisations: the DFT reference minima of the test set, and the trajectory
# baseline (paper §4): DFT optimisation trajectories from D0 conformations until k extra labels,
# then traj-{k} fine-tuned from the baseline with as many gradient steps as the GOLF rounds, and
# (traj.equal_training) trajeq-{k}, the same k labels trained exactly as GOLF trains. Each seed
# has its own trajectory baseline ({seeddir} = "seed-<s>/": the start order is seeded, and so is
# training's validation split that the starts avoid); the reference minima are shared ({seeddir} = "").


rule oracle_optimize:
    input:
        conformers=get_optimisation_input,
    output:
        # Kept (not temp): a gather rerun, e.g. for a new trajectory budget, needs no oracle job.
        trajectories="results/{seeddir}optimisation/{set}/chunk-{scatteritem}.h5",
    log:
        "logs/{seeddir}optimisation/{set}/chunk-{scatteritem}.log",
    benchmark:
        "benchmarks/{seeddir}optimisation/{set}/chunk-{scatteritem}.tsv"
    conda:
        "../envs/psi4.yaml"
    threads: config["oracle"]["threads"]
    resources:
        mem_mb=scaled(config["oracle"]["memory_mb"] + 1000),
        runtime=scaled(240),
    params:
        oracle=oracle_params(),
        fmax=config["optimisation"]["fmax"],
        max_displacement=config["optimisation"]["max_displacement"],
        split=get_optimisation_split,
        max_steps=get_optimisation_max_steps,
        optimiser=get_optimisation_optimiser,
        traj=get_traj_params,
    script:
        "../workflow/scripts/oracle_optimize.py"


rule gather_optimisation:
    input:
        chunks=gather.oracle(
            "results/{{seeddir}}optimisation/{{set}}/chunk-{scatteritem}.h5"
        ),
    output:
        trajectories="results/{seeddir}optimisation/{set}.h5",
    log:
        "logs/{seeddir}optimisation/{set}/gather.log",
    benchmark:
        "benchmarks/{seeddir}optimisation/{set}/gather.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(10),
    params:
        budget=get_gather_budget,
        allow_mixed=config["oracle"]["allow_mixed_provenance"],
    script:
        "../workflow/scripts/gather_optimisation.py"


rule train_traj:
    input:
        model=f"{RUN}/models/baseline.pt",
        d0=get_d0(),
        trajectories=f"{RUN}/optimisation/traj.h5",
    output:
        model=f"{RUN}/models/traj-{{k}}.pt",
        metrics=f"{RUN}/models/traj-{{k}}.metrics.csv",
    log:
        f"{LOGS}/train/traj-{{k}}.log",
    benchmark:
        f"{BENCH}/train/traj-{{k}}.tsv"
    wildcard_constraints:
        k=str(TRAJ_K),
    conda:
        "../envs/nnp.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(120),
        gpu=nnp_gpus(),
    params:
        train=train_params,
        steps=config["golf"]["utd_ratio"] * max(golf_budget(config), 1),
        allow_mixed=config["oracle"]["allow_mixed_provenance"],
        max_displacement=config["golf"]["max_displacement"],
        # Not an output: Snakemake deletes a failed job's outputs, and a rerun resumes here.
        checkpoint=f"{RUN}/checkpoints/traj-{{k}}.ckpt",
    script:
        "../workflow/scripts/train_traj.py"


# trajeq-{k} (issue 19): traj-k's data, GOLF's training. traj-k trains once on one uniform pool
# (the paper's recipe); GOLF trains R jobs, round r fine-tuning from round r-1 for U x (round r's
# new labels) steps on its slice of one cosine schedule, a fresh Adam and a best-by-validation
# pick per round, and batches with a fixed new-data share (golf.initial_conf_pct) from a new pool
# that grows round by round. A single run with GOLF's total steps and batch mix would still differ
# in the growing pool, the Adam restarts and the per-round picks, so trajeq repeats the chain
# itself: round r adds the next k/R trajectory frames (in the seeded start order the budget was
# spent in) and trains with golf_train's very settings, taking its step counts from GOLF's own
# round labels, so trajeq-{k} has exactly golf-R's gradient steps and schedule.
rule train_trajeq:
    input:
        model=get_previous_trajeq,
        d0=get_d0(),
        trajectories=f"{RUN}/optimisation/traj.h5",
        golf_labels=get_trajeq_golf_labels,
    output:
        model=f"{RUN}/models/trajeq-{{k}}/round-{{round}}.pt",
        metrics=f"{RUN}/models/trajeq-{{k}}/round-{{round}}.metrics.csv",
    log:
        f"{LOGS}/train/trajeq-{{k}}/round-{{round}}.log",
    benchmark:
        f"{BENCH}/train/trajeq-{{k}}/round-{{round}}.tsv"
    wildcard_constraints:
        k=str(TRAJ_K),
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
        round=trajeq_round,
        rounds=len(ROUNDS),
        allow_mixed=config["oracle"]["allow_mixed_provenance"],
        max_displacement=config["golf"]["max_displacement"],
        # Not an output: Snakemake deletes a failed job's outputs, and a rerun resumes here.
        checkpoint=f"{RUN}/checkpoints/trajeq-{{k}}/round-{{round}}.ckpt",
    script:
        "../workflow/scripts/train_traj.py"


# The last round is the model the study evaluates, under its own name (as golf-R is GOLF's).
use rule train_trajeq as train_trajeq_final with:
    output:
        model=f"{RUN}/models/trajeq-{{k}}.pt",
        metrics=f"{RUN}/models/trajeq-{{k}}.metrics.csv",
    log:
        f"{LOGS}/train/trajeq-{{k}}.log",
    benchmark:
        f"{BENCH}/train/trajeq-{{k}}.tsv"
    params:
        checkpoint=f"{RUN}/checkpoints/trajeq-{{k}}.ckpt",

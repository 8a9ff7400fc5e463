# Oracle geometry optimisations: the DFT reference minima of the test set, and the trajectory
# baseline (paper §4): DFT optimisation trajectories from D0 conformations until k extra labels,
# then traj-{k} fine-tuned from the baseline with as many gradient steps as the GOLF rounds.


rule oracle_optimize:
    input:
        conformers=get_optimisation_input,
    output:
        trajectories=temp("results/optimisation/{set}/chunk-{chunk}.h5"),
    log:
        "logs/optimisation/{set}/chunk-{chunk}.log",
    benchmark:
        "benchmarks/optimisation/{set}/chunk-{chunk}.tsv"
    conda:
        "../envs/psi4.yaml"
    threads: config["oracle"]["threads"]
    resources:
        mem_mb=lambda wc, attempt: (config["oracle"]["memory_mb"] + 1000) * attempt,
        runtime=lambda wc, attempt: 240 * attempt,
    params:
        oracle=config["oracle"],
        optimisation=config["optimisation"],
        n_chunks=len(CHUNKS),
        split=get_optimisation_split,
        budget=get_optimisation_budget,
        max_steps=get_optimisation_max_steps,
        seed=config["golf"]["seed"],
    script:
        "../workflow/scripts/oracle_optimize.py"


rule gather_optimisation:
    input:
        chunks=expand("results/optimisation/{{set}}/chunk-{chunk}.h5", chunk=CHUNKS),
    output:
        trajectories="results/optimisation/{set}.h5",
    log:
        "logs/optimisation/{set}/gather.log",
    benchmark:
        "benchmarks/optimisation/{set}/gather.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    script:
        "../workflow/scripts/gather_optimisation.py"


rule train_traj:
    input:
        model="results/models/baseline.pt",
        d0=get_d0(),
        trajectories="results/optimisation/traj.h5",
    output:
        model="results/models/traj-{k}.pt",
        metrics="results/models/traj-{k}.metrics.csv",
    log:
        "logs/train/traj-{k}.log",
    benchmark:
        "benchmarks/train/traj-{k}.tsv"
    wildcard_constraints:
        k=str(TRAJ_K),
    conda:
        "../envs/nnp.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
        gpu=nnp_gpus(),
    script:
        "../workflow/scripts/train_traj.py"

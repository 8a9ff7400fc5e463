# Oracle labelling as scatter/gather: scatter item i-of-N labels rows i-1, i-1+N, ... of a set, so
# a cluster runs N Psi4 jobs at once (N: config oracle.chunks); the gather restores the input's
# row order and checks that every chunk was labelled with the same oracle. A set of one study
# seed (a GOLF round, the control, an evaluation) lives under {seeddir} = "seed-<s>/"; D0 and
# MMFF's evaluation, shared by all seeds, under {seeddir} = "".


rule label_chunk:
    input:
        conformers=get_labelling_input,
    output:
        # Kept (not temp): a gather rerun, e.g. for a new oracle.max_force_norm, then needs no
        # labelling job.
        labels="results/{seeddir}labels/{set}/chunk-{scatteritem}.h5",
    log:
        "logs/{seeddir}label/{set}/chunk-{scatteritem}.log",
    benchmark:
        "benchmarks/{seeddir}label/{set}/chunk-{scatteritem}.tsv"
    priority: 5  # labels feed the training chain; the oracle optimisations can wait
    conda:
        "../envs/psi4.yaml"
    threads: config["oracle"]["threads"]
    resources:
        mem_mb=scaled(config["oracle"]["memory_mb"] + 1000),
        runtime=scaled(120),
    params:
        oracle=oracle_params(),
        split=get_labelling_split,
    script:
        "../workflow/scripts/label_chunk.py"


rule gather_labels:
    input:
        chunks=gather.oracle("results/{{seeddir}}labels/{{set}}/chunk-{scatteritem}.h5"),
    output:
        labels="results/{seeddir}labels/{set}.h5",
    log:
        "logs/{seeddir}label/{set}/gather.log",
    benchmark:
        "benchmarks/{seeddir}label/{set}/gather.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(2000),
        runtime=scaled(10),
    params:
        max_force_norm=get_max_force_norm,
        allow_mixed=config["oracle"]["allow_mixed_provenance"],
    script:
        "../workflow/scripts/gather_labels.py"


# D0 as training and every start pool read it: the labelled (or imported) D0 with its validation
# split decided once per study seed, for every model of that seed (golf.train.validation.mark_validation).
# Each seed has its results/seed-{seed}/d0.h5 (issue 19: the seed-to-seed spread includes the
# split), while the labels (results/labels/d0.h5) stay shared.
rule d0:
    input:
        d0=get_d0_source(),
    output:
        d0=get_d0(),
    log:
        f"{LOGS}/d0.log",
    benchmark:
        f"{BENCH}/d0.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(10),
    params:
        validation=validation_params,
    script:
        "../workflow/scripts/d0.py"

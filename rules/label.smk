# Oracle labelling as scatter/gather: chunk i of N labels rows i, i+N, i+2N, ... of a set, so a
# cluster runs N Psi4 jobs at once; the gather restores the input's row order.


rule label_chunk:
    input:
        conformers=get_labelling_input,
    output:
        labels=temp("results/labels/{set}/chunk-{chunk}.h5"),
    log:
        "logs/label/{set}/chunk-{chunk}.log",
    benchmark:
        "benchmarks/label/{set}/chunk-{chunk}.tsv"
    priority: 5  # labels feed the training chain; the oracle optimisations can wait
    conda:
        "../envs/psi4.yaml"
    threads: config["oracle"]["threads"]
    resources:
        mem_mb=lambda wc, attempt: (config["oracle"]["memory_mb"] + 1000) * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    params:
        oracle=config["oracle"],
        split=get_labelling_split,
        n_chunks=len(CHUNKS),
    script:
        "../workflow/scripts/label_chunk.py"


rule gather_labels:
    input:
        chunks=expand("results/labels/{{set}}/chunk-{chunk}.h5", chunk=CHUNKS),
    output:
        labels="results/labels/{set}.h5",
    log:
        "logs/label/{set}/gather.log",
    benchmark:
        "benchmarks/label/{set}/gather.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    params:
        max_force_norm=get_max_force_norm,
    script:
        "../workflow/scripts/gather_labels.py"

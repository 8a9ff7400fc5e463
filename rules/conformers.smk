rule conformers:
    input:
        molecules=config["molecules"],
    output:
        conformers="results/conformers.h5",
    log:
        "logs/conformers.log",
    benchmark:
        "benchmarks/conformers.tsv"
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    params:
        settings=config["conformers"],
        elements=config["elements"],
    script:
        "../workflow/scripts/conformers.py"

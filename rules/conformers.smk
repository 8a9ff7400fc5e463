rule conformers:
    input:
        molecules=molecule_list_path(config["molecules"]),
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
        mem_mb=scaled(2000),
        runtime=scaled(30),
    params:
        settings=config["conformers"],
        elements=config["elements"],
        molecule_filter=config["molecule_filter"],
    script:
        "../workflow/scripts/conformers.py"

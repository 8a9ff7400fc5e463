# Bring your own data: a labelled D0 and a test set in any format `golf import` reads, instead of
# generated conformers (and, for D0, instead of the D0 labels).


rule import_data:
    input:
        source=get_import_source,
    output:
        dataset="results/imported/{name}.h5",
    log:
        "logs/import/{name}.log",
    benchmark:
        "benchmarks/import/{name}.tsv"
    wildcard_constraints:
        name="d0|test",
    conda:
        "../envs/chem.yaml"
    threads: 1
    resources:
        mem_mb=scaled(4000),
        runtime=scaled(60),
    params:
        elements=config["elements"],
    script:
        "../workflow/scripts/import_data.py"
